#!/usr/bin/env bash
# Large READs of a qcow2 image are spliced from the image file's page cache
# (qcow2_pread_pipe) where the range maps to data clusters, contiguous on
# the host or not, or to unallocated clusters the backing node can splice;
# zero clusters, compressed clusters, zeroes past a short backing file,
# small clusters and O_DIRECT are read by copying.  Whatever the path, the bytes are the
# ones qemu-img reads from the same image: simple and structured replies,
# NBD_CMD_FLAG_DF, odd offsets and lengths, up to 32 MiB.  strace shows the
# splices from the image file (none without the driver callback).  Reads
# racing allocating, copy-on-write and in-place writes see old or new
# data of their own clusters only, ranges not written read exactly, and
# the image is the model's and clean in qemu-img check afterwards.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "${srcdir:-$(dirname "$0")}/qcow2-functions.sh"
requires qemu-io

export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1
MIB=$((1 << 20))

# 40 MiB of distinct bytes that compress (each 4 KiB: 2 KiB random, then
# 2 KiB of one byte; qemu-img convert -c stores incompressible clusters
# uncompressed).
$PYTHON -c '
import random, sys
random.seed(11)
with open(sys.argv[1], "wb") as f:
    for i in range(10240):
        f.write(random.randbytes(2048) + bytes([i % 251]) * 2048)
' "$tmp/rand.raw"

# writes_via_qemu IMG SCRIPT: runs python SCRIPT (with a client C of a
# writable qemu-nbd on IMG, and RAND, the 40 MiB of random bytes), so that
# QEMU lays the clusters out in the order the script writes them.
writes_via_qemu() {
    local img=$1 sock=$tmp/qemu-$(basename "$1").sock
    start_qemu_writable "$sock" "$sock.pid" "$img" -f qcow2
    SOCK=$sock $PYTHON -c '
import os
import nbd_raw as N
C = N.connect(os.environ["SOCK"])
with open(os.environ["RAND"], "rb") as f:
    RAND = f.read()
exec(os.environ["SCRIPT"])
C.disconnect()
' || fail "writing $img with qemu-nbd"
    _stop_server "$sock.pid"
}
export RAND=$tmp/rand.raw

# full: fully allocated, contiguous (qemu-img convert).
qemu-img convert -f raw -O qcow2 "$tmp/rand.raw" "$tmp/full.qcow2"

# frag: 64 KiB clusters written last to first, so that no two guest
# neighbours are host neighbours.
qemu-img create -q -f qcow2 "$tmp/frag.qcow2" 40M
SCRIPT='
for off in range(len(RAND) - 65536, -1, -65536):
    assert C.write(off, RAND[off:off + 65536]) == 0
' writes_via_qemu "$tmp/frag.qcow2"
qemu-img map --output=json "$tmp/frag.qcow2" | grep -c '"data": true' \
    >"$tmp/frag.extents"
[ "$(cat "$tmp/frag.extents")" -gt 600 ] ||
    fail "frag.qcow2 is not fragmented: $(cat "$tmp/frag.extents") extents"

# overlay over a qcow2 backing of 32 MiB (the overlay is 40: the last 8
# read as zeroes) with data written in parts of clusters (copy-on-write),
# zero clusters and discarded clusters.
qemu-img convert -f raw -O qcow2 "$tmp/rand.raw" "$tmp/base.qcow2"
qemu-img resize -q --shrink -f qcow2 "$tmp/base.qcow2" 32M
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$tmp/overlay.qcow2" 40M
SCRIPT='
import random
rng = random.Random(5)
for i in range(60):
    off, n = rng.randrange(0, 40 << 20), rng.randrange(1, 600000)
    n = min(n, (40 << 20) - off)
    kind = rng.randrange(4)
    if kind < 2:
        src = rng.randrange(0, len(RAND) - n)
        assert C.write(off, RAND[src:src + n]) == 0
    elif kind == 2:
        assert C.cmd(N.CMD_WRITE_ZEROES, offset=off, length=n) == 0
    else:
        assert C.cmd(N.CMD_TRIM, offset=off, length=n) == 0
' writes_via_qemu "$tmp/overlay.qcow2"

# raw backing: unallocated clusters splice from a raw file.
cp "$tmp/rand.raw" "$tmp/base.raw"
truncate -s 30M "$tmp/base.raw"
qemu-img create -q -f qcow2 -b base.raw -F raw "$tmp/overraw.qcow2" 40M
SCRIPT='
for off in range(0, 40 << 20, 3 << 20):
    assert C.write(off + 4096, RAND[off:off + 100000]) == 0
' writes_via_qemu "$tmp/overraw.qcow2"

# comp: compressed clusters, with some rewritten as normal ones.
qemu-img convert -c -f raw -O qcow2 "$tmp/rand.raw" "$tmp/comp.qcow2"
SCRIPT='
for off in (0, 20 << 20):
    assert C.write(off, RAND[-off - 2000000:-off - 1]) == 0
' writes_via_qemu "$tmp/comp.qcow2"

# small: 512-byte clusters, fragmented (always read by copying).
qemu-img create -q -f qcow2 -o cluster_size=512 "$tmp/small.qcow2" 4M
SCRIPT='
for off in range((4 << 20) - 8192, -1, -8192):
    assert C.write(off, RAND[off:off + 8192]) == 0
' writes_via_qemu "$tmp/small.qcow2"

IMAGES="full frag overlay overraw comp small"
for img in $IMAGES; do
    qemu-img convert -f qcow2 -O raw "$tmp/$img.qcow2" "$tmp/$img.ref"
    start_server "$tmp/$img.sock" "$tmp/$img.pid" -r -t -f qcow2 -e 0 \
        "$tmp/$img.qcow2"
done
# O_DIRECT (where $tmp has it): no splice, the same bytes.
direct=
if dd if=/dev/zero of="$tmp/direct" bs=4096 count=1 oflag=direct 2>/dev/null
then
    direct=direct
    ln -s full.ref "$tmp/direct.ref"
    start_server "$tmp/direct.sock" "$tmp/direct.pid" -r -t -f qcow2 -e 0 \
        --cache=none "$tmp/full.qcow2"
fi

checks='
import os
import nbd_raw as N
MIB = 1 << 20


def sizes(size):
    s = [(0, 65536), (4096, 65537), (0, MIB), (1, MIB), (4095, MIB + 3),
         (65535, 3 * MIB + 12345), (3 * MIB, 4 * MIB + 512),
         (size - MIB, MIB), (size - 333333, 333333)]
    if size > 33 * MIB:
        s.append((100, 32 * MIB))
    # every 768 KiB: data, zero, compressed and unallocated neighbours
    s += [(off, 1000000) for off in range(0, size - 1000000, 786432 + 4096)]
    return s


def reads_like_qemu(name):
    with open(os.environ["TMP"] + "/" + name + ".ref", "rb") as f:
        ref = f.read()
    sock = os.environ["TMP"] + "/" + name + ".sock"
    for structured, flags in ((False, 0), (True, 0), (True, N.CMD_FLAG_DF)):
        c = N.connect(sock, structured=structured, timeout=60)
        for off, n in sizes(len(ref)):
            if n > 32 * MIB or off + n > len(ref):
                continue
            assert c.read(off, n, flags) == ref[off:off + n], \
                "%s structured=%s flags=%d %d+%d" % (name, structured, flags,
                                                     off, n)
        c.disconnect()


def check(name):
    f = lambda: reads_like_qemu(name)
    f.__name__ = "reads_like_qemu_" + name
    return f


N.run_checks(*[check(n) for n in os.environ["IMAGES"].split()])
'
TMP=$tmp IMAGES="$IMAGES $direct" $PYTHON -c "$checks" || fail "qcow2 reads"

# The path: splices from a file (the only splices with an input offset)
# while 1 MiB reads are served: about one per read of contiguous data, one
# per cluster when fragmented, none for compressed clusters, 512-byte
# clusters or O_DIRECT; -1 when strace cannot attach to the server (a
# sibling, under kernel.yama.ptrace_scope >= 1 without privileges).
count_splices() {
    local img=$1 first_mib=$2 reads=$3 pid trace=$tmp/$1.trace t
    pid=$(cat "$tmp/$img.pid")
    strace -qq -f -p "$pid" -e trace=splice -o "$trace" 2>/dev/null &
    local strace_pid=$!
    for t in $(seq 40); do
        grep -q "^TracerPid:[[:space:]]*[1-9]" /proc/"$pid"/status && break
        kill -0 "$strace_pid" 2>/dev/null || break
        sleep 0.05
    done
    if ! grep -q "^TracerPid:[[:space:]]*[1-9]" /proc/"$pid"/status; then
        kill "$strace_pid" 2>/dev/null
        wait "$strace_pid" 2>/dev/null
        echo -1
        return
    fi
    sleep 0.3 # strace attaches the other threads after the first
    SOCK=$tmp/$img.sock FIRST=$first_mib READS=$reads $PYTHON -c '
import os
import nbd_raw as N
c = N.connect(os.environ["SOCK"], structured=False, timeout=60)
first = int(float(os.environ["FIRST"]) * (1 << 20))
for i in range(int(os.environ["READS"])):
    c.read(first + (i << 20), 1 << 20)
c.disconnect()
' || fail "reads of $img under strace"
    kill "$strace_pid"
    wait "$strace_pid" 2>/dev/null
    t=$(grep -cE 'splice\([0-9]+, \[[0-9]+\]' "$trace")
    echo "$img: $reads reads of 1 MiB, $t splices from a file" >&2
    echo "$t"
}

# expect_splices IMG FIRST_MIB READS CONDITION: CONDITION (arithmetic, on
# n) must hold for the splices of READS reads of 1 MiB from FIRST_MIB.
expect_splices() {
    local n
    n=$(count_splices "$1" "$2" "$3")
    if [ "$n" -lt 0 ]; then
        echo "$0: strace cannot attach: $1's splices are not counted"
        return 0
    fi
    (($4)) || fail "$1: $n splices from a file for $3 reads, want $4"
}
if command -v strace >/dev/null; then
    expect_splices full 0 16 "n >= 16 && n <= 64"
    expect_splices frag 0 16 "n >= 256" # one per 64 KiB cluster
    expect_splices comp 2.5 16 "n == 0" # 2-20 MiB: compressed clusters
    expect_splices small 0 3 "n == 0"
    if [ -n "$direct" ]; then
        expect_splices direct 0 16 "n == 0"
    fi
    expect_splices overraw 0 16 "n >= 16"
else
    echo "$0: no strace: the splices are not counted"
fi

# Reads racing writes on a writable image: an overlay of a raw backing
# whose 64 KiB block b holds byte b + 1.  Two writers each own half of
# blocks 0-31 and write whole blocks (allocation), parts of blocks
# (copy-on-write from the backing or in place) and zeroes (NO_HOLE), each
# with a byte value no other block ever gets; readers read 1 MiB ranges
# over them meanwhile: each byte of block b must be one block b ever held.
# Blocks 32-63 are written first, last to first, and must read exactly.
$PYTHON -c '
import sys
with open(sys.argv[1], "wb") as f:
    f.write(b"".join(bytes([b + 1]) * 65536 for b in range(64)))
' "$tmp/race-base.raw"
qemu-img create -q -f qcow2 -b race-base.raw -F raw "$tmp/race.qcow2" 4M
start_server "$tmp/race.sock" "$tmp/race.pid" -t -f qcow2 -e 0 \
    "$tmp/race.qcow2"
SOCK=$tmp/race.sock OUT=$tmp/race.model $PYTHON -c '
import os, random, threading
import nbd_raw as N
sock, B = os.environ["SOCK"], 65536
model = bytearray(b"".join(bytes([b + 1]) * B for b in range(64)))
valid = [[b + 1, 0] for b in range(64)]
rng = random.Random(9)
stable = bytearray(rng.randbytes(32 * B))
c = N.connect(sock)
for b in range(63, 31, -1):
    data = stable[(b - 32) * B:(b - 31) * B]
    assert c.write(b * B, data) == 0
    model[b * B:(b + 1) * B] = data
c.disconnect()
errors, stop, reads = [], threading.Event(), [0]


def writer(first):
    try:
        w = N.connect(sock, structured=True)
        r = random.Random(first)
        for gen in range(30):
            for b in range(first, 32, 2):
                # 65..255, never that of another block (32 apart)
                v = 65 + gen % 6 * 32 + b
                if v > 255:
                    continue
                if v not in valid[b]:
                    valid[b].append(v)
                kind = r.randrange(3)
                if kind == 0:
                    off, n = b * B, B
                    assert w.write(off, bytes([v]) * n) == 0
                elif kind == 1:
                    off = b * B + r.randrange(B - 1)
                    n = r.randrange(1, b * B + B - off + 1)
                    assert w.write(off, bytes([v]) * n) == 0
                else:
                    off, n = b * B + r.randrange(2) * 32768, 32768
                    assert w.cmd(N.CMD_WRITE_ZEROES, flags=N.CMD_FLAG_NO_HOLE,
                                 offset=off, length=n) == 0
                    v = 0
                model[off:off + n] = bytes([v]) * n
        w.disconnect()
    except Exception as e:
        errors.append("writer %d: %r" % (first, e))


def reader(seed):
    try:
        c = N.connect(sock, structured=seed % 2 == 1, timeout=60)
        r = random.Random(seed)
        while not stop.is_set():
            off = r.randrange(0, 33 * B) & ~(r.choice((4095, 0)))
            n = min(r.choice((MIB, MIB + 1, 300000)), 64 * B - off)
            data = c.read(off, n)
            reads[0] += 1
            for b in range(off // B, (off + n - 1) // B + 1):
                lo, hi = max(off, b * B), min(off + n, (b + 1) * B)
                part = data[lo - off:hi - off]
                if b >= 32:
                    assert part == model[lo:hi], "block %d changed" % b
                else:
                    stray = part.translate(None, bytes(sorted(valid[b])))
                    assert not stray, "block %d: bytes %r" % (b, set(stray))
        c.disconnect()
    except Exception as e:
        errors.append("reader %d: %r" % (seed, e))
        stop.set()


MIB = 1 << 20
readers = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
writers = [threading.Thread(target=writer, args=(f,)) for f in range(2)]
for t in readers + writers:
    t.start()
for t in writers:
    t.join()
stop.set()
for t in readers:
    t.join()
assert not errors, errors
print("%d reads raced the writes" % reads[0])
c = N.connect(sock)
assert c.read(0, 64 * B) == model, "final read differs from the model"
c.disconnect()
with open(os.environ["OUT"], "wb") as f:
    f.write(model)
' || fail "reads racing writes"
_stop_server "$tmp/race.pid"
qemu-img check -q "$tmp/race.qcow2" || fail "race.qcow2: qemu-img check"
qemu-img convert -f qcow2 -O raw "$tmp/race.qcow2" "$tmp/race.ref"
cmp "$tmp/race.ref" "$tmp/race.model" || fail "race.qcow2 is not the model"
for img in $IMAGES; do
    qemu-img check -q "$tmp/$img.qcow2" || fail "$img.qcow2: qemu-img check"
done
exit 0
