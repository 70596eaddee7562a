#!/usr/bin/env bash
# A raw image whose size is not a multiple of 512 bytes is exported as
# qemu-nbd 7.2 exports it: rounded up to the next 512-byte sector (QEMU's
# lengths count sectors), the tail past the end of the file reading as
# zeroes; a write into the tail extends the file, nothing past the rounded
# end is writable, and block status covers exactly the export.  The same
# checks pass against qemu-nbd itself.
source "${srcdir:-$(dirname "$0")}/functions.sh"

img=$tmp/odd.img
head -c 1000 /dev/urandom >"$img"
cp "$img" "$tmp/orig"

cat >"$tmp/check.py" <<'EOP'
import sys, nbd
uri, orig = sys.argv[1], sys.argv[2]
data = open(orig, "rb").read()
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(uri)
size = h.get_size()
assert size == 1024, f"export size {size}, expected 1000 bytes rounded up to 1024"
assert h.pread(size, 0) == data + bytes(24), "contents differ (or the tail is not zero)"
data += bytes(24)
ext = []
h.block_status(size, 0, lambda c, o, e, err: ext.extend(e)
               if c == nbd.CONTEXT_BASE_ALLOCATION else 0)
assert sum(ext[0::2]) == size, f"block status does not cover the export {ext}"
h.pwrite(b"T" * 10, size - 10)
assert h.pread(12, size - 12) == data[size - 12:size - 10] + b"T" * 10
h.set_strict_mode(0)
try:
    h.pwrite(b"X", size)
    raise AssertionError("write past the end succeeded")
except nbd.Error as e:
    assert e.errno in ("ENOSPC", "EINVAL"), e
h.shutdown()
EOP

start_server "$tmp/s1" "$tmp/p1" -f raw -t "$img"
$PYTHON "$tmp/check.py" "$(uri "$tmp/s1")" "$tmp/orig" ||
    fail "1000-byte image"
[ "$(stat -c %s "$img")" -eq 1024 ] || fail "a write into the tail did not extend the file"

# The oracle: qemu-nbd passes the same checks on a fresh copy.
if command -v qemu-nbd >/dev/null; then
    cp "$tmp/orig" "$tmp/q.img"
    qemu-nbd -k "$tmp/q" -f raw -t "$tmp/q.img" &
    cleanup_fn "kill $! 2>/dev/null"
    for i in $(seq 50); do [ -S "$tmp/q" ] && break; sleep 0.1; done
    $PYTHON "$tmp/check.py" "$(uri "$tmp/q")" "$tmp/orig" ||
        fail "qemu-nbd does not behave as this test expects"
fi
cp "$tmp/orig" "$img"

# With --cache=none (O_DIRECT) the partial last block cannot be read or
# written: such an image is refused with a message naming it and its size.
if "$SNAPNBD" -f raw --cache=none -k "$tmp/s2" "$img" 2>"$tmp/err"; then
    fail "--cache=none served an image with a partial last block"
fi
grep -q "cache=none on '$img': its size (1000 bytes)" "$tmp/err" ||
    fail "unclear --cache=none refusal: $(cat "$tmp/err")"
[ ! -e "$tmp/s2" ] || fail "a socket was left behind"
