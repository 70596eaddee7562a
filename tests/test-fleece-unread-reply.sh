#!/usr/bin/env bash
# A fleecing export (a qcow2 overlay backed by the live disk, filled by a
# sync=none job or by QEMU 7.2's copy-before-write filter) answers a
# large read, whose reply the client has not read yet when the guest
# overwrites the range: the reply must still be the point in time.  Large
# reads are spliced from the page cache (the reply refers to the pages
# until the client reads it), so areas of the overlay not copied yet,
# which are the live disk's pages, must be read by copy (fleece_unread_reply.py).
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img qemu-io
requires_libnbd_python

for mode in overlay filter; do
    qemu-img create -q -f qcow2 "$tmp/disk.qcow2" 16M
    qemu-io -f qcow2 -c 'write -P 0x11 0 16M' "$tmp/disk.qcow2" >/dev/null
    rm -f "$tmp/fleece.qcow2"
    start_daemon \
        --blockdev "driver=qcow2,node-name=disk,file.driver=file,file.filename=$tmp/disk.qcow2" \
        --nbd-server "addr.type=unix,addr.path=$nbdsock" \
        --export type=nbd,id=e0,node-name=disk,name=disk,writable=on
    $PYTHON "$srcdir/fleece_unread_reply.py" "$qmp" "$nbdsock" "$tmp" "$mode" ||
        fail "$mode: a later write showed in a point-in-time read"
    _stop_server "$tmp/daemon.pid"
done
