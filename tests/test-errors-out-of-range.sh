#!/usr/bin/env bash
# Requests outside the export: READ, TRIM, CACHE and BLOCK_STATUS get
# EINVAL; WRITE and WRITE_ZEROES get ENOSPC; offset + length overflowing
# 64 bits gets EINVAL and never wraps to the start; FLUSH with a non-zero
# offset or length gets EINVAL.  With structured replies a READ error is
# an error chunk, never a simple reply.  The connection stays usable after
# every error.
source "${srcdir:-$(dirname "$0")}/functions.sh"

truncate -s 1M "$tmp/disk.img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 "$tmp/disk.img"

export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 SOCK=$tmp/sock
$PYTHON - <<'PY' || fail "out-of-range rules"
import os
import nbd_raw as N
sock = os.environ["SOCK"]
SIZE = 1 << 20
TOP = 1 << 64
# (offset, length) pairs that reach past the end without overflowing.
PAST_END = [(SIZE - 512, 1024), (SIZE, 1), (SIZE, 4096), (SIZE + 4096, 512),
            (0, SIZE + 1), (1 << 40, 512)]
# Pairs whose end overflows 64 bits.
OVERFLOW = [(TOP - 512, 1024), (TOP - 1, 2), (TOP - 1, 0xffffffff),
            (TOP - 4096, 8192)]
MARK = b"\xa5" * 4096


def setup(structured):
    c = N.connect(sock, structured=structured,
                  meta=["base:allocation"] if structured else None)
    assert c.size == SIZE
    assert c.write(0, MARK) == 0
    assert c.write(SIZE - 4096, MARK) == 0
    return c


def still_usable(c):
    assert c.read(0, 4096) == MARK, "data at 0 changed"
    assert c.read(SIZE - 4096, 4096) == MARK, "data at the end changed"


def check_errors(c, cmds):
    for type, expected in cmds:
        for ranges, err in ((PAST_END, expected), (OVERFLOW, N.EINVAL)):
            for off, n in ranges:
                payload = b""
                if type == N.CMD_WRITE:
                    if n > 1 << 21:
                        continue  # no 4 GiB payloads from the test
                    payload = b"\x5a" * n
                got = c.cmd(type, offset=off, length=n, payload=payload)
                assert got == err, "cmd %d at %#x+%d: error %d, want %d" % (
                    type, off, n, got, err)
                still_usable(c)


def simple_replies():
    c = setup(False)
    check_errors(c, [(N.CMD_READ, N.EINVAL), (N.CMD_TRIM, N.EINVAL),
                     (N.CMD_CACHE, N.EINVAL), (N.CMD_WRITE, N.ENOSPC),
                     (N.CMD_WRITE_ZEROES, N.ENOSPC)])
    c.disconnect()


def structured_replies():
    c = setup(True)
    check_errors(c, [(N.CMD_READ, N.EINVAL), (N.CMD_TRIM, N.EINVAL),
                     (N.CMD_CACHE, N.EINVAL), (N.CMD_BLOCK_STATUS, N.EINVAL),
                     (N.CMD_WRITE, N.ENOSPC), (N.CMD_WRITE_ZEROES, N.ENOSPC)])
    c.disconnect()


def read_error_is_one_error_chunk():
    c = setup(True)
    for off, n in PAST_END + OVERFLOW:
        cookie = c.request(N.CMD_READ, offset=off, length=n)
        r = c.reply_all(cookie)
        assert not any(x.simple for x in r), "simple reply to READ: %r" % r
        assert r[-1].done and r[-1].error == N.EINVAL, r
        assert all(x.type & 0x8000 or x.type == N.REPLY_TYPE_NONE
                   for x in r), "content chunk for a bad READ: %r" % r
    still_usable(c)


def write_does_not_wrap():
    # An overflowing WRITE must not land at offset 0 (nor anywhere).
    c = setup(False)
    for off, n in ((TOP - 512, 1024), (TOP - 4096, 8192)):
        assert c.write(off, b"\x11" * n) == N.EINVAL
        assert c.cmd(N.CMD_WRITE_ZEROES, offset=off, length=n) == N.EINVAL
        assert c.cmd(N.CMD_TRIM, offset=off, length=n) == N.EINVAL
    still_usable(c)


def in_range_edges_work():
    c = setup(False)
    assert c.read(SIZE - 1, 1) == b"\xa5"
    assert c.write(SIZE - 1, b"\x01") == 0
    assert c.cmd(N.CMD_CACHE, offset=0, length=SIZE) == 0
    assert c.cmd(N.CMD_TRIM, offset=SIZE - 512, length=512) == 0
    assert c.cmd(N.CMD_WRITE_ZEROES, offset=SIZE - 512, length=512) == 0
    assert c.read(SIZE - 512, 512) == bytes(512)


def flush_with_offset_or_length():
    for structured in (False, True):
        c = setup(structured)
        for off, n in ((1, 0), (0, 1), (4096, 4096), (TOP - 1, 0),
                       (0, 0xffffffff)):
            got = c.cmd(N.CMD_FLUSH, offset=off, length=n)
            assert got == N.EINVAL, "FLUSH %#x+%d: %d" % (off, n, got)
        assert c.cmd(N.CMD_FLUSH) == 0
        still_usable(c)


N.run_checks(simple_replies, structured_replies, read_error_is_one_error_chunk,
             write_does_not_wrap, in_range_edges_work,
             flush_with_offset_or_length)
PY
