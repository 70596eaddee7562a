#!/usr/bin/env bash
# drive-mirror creates its target as drive-backup does and mirrors into it:
#  - sync=full, mode absolute-paths, format qcow2: a new flat image; after
#    job-complete the export writes into it and it equals the disk;
#  - sync=top of an overlay: the new image names the overlay's backing
#    file, and after the switch reads what the overlay read;
#  - mode=existing into a raw file made beforehand; cancel once ready
#    leaves it a copy;
#  - node-name names the new node while the job runs.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img qemu-io
requires_libnbd_python

size=$((8 << 20))
qemu-img create -q -f qcow2 "$tmp/base.qcow2" $size
qemu-io -f qcow2 -c "write -P 0xbb 0 $size" "$tmp/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -F qcow2 -b "$tmp/base.qcow2" "$tmp/top.qcow2" $size
qemu-io -f qcow2 -c "write -P 0x11 1M 1M" -c "write -z 3M 64k" \
    "$tmp/top.qcow2" >/dev/null
make_disk "$tmp/flat.raw" $size "$seed"
qemu-img convert -f raw -O qcow2 "$tmp/flat.raw" "$tmp/flat.qcow2"
truncate -s $size "$tmp/existing.raw"

start_daemon \
    --blockdev "driver=qcow2,node-name=flat,file.driver=file,file.filename=$tmp/flat.qcow2" \
    --blockdev "driver=qcow2,node-name=top,file.driver=file,file.filename=$tmp/top.qcow2" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=e0,node-name=flat,name=flat,writable=on \
    --export type=nbd,id=e1,node-name=top,name=top,writable=on

jobs_py '
import nbd
q = QMP(sys.argv[1])
sock, tmp = sys.argv[2], sys.argv[3]
def read(name):
    h = nbd.NBD(); h.connect_uri(f"nbd+unix:///{name}?socket={sock}")
    data = h.pread(h.get_size(), 0); h.shutdown()
    return data
def complete(job):
    q.wait_event("BLOCK_JOB_READY", device=job)
    q.cmd("job-complete", {"id": job})
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device=job)
    assert "error" not in ev["data"], ev

before = read("flat")
q.cmd("drive-mirror", {"job-id": "m1", "device": "flat", "sync": "full",
      "target": f"{tmp}/flat-new.qcow2", "format": "qcow2",
      "node-name": "flat-new"})
names = [n["node-name"] for n in q.cmd("query-named-block-nodes")]
assert "flat-new" in names, names
complete("m1")
h = nbd.NBD(); h.connect_uri(f"nbd+unix:///flat?socket={sock}")
h.pwrite(b"\xee" * 4096, 0); h.flush(); h.shutdown()
assert read("flat") == b"\xee" * 4096 + before[4096:], "flat lost data"

before = read("top")
q.cmd("drive-mirror", {"job-id": "m2", "device": "top", "sync": "top",
      "target": f"{tmp}/top-new.qcow2"})
complete("m2")
assert read("top") == before, "the sync=top switch changed the data"

q.cmd("drive-mirror", {"job-id": "m3", "device": "top", "sync": "full",
      "target": f"{tmp}/existing.raw", "mode": "existing",
      "format": "raw"})
q.wait_event("BLOCK_JOB_READY", device="m3")
q.cmd("block-job-cancel", {"device": "m3"})
ev = q.wait_event("BLOCK_JOB_COMPLETED", device="m3")
assert "error" not in ev["data"], ev
with open(f"{tmp}/top-data.raw", "wb") as f:
    f.write(before)
' "$qmp" "$nbdsock" "$tmp" || fail "seed $seed: drive-mirror failed"
_stop_server "$tmp/daemon.pid"

for f in flat flat-new top top-new base; do
    qemu-img check -q "$tmp/$f.qcow2" || fail "$f.qcow2 is not sound"
done
qemu-img info "$tmp/top-new.qcow2" | grep -q "^backing file: $tmp/base.qcow2" ||
    fail "the sync=top target does not name the overlay's backing file"
qemu-img compare -q "$tmp/top.qcow2" "$tmp/top-new.qcow2" ||
    fail "the sync=top target is not the overlay"
qemu-img compare -q -f raw -F raw "$tmp/existing.raw" "$tmp/top-data.raw" ||
    fail "the existing target is not a copy after cancel"
qemu-io -f qcow2 -c "read -P 0xee 0 4096" "$tmp/flat-new.qcow2" >/dev/null ||
    fail "the write after the switch is not in the new image"
