#!/usr/bin/env bash
# A read-only export (-r) advertises NBD_FLAG_READ_ONLY, answers every
# write-like command (WRITE, TRIM, WRITE_ZEROES, with or without flags)
# with EPERM, leaves the data alone, and still serves READ, CACHE, FLUSH
# and BLOCK_STATUS.
source "${srcdir:-$(dirname "$0")}/functions.sh"

$PYTHON -c '
import sys
with open(sys.argv[1], "wb") as f:
    f.write(bytes(range(256)) * 4096)
' "$tmp/disk.img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 -r "$tmp/disk.img"

export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 SOCK=$tmp/sock IMG=$tmp/disk.img
$PYTHON - <<'PY' || fail "read-only rules"
import os
import nbd_raw as N
sock = os.environ["SOCK"]
DATA = bytes(range(256)) * 4096
SIZE = len(DATA)


def unchanged(c):
    assert c.read(0, 65536) == DATA[:65536]
    with open(os.environ["IMG"], "rb") as f:
        assert f.read() == DATA, "the image file changed"


def advertises_read_only():
    c = N.connect(sock)
    assert c.eflags & N.FLAG_READ_ONLY, hex(c.eflags)
    assert c.size == SIZE


def write_like_eperm():
    for structured in (False, True):
        c = N.connect(sock, structured=structured)
        for off, n in ((0, 4096), (4096, 512), (SIZE - 512, 512), (0, SIZE)):
            for flags in (0, N.CMD_FLAG_FUA):
                got = c.write(off, b"\xff" * n, flags)
                assert got == N.EPERM, "WRITE %d+%d: %d" % (off, n, got)
                got = c.cmd(N.CMD_TRIM, flags=flags, offset=off, length=n)
                assert got == N.EPERM, "TRIM %d+%d: %d" % (off, n, got)
                for zflags in (flags, flags | N.CMD_FLAG_NO_HOLE):
                    got = c.cmd(N.CMD_WRITE_ZEROES, flags=zflags, offset=off,
                                length=n)
                    assert got == N.EPERM, "WRITE_ZEROES %d+%d flags %#x: " \
                        "%d" % (off, n, zflags, got)
        unchanged(c)
        c.disconnect()


def reads_still_work():
    c = N.connect(sock, meta=["base:allocation"])
    assert c.read(SIZE - 4096, 4096) == DATA[-4096:]
    assert c.read(0, SIZE) == DATA
    assert c.cmd(N.CMD_CACHE, offset=0, length=SIZE) == 0
    assert c.cmd(N.CMD_FLUSH) == 0
    assert c.cmd(N.CMD_BLOCK_STATUS, offset=0, length=SIZE) == 0
    unchanged(c)
    c.disconnect()


N.run_checks(advertises_read_only, write_like_eperm, reads_still_work)
PY
