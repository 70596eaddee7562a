#!/usr/bin/env bash
# NBD_CMD_TRIM and NBD_CMD_WRITE_ZEROES, checked against qemu-nbd 7.2:
#  --discard=unmap: trim and write-zeroes read back as zeroes and punch a
#    hole in the file; write-zeroes with NO_HOLE zeroes but keeps the
#    blocks allocated.
#  --discard=ignore (default): trim is accepted but leaves the data in
#    place; write-zeroes still reads back as zeroes and never punches a
#    hole, NO_HOLE or not (QEMU since 8.0: discard=off never unmaps;
#    qemu-nbd 7.2 still punched one).
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires fallocate

# Punching holes must work here, or the allocation checks mean nothing.
truncate -s 1M "$tmp/probe"
fallocate -l 1M "$tmp/probe" && fallocate -p -o 0 -l 64K "$tmp/probe" ||
    { echo "$0: skipped: no hole punching on this filesystem"; exit 77; }

cat >"$tmp/check.py" <<'EOP'
import os, sys, nbd
uri, img, mode = sys.argv[1:4]
K = 1024

def blocks():
    """Allocated 1K units of the image (st_blocks counts 512 bytes).
    SEEK_HOLE cannot tell: ext4 reports zeroed (unwritten) extents as holes."""
    return os.stat(img).st_blocks // 2

h = nbd.NBD()
h.connect_uri(uri)
assert h.can_trim(), "trim must be advertised (qemu-nbd does, even ignored)"
assert h.can_zero(), "write zeroes must be advertised"

h.pwrite(b"\xab" * (1024 * K), 0)
h.flush()
b = blocks()
assert b >= 1024, f"written data not allocated ({b}K)"

# trim [0, 256K)
h.trim(256 * K, 0)
h.flush()
if mode == "unmap":
    assert h.pread(256 * K, 0) == bytes(256 * K), "trimmed range not zero"
    assert blocks() == b - 256, f"trim did not punch a hole ({blocks()}K)"
else:
    assert h.pread(256 * K, 0) == b"\xab" * (256 * K), \
        "trim with --discard=ignore must leave the data in place"
    assert blocks() == b, "trim with --discard=ignore deallocated"

# write zeroes [256K, 512K), holes allowed
b = blocks()
h.zero(256 * K, 256 * K)
h.flush()
assert h.pread(256 * K, 256 * K) == bytes(256 * K), "zeroed range not zero"
punched = blocks() == b - 256

# write zeroes [512K, 768K) with NO_HOLE: zero, still allocated
b = blocks()
h.zero(256 * K, 512 * K, nbd.CMD_FLAG_NO_HOLE)
h.flush()
assert h.pread(256 * K, 512 * K) == bytes(256 * K), "NO_HOLE range not zero"
assert blocks() == b, "write zeroes with NO_HOLE deallocated"

# untouched [768K, 1M) keeps its data
assert h.pread(256 * K, 768 * K) == b"\xab" * (256 * K), "neighbour changed"

# unaligned zeroing: exact bytes only
h.zero(3, 768 * K + 5)
assert h.pread(16, 768 * K) == b"\xab" * 5 + bytes(3) + b"\xab" * 8

# Checked last: write zeroes without NO_HOLE deallocates only when discards
# are honoured.
if mode == "unmap":
    assert punched, "write zeroes without NO_HOLE did not punch a hole"
else:
    assert not punched, "write zeroes punched a hole with --discard=ignore"
h.shutdown()
EOP

for mode in unmap ignore; do
    img=$tmp/disk-$mode.img
    truncate -s 4M "$img"
    start_server "$tmp/sock-$mode" "$tmp/pid-$mode" -f raw -t \
        --discard="$mode" "$img"
    $PYTHON "$tmp/check.py" "$(uri "$tmp/sock-$mode")" "$img" "$mode" ||
        fail "--discard=$mode: trim/zero check failed"
done
