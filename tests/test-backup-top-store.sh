#!/usr/bin/env bash
# sync=top counts only what it copies: a drive-backup of a qcow2 overlay
# whose top layer holds 1.5 MiB of an 8 MiB disk, slowed down, while an NBD
# client writes over chunks the top does not hold (skipped: the backup's
# backing file has them) and over chunks it holds (copied before the
# write).  The job's copy-before-write counters (x-cbw of query-jobs) show
# the top's bytes and nothing more: store-bytes, store-peak-bytes and
# copied-bytes all 1.5 MiB, while the job runs no more than that, and no
# copy-before-write found the store full.  The backup is the overlay as it
# was.  (block-copy's bounded store with sync=top, which the job does not
# offer, is unit-backup's /backup/sync-top-store.)
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img qemu-io
requires_libnbd_python

size=$((8 << 20))
qemu-img create -q -f raw "$tmp/base.img" $size
qemu-io -f raw -c "write -P 0x11 0 $size" "$tmp/base.img" >/dev/null ||
    fail "cannot fill the base"
qemu-img create -q -f qcow2 -F raw -b "$tmp/base.img" "$tmp/top.qcow2" $size
qemu-io -f qcow2 -c "write -P 0x22 1M 1M" -c "write -P 0x33 5M 512k" \
    "$tmp/top.qcow2" >/dev/null || fail "cannot prepare the overlay"
top_bytes=$(( (1 << 20) + (512 << 10) ))
cp "$tmp/top.qcow2" "$tmp/ref.qcow2"

start_daemon \
    --blockdev "driver=qcow2,node-name=disk,file.driver=file,file.filename=$tmp/top.qcow2" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=e0,node-name=disk,name=disk,writable=on

jobs_py '
import nbd
qmp, sock, top_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
q = QMP(qmp)

def x_cbw():
    for j in q.cmd("query-jobs"):
        if j["id"] == "t0":
            return j["status"], j["x-cbw"]
    raise AssertionError("no job t0")

def check(st, where, final):
    for k in ("store-bytes", "store-peak-bytes", "copied-bytes"):
        if final:
            assert st[k] == top_bytes, f"{where}: {k} {st[k]}, not {top_bytes}: {st}"
        else:
            assert st[k] <= top_bytes, f"{where}: {k} {st[k]} > {top_bytes}: {st}"
    assert st["store-full"] == 0, f"{where}: {st}"

# 512 KiB/s: the background copy of the top takes about 3 s.
q.cmd("drive-backup", {"job-id": "t0", "device": "disk",
      "target": sys.argv[4], "format": "qcow2", "mode": "absolute-paths",
      "sync": "top", "speed": 512 * 1024, "auto-dismiss": False})
h = nbd.NBD()
h.connect_uri(f"nbd+unix:///disk?socket={sock}")
# Not in the top: skipped.  In the top (the end of each run, which the
# background reaches last): copied before the write.
for off, ln in ((0, 64 << 10), (3 << 20, 256 << 10), (7 << 20, 1 << 20),
                ((2 << 20) - (64 << 10), 64 << 10),
                ((5 << 20) + (448 << 10), 64 << 10)):
    h.pwrite(b"\x44" * ln, off)
    check(x_cbw()[1], f"after the write at {off}", False)
h.shutdown()
deadline = time.monotonic() + 60
while x_cbw()[0] != "concluded":
    assert time.monotonic() < deadline, f"the job did not end: {x_cbw()}"
    check(x_cbw()[1], "while the job runs", False)
    time.sleep(0.1)
check(x_cbw()[1], "at the end", True)
q.cmd("job-dismiss", {"id": "t0"})
' "$qmp" "$nbdsock" $top_bytes "$tmp/backup.qcow2" ||
    fail "the counters of sync=top count more than the top layer"

qemu-img check -q "$tmp/backup.qcow2" || fail "the backup is not sound"
qemu-img compare -q "$tmp/ref.qcow2" "$tmp/backup.qcow2" ||
    fail "the backup is not the overlay as it was when the job started"
