#!/usr/bin/env bash
# --detect-zeroes: a write whose buffer is all zero becomes write-zeroes.
#  unmap (with --discard=unmap): zero writes over data punch a hole (the
#    file's allocated size drops) and zero writes into a hole allocate
#    nothing; writes with non-zero bytes are stored as usual.
#  off (default): the same zero write over a hole allocates the blocks.
#  unmap without --discard=unmap is refused with qemu-nbd's message.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires fallocate

truncate -s 1M "$tmp/probe"
fallocate -l 1M "$tmp/probe" && fallocate -p -o 0 -l 64K "$tmp/probe" ||
    { echo "$0: skipped: no hole punching on this filesystem"; exit 77; }

# Refused: unmap needs --discard=unmap.
truncate -s 1M "$tmp/x.img"
if "$SNAPNBD" -f raw --detect-zeroes=unmap -k "$tmp/bad.sock" "$tmp/x.img" \
    2>"$tmp/err"; then
    fail "--detect-zeroes=unmap without --discard=unmap was accepted"
fi
grep -q 'detect-zeroes to unmap is not allowed without setting discard' \
    "$tmp/err" || fail "unclear error: $(cat "$tmp/err")"
[ ! -S "$tmp/bad.sock" ] || fail "a socket was left behind"
# Invalid mode values are refused too.
if "$SNAPNBD" -f raw --detect-zeroes=bogus -k "$tmp/bad.sock" "$tmp/x.img" \
    2>"$tmp/err"; then
    fail "--detect-zeroes=bogus was accepted"
fi
grep -qi 'bogus' "$tmp/err" || fail "error does not name the value"

cat >"$tmp/check.py" <<'EOP'
import os, sys, nbd
uri, img, mode = sys.argv[1:4]
K = 1024
def kib():
    return os.stat(img).st_blocks // 2

h = nbd.NBD()
h.connect_uri(uri)
h.pwrite(b"\x5a" * (1024 * K), 0)
h.flush()
b = kib()
assert b >= 1024, b

# A zero buffer over data.
h.pwrite(bytes(512 * K), 0)
h.flush()
assert h.pread(512 * K, 0) == bytes(512 * K)
if mode == "unmap":
    assert kib() == b - 512, f"zero write did not punch a hole: {b} -> {kib()}K"
else:
    assert kib() == b, f"zero write changed allocation: {b} -> {kib()}K"

# A zero buffer into a hole [2M, 2M+256K).
b = kib()
h.pwrite(bytes(256 * K), 2048 * K)
h.flush()
assert h.pread(256 * K, 2048 * K) == bytes(256 * K)
if mode == "unmap":
    assert kib() == b, f"zero write into a hole allocated: {b} -> {kib()}K"
else:
    assert kib() == b + 256, f"zero write was not stored: {b} -> {kib()}K"

# A buffer that is zero except for its last byte is data, stored as such.
buf = bytearray(128 * K)
buf[-1] = 1
b = kib()
h.pwrite(bytes(buf), 3072 * K)
h.flush()
assert h.pread(128 * K, 3072 * K) == buf
assert kib() == b + 128, f"data write not stored: {b} -> {kib()}K"
h.shutdown()

# What the server wrote is what the file holds.
with open(img, "rb") as f:
    f.seek(512 * K)
    assert f.read(512 * K) == b"\x5a" * (512 * K)
    assert f.read(512 * K) == bytes(512 * K)
    f.seek(3072 * K)
    assert f.read(128 * K) == buf
EOP

img=$tmp/unmap.img
truncate -s 4M "$img"
# (qemu-nbd checks the options in order: --discard=unmap must come first.)
start_server "$tmp/s1" "$tmp/p1" -f raw -t --discard=unmap \
    --detect-zeroes=unmap "$img"
$PYTHON "$tmp/check.py" "$(uri "$tmp/s1")" "$img" unmap ||
    fail "--detect-zeroes=unmap"

img=$tmp/off.img
truncate -s 4M "$img"
start_server "$tmp/s2" "$tmp/p2" -f raw -t --discard=unmap "$img"
$PYTHON "$tmp/check.py" "$(uri "$tmp/s2")" "$img" off ||
    fail "--detect-zeroes=off"
