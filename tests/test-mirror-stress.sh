#!/usr/bin/env bash
# Hole-punching write-zeroes (no NO_HOLE) and trims from two QD16 NBD
# clients racing mirror start, force-cancel, cancel once ready, completion
# and blockdev-snapshot-sync, in loops (qemu-storage-daemon 7.2 corrupted
# its qcow2 image in 5 of 10 loops of 20 such cycles): after every loop
# the export holds exactly what was written and every image is qemu-img
# check clean (mirror_stress.py).  Default 10 loops of 20 cycles;
# SNAPNBD_MIRROR_STRESS_LOOPS=N runs longer.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img
requires_libnbd_python

loops=${SNAPNBD_MIRROR_STRESS_LOOPS:-10}
size=$((4 << 20))
make_disk "$tmp/disk.raw" $size "$seed"
qemu-img convert -f raw -O qcow2 "$tmp/disk.raw" "$tmp/disk.qcow2"
start_daemon \
    --blockdev "driver=qcow2,node-name=disk,discard=unmap,file.driver=file,file.filename=$tmp/disk.qcow2" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=e0,node-name=disk,name=live,writable=on

$PYTHON "$srcdir/mirror_stress.py" "$qmp" "$nbdsock" "$tmp" "$seed" \
    "$loops" 20 || fail "seed $seed: the mirror stress failed"
_stop_server "$tmp/daemon.pid"
for f in "$tmp"/*.qcow2; do
    qemu-img check -q "$f" || fail "seed $seed: $f is not sound"
done
top=$(cat "$tmp/final.node")
qemu-img compare -q -F raw "$top" "$tmp/final.raw" ||
    fail "seed $seed: the export's image after shutdown is not what was written"
