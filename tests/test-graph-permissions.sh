#!/usr/bin/env bash
# Who may do what to a node, tried through QMP as a management layer would
# (QEMU's permission model; the outcomes are qemu-storage-daemon 7.2's):
#  - the same qcow2 image added twice writable: the second is refused on
#    the image lock, as a second process would be;
#  - two qcow2 nodes over one file node: refused with QEMU's "Permission
#    conflict on node 'f0'" sentence naming both holders;
#  - a backup whose target is a raw node over the source's own file node,
#    or the source's file node itself: refused up front (they would write
#    into the source), and the daemon still answers and stops on SIGTERM;
#  - a read-only qcow2 node takes no write lock: qemu-img can open the
#    image read-only, and a writer (qemu-io) is refused;
#  - an export's node becomes lockable again when the export goes.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img qemu-io
requires_libnbd_python

qemu-img create -q -f qcow2 "$tmp/a.qcow2" 8M
qemu-img create -q -f qcow2 "$tmp/b.qcow2" 8M
qemu-img create -q -f qcow2 "$tmp/ro.qcow2" 8M

start_daemon --nbd-server "addr.type=unix,addr.path=$nbdsock"

jobs_py '
tmp = sys.argv[2]
q = QMP(sys.argv[1])
def add(args):
    return q.execute("blockdev-add", args)

def refused(args, *words):
    r = add(args)
    assert "error" in r, f"accepted: {args}"
    for w in words:
        assert w in r["error"]["desc"], (w, r["error"]["desc"])
    return r["error"]["desc"]

# The same image twice, writable: the lock of the first refuses the second.
q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "a1",
      "file": {"driver": "file", "filename": f"{tmp}/a.qcow2"}})
refused({"driver": "qcow2", "node-name": "a2",
         "file": {"driver": "file", "filename": f"{tmp}/a.qcow2"}},
        "lock", f"{tmp}/a.qcow2")
assert all(n["node-name"] != "a2" for n in q.cmd("query-named-block-nodes"))

# Two formats over one file node.
q.cmd("blockdev-add", {"driver": "file", "node-name": "f0",
      "filename": f"{tmp}/b.qcow2"})
q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "q0", "file": "f0"})
d = refused({"driver": "qcow2", "node-name": "q1", "file": "f0"},
            "Permission conflict on node \x27f0\x27",
            "node \x27q0\x27 (uses node \x27f0\x27 as \x27file\x27 child)")
# A raw node over it takes nothing until someone writes through it.
q.cmd("blockdev-add", {"driver": "raw", "node-name": "r0", "file": "f0"})

# Backups that would write into the source.
for tgt in ("r0", "f0"):
    r = q.execute("blockdev-backup", {"job-id": "j-" + tgt, "device": "q0",
                                      "target": tgt, "sync": "full"})
    assert "error" in r, f"backup of q0 into {tgt} accepted"
    assert q.cmd("query-jobs") == [], q.cmd("query-jobs")

# A read-only image is not write-locked, and unshares write.
q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "ro",
      "read-only": True,
      "file": {"driver": "file", "filename": f"{tmp}/ro.qcow2"}})
q.cmd("block-export-add", {"type": "nbd", "id": "e-ro", "node-name": "ro"})
' "$qmp" "$tmp" || fail "permission checks failed"

qemu-img info "$tmp/ro.qcow2" >/dev/null 2>"$tmp/err" ||
    fail "a read-only node locks its image against readers: $(cat "$tmp/err")"
if qemu-io -f qcow2 -c 'write 0 4k' "$tmp/ro.qcow2" >"$tmp/out" 2>&1; then
    fail "qemu-io wrote an image a read-only node serves"
fi
grep -q 'lock' "$tmp/out" || fail "no lock message: $(cat "$tmp/out")"
if qemu-io -f qcow2 -c 'write 0 4k' "$tmp/a.qcow2" >"$tmp/out" 2>&1; then
    fail "qemu-io wrote an image a writable node holds"
fi

# The daemon still works, and lets go of an image once its node goes.
jobs_py '
q = QMP(sys.argv[1])
assert q.cmd("query-jobs") == []
q.cmd("blockdev-del", {"node-name": "a1"})
' "$qmp" || fail "the daemon no longer answers"
qemu-io -f qcow2 -c 'write 0 4k' "$tmp/a.qcow2" >/dev/null ||
    fail "the image stays locked after blockdev-del"
