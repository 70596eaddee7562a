#!/usr/bin/env bash
# The throttle filter with QEMU's throttle-group objects: iops-total=50
# gives 50 IOPS (within 20 %), shared by every node of the group (two
# exports read at once get 50 together, not 50 each); bps-total limits
# bytes; iops-read only reads; a drained section is not held up by
# requests waiting for their budget; a group made with QMP object-add works the same, with a burst
# (QEMU's iops-read-max, iops-read-max-length), object-del
# refuses a group in use; QEMU's checks of the limits.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires_libnbd_python

# size is an int in the schema (qemu-storage-daemon refuses "64M" too)
null="file.driver=null-co,file.size=67108864,file.read-zeroes=off"
start_daemon \
    --object throttle-group,id=tg0,x-iops-total=50 \
    --blockdev "driver=throttle,node-name=a,throttle-group=tg0,$null" \
    --blockdev "driver=throttle,node-name=b,throttle-group=tg0,$null" \
    --blockdev "driver=throttle,node-name=c,limits.bps-total=1048576,$null" \
    --blockdev "driver=throttle,node-name=w,limits.iops-read=20,$null" \
    --blockdev "driver=throttle,node-name=s,limits.bps-total=4096,$null" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=ea,node-name=a,name=a \
    --export type=nbd,id=eb,node-name=b,name=b \
    --export type=nbd,id=ec,node-name=c,name=c \
    --export type=nbd,id=ew,node-name=w,name=w,writable=on \
    --export type=nbd,id=es,node-name=s,name=s

cat >"$tmp/throttle.py" <<'EOP'
import sys, threading, time
import nbd
qmp, sock = sys.argv[1], sys.argv[2]
KiB, MiB = 1 << 10, 1 << 20

def handle(name):
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///{name}?socket={sock}")
    return h

def reads(h, n, size):
    for i in range(n):
        h.pread(size, (i * size) % (32 * MiB))

def rate(names, n, size=4 * KiB):
    """Requests (or bytes) per second of n reads per export, in parallel."""
    hs = [handle(x) for x in names]
    hs[0].pread(size, 0)   # connected; the burst allowance may be spent
    start = time.monotonic()
    ts = [threading.Thread(target=reads, args=(h, n, size)) for h in hs]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return n * len(hs) / (time.monotonic() - start)

def within(what, value, target):
    print(f"{what}: {value:.1f} (limit {target})")
    assert 0.8 * target <= value <= 1.2 * target, \
        f"{what}: {value:.1f}, not {target} within 20 %"

within("iops, one export", rate(["a"], 150), 50)
within("iops, two exports of one group", rate(["a", "b"], 75), 50)
within("MiB/s, bps-total=1M", rate(["c"], 48, 64 * KiB) * 64 / 1024, 1)

# iops-read limits reads only: writes pass at full speed.
h = handle("w")
start = time.monotonic()
for i in range(100):
    h.pwrite(bytes(4 * KiB), i * 4 * KiB)
writes = 100 / (time.monotonic() - start)
assert writes > 100, f"writes throttled by iops-read: {writes:.1f}/s"
within("read iops, iops-read=20", rate(["w"], 40), 20)

# A drained section (a transaction drains every node) lets a request
# waiting for its budget through at once, as QEMU does: the second 64 KiB
# read at 4 KiB/s would hold it for 16 s.
q = QMP(qmp)
h = handle("s")
bufs = [nbd.Buffer(64 * KiB) for i in range(2)]
for i, b in enumerate(bufs):
    h.aio_pread(b, i * 64 * KiB)
time.sleep(0.5)
start = time.monotonic()
q.cmd("transaction", {"actions": [{"type": "block-dirty-bitmap-add",
                                   "data": {"node": "a", "name": "bm"}}]})
took = time.monotonic() - start
assert took < 2, f"the transaction waited {took:.1f} s for a throttled read"
while h.aio_in_flight() > 0:   # the read let through is done
    h.poll(1000)
    assert time.monotonic() - start < 2, "the throttled read still waits"

# A group made over QMP, limits as QEMU's object-add gives them.
q.cmd("object-add", {"qom-type": "throttle-group", "id": "tg1",
                     "limits": {"iops-read": 40, "iops-read-max": 80,
                                "iops-read-max-length": 1}})
q.cmd("blockdev-add", {"driver": "throttle", "node-name": "d",
                       "throttle-group": "tg1",
                       "file": {"driver": "null-co", "read-zeroes": False}})
q.cmd("block-export-add", {"type": "nbd", "id": "ed", "node-name": "d",
                           "name": "d"})
# A burst of 80 first (max 80 for 1 s), then 40 IOPS.
burst = rate(["d"], 80)
assert burst > 150, f"a burst of 80 requests ran at {burst:.1f} IOPS"
within("iops after the burst, group from object-add", rate(["d"], 80), 40)
_, desc = q.error("object-del", {"id": "tg1"})
assert desc == "object 'tg1' is in use, can not be deleted", desc
_, desc = q.error("object-add", {"qom-type": "throttle-group", "id": "tg1"})
assert "duplicate" in desc, desc
_, desc = q.error("blockdev-add", {"driver": "throttle", "node-name": "e",
                                   "throttle-group": "nope",
                                   "file": {"driver": "null-co"}})
assert desc == "Throttle group 'nope' does not exist", desc
for limits, words in (({"iops-total": 10, "iops-read": 5}, "same time"),
                      ({"bps-total-max": 10}, "require corresponding"),
                      ({"bps-total": 10, "bps-total-max": 5}, "lower than"),
                      ({"iops-total": 10, "iops-total-max-length": 3},
                       "burst length set without burst rate")):
    _, desc = q.error("object-add", {"qom-type": "throttle-group",
                                     "id": "bad", "limits": limits})
    assert words in desc, (limits, desc)
# The rate() clients have closed, but the server may not have seen them
# go yet: safe mode refuses until it has.
for _ in range(100):
    if "error" not in q.execute("block-export-del", {"id": "ed"}):
        break
    time.sleep(0.05)
for _ in range(100):
    if not any(e["id"] == "ed" for e in q.cmd("query-block-exports")):
        break
    time.sleep(0.05)
q.cmd("blockdev-del", {"node-name": "d"})
q.cmd("object-del", {"id": "tg1"})
_, desc = q.error("object-del", {"id": "tg1"})
assert desc == "object 'tg1' not found", desc
EOP
jobs_py "exec(open('$tmp/throttle.py').read())" "$qmp" "$nbdsock" ||
    fail "throttling"

# Bad --object limits stop the server at startup with QEMU's words.
out=$("$SNAPNBD" --qmp "unix:$tmp/bad.sock,server,wait=off" \
    --object throttle-group,id=x,x-iops-total=10,x-iops-read=5 2>&1) &&
    fail "conflicting limits accepted"
[[ $out == *"cannot be used at the same time"* ]] || fail "message: $out"
exit 0
