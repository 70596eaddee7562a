#!/usr/bin/env bash
# blockdev-mirror copy-mode=write-blocking while two NBD clients write at
# QD16: once ready, whenever the writers stop (at random instants), the
# source and the target read through exports are identical; complete
# switches the export to the target, which holds every write
# (mirror_active.py).
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img
requires_libnbd_python

size=$((16 << 20))
make_disk "$tmp/disk.raw" $size "$seed"
qemu-img convert -f raw -O qcow2 "$tmp/disk.raw" "$tmp/disk.qcow2"
start_daemon \
    --blockdev "driver=qcow2,node-name=disk,file.driver=file,file.filename=$tmp/disk.qcow2" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=e0,node-name=disk,name=live,writable=on

$PYTHON "$srcdir/mirror_active.py" "$qmp" "$nbdsock" "$tmp" "$seed" ||
    fail "seed $seed: the write-blocking mirror was not in sync"
_stop_server "$tmp/daemon.pid"
for f in disk tgt; do
    qemu-img check -q "$tmp/$f.qcow2" || fail "$f.qcow2 is not sound"
done
qemu-img compare -q -f qcow2 -F raw "$tmp/tgt.qcow2" "$tmp/final.raw" ||
    fail "seed $seed: the switched target lost writes"
