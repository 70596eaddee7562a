#!/usr/bin/env bash
# Large READs of a raw file go from the page cache to the socket through a
# pipe (splice), in chunks of at most the pipe's size, and are served by the
# reading thread when they fit in the send buffer.  Whatever the path: the
# bytes are the file's (simple and structured replies, any alignment, up to
# the 32 MiB maximum, NBD_CMD_FLAG_DF as one chunk); a read after a write
# sees the write; a client that sends more large reads (and writes) than
# the socket buffer holds before it reads any reply is still served (the
# reader never waits on a full socket);
# and the same holds where the pipe is not used (O_DIRECT).
source "${srcdir:-$(dirname "$0")}/functions.sh"

# 40 MiB of distinct bytes, fully allocated.
$PYTHON -c '
import random, sys
random.seed(7)
with open(sys.argv[1], "wb") as f:
    f.write(random.randbytes(40 << 20))
' "$tmp/disk.img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 "$tmp/disk.img"

checks='
import os, random
import nbd_raw as N
sock = os.environ["SOCK"]
with open(os.environ["IMG"], "rb") as f:
    IMAGE = bytearray(f.read())
SIZE = len(IMAGE)
MIB = 1 << 20
SIZES = ((0, 65536), (4096, 65537), (0, MIB), (1, MIB), (4095, MIB + 3),
         (3 * MIB, 4 * MIB + 512), (SIZE - MIB, MIB), (100, 32 * MIB))


def reads_return_the_file():
    for structured in (False, True):
        c = N.connect(sock, structured=structured)
        for off, n in SIZES:
            assert c.read(off, n) == IMAGE[off:off + n], \
                "structured=%s %d+%d" % (structured, off, n)
        c.disconnect()


def df_is_one_chunk():
    c = N.connect(sock, structured=True)
    for off, n in SIZES:
        cookie = c.request(N.CMD_READ, flags=N.CMD_FLAG_DF, offset=off,
                           length=n)
        r = c.reply_all(cookie)
        assert len(r) == 1 and r[0].type == N.REPLY_TYPE_OFFSET_DATA, \
            "%d+%d: %d chunks" % (off, n, len(r))
        assert N.assemble_read(r, off, n) == IMAGE[off:off + n]
    c.disconnect()


def read_after_write():
    rng = random.Random(3)
    c = N.connect(sock, structured=True)
    for i in range(20):
        off, n = rng.randrange(0, SIZE - 2 * MIB), rng.choice((MIB, 300000))
        assert c.read(off, n) == IMAGE[off:off + n]
        data = rng.randbytes(n // 2)
        assert c.write(off + 4096, data) == 0
        IMAGE[off + 4096:off + 4096 + len(data)] = data
        assert c.read(off, n) == IMAGE[off:off + n], "stale data, round %d" % i
    c.disconnect()


def many_in_flight_unread():
    # 12 one-MiB reads and 6 one-MiB writes (payloads the server must
    # read) before any reply is read: more replies than the socket buffer
    # holds, so the reader must hand its role on rather than wait to send.
    # (Each reply that cannot be sent holds one of the 16 workers.)
    for structured in (False, True):
        c = N.connect(sock, structured=structured, timeout=60)
        want = {}
        for i in range(18):
            off = (i * 1613 * 4096) % (SIZE - 3 * MIB)  # page aligned
            if i % 3 == 2:
                data = bytes([i]) * MIB
                cookie = c.request(N.CMD_WRITE, offset=SIZE - MIB,
                                   payload=data)
                want[cookie] = None
            else:
                cookie = c.request(N.CMD_READ, offset=off, length=MIB)
                want[cookie] = (off, MIB)
        replies, done = {}, set()
        while done != want.keys():
            r = c.reply()
            replies.setdefault(r.cookie, []).append(r)
            if r.simple or r.done:
                done.add(r.cookie)
        for cookie, what in want.items():
            r = replies[cookie]
            if what is None:
                assert r[-1].error == 0, r
            else:
                off, n = what
                assert N.assemble_read(r, off, n) == IMAGE[off:off + n], \
                    "read %d+%d" % (off, n)
        c.disconnect()


N.run_checks(reads_return_the_file, df_is_one_chunk, read_after_write,
             many_in_flight_unread)
'
export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 IMG=$tmp/disk.img
SOCK=$tmp/sock $PYTHON -c "$checks" || fail "piped reads"

# O_DIRECT (where $tmp has it) bypasses the page cache: no pipe, same rules.
if dd if=/dev/zero of="$tmp/direct" bs=4096 count=1 oflag=direct 2>/dev/null; then
    _stop_server "$tmp/pid"
    start_server "$tmp/sock2" "$tmp/pid2" -f raw -t -e 0 --cache=none \
        "$tmp/disk.img"
    SOCK=$tmp/sock2 $PYTHON -c "$checks" || fail "large reads, O_DIRECT"
fi
