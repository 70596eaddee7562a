#!/usr/bin/env bash
# While the guest writes the source of a point in time, the reads of a
# background export (the default for a point in time) are paced to its
# x-background-rate (server/nbd/pace.c).  At 32 MiB/s, reading a 64 MiB
# fleecing export while a client writes the disk takes (64 - 4) / 32 s
# (4 MiB: the budget's burst) if the client never pauses for 5 ms; the
# test asks for half that (a loaded machine starves the client at times,
# and reads while it is quiet are not paced), against 0.1-0.2 s unpaced,
# and for the point in time.  The same reads are not paced once the guest is quiet, nor from an
# export with x-priority normal or with x-background-rate 0.  A negative
# rate is refused, in QMP and on the command line.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img
requires_libnbd_python

size=$((64 << 20))
rate=$((32 << 20))
start_live_disk $size
qemu-img create -q -f qcow2 -F raw -b "$tmp/disk.img" "$tmp/fleece.qcow2"
sha_pit=$(sha256sum <"$tmp/disk.img" | cut -d' ' -f1)

jobs_py '
q = QMP(sys.argv[1])
rate = int(sys.argv[3])
q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "fl", "backing": "disk",
                       "file": {"driver": "file", "filename": sys.argv[2]}})
q.cmd("blockdev-backup", {"job-id": "fleece", "device": "disk", "target": "fl",
                          "sync": "none"})
for id, extra in (("pit", {"x-background-rate": rate}),
                  ("pitn", {"x-background-rate": rate, "x-priority": "normal"}),
                  ("pit0", {"x-background-rate": 0})):
    q.cmd("block-export-add", {"type": "nbd", "id": id, "name": id,
                               "node-name": "fl", **extra})
err = q.error("block-export-add", {"type": "nbd", "id": "x", "name": "x",
                                   "node-name": "fl", "x-background-rate": -1})
assert "x-background-rate" in str(err), err
' "$qmp" "$tmp/fleece.qcow2" "$rate" || fail "setup"

# read_timed EXPORT GUEST: reads all of EXPORT with 4 MiB requests, with
# GUEST=1 while a second client writes random 4k blocks of the disk from
# before the first read to after the last; prints the seconds the reads
# took, their sha256 and the guest's writes
read_timed() {
    "$PYTHON" - "$(uri "$nbdsock" disk)" "$(uri "$nbdsock" "$1")" "$size" "$seed" "$2" <<'EOP'
import hashlib, nbd, random, sys, threading, time
disk_uri, pit_uri = sys.argv[1], sys.argv[2]
size, seed, with_guest = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
stop = threading.Event()
wrote = [0]
def guest():
    g = nbd.NBD()
    g.connect_uri(disk_uri)
    rnd = random.Random(seed)
    while not stop.is_set():
        g.pwrite(rnd.randbytes(4096), rnd.randrange(size // 4096) * 4096)
        wrote[0] += 1
    g.shutdown()
t = threading.Thread(target=guest)
if with_guest:
    t.start()
    while wrote[0] < 100:
        time.sleep(0.001)
h = nbd.NBD()
h.connect_uri(pit_uri)
sha = hashlib.sha256()
t0 = time.monotonic()
for off in range(0, size, 4 << 20):
    sha.update(h.pread(4 << 20, off))
took = time.monotonic() - t0
stop.set()
if with_guest:
    t.join()
h.shutdown()
print(f"{took:.3f} {sha.hexdigest()} {wrote[0]}")
EOP
}

least=$($PYTHON -c "print(($size - (4 << 20)) / $rate)")
half=$($PYTHON -c "print($least / 2)")
# check EXPORT GUEST paced|unpaced
check() {
    local took sha wrote
    read -r took sha wrote < <(read_timed "$1" "$2") || fail "reading $1 failed"
    echo "$1 (guest writing: $2): $took s, $wrote guest writes meanwhile"
    [ "$sha" = "$sha_pit" ] || fail "$1 does not read the point in time"
    if [ "$3" = paced ]; then
        $PYTHON -c "import sys; sys.exit($took < $half)" ||
            fail "$1: reads took $took s, paced they take $least s (at least $half)"
    else
        $PYTHON -c "import sys; sys.exit($took >= $half)" ||
            fail "$1: reads took $took s, as if paced (guest writing: $2)"
    fi
}
check pit 1 paced
check pit 0 unpaced
check pitn 1 unpaced
check pit0 1 unpaced

# the command line takes the member too, and refuses what QMP refuses
out=$("$SNAPNBD" --blockdev "driver=null-co,node-name=n0,size=1048576" \
    --nbd-server "addr.type=unix,addr.path=$tmp/cli.sock" \
    --export type=nbd,id=e1,node-name=n0,x-background-rate=-5 2>&1) &&
    fail "a negative x-background-rate was accepted on the command line"
echo "$out" | grep -q "x-background-rate" ||
    fail "the command line's refusal does not name x-background-rate: $out"
