#!/usr/bin/env bash
# x-debug-block-dirty-bitmap-sha256 and dirty-bitmap counts against a model
# (tests/bitmap_sha256.py): seeded random writes, write-zeroes, discards,
# clears and enable/disable over NBD on disks of odd sizes with bitmaps of
# several granularities; each bitmap's hash must be the SHA-256 of the
# model's bits in QEMU's layout and its count QEMU's.  Where
# qemu-storage-daemon 7.2 is installed it runs the same operations beside
# snapnbd, and its hashes, counts and errors must be the same.
# SNAPNBD_SEED replays a seed; SNAPNBD_ROUNDS sets the rounds (default 6).
source "${srcdir:-$(dirname "$0")}/functions.sh"

which=snapnbd
if command -v qemu-storage-daemon >/dev/null 2>&1 &&
   qemu-storage-daemon --version | grep -q 'version 7\.2\.'; then
    which=both
fi
seed=${SNAPNBD_SEED:-$((RANDOM * 32768 + RANDOM))}
$PYTHON "$srcdir/bitmap_sha256.py" "$which" "$seed" "${SNAPNBD_ROUNDS:-6}" \
    >"$tmp/out" 2>&1 || {
    cat "$tmp/out"
    fail "seed $seed: dirty bitmaps differ from the model or from QEMU's"
}
cat "$tmp/out"
