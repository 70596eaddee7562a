#!/usr/bin/env bash
# READ with structured replies: never a simple reply; the chunks cover the
# requested range exactly once, stay inside it, and only the last carries
# NBD_REPLY_FLAG_DONE; a large read of a sparse image comes back as both
# OFFSET_DATA and OFFSET_HOLE chunks that assemble to the right bytes.
# With NBD_CMD_FLAG_DF there is exactly one content chunk (an OFFSET_DATA
# with the zeroes present when data and hole mix), up to 64 KiB at least.
source "${srcdir:-$(dirname "$0")}/functions.sh"

# 8 MiB, sparse, with data at 64K+64K, 1M+4K, 3M-100+300 and the last 512.
$PYTHON -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, 8 << 20)
for off, n in ((65536, 65536), (1 << 20, 4096), ((3 << 20) - 100, 300),
               ((8 << 20) - 512, 512)):
    os.pwrite(fd, bytes((off // 512 + i) % 251 + 1 for i in range(n)), off)
os.close(fd)
' "$tmp/disk.img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 "$tmp/disk.img"

export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 SOCK=$tmp/sock IMG=$tmp/disk.img
$PYTHON - <<'PY' || fail "structured READ rules"
import os, random
import nbd_raw as N
sock = os.environ["SOCK"]
with open(os.environ["IMG"], "rb") as f:
    IMAGE = f.read()
SIZE = len(IMAGE)
with open(os.environ["IMG"], "rb") as f:
    try:
        HOLES = os.lseek(f.fileno(), 0, os.SEEK_DATA) == 65536
    except OSError:
        HOLES = False
if not HOLES:
    print("note: the file system reports no holes; hole chunks not required")


def chunks_of_read(c, off, n, flags=0):
    cookie = c.request(N.CMD_READ, flags=flags, offset=off, length=n)
    r = c.reply_all(cookie)
    assert not any(x.simple for x in r), "simple reply: %r" % r
    data = N.assemble_read(r, off, n)   # coverage, overlap, DONE last
    assert data == IMAGE[off:off + n], "wrong data for %d+%d" % (off, n)
    return r


def sparse_read_has_data_and_holes():
    c = N.connect(sock, structured=True)
    r = chunks_of_read(c, 0, SIZE)
    types = {x.type for x in r}
    assert N.REPLY_TYPE_OFFSET_DATA in types, r
    if HOLES:
        assert N.REPLY_TYPE_OFFSET_HOLE in types, r
    # Unaligned ranges around the data.
    for off, n in ((65536 - 100, 200000), ((3 << 20) - 65536, 131072),
                   (1, SIZE - 2), ((1 << 20) + 1, 65535), (SIZE - 70000, 70000)):
        chunks_of_read(c, off, n)
    c.disconnect()


def small_reads():
    c = N.connect(sock, structured=True)
    for off, n in ((0, 1), (65536, 512), (65530, 12), (SIZE - 1, 1),
                   ((3 << 20) - 200, 4096), (0, 65535)):
        chunks_of_read(c, off, n)
    c.disconnect()


def random_reads():
    rng = random.Random(1234)
    c = N.connect(sock, structured=True)
    for i in range(200):
        n = rng.choice((1, 512, 4096, 65536, 200000, 1 << 20))
        off = rng.randrange(0, SIZE - n + 1)
        chunks_of_read(c, off, n)
    c.disconnect()


def df_one_content_chunk():
    c = N.connect(sock, structured=True)
    assert c.eflags & N.FLAG_SEND_DF
    # 64 KiB reads must be served unfragmented; larger ones may get
    # EOVERFLOW instead, with no content chunk.
    for off, n in ((0, 65536), (65536 - 512, 65536), ((1 << 20) - 30000, 65536),
                   (2 << 20, 65536), (0, 1 << 20), (0, SIZE)):
        cookie = c.request(N.CMD_READ, flags=N.CMD_FLAG_DF, offset=off,
                           length=n)
        r = c.reply_all(cookie)
        assert not any(x.simple for x in r), r
        content = [x for x in r if x.type in (N.REPLY_TYPE_OFFSET_DATA,
                                              N.REPLY_TYPE_OFFSET_HOLE)]
        if n > 65536 and r[-1].error:
            assert r[-1].error == N.EOVERFLOW and not content, r
            continue
        assert len(content) == 1, "DF read %d+%d: %r" % (off, n, r)
        data = N.assemble_read(r, off, n)
        assert data == IMAGE[off:off + n]
        mixed = any(IMAGE[off:off + n]) and not all(IMAGE[off:off + n])
        if mixed:
            assert content[0].type == N.REPLY_TYPE_OFFSET_DATA, r
    c.disconnect()


def errors_are_chunks():
    c = N.connect(sock, structured=True)
    for flags, off, n in ((0, SIZE, 512), (N.CMD_FLAG_REQ_ONE, 0, 512),
                          (1 << 9, 0, 512), (0, SIZE - 512, 4096)):
        cookie = c.request(N.CMD_READ, flags=flags, offset=off, length=n)
        r = c.reply_all(cookie)
        assert not any(x.simple for x in r), "simple reply: %r" % r
        assert r[-1].done and any(x.error for x in r), r
    chunks_of_read(c, 0, 4096)


N.run_checks(sparse_read_has_data_and_holes, small_reads, random_reads,
             df_one_content_chunk, errors_are_chunks)
PY
