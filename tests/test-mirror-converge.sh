#!/usr/bin/env bash
# A background mirror that cannot keep up with two NBD clients writing at
# QD16 switches itself to write-blocking and reaches READY within 30 s
# (QEMU 7.2's never does; with x-auto-write-blocking: false neither does
# ours); the switched target holds every write (mirror_converge.py).
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

$PYTHON "$srcdir/mirror_converge.py" "$qmp" "$nbdsock" "$tmp" "$seed" ||
    fail "seed $seed: the mirror did not converge under load"
_stop_server "$tmp/daemon.pid"
for f in disk t0 t1; do
    qemu-img check -q "$tmp/$f.qcow2" || fail "$f.qcow2 is not sound"
done
qemu-img compare -q -f qcow2 -F raw "$tmp/t1.qcow2" "$tmp/final.raw" ||
    fail "seed $seed: the switched target lost writes"
