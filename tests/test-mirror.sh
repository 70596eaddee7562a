#!/usr/bin/env bash
# blockdev-mirror of a disk that two NBD clients keep writing through its
# export:
#  - force-cancelled before ready: BLOCK_JOB_CANCELLED, nothing switched;
#  - cancelled once ready (block-job-cancel without force): the job
#    completes without the switch and the target is the disk as of the
#    cancel (writers quiet then), as QEMU does;
#  - completed under writes (job-complete): the export now writes into the
#    target: every write before, across and after the switch is in the
#    target, a marker written after it is not in the old disk;
#  - every image qemu-img check clean; a mirror into itself is refused.
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

$PYTHON "$srcdir/mirror_live.py" "$qmp" "$nbdsock" "$tmp" "$seed" ||
    fail "seed $seed: the mirror jobs failed"
_stop_server "$tmp/daemon.pid"

for f in disk t1 t2; do
    qemu-img check -q "$tmp/$f.qcow2" || fail "$f.qcow2 is not sound"
done
qemu-img compare -q -f qcow2 -F raw "$tmp/t1.qcow2" "$tmp/at-cancel.raw" ||
    fail "seed $seed: the target of the cancelled mirror is not the disk" \
         "as of the cancel"
qemu-img compare -q -f qcow2 -F raw "$tmp/t2.qcow2" "$tmp/final.raw" ||
    fail "seed $seed: the switched target lost writes"
head -c 65536 "$tmp/final.raw" >"$tmp/marker"
qemu-img convert -f qcow2 -O raw "$tmp/disk.qcow2" "$tmp/old.raw"
if cmp -s -n 65536 "$tmp/old.raw" "$tmp/marker"; then
    fail "the marker written after the switch is in the old disk"
fi
