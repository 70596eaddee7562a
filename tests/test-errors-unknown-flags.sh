#!/usr/bin/env bash
# Unknown commands get EINVAL (no payload is read for them) and the
# connection stays usable; unknown command flags, and flags on a command
# they do not apply to (NO_HOLE/DF/FAST_ZERO on WRITE, REQ_ONE on READ,
# DF without structured replies, ...), get EINVAL with the data left alone.
# WRITE_ZEROES with FAST_ZERO (advertised) either zeroes the range or
# answers ENOTSUP with the data unchanged.
source "${srcdir:-$(dirname "$0")}/functions.sh"

truncate -s 4M "$tmp/disk.img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 "$tmp/disk.img"

export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 SOCK=$tmp/sock
$PYTHON - <<'PY' || fail "unknown command and flag rules"
import os
import nbd_raw as N
sock = os.environ["SOCK"]
SIZE = 4 << 20
MARK = bytes(range(256)) * 16   # 4 KiB
FUA, NO_HOLE, DF, REQ_ONE, FAST_ZERO = (
    N.CMD_FLAG_FUA, N.CMD_FLAG_NO_HOLE, N.CMD_FLAG_DF, N.CMD_FLAG_REQ_ONE,
    N.CMD_FLAG_FAST_ZERO)
UNKNOWN_BITS = [1 << b for b in range(5, 16)]


def setup(structured):
    c = N.connect(sock, structured=structured,
                  meta=["base:allocation"] if structured else None)
    assert c.write(0, MARK) == 0
    return c


def usable(c):
    assert c.read(0, 4096) == MARK, "data changed or connection unusable"


def unknown_commands():
    for structured in (False, True):
        c = setup(structured)
        for type in (8, 9, 42, 0x100, 0x7fff, 0xffff):
            for off, n in ((0, 0), (0, 4096), (1 << 62, 0xffffffff)):
                got = c.cmd(type, offset=off, length=n)
                assert got == N.EINVAL, "command %d: %d" % (type, got)
                usable(c)
        c.disconnect()


def unknown_flag_bits():
    for structured in (False, True):
        c = setup(structured)
        for bit in UNKNOWN_BITS:
            for type, payload in ((N.CMD_READ, b""), (N.CMD_WRITE, b"\xff" * 4096),
                                  (N.CMD_FLUSH, b""), (N.CMD_TRIM, b""),
                                  (N.CMD_CACHE, b""), (N.CMD_WRITE_ZEROES, b"")):
                n = 0 if type == N.CMD_FLUSH else 4096
                got = c.cmd(type, flags=bit, offset=0, length=n,
                            payload=payload)
                assert got == N.EINVAL, "command %d flag %#x: %d" % (
                    type, bit, got)
                usable(c)
        c.disconnect()


def flags_on_the_wrong_command():
    wrong = [
        (N.CMD_WRITE, NO_HOLE), (N.CMD_WRITE, DF), (N.CMD_WRITE, REQ_ONE),
        (N.CMD_WRITE, FAST_ZERO), (N.CMD_READ, REQ_ONE),
        (N.CMD_READ, NO_HOLE), (N.CMD_READ, FAST_ZERO),
        (N.CMD_TRIM, NO_HOLE), (N.CMD_TRIM, FAST_ZERO), (N.CMD_TRIM, DF),
        (N.CMD_WRITE_ZEROES, DF), (N.CMD_WRITE_ZEROES, REQ_ONE),
        (N.CMD_FLUSH, NO_HOLE), (N.CMD_CACHE, DF), (N.CMD_CACHE, REQ_ONE),
        (N.CMD_BLOCK_STATUS, DF), (N.CMD_BLOCK_STATUS, NO_HOLE),
    ]
    for structured in (False, True):
        c = setup(structured)
        for type, flags in wrong + [(t, f | FUA) for t, f in wrong]:
            if type == N.CMD_BLOCK_STATUS and not structured:
                continue
            n = 0 if type == N.CMD_FLUSH else 4096
            payload = b"\xff" * n if type == N.CMD_WRITE else b""
            got = c.cmd(type, flags=flags, offset=0, length=n, payload=payload)
            assert got == N.EINVAL, "command %d flags %#x: %d" % (
                type, flags, got)
            usable(c)
        c.disconnect()


def df_needs_structured_replies():
    c = setup(False)
    assert not c.eflags & N.FLAG_SEND_DF
    assert c.cmd(N.CMD_READ, flags=DF, offset=0, length=4096) == N.EINVAL
    usable(c)


def read_error_with_structured_replies_is_a_chunk():
    c = setup(True)
    cookie = c.request(N.CMD_READ, flags=REQ_ONE, offset=0, length=4096)
    r = c.reply_all(cookie)
    assert not any(x.simple for x in r), "simple reply to a READ: %r" % r
    assert r[-1].error == N.EINVAL, r
    usable(c)


def valid_flags_accepted():
    # FUA is advertised, so every command takes it (it means nothing to
    # reads, but is valid there too).
    c = setup(True)
    assert c.eflags & N.FLAG_SEND_FUA
    for type, flags in ((N.CMD_WRITE, FUA), (N.CMD_READ, FUA),
                        (N.CMD_READ, DF), (N.CMD_TRIM, FUA),
                        (N.CMD_WRITE_ZEROES, FUA | NO_HOLE),
                        (N.CMD_CACHE, FUA), (N.CMD_FLUSH, FUA),
                        (N.CMD_BLOCK_STATUS, REQ_ONE | FUA)):
        n = 0 if type == N.CMD_FLUSH else 4096
        off = 0 if type in (N.CMD_READ, N.CMD_WRITE, N.CMD_CACHE,
                            N.CMD_FLUSH, N.CMD_BLOCK_STATUS) else 65536
        payload = MARK if type == N.CMD_WRITE else b""
        got = c.cmd(type, flags=flags, offset=off, length=n, payload=payload)
        assert got == 0, "command %d flags %#x: %d" % (type, flags, got)
    usable(c)


def fast_zero():
    c = setup(False)
    assert c.eflags & N.FLAG_SEND_FAST_ZERO, hex(c.eflags)
    for off, n, flags in ((65536, 65536, 0), (1 << 20, 4096, NO_HOLE),
                          (2 << 20, 1 << 20, FUA), (SIZE - 512, 512, 0),
                          (5000, 1000, 0)):
        data = bytes([(off >> 9) & 0xff or 1]) * n
        assert c.write(off, data) == 0
        got = c.cmd(N.CMD_WRITE_ZEROES, flags=flags | FAST_ZERO, offset=off,
                    length=n)
        assert got in (0, N.ENOTSUP), "FAST_ZERO %d+%d: %d" % (off, n, got)
        after = c.read(off, n)
        if got == 0:
            assert after == bytes(n), "FAST_ZERO succeeded, data not zero"
        else:
            assert after == data, "FAST_ZERO failed but changed the data"
    usable(c)


N.run_checks(unknown_commands, unknown_flag_bits, flags_on_the_wrong_command,
             df_needs_structured_replies,
             read_error_with_structured_replies_is_a_chunk,
             valid_flags_accepted, fast_zero)
PY
