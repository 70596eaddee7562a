#!/usr/bin/env bash
# NBD_CMD_BLOCK_STATUS: EINVAL without a negotiated meta context (with or
# without structured replies); with base:allocation exactly one
# BLOCK_STATUS chunk per selected context, carrying the context's id, at
# least one descriptor, descriptor lengths non-zero and summing to at most
# the request length; with REQ_ONE exactly one descriptor, no longer than
# the request.  Holes read as HOLE|ZERO, data as 0.
source "${srcdir:-$(dirname "$0")}/functions.sh"

$PYTHON -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, 4 << 20)
os.pwrite(fd, b"\x77" * 65536, 1 << 20)
os.pwrite(fd, b"\x77" * 4096, (4 << 20) - 4096)
os.close(fd)
' "$tmp/disk.img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 "$tmp/disk.img"

export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 SOCK=$tmp/sock IMG=$tmp/disk.img
$PYTHON - <<'PY' || fail "block status rules"
import os, random
import nbd_raw as N
sock = os.environ["SOCK"]
SIZE = 4 << 20
with open(os.environ["IMG"], "rb") as f:
    IMAGE = f.read()
    try:
        HOLES = os.lseek(f.fileno(), 0, os.SEEK_DATA) == 1 << 20
    except OSError:
        HOLES = False


def connect():
    c = N.Client(sock)
    c.handshake()
    c.structured_reply()
    r = c.meta_context(N.OPT_SET_META_CONTEXT, "", ["base:allocation"])
    assert r[-1][0] == N.REP_ACK and len(r) == 2, r
    c.ctx = r[0][1]
    c.go("")
    return c


def status(c, off, n, flags=0):
    """The descriptors of one successful BLOCK_STATUS."""
    cookie = c.request(N.CMD_BLOCK_STATUS, flags=flags, offset=off, length=n)
    r = c.reply_all(cookie)
    bs = [x for x in r if x.type == N.REPLY_TYPE_BLOCK_STATUS]
    assert len(bs) == 1, "want one chunk for one context: %r" % r
    assert all(x.type == N.REPLY_TYPE_NONE for x in r if x not in bs), r
    ctx, ext = bs[0].block_status()
    assert ctx == c.ctx, "context id %d, negotiated %d" % (ctx, c.ctx)
    assert ext, "no descriptor"
    assert all(l > 0 for l, _ in ext), ext
    assert sum(l for l, _ in ext) <= n, "descriptors sum past the request"
    assert all(f & ~(N.STATE_HOLE | N.STATE_ZERO) == 0 for _, f in ext), ext
    # ZERO must be true where claimed; HOLE implies ZERO for this context
    # only on a plain file, which this is.
    pos = off
    for l, f in ext:
        if f & N.STATE_ZERO:
            assert not any(IMAGE[pos:pos + l]), "ZERO claimed over data at " \
                "%d+%d" % (pos, l)
        pos += l
    return ext


def without_context():
    c = N.connect(sock)                      # no structured replies
    assert c.cmd(N.CMD_BLOCK_STATUS, offset=0, length=4096) == N.EINVAL
    assert c.read(0, 512) == bytes(512)
    c = N.connect(sock, structured=True)     # no SET_META_CONTEXT
    assert c.cmd(N.CMD_BLOCK_STATUS, offset=0, length=4096) == N.EINVAL
    c = N.connect(sock, meta=["nosuch:context"])   # SET selected nothing
    assert c.cmd(N.CMD_BLOCK_STATUS, offset=0, length=4096) == N.EINVAL
    assert c.read(0, 512) == bytes(512)


def whole_image():
    c = connect()
    ext = status(c, 0, SIZE)
    if HOLES:
        assert ext[0] == (1 << 20, N.STATE_HOLE | N.STATE_ZERO), ext
        assert ext[1] == (65536, 0), ext
    assert sum(l for l, _ in ext) == SIZE, "this server answers the whole range"


def req_one():
    c = connect()
    for off, n in ((0, SIZE), (0, 4096), ((1 << 20) + 4096, 1 << 20),
                   (1000, 5000), (SIZE - 1, 1), ((1 << 20) - 1, 2)):
        ext = status(c, off, n, N.CMD_FLAG_REQ_ONE)
        assert len(ext) == 1, "REQ_ONE at %d+%d: %r" % (off, n, ext)
        assert ext[0][0] <= n, ext
    if HOLES:
        assert status(c, 0, SIZE, N.CMD_FLAG_REQ_ONE) == [
            (1 << 20, N.STATE_HOLE | N.STATE_ZERO)]


def random_ranges():
    rng = random.Random(99)
    c = connect()
    for i in range(150):
        n = rng.randrange(1, SIZE + 1)
        off = rng.randrange(0, SIZE - n + 1)
        status(c, off, n, rng.choice((0, N.CMD_FLAG_REQ_ONE)))


def errors():
    c = connect()
    for off, n in ((SIZE, 1), (SIZE - 512, 1024), ((1 << 64) - 512, 1024)):
        cookie = c.request(N.CMD_BLOCK_STATUS, offset=off, length=n)
        r = c.reply_all(cookie)
        assert r[-1].error == N.EINVAL, r
        assert not any(x.type == N.REPLY_TYPE_BLOCK_STATUS for x in r), r
    status(c, 0, 4096)


def interleaved_with_reads():
    c = connect()
    kind = {}   # cookie -> ("status" or "read", offset)
    for i in range(32):
        off = i * 131072
        kind[c.request(N.CMD_BLOCK_STATUS, offset=off, length=131072)] = (
            "status", off)
        kind[c.request(N.CMD_READ, offset=off, length=131072)] = ("read", off)
    pending = {k: [] for k in kind}
    while pending:
        r = c.reply()
        assert r.cookie in pending, "reply for cookie %#x" % r.cookie
        pending[r.cookie].append(r)
        if r.done:
            chunks = pending.pop(r.cookie)
            what, off = kind[r.cookie]
            if what == "read":
                assert N.assemble_read(chunks, off, 131072) == \
                    IMAGE[off:off + 131072]
            else:
                assert len(chunks) == 1 and chunks[0].error == 0, chunks
                assert chunks[0].type == N.REPLY_TYPE_BLOCK_STATUS, chunks


N.run_checks(without_context, whole_image, req_one, random_ranges, errors,
             interleaved_with_reads)
PY
