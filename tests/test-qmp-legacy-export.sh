#!/usr/bin/env bash
# The legacy nbd-server-add / nbd-server-remove and block-export-add with
# node-qualified bitmaps ({"node", "name"}), as qemu-storage-daemon 7.2
# answers them: tests/legacy_export.py runs the same steps against
# snapnbd and, where installed, qemu-storage-daemon, and the answers must
# be equal.  The exports work: a read-only node added with writable=true
# is served read-only, the bitmap of another node is offered.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img nbdinfo

nodes() {
    local d=$1
    qemu-img create -q -f qcow2 "$d/disk.qcow2" 4M
    qemu-img bitmap --add "$d/disk.qcow2" b0
    qemu-img bitmap --add --disable "$d/disk.qcow2" b1
    qemu-img create -q -f raw "$d/ro.raw" 4M
    echo "--blockdev driver=qcow2,node-name=disk,file.driver=file,file.filename=$d/disk.qcow2"
    echo "--blockdev driver=raw,node-name=ro,read-only=on,file.driver=file,file.filename=$d/ro.raw"
}

mkdir "$tmp/s"
# shellcheck disable=SC2046
start_daemon $(nodes "$tmp/s")
$PYTHON "$srcdir/legacy_export.py" "$qmp" "$tmp/s" "$tmp/snapnbd.out" ||
    fail "legacy_export.py failed against snapnbd"
grep -qx "add-ro-writable: ok" "$tmp/snapnbd.out" ||
    fail "nbd-server-add of a read-only node: $(cat "$tmp/snapnbd.out")"
nbdinfo "nbd+unix:///ro?socket=$tmp/s/nbd.sock" | grep -q "is_read_only: true" ||
    fail "the read-only node is not exported read-only"
nbdinfo --map=qemu:dirty-bitmap:b1 "nbd+unix:///q1?socket=$tmp/s/nbd.sock" \
    >/dev/null || fail "the node-qualified bitmap is not offered"
_stop_server "$tmp/daemon.pid"

if ! command -v qemu-storage-daemon >/dev/null; then
    echo "$0: qemu-storage-daemon is not installed: no side-by-side comparison"
    exit 0
fi
mkdir "$tmp/q"
# shellcheck disable=SC2046
qemu-storage-daemon $(nodes "$tmp/q") \
    --chardev socket,id=m,path="$tmp/qsd.sock",server=on,wait=off \
    --monitor chardev=m --pidfile "$tmp/qsd.pid" &
cleanup_fn "_stop_server '$tmp/qsd.pid'"
$PYTHON "$srcdir/legacy_export.py" "$tmp/qsd.sock" "$tmp/q" "$tmp/qsd.out" ||
    fail "legacy_export.py failed against qemu-storage-daemon"
diff -u "$tmp/qsd.out" "$tmp/snapnbd.out" ||
    fail "snapnbd's answers differ from qemu-storage-daemon's"
