#!/usr/bin/env bash
# Unaligned writes (odd offsets and lengths, crossing sector and page
# boundaries, and many small ones in flight at once inside the same
# sector) all land exactly: the export and the file match a reference
# kept in memory.  With --cache=none (O_DIRECT) they go through
# read-modify-write in block/io.c; that half is skipped where O_DIRECT is
# not supported (tmpfs).
source "${srcdir:-$(dirname "$0")}/functions.sh"

cat >"$tmp/check.py" <<'EOP'
import random, sys, nbd
uri, img = sys.argv[1:3]
size = 4 * 1024 * 1024
rnd = random.Random(12345)
ref = bytearray(size)
h = nbd.NBD()
h.connect_uri(uri)
assert h.get_size() == size

def write(off, data, flags=0):
    h.pwrite(data, off, flags)
    ref[off:off + len(data)] = data

def pattern(n, seed):
    return bytes((seed + i * 7) & 0xff for i in range(n))

# Fixed odd cases: offsets around 512/4096 boundaries, lengths 1..5000.
n = 0
for off in (0, 1, 511, 512, 513, 4095, 4096, 4097, 8191, 65535, size - 5001):
    for ln in (1, 3, 5000, 511, 4097):
        if off + ln <= size:
            n += 1
            write(off, pattern(ln, n), nbd.CMD_FLAG_FUA if n % 3 == 0 else 0)
# The very last byte and the first one.
write(size - 1, b"\xfe")
write(0, b"\xef")
# Random unaligned writes, some overlapping earlier ones.
for i in range(300):
    ln = rnd.choice((1, 2, 3, 17, 100, 513, 1000, 4095, 4097, 9000, 70000))
    off = rnd.randrange(0, size - ln)
    write(off, rnd.randbytes(ln))
# Unaligned write-zeroes.
for off, ln in ((3, 5), (4093, 7), (100001, 70001)):
    h.zero(ln, off)
    ref[off:off + ln] = bytes(ln)

# Many writes in flight at once, each 1..37 bytes, disjoint but sharing
# sectors: a read-modify-write that is not serialised loses some of them.
base = 3 * 1024 * 1024 + 123
cookies, pos = [], base
for i in range(512):
    ln = 1 + i % 37
    data = bytes([(i * 5 + 1) & 0xff]) * ln
    cookies.append(h.aio_pwrite(data, pos))
    ref[pos:pos + ln] = data
    pos += ln + (i % 2)        # sometimes adjacent, sometimes a gap
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    # retires the command, raising its error if it failed
    assert h.aio_command_completed(c), "write not completed"
h.flush()

got = h.pread(size, 0)
if got != ref:
    bad = next(i for i in range(size) if got[i] != ref[i])
    raise AssertionError(f"export differs from the reference at byte {bad}")
# Unaligned reads return the exact bytes.
for off, ln in ((1, 1), (511, 2), (4095, 4099), (base + 5, 1001)):
    assert h.pread(ln, off) == ref[off:off + ln], (off, ln)
h.shutdown()
with open(img, "rb") as f:
    assert f.read() == ref, "the file differs from the reference"
EOP

n=0
run() {
    n=$((n + 1))
    truncate -s 4M "$tmp/disk$n.img"
    start_server "$tmp/sock$n" "$tmp/pid$n" -f raw -t "$@" "$tmp/disk$n.img"
    $PYTHON "$tmp/check.py" "$(uri "$tmp/sock$n")" "$tmp/disk$n.img" ||
        fail "unaligned writes with options: $*"
}

run
run --aio=io_uring
if dd if=/dev/zero of="$tmp/odirect" bs=4096 count=1 oflag=direct \
    status=none 2>/dev/null; then
    run --cache=none
    run --cache=none --aio=io_uring
    run --cache=directsync --aio=threads
else
    echo "$0: O_DIRECT is not supported here: --cache=none half skipped"
fi
