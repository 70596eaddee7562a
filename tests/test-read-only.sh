#!/usr/bin/env bash
# -r: the export is advertised read-only, writes, write-zeroes and trims
# fail with EPERM, reads work, and the image file is not modified.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires nbdinfo qemu-io sha256sum

img=$tmp/disk.img
truncate -s 8M "$img"
qemu-io -f raw -c 'write -P 0x77 64K 128K' "$img" >/dev/null
sum=$(sha256sum <"$img")

start_server "$tmp/sock" "$tmp/pid" -f raw -r -t "$img"

nbdinfo --json "$(uri "$tmp/sock")" >"$tmp/info" || fail "nbdinfo failed"
grep -Eq '"is_read_only": *true' "$tmp/info" ||
    fail "export not advertised read-only: $(cat "$tmp/info")"

$PYTHON - "$(uri "$tmp/sock")" <<'EOP' || fail "read-only checks failed"
import errno, sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert h.is_read_only()
assert h.pread(128 * 1024, 64 * 1024) == b"\x77" * (128 * 1024)

def refused(what, fn):
    # Bypass libnbd's own client-side check so the server has to refuse.
    try:
        fn()
    except nbd.Error as e:
        # libnbd gives the errno's name; the NBD spec says EPERM here
        # (qemu-nbd 7.2 answers EINVAL, snapnbd follows the spec).
        assert e.errno in ("EPERM", errno.EPERM), f"{what}: {e}"
        return
    raise AssertionError(f"{what} succeeded on a read-only export")

h.set_strict_mode(0)
refused("write", lambda: h.pwrite(b"x" * 4096, 0))
refused("write fua", lambda: h.pwrite(b"x" * 512, 4096, nbd.CMD_FLAG_FUA))
refused("write zeroes", lambda: h.zero(4096, 64 * 1024))
refused("trim", lambda: h.trim(4096, 64 * 1024))
# The connection is still usable and the data unchanged.
assert h.pread(128 * 1024, 64 * 1024) == b"\x77" * (128 * 1024)
h.flush()
h.shutdown()
EOP

# qemu-io through NBD gets an error as well.
qemu-io -f raw -c 'write -P 0x11 0 4096' "$(uri "$tmp/sock")" \
    >"$tmp/qio" 2>&1
grep -Eqi 'failed|denied|read-only|not permitted' "$tmp/qio" ||
    fail "qemu-io write did not fail: $(cat "$tmp/qio")"

[ "$(sha256sum <"$img")" = "$sum" ] || fail "the image was modified"
