#!/usr/bin/env bash
# rbd nodes as mirror targets, against a real one-node Ceph cluster
# (tests/ceph-cluster.sh), under two NBD clients writing the live export
# (tests/rbd_mirror_live.py):
#  - blockdev-mirror sync=full of a local qcow2 disk into a raw node over
#    an rbd image full of old data (blockdev-add driver=rbd), job-complete
#    while the clients write: the export then writes into rbd, and after a
#    marker "rbd export" of the image is the clients' model; the old qcow2
#    does not get the marker;
#  - a second mirror from that rbd node into a bare rbd node (an empty
#    image), completed with the clients quiet: the first image is the disk
#    at the switch, the second has everything including a later marker.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
source "$srcdir/ceph-cluster.sh"
requires qemu-img
requires_libnbd_python
requires_rbd
start_ceph
conf=$CEPH_CONF
size=$((16 << 20))

make_disk "$tmp/disk.raw" $size "$seed"
qemu-img convert -f raw -O qcow2 "$tmp/disk.raw" "$tmp/disk.qcow2"
# Old data everywhere: the disk's holes must reach the target as zeroes.
head -c $size /dev/urandom >"$tmp/junk.raw"
rbd import --object-size 1M "$tmp/junk.raw" rbd/tgt >/dev/null 2>&1 ||
    fail "rbd import of the target"
rbd create --size 16M --object-size 1M rbd/tgt2 || fail "rbd create"

start_daemon \
    --blockdev "driver=qcow2,node-name=disk,file.driver=file,file.filename=$tmp/disk.qcow2" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=e0,node-name=disk,name=live,writable=on
$PYTHON "$srcdir/rbd_mirror_live.py" "$qmp" "$nbdsock" "$tmp" "$seed" "$conf" ||
    fail "seed $seed: the mirror jobs into rbd failed"
_stop_server "$tmp/daemon.pid"

rbd export rbd/tgt "$tmp/tgt.raw" >/dev/null 2>&1 || fail "rbd export rbd/tgt"
cmp "$tmp/tgt.raw" "$tmp/at-switch2.raw" ||
    fail "seed $seed: rbd/tgt is not the disk at the second switch"
cmp -s "$tmp/tgt.raw" "$tmp/final1.raw" &&
    fail "seed $seed: rbd/tgt holds nothing written after the first marker"
rbd export rbd/tgt2 "$tmp/tgt2.raw" >/dev/null 2>&1 || fail "rbd export rbd/tgt2"
cmp "$tmp/tgt2.raw" "$tmp/final2.raw" ||
    fail "seed $seed: rbd/tgt2 is not the clients' model"
qemu-img check -q "$tmp/disk.qcow2" || fail "disk.qcow2 is not sound"
qemu-img convert -f qcow2 -O raw "$tmp/disk.qcow2" "$tmp/old.raw"
head -c 65536 "$tmp/final1.raw" >"$tmp/marker1"
cmp -s -n 65536 "$tmp/old.raw" "$tmp/marker1" &&
    fail "seed $seed: the marker written after the switch reached the old disk"
echo "$0: ok"
