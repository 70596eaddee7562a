#!/usr/bin/env bash
# Two jobs over one shared node that end at the same time (found by the QMP
# fuzzer): two chained mirrors a->b, b->c cancelled or completed together,
# a mirror x->y and a backup from y cancelled together.  Each used to wait
# in its drained section for the other to park, forever; SIGTERM then hung
# in cancelling both.  Now both end, the monitor answers, and a daemon
# with such jobs running exits on SIGTERM.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"

run() {
    start_qmp "$tmp/$1.sock" "$tmp/$1.pid"
    timeout 90 "$PYTHON" "$srcdir/jobs_shared_node.py" "$tmp/$1.sock" "$1" ||
        fail "$1"
    _stop_server "$tmp/$1.pid"
}
for s in two-mirrors-cancel two-mirrors-complete mirror-backup-cancel; do
    run "$s"
done

# SIGTERM cancels every job at once: the daemon must still exit.
start_qmp "$tmp/t.sock" "$tmp/t.pid"
pid=$(cat "$tmp/t.pid")
timeout 90 "$PYTHON" "$srcdir/jobs_shared_node.py" "$tmp/t.sock" setup-only ||
    fail "setup for SIGTERM"
running() { # alive and not a zombie (the daemon is this shell's child)
    local state
    state=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ]
}
kill -TERM "$pid"
for _ in $(seq 200); do running "$pid" || break; sleep 0.1; done
if running "$pid"; then
    kill -KILL "$pid" 2>/dev/null
    fail "SIGTERM with jobs sharing nodes did not end the daemon in 20 s"
fi
echo "$0: ok"
