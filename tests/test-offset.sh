#!/usr/bin/env bash
# -o OFFSET exports the file from OFFSET on: the export is (file size -
# OFFSET) bytes, export byte 0 is file byte OFFSET, writes land at
# OFFSET + their offset, the bytes before OFFSET are never touched, and
# block status is shifted by OFFSET too.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires nbdinfo qemu-io

img=$tmp/disk.img
truncate -s 8M "$img"
off=$((1024 * 1024))
# Header region [0, 1M) = 0xee; file byte 1M+64K.. = 0x42 (export 64K..)
qemu-io -f raw -c 'write -P 0xee 0 1M' -c 'write -P 0x42 1088K 64K' "$img" \
    >/dev/null

start_server "$tmp/sock" "$tmp/pid" -f raw -t -o $off "$img"

size=$(nbdinfo --size "$(uri "$tmp/sock")") || fail "nbdinfo failed"
[ "$size" -eq $((8 * 1024 * 1024 - off)) ] ||
    fail "export size $size, expected $((8 * 1024 * 1024 - off))"

$PYTHON - "$(uri "$tmp/sock")" "$img" "$off" <<'EOP' || fail "offset checks"
import sys, nbd
uri, img, off = sys.argv[1], sys.argv[2], int(sys.argv[3])
K = 1024
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(uri)
assert h.pread(4096, 0) == bytes(4096), "export start is not file byte OFFSET"
assert h.pread(64 * K, 64 * K) == b"\x42" * (64 * K)
h.pwrite(b"\x99" * 1000, 7)
tail = h.get_size() - 3000
h.pwrite(b"\x77" * 3000, tail)
h.flush()
# The last byte is readable; one past the end is refused.
assert h.pread(1, h.get_size() - 1) == b"\x77"
try:
    h.pread(1, h.get_size())
    raise AssertionError("read past the end succeeded")
except nbd.Error:
    pass

# Block status is in export coordinates: data at 64K..128K only (the 1000
# bytes written at 7 make [0, 4K) data too).
ext = []
h.block_status(h.get_size(), 0,
               lambda ctx, o, e, err: ext.extend(e) if ctx == nbd.CONTEXT_BASE_ALLOCATION else 0)
pos, data = 0, []
for i in range(0, len(ext), 2):
    if not ext[i + 1] & nbd.STATE_HOLE:
        data.append((pos, pos + ext[i]))
    pos += ext[i]
assert any(a <= 64 * K and b >= 128 * K for a, b in data), data
assert not any(a < 1024 * K < b for a, b in data), f"1M should be a hole: {data}"
h.shutdown()

with open(img, "rb") as f:
    f.seek(0)
    assert f.read(off) == b"\xee" * off, "bytes before OFFSET changed"
    f.seek(off + 7)
    assert f.read(1000) == b"\x99" * 1000, "write not at OFFSET + 7"
    f.seek(off + tail)
    assert f.read() == b"\x77" * 3000, "tail write misplaced"
EOP
