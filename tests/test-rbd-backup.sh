#!/usr/bin/env bash
# Backups with rbd nodes, against a real one-node Ceph cluster
# (tests/ceph-cluster.sh), each under four NBD clients writing random ranges
# through the live export (tests/backup_load.py):
#  - an rbd source, drive-backup sync=full into a local file: the backup is
#    the image as it was when the job started;
#  - the same source, blockdev-backup sync=none into a qcow2 overlay
#    (fleecing): the point-in-time export is the image as it was;
#  - a local qcow2 source, blockdev-backup sync=full into an rbd target node
#    (blockdev-add driver=rbd) that holds old data: "rbd export" of the
#    target is the disk as it was when the job started.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
source "$srcdir/ceph-cluster.sh"
requires qemu-img
requires_libnbd_python
requires_rbd
start_ceph
conf=$CEPH_CONF
size=$((32 << 20))

make_disk "$tmp/disk.img" $size "$seed"
rbd import --object-size 1M "$tmp/disk.img" rbd/src >/dev/null 2>&1 ||
    fail "rbd import"
start_daemon \
    --blockdev "driver=raw,node-name=disk,discard=unmap,file.driver=rbd,file.pool=rbd,file.image=src,file.conf=$conf" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=e0,node-name=disk,name=disk,writable=on

# 1. sync=full from rbd.
cp --sparse=always "$tmp/disk.img" "$tmp/ref1.img"
job='{"execute": "drive-backup", "arguments": {"job-id": "b1",
      "device": "disk", "target": "'$tmp/backup1.img'",
      "format": "raw", "sync": "full", "speed": 25165824}}'
$PYTHON "$srcdir/backup_load.py" run "$qmp" "$nbdsock" "$job" \
    "$tmp/ref1.img" $((seed + 1)) 4 || fail "sync=full from rbd (seed $seed): the load run failed"
qemu-img compare -q -f raw -F raw "$tmp/ref1.img" "$tmp/backup1.img" ||
    fail "sync=full from rbd (seed $seed): the backup is not the image as it was"

# 2. sync=none from rbd: fleecing through a local overlay.
rbd export rbd/src "$tmp/ref2.img" >/dev/null 2>&1 || fail "rbd export"
qemu-img create -q -f qcow2 "$tmp/fleece.qcow2" $size
jobs_py 'QMP(sys.argv[1]).cmd("blockdev-add", {"driver": "qcow2",
             "node-name": "tmp", "backing": "disk",
             "file": {"driver": "file", "filename": sys.argv[2]}})' \
    "$qmp" "$tmp/fleece.qcow2" || fail "blockdev-add of the overlay"
job='{"execute": "blockdev-backup", "arguments": {"job-id": "f2",
      "device": "disk", "target": "tmp", "sync": "none"}}'
$PYTHON "$srcdir/backup_load.py" run "$qmp" "$nbdsock" "$job" \
    "$tmp/ref2.img" $((seed + 2)) 4 "$tmp/pit2.img" ||
    fail "sync=none from rbd (seed $seed): the load run failed"
qemu-img compare -q -f raw -F raw "$tmp/ref2.img" "$tmp/pit2.img" ||
    fail "sync=none from rbd (seed $seed): the point-in-time export is not the image as it was"
jobs_py 'QMP(sys.argv[1]).cmd("blockdev-del", {"node-name": "tmp"})' "$qmp" ||
    fail "blockdev-del of the overlay"
_stop_server "$tmp/daemon.pid"

# 3. A local qcow2 disk backed up into an rbd target node.
make_disk "$tmp/local.raw" $size $((seed + 3))
qemu-img convert -q -f raw -O qcow2 "$tmp/local.raw" "$tmp/local.qcow2"
# A target full of old data: the disk's holes must be written as zeroes
# (block status of the target says it is not all zero).
head -c $size /dev/urandom >"$tmp/junk.raw"
rbd import "$tmp/junk.raw" rbd/tgt >/dev/null 2>&1 || fail "rbd import of the target"
start_daemon \
    --blockdev "driver=qcow2,node-name=disk,file.driver=file,file.filename=$tmp/local.qcow2" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=e0,node-name=disk,name=disk,writable=on
jobs_py 'QMP(sys.argv[1]).cmd("blockdev-add", {"driver": "raw",
             "node-name": "tgt", "file": {"driver": "rbd", "pool": "rbd",
             "image": "tgt", "conf": sys.argv[2]}})' "$qmp" "$conf" ||
    fail "blockdev-add of the rbd target"
job='{"execute": "blockdev-backup", "arguments": {"job-id": "b3",
      "device": "disk", "target": "tgt", "sync": "full", "speed": 25165824}}'
$PYTHON "$srcdir/backup_load.py" run "$qmp" "$nbdsock" "$job" \
    "$tmp/local.raw" $((seed + 3)) 4 || fail "sync=full into rbd (seed $seed): the load run failed"
jobs_py 'QMP(sys.argv[1]).cmd("blockdev-del", {"node-name": "tgt"})' "$qmp" ||
    fail "blockdev-del of the rbd target"
rbd export rbd/tgt "$tmp/backup3.img" >/dev/null 2>&1 || fail "rbd export of the target"
qemu-img compare -q -f raw -F raw "$tmp/local.raw" "$tmp/backup3.img" ||
    fail "sync=full into rbd (seed $seed): the rbd target is not the disk as it was"
echo "$0: ok"
