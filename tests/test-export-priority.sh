#!/usr/bin/env bash
# block-export-add x-priority (snapnbd's): the threads of a connection to
# a background export run at nice 10, those of a normal one at the
# server's nice.  The default is background for a point in time (the
# target of a copy-before-write: here a sync=none backup's fleecing
# overlay) and normal for anything else (the live disk).  An unknown value
# is refused.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img
requires_libnbd_python

start_live_disk $((4 << 20))
pid=$(cat "$tmp/daemon.pid")
qemu-img create -q -f qcow2 -F raw -b "$tmp/disk.img" "$tmp/fleece.qcow2"

jobs_py '
q = QMP(sys.argv[1])
q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "fl", "backing": "disk",
                       "file": {"driver": "file", "filename": sys.argv[2]}})
q.cmd("blockdev-backup", {"job-id": "fleece", "device": "disk", "target": "fl",
                          "sync": "none"})
for id, node, prio in (("pit", "fl", None), ("pitn", "fl", "normal"),
                       ("bg", "disk", "background")):
    a = {"type": "nbd", "id": id, "name": id, "node-name": node}
    if prio:
        a["x-priority"] = prio
    q.cmd("block-export-add", a)
err = q.error("block-export-add", {"type": "nbd", "id": "x", "name": "x",
                                   "node-name": "disk", "x-priority": "idle"})
assert "x-priority" in str(err), err
' "$qmp" "$tmp/fleece.qcow2" || fail "setup"

# nice_of_new EXPORT: the nice values of the threads a connection to EXPORT
# starts, once each
nice_of_new() {
    thread_ids "$pid" >"$tmp/before"
    rm -f "$tmp/ready" "$tmp/stop"
    "$PYTHON" - "$(uri "$nbdsock" "$1")" "$tmp/ready" "$tmp/stop" <<'EOP' &
import nbd, os, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(64):   # enough requests that every worker has started
    h.pread(4096, i * 4096)
open(sys.argv[2], "w").close()
while not os.path.exists(sys.argv[3]):
    time.sleep(0.02)
h.shutdown()
EOP
    local client=$! i
    for i in $(seq 200); do [ -e "$tmp/ready" ] && break; sleep 0.05; done
    [ -e "$tmp/ready" ] || fail "the client of $1 did not connect"
    new_thread_attrs "$pid" "$tmp/before" nice
    touch "$tmp/stop"
    wait $client || fail "the client of $1 failed"
}

base=$(thread_attr "$pid" "$pid" nice)
[ "$base" = 0 ] || { echo "$0: skipped: the server runs at nice $base"; exit 77; }
check() {
    local got
    got=$(nice_of_new "$1")
    [ -n "$got" ] || fail "a connection to $1 started no thread"
    [ "$got" = "$2" ] || fail "threads of a connection to $1 run at nice '$got', not $2"
}
check disk 0
check pit 10
check pitn 0
check bg 10
