#!/usr/bin/env bash
# Replies carry the request's cookie unchanged (odd values included); many
# requests in flight are each answered exactly once, in any order, with
# the right data; NBD_CMD_DISC gets no reply, the requests before it are
# all finished, and then the server closes; after an error reply the
# connection stays usable.
source "${srcdir:-$(dirname "$0")}/functions.sh"

truncate -s 16M "$tmp/disk.img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 "$tmp/disk.img"

export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 SOCK=$tmp/sock IMG=$tmp/disk.img
$PYTHON - <<'PY' || fail "in-flight request rules"
import os, random
import nbd_raw as N
sock = os.environ["SOCK"]
SIZE = 16 << 20
COOKIES = (0, 1, 0x0102030405060708, 0x8000000000000001, 0xdeadbeefcafebabf,
           0xffffffffffffffff, 0x00000000ffffffff, 0xffffffff00000001)


def pattern(i, n):
    return bytes([i % 255 + 1]) * n


def cookies_echoed():
    for structured in (False, True):
        c = N.connect(sock, structured=structured)
        for cookie in COOKIES:
            for type, kw in ((N.CMD_WRITE, dict(offset=0, payload=b"x" * 512)),
                             (N.CMD_READ, dict(offset=0, length=512)),
                             (N.CMD_FLUSH, {}),
                             (N.CMD_READ, dict(offset=SIZE, length=512)),
                             (N.CMD_WRITE_ZEROES, dict(offset=4096, length=512)),
                             (42, dict(offset=0, length=0))):
                c.request(type, cookie=cookie, **kw)
                for r in c.reply_all():
                    assert r.cookie == cookie, "cookie %#x came back as %#x" % (
                        cookie, r.cookie)
        c.disconnect()


def answer_all(c, expect):
    """Reads replies until every request in expect ({cookie: (offset,
    length, data or error)}) was answered exactly once, in any order, and
    checks each: a READ's bytes, or the error (0 for success)."""
    chunks = {}
    while expect:
        r = c.reply()
        assert r.cookie in expect, "unknown or repeated cookie %#x" % r.cookie
        chunks.setdefault(r.cookie, []).append(r)
        if not r.done:
            continue
        off, n, want = expect.pop(r.cookie)
        got = chunks.pop(r.cookie)
        if isinstance(want, bytes):
            assert N.assemble_read(got, off, n) == want, \
                "READ %d+%d: wrong data" % (off, n)
        else:
            assert got[-1].error == want, "%d+%d: %r, want error %d" % (
                off, n, got, want)


def pipelined(structured):
    c = N.connect(sock, structured=structured)
    n = 65536
    # 64 writes in flight, then 64 reads of them, then a mix with errors.
    expect = {}
    for i in range(64):
        ck = c.request(N.CMD_WRITE, offset=i * n, payload=pattern(i, n))
        expect[ck] = (i * n, n, 0)
    answer_all(c, expect)
    for i in range(64):
        ck = c.request(N.CMD_READ, offset=i * n, length=n)
        expect[ck] = (i * n, n, pattern(i, n))
    answer_all(c, expect)
    rng = random.Random(7)
    for i in range(200):
        k = rng.randrange(64)
        if rng.random() < 0.3:
            ck = c.request(N.CMD_READ, offset=SIZE + k, length=512)
            expect[ck] = (SIZE + k, 512, N.EINVAL)
        else:
            ck = c.request(N.CMD_READ, offset=k * n + 512, length=1024)
            expect[ck] = (k * n + 512, 1024, pattern(k, 1024))
    answer_all(c, expect)
    c.disconnect()


def pipelined_simple():
    pipelined(False)


def pipelined_structured():
    pipelined(True)


def errors_keep_connection():
    c = N.connect(sock)
    for i in range(50):
        assert c.cmd(N.CMD_READ, offset=SIZE, length=512) == N.EINVAL
        assert c.cmd(N.CMD_WRITE, flags=1 << 12, offset=0,
                     payload=b"z" * 512) == N.EINVAL
        assert c.cmd(99, offset=0, length=512) == N.EINVAL
        assert c.cmd(N.CMD_FLUSH, offset=1) == N.EINVAL
        assert c.read(0, 512) == pattern(0, 512)
    c.disconnect()


def disc_finishes_outstanding():
    for structured in (False, True):
        c = N.connect(sock, structured=structured)
        expect = {}
        base = 8 << 20
        for i in range(24):
            ck = c.request(N.CMD_WRITE, offset=base + i * 4096,
                           payload=pattern(100 + i, 4096))
            expect[ck] = (base + i * 4096, 4096, 0)
        for i in range(24):
            ck = c.request(N.CMD_READ, offset=i * 65536, length=65536)
            expect[ck] = (i * 65536, 65536, pattern(i, 65536))
        c.request(N.CMD_DISC, cookie=0x5151)
        answer_all(c, expect)
        # No reply to DISC: nothing more, then the close.
        assert c.is_closed(), "after DISC: %r" % c.unexpected
        c.close()
        with open(os.environ["IMG"], "rb") as f:
            f.seek(base)
            assert f.read(24 * 4096) == b"".join(
                pattern(100 + i, 4096) for i in range(24)), \
                "writes before DISC not done"


N.run_checks(cookies_echoed, pipelined_simple, pipelined_structured,
             errors_keep_connection, disc_finishes_outstanding)
PY
