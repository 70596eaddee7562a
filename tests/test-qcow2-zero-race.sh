#!/usr/bin/env bash
# The request pattern that corrupts QEMU 7.2's qcow2 (see
# tests/qemu-qcow2-zero-race.sh) must not corrupt snapnbd's: in each of
# many zeroed clusters that keep their allocation (write-zeroes NO_HOLE
# over data), a partial write and a partial write-zeroes that may unmap go
# out at once, with a write that allocates a new cluster.  In QEMU 7.2 the
# write-zeroes unmaps the cluster under the write, the write links the
# freed host cluster back, and the new cluster takes it too: most of the
# clusters then read another cluster's data and qemu-img check reports
# "refcount=1 reference=2".  Here every cluster must read back as written
# and the image must be sound once the server has stopped.
# QCOW2_RACE_SERVER=qemu-nbd runs the same against qemu-nbd (it fails with
# QEMU 7.2).
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img
$PYTHON -c 'import nbd' 2>/dev/null || {
    echo "$0: skipped: python3-libnbd is not installed"
    exit 77
}
server=${QCOW2_RACE_SERVER:-$SNAPNBD}
requires "$server"

clusters=256
img=$tmp/disk.qcow2
sock=$tmp/sock
qemu-img create -q -f qcow2 "$img" $(( 2 * clusters * 64 ))K
SNAPNBD=$server start_server "$sock" "$tmp/pid" -t -f qcow2 --discard=unmap "$img"

$PYTHON - "$(uri "$sock")" $clusters <<'EOF' || fail "a cluster lost its data"
import random
import sys

import nbd

uri, n = sys.argv[1], int(sys.argv[2])
C = 64 * 1024
h = nbd.NBD()
h.connect_uri(uri)
rnd = random.Random(n)
for c in range(n):
    h.pwrite(b"\x07" * C, c * C)
for c in range(n):
    h.zero(C, c * C, nbd.CMD_FLAG_NO_HOLE)  # zeroed, still allocated
expect = {}
for c in range(n):
    data_at = rnd.randrange(0, C // 2 - 4096) // 512 * 512
    zero_at = rnd.randrange(C // 2, C - 4096) // 512 * 512 + rnd.choice((0, 100))
    cookies = (h.aio_pwrite(b"\x01" * 4096, c * C + data_at),
               h.aio_zero(4096, c * C + zero_at),
               h.aio_pwrite(bytes([c % 250 + 2]) * C, (n + c) * C))
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for cookie in cookies:
        h.aio_command_completed(cookie)  # raises if the command failed
    data = bytearray(C)
    data[data_at:data_at + 4096] = b"\x01" * 4096
    expect[c] = bytes(data)
    expect[n + c] = bytes([c % 250 + 2]) * C
bad = [c for c in sorted(expect) if h.pread(C, c * C) != expect[c]]
h.shutdown()
if bad:
    print(f"{len(bad)} of {2 * n} clusters read wrong, e.g. {bad[:8]}")
    sys.exit(1)
EOF
_stop_server "$tmp/pid"
qemu-img check "$img" >"$tmp/check" 2>&1 ||
    fail "the image is not sound: $(grep -m 3 ERROR "$tmp/check")"
