#!/usr/bin/env bash
# Incremental backup of an rbd disk from the RBD diff between two
# snapshots, against a real one-node Ceph cluster (tests/ceph-cluster.sh;
# tests/rbd_incremental.py): snapshots s1 and s2 taken through QMP while
# two NBD clients write the disk; s2 opened with x-dirty-since=s1 and
# exported with bitmap s1; the full backup at s1 ("rbd export @s1") plus
# the ranges qemu:dirty-bitmap:s1 marks is s2 ("rbd export @s2"), the
# bitmap marks every changed granule and far from all of them; an unknown
# snapshot is refused.
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
rbd import --object-size 64K "$tmp/disk.raw" rbd/src >/dev/null 2>&1 ||
    fail "rbd import"
start_daemon \
    --blockdev "driver=raw,node-name=disk,file.driver=rbd,file.pool=rbd,file.image=src,file.conf=$conf" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=e0,node-name=disk,name=live,writable=on
$PYTHON "$srcdir/rbd_incremental.py" "$qmp" "$nbdsock" "$tmp" "$seed" "$conf" ||
    fail "seed $seed: the incremental backup from the rbd diff failed"
_stop_server "$tmp/daemon.pid"
rbd export rbd/src@s1 "$tmp/s1.raw" >/dev/null 2>&1 || fail "rbd export @s1"
cmp "$tmp/s1.raw" "$tmp/at-s1.raw" || fail "seed $seed: rbd/src@s1 is not the disk at s1"
echo "$0: ok"
