#!/usr/bin/env bash
# Nodes that a job's own thread frees while others still use them (found
# by the QMP fuzzer, seed 937865421; tests/job_node_refs.py says how):
#   lookup        a monitor command used a node it had looked up by name
#                 without a reference (a cancelled backup's filter)
#   moved-target  a mirror used its target after another mirror's switch
#                 had moved its edge away and freed the node (a crash at
#                 SIGTERM in the fuzzer: mirror_clean's bdrv_ref)
#   mirror-bitmap query-named-block-nodes read a mirror's own dirty
#                 bitmap that the mirror's end freed (seed 448881646)
# Each must leave the daemon answering, then exit cleanly on SIGTERM (the
# ASan build reports the use after free at once; the plain one crashed,
# MALLOC_PERTURB_ filling the freed node).  SNAPNBD_JOB_NODE_REFS=NAME runs one.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"
requires qemu-img qemu-io

for scenario in ${SNAPNBD_JOB_NODE_REFS:-lookup moved-target mirror-bitmap}; do
    mkdir "$tmp/$scenario"
    start_qmp "$tmp/$scenario/q.sock" "$tmp/$scenario/q.pid"
    pid=$(cat "$tmp/$scenario/q.pid")
    timeout 120 "$PYTHON" "$srcdir/job_node_refs.py" "$tmp/$scenario/q.sock" \
        "$tmp/$scenario" "$scenario" ||
        fail "$scenario: the monitor stopped answering (a crash?)"
    kill -0 "$pid" 2>/dev/null || fail "$scenario: the daemon died"
    kill -TERM "$pid"
    status=0
    wait "$pid" 2>/dev/null || status=$?
    rm -f "$tmp/$scenario/q.pid"
    case $status in
    0|143) ;;
    *) fail "$scenario: the daemon exited with status $status after SIGTERM" ;;
    esac
done
echo "$0: ok"
