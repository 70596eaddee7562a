#!/usr/bin/env bash
# blockdev-reopen as qemu-storage-daemon 7.2 answers it (tests/reopen.py
# runs the same steps against both where qsd is installed): a read-only
# backing node becomes writable (a persistent bitmap can then be added to
# it, as libvirt does) and read-only again; discard/detect-zeroes change;
# the driver or the file child cannot; an exported node written by a
# client cannot become read-only.  The images stay qemu-img check clean
# and the bitmap is stored in the backing image.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img

images() {
    qemu-img create -q -f qcow2 "$1/base.qcow2" 4M
    qemu-img create -q -f qcow2 -F qcow2 -b "$1/base.qcow2" "$1/disk.qcow2"
}

mkdir "$tmp/s"; images "$tmp/s"
start_daemon
$PYTHON "$srcdir/reopen.py" "$qmp" "$tmp/s" "$tmp/snapnbd.out" ||
    fail "reopen.py failed against snapnbd"
_stop_server "$tmp/daemon.pid"
cat "$tmp/snapnbd.out"
grep -qx "base-rw: base ro=False detect_zeroes=off backing=" \
    "$tmp/snapnbd.out" || fail "the backing node did not become writable"
grep -qx "bitmap-on-writable: ok" "$tmp/snapnbd.out" ||
    fail "no persistent bitmap on the reopened node"
for f in base disk; do
    qemu-img check -q "$tmp/s/$f.qcow2" || fail "$f.qcow2 is not sound"
done
qemu-img info "$tmp/s/base.qcow2" | grep -q "name: bb" ||
    fail "the bitmap was not stored in base.qcow2"

if ! command -v qemu-storage-daemon >/dev/null; then
    echo "$0: qemu-storage-daemon is not installed: no side-by-side comparison"
    exit 0
fi
mkdir "$tmp/q"; images "$tmp/q"
qemu-storage-daemon \
    --chardev socket,id=m,path="$tmp/qsd.sock",server=on,wait=off \
    --monitor chardev=m --pidfile "$tmp/qsd.pid" &
cleanup_fn "_stop_server '$tmp/qsd.pid'"
$PYTHON "$srcdir/reopen.py" "$tmp/qsd.sock" "$tmp/q" "$tmp/qsd.out" ||
    fail "reopen.py failed against qemu-storage-daemon"
# QEMU 7.2 can swap a node's file child in a reopen (here it then fails
# on permissions); snapnbd refuses to change it: qsd's line is replaced.
sed "s/^file: .*/$(grep '^file:' "$tmp/snapnbd.out")/" "$tmp/qsd.out" \
    >"$tmp/qsd.expected"
diff -u "$tmp/qsd.expected" "$tmp/snapnbd.out" ||
    fail "snapnbd's answers differ from qemu-storage-daemon's"
