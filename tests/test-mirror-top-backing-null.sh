#!/usr/bin/env bash
# sync=top mirror into a target added with "backing": null (created with
# the source's backing file in its header, as management layers do): the
# pivot attaches the source's backing to the target, so the export reads
# after job-complete exactly what it read before (QEMU 7.2 serves zeroes
# for the base there).  Zero clusters of the top layer stay zero clusters
# in the target (the job's zero writes do not unmap over a backing), and
# the target opened later with its own backing equals the source.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img qemu-io
requires_libnbd_python

size=$((8 << 20))
qemu-img create -q -f qcow2 "$tmp/base.qcow2" $size
qemu-io -f qcow2 -c "write -P 0xbb 0 $size" "$tmp/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -F qcow2 -b "$tmp/base.qcow2" "$tmp/top.qcow2" $size
qemu-io -f qcow2 -c "write -P 0x11 0 1M" -c "write -z 1M 2M" \
    -c "write -P 0x22 4M 64k" -c "write -z 6M 64k" "$tmp/top.qcow2" \
    >/dev/null || fail "cannot prepare the overlay"
qemu-img create -q -f qcow2 -F qcow2 -b "$tmp/base.qcow2" "$tmp/tgt.qcow2" $size

start_daemon \
    --blockdev "driver=qcow2,node-name=base,file.driver=file,file.filename=$tmp/base.qcow2" \
    --blockdev "driver=qcow2,node-name=disk,backing=base,file.driver=file,file.filename=$tmp/top.qcow2" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=e0,node-name=disk,name=disk,writable=on

jobs_py '
import nbd
q = QMP(sys.argv[1])
uri = "nbd+unix:///disk?socket=" + sys.argv[2]
def read_all():
    h = nbd.NBD(); h.connect_uri(uri)
    data = h.pread(h.get_size(), 0); h.shutdown()
    return data
before = read_all()
assert before[5 << 20:(5 << 20) + 16] == b"\xbb" * 16, "no base data"
q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "tgt",
      "backing": None,
      "file": {"driver": "file", "filename": sys.argv[3]}})
q.cmd("blockdev-mirror", {"job-id": "m0", "device": "disk", "target": "tgt",
      "sync": "top"})
q.wait_event("BLOCK_JOB_READY", device="m0")
h = nbd.NBD(); h.connect_uri(uri)
h.pwrite(b"\x33" * 4096, 7 << 20)
h.shutdown()
before = before[:7 << 20] + b"\x33" * 4096 + before[(7 << 20) + 4096:]
q.cmd("job-complete", {"id": "m0"})
ev = q.wait_event("BLOCK_JOB_COMPLETED", device="m0")
assert "error" not in ev["data"], ev
after = read_all()
bad = [o for o in range(0, len(after), 65536)
       if after[o:o + 65536] != before[o:o + 65536]]
assert not bad, f"after the pivot the export reads other data at {bad[:4]}"
' "$qmp" "$nbdsock" "$tmp/tgt.qcow2" ||
    fail "the pivot of a sync=top mirror changed what the export reads"
_stop_server "$tmp/daemon.pid"
for f in base top tgt; do
    qemu-img check -q "$tmp/$f.qcow2" || fail "$f.qcow2 is not sound"
done
qemu-img compare -q "$tmp/top.qcow2" "$tmp/tgt.qcow2" ||
    fail "the target with its backing is not the source"
