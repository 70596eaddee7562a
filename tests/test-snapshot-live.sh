#!/usr/bin/env bash
# Live external snapshots (QMP blockdev-snapshot-sync and blockdev-snapshot)
# of a disk that two NBD clients keep writing through its export:
#  - the export moves to the overlay in one drained step: no write is
#    lost, writes after the snapshot land in the overlay, the old image
#    becomes its read-only backing;
#  - the old image is the disk at the snapshot instant (snapshot-sync taken
#    with the writers quiet: exactly the model then);
#  - a second snapshot (overlay added with blockdev-add, "backing": null)
#    while the writers write: the chain holds every write;
#  - as transaction actions: one with a failing action undoes its
#    snapshot (the export stays where it was), one that succeeds takes it
#    atomically with a bitmap added to the old top;
#  - every image is qemu-img check clean, the overlay names its backing,
#    and an overlay in use or the exported node cannot be taken away.
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

jobs_py "exec(open('$srcdir/snapshot_live.py').read().replace('if __name__', 'if False and __name__')); main(*sys.argv[1:4], int(sys.argv[4]))" \
    "$qmp" "$nbdsock" "$tmp" "$seed" || fail "seed $seed: live snapshots failed"
_stop_server "$tmp/daemon.pid"

for f in disk ov1 ov2 ov4; do
    qemu-img check -q "$tmp/$f.qcow2" || fail "$f.qcow2 is not sound"
done
qemu-img compare -q -f qcow2 -F raw "$tmp/disk.qcow2" "$tmp/at-snap1.raw" ||
    fail "seed $seed: the old image is not the disk at the snapshot"
qemu-img compare -q -f qcow2 -F raw "$tmp/ov2.qcow2" "$tmp/at-snap3.raw" ||
    fail "seed $seed: ov2 is not the disk at the transaction's snapshot"
qemu-img compare -q -f qcow2 -F raw "$tmp/ov4.qcow2" "$tmp/final.raw" ||
    fail "seed $seed: the chain lost writes"
backing=$(qemu-img info --output=json "$tmp/ov1.qcow2" |
          $PYTHON -c 'import json, sys; print(json.load(sys.stdin)["backing-filename"])')
[ "$backing" = "$tmp/disk.qcow2" ] || fail "ov1's backing file is '$backing'"
