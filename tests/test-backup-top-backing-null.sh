#!/usr/bin/env bash
# sync=top into a target added the way management layers add it: created
# with the source's backing file in its header, then blockdev-add'ed with
# "backing": null.  Zero clusters of the source's top layer must reach the
# target as zero clusters: a target opened without its backing only looks
# empty, and whoever opens it with its backing (qemu-img) would otherwise
# see the base's data where the source had zeroes.  Also the zero writes of
# the job must not unmap (a hole there would read as the base).
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img qemu-io
requires_libnbd_python

size=$((8 << 20))
qemu-img create -q -f raw "$tmp/base.img" $size
qemu-io -f raw -c "write -P 0xbb 0 $size" "$tmp/base.img" >/dev/null
qemu-img create -q -f qcow2 -F raw -b "$tmp/base.img" "$tmp/top.qcow2" $size
# Top layer: data, zero clusters (over base data), and unallocated ranges.
qemu-io -f qcow2 -c "write -P 0x11 0 1M" -c "write -z 1M 2M" \
    -c "write -P 0x22 4M 64k" -c "write -z 6M 64k" "$tmp/top.qcow2" \
    >/dev/null || fail "cannot prepare the overlay"
cp "$tmp/top.qcow2" "$tmp/ref.qcow2"
qemu-img create -q -f qcow2 -F raw -b "$tmp/base.img" "$tmp/backup.qcow2" $size

start_daemon \
    --blockdev "driver=qcow2,node-name=disk,file.driver=file,file.filename=$tmp/top.qcow2" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=e0,node-name=disk,name=disk,writable=on

jobs_py '
q = QMP(sys.argv[1])
q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "tgt",
      "backing": None,
      "file": {"driver": "file", "filename": sys.argv[2]}})
q.cmd("blockdev-backup", {"job-id": "j0", "device": "disk", "target": "tgt",
      "sync": "top"})
ev = q.wait_event("BLOCK_JOB_COMPLETED", device="j0")
assert "error" not in ev["data"], ev
q.cmd("blockdev-del", {"node-name": "tgt"})
' "$qmp" "$tmp/backup.qcow2" || fail "the sync=top backup failed"

qemu-img check -q "$tmp/backup.qcow2" || fail "the backup is not sound"
qemu-img compare -q "$tmp/ref.qcow2" "$tmp/backup.qcow2" ||
    fail "the backup (opened with its backing) is not the source's" \
         "point in time: zero clusters of the top layer became the base's data"
