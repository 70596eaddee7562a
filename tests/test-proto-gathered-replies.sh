#!/usr/bin/env bash
# Many small requests in flight, sent in pieces that cut headers and
# payloads anywhere (so the server's request buffer is refilled mid-request):
# each is answered exactly once with the right data or error, also when
# quick requests (answered in one gathered send) mix with flushes, FUA
# writes and bad requests (answered by other workers).  A client that
# reads no reply until it has sent all its requests, whose replies are far
# larger than the socket buffers, still gets them all: the server's reader
# never blocks in a send while it holds the reader role.  Also with
# --cache=none.  (Reads go to
# blocks never written here, so earlier checks cannot change them.)
source "${srcdir:-$(dirname "$0")}/functions.sh"

$PYTHON -c '
import sys
with open(sys.argv[1], "wb") as f:
    for i in range(4096):
        f.write(bytes([i % 251 + 1]) * 4096)
' "$tmp/disk.img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 "$tmp/disk.img"

export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1
checks=$(cat <<'PY'
import os, random, struct, threading
import nbd_raw as N
sock = os.environ["SOCK"]
SIZE = 16 << 20


def block(i, gen=0):
    return bytes([(i + gen * 7) % 251 + 1]) * 4096


def header(c, type, flags, offset, length):
    cookie = c._cookie
    c._cookie += 2
    c.pending[cookie] = (type, length)
    return cookie, struct.pack(">IHHQQI", N.REQUEST_MAGIC, flags, type,
                               cookie, offset, length)


def answer_all(c, expect):
    """expect: {cookie: (offset, length, bytes to read, or error)}."""
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


def mixed_stream(structured, seed):
    c = N.connect(sock, structured=structured)
    rng = random.Random(seed)
    expect, stream = {}, []
    gen = seed
    # Writes go to blocks 2048..4095 (new contents), reads to 0..2047
    # (never written here), so every answer is known in advance.
    for i in range(3000):
        k = rng.random()
        if k < 0.45:
            b = rng.randrange(2048)
            off = b * 4096 + rng.choice((0, 0, 512, 1000))
            n = rng.choice((4096, 4096, 512, 1))
            n = min(n, (b + 1) * 4096 - off)
            ck, h = header(c, N.CMD_READ, 0, off, n)
            expect[ck] = (off, n, block(b)[:n])
            stream.append(h)
        elif k < 0.9:
            b = 2048 + rng.randrange(2048)
            fua = N.CMD_FLAG_FUA if rng.random() < 0.05 else 0
            ck, h = header(c, N.CMD_WRITE, fua, b * 4096, 4096)
            expect[ck] = (b * 4096, 4096, 0)
            stream.append(h + block(b, gen))
        elif k < 0.95:
            ck, h = header(c, N.CMD_FLUSH, 0, 0, 0)
            expect[ck] = (0, 0, 0)
            stream.append(h)
        else:
            ck, h = header(c, N.CMD_READ, 0, SIZE, 4096)
            expect[ck] = (SIZE, 4096, N.EINVAL)
            stream.append(h)
    data = b"".join(stream)

    def send():
        pos = 0
        while pos < len(data):
            n = rng.choice((1, 7, 28, 100, 4000, 4124, 30000, 200000))
            c.send(data[pos:pos + n])
            pos += n

    sender = threading.Thread(target=send)
    sender.start()
    answer_all(c, expect)
    sender.join()
    for b in range(2048, 4096, 97):
        got = c.read(b * 4096, 4096)
        assert got in [block(b, g) for g in range(3)], "block %d" % b
    c.disconnect()


def stream_simple():
    mixed_stream(False, 1)


def stream_structured():
    mixed_stream(True, 2)


def replies_read_late():
    for structured, count in ((False, 400), (True, 400), (True, 64),
                              (True, 40), (False, 24), (True, 17)):
        c = N.connect(sock, structured=structured, timeout=30)
        expect, stream = {}, []
        # Up to 400 reads of 64 KiB, sent at once: 11 KiB of requests,
        # 25 MiB of replies.
        for i in range(count):
            off = (i % 32) * 65536
            flags = N.CMD_FLAG_DF if structured and i % 2 else 0
            ck, h = header(c, N.CMD_READ, flags, off, 65536)
            expect[ck] = (off, 65536, b"".join(
                block(off // 4096 + j) for j in range(16)))
            stream.append(h)
        c.send(b"".join(stream))
        answer_all(c, expect)
        c.disconnect()


N.run_checks(stream_simple, stream_structured, replies_read_late)
PY
)
SOCK=$tmp/sock $PYTHON -c "$checks" || fail "gathered replies"

# With O_DIRECT (where $tmp has it) payloads and read data cannot stay where
# they lie in the server's buffers: the same rules hold on that path.
if dd if=/dev/zero of="$tmp/direct" bs=4096 count=1 oflag=direct 2>/dev/null; then
    _stop_server "$tmp/pid"
    start_server "$tmp/sock2" "$tmp/pid2" -f raw -t -e 0 --cache=none \
        "$tmp/disk.img"
    SOCK=$tmp/sock2 $PYTHON -c "$checks" || fail "gathered replies, O_DIRECT"
fi
