#!/usr/bin/env bash
# A command naming a node that a job's thread frees at that moment (found
# by the QMP fuzzer, seed 937865421: blockdev-backup from an auto-named
# node crashed in refresh_node as the job holding it ended).  The monitor looked
# nodes up by name without a reference; a job's own thread drops its
# filter's and its targets' last references when it ends.  Each round
# cancels a backup and, in the same write, names its filter in commands:
# the daemon must answer them all, then exit cleanly on SIGTERM (the ASan
# build reports the use after free at once; the plain one mostly crashes,
# MALLOC_PERTURB_ filling freed nodes).
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"

start_qmp "$tmp/q.sock" "$tmp/q.pid"
pid=$(cat "$tmp/q.pid")
timeout 120 "$PYTHON" "$srcdir/job_node_lookup.py" "$tmp/q.sock" 300 ||
    fail "the monitor stopped answering (a crash?)"
kill -0 "$pid" 2>/dev/null || fail "the daemon died"
kill -TERM "$pid"
status=0
wait "$pid" 2>/dev/null || status=$?
rm -f "$tmp/q.pid"
case $status in
0|143) ;;
*) fail "the daemon exited with status $status after SIGTERM" ;;
esac
echo "$0: ok"
