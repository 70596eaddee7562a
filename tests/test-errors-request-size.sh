#!/usr/bin/env bash
# Request sizes.  A WRITE payload above the advertised maximum block size
# (32 MiB) but at most 64 MiB is read, answered with an error, and the
# connection stays usable; an absurd WRITE length (4 GiB) may cost the
# connection but is never allocated, and other clients are still served;
# a READ above the maximum gets an error; requests of the maximum size,
# unaligned requests (the minimum block size is 1) and TRIM/WRITE_ZEROES
# longer than the maximum are served; zero-length READ, WRITE, TRIM,
# WRITE_ZEROES and CACHE succeed without a disconnect.
source "${srcdir:-$(dirname "$0")}/functions.sh"

truncate -s 128M "$tmp/disk.img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 "$tmp/disk.img"

export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 SOCK=$tmp/sock PIDFILE=$tmp/pid
$PYTHON - <<'PY' || fail "request size rules"
import os, struct
import nbd_raw as N
sock = os.environ["SOCK"]
pid = N.server_pid(os.environ["PIDFILE"])
MAX = 32 << 20
MARK = b"\x3c" * 4096


def max_block_size():
    c = N.Client(sock)
    c.handshake()
    r = c.info("", (N.INFO_BLOCK_SIZE,))
    bs = [x[2] for x in r if x[0] == N.REP_INFO and x[1] == N.INFO_BLOCK_SIZE]
    assert bs and struct.unpack(">III", bs[0])[2] == MAX, r


def absurd_write_not_allocated():
    # First, so that no 32 MiB buffer from a legitimate request hides a
    # 4 GiB allocation in the RSS.
    rss0 = N.rss_kib(pid)
    for length in (0xffffffff, 0x80000000, (64 << 20) + 1):
        c = N.connect(sock)
        c.request(N.CMD_WRITE, offset=0, length=length, send_payload=False)
        c.try_send(b"\xee" * 65536)
        # The spec allows a disconnect here; this server takes it.
        assert c.is_closed(), "WRITE of %#x bytes: %r" % (length,
                                                         c.unexpected)
        rss = N.rss_kib(pid)
        assert rss < rss0 + 32 * 1024, "RSS %d -> %d KiB" % (rss0, rss)
    # Meanwhile, and after, other clients are served.
    # A client stalled in the middle of a large payload the server drains.
    hung = N.connect(sock)
    hung.request(N.CMD_WRITE, offset=0, length=48 << 20, send_payload=False)
    hung.send(b"\xee" * (1 << 20))
    c = N.connect(sock)
    assert c.write(0, MARK) == 0
    assert c.read(0, 4096) == MARK, "the absurd WRITE wrote something"
    c.disconnect()
    hung.close()
    os.kill(pid, 0)


def oversized_write_drained():
    c = N.connect(sock)
    assert c.write(0, MARK) == 0
    for n in (MAX + 1, MAX + 4096, 64 << 20):
        got = c.write(0, b"\xff" * n)
        assert got != 0, "WRITE of %d bytes accepted" % n
        # A READ right after must be answered: the payload was consumed.
        assert c.read(0, 4096) == MARK, "data changed, or payload not read"
    assert c.write(4096, b"\x01" * 4096) == 0
    c.disconnect()


def oversized_read_refused():
    for structured in (False, True):
        c = N.connect(sock, structured=structured)
        for n in (MAX + 1, 64 << 20, 0xffffffff):
            cookie = c.request(N.CMD_READ, offset=0, length=n)
            r = c.reply_all(cookie)
            assert r[-1].error != 0, "READ of %d bytes: %r" % (n, r)
            assert not (structured and r[0].simple), r
            assert r[-1].error == N.EINVAL, r   # the server's choice
        assert c.read(0, 4096) == MARK
        c.disconnect()


def max_size_requests_work():
    c = N.connect(sock)
    assert c.write(MAX, b"\x42" * MAX) == 0
    data = c.read(MAX, MAX)
    assert data == b"\x42" * MAX
    assert c.cmd(N.CMD_WRITE_ZEROES, offset=MAX, length=MAX) == 0
    c.disconnect()


def unaligned_requests_served():
    # The advertised minimum block size is 1: any alignment is valid.
    c = N.connect(sock, structured=True)
    assert c.write(4097, b"\x07" * 3) == 0
    assert c.read(4097, 3) == b"\x07" * 3
    assert c.cmd(N.CMD_WRITE_ZEROES, offset=4098, length=1) == 0
    assert c.read(4097, 3) == b"\x07\0\x07"
    assert c.cmd(N.CMD_TRIM, offset=5001, length=777) == 0
    assert c.cmd(N.CMD_CACHE, offset=3, length=5) == 0
    c.disconnect()


def long_trim_and_zero():
    # TRIM and WRITE_ZEROES carry no payload, so lengths above the
    # maximum block size are served (or refused with EOVERFLOW/EINVAL),
    # never a reason to disconnect.
    c = N.connect(sock)
    for type in (N.CMD_WRITE_ZEROES, N.CMD_TRIM):
        for off, n in ((MAX, MAX + 4096), (0, 0xffffffff & ~4095)):
            if off + n > c.size:
                n = c.size - off
            got = c.cmd(type, offset=off, length=n)
            assert got in (0, N.EOVERFLOW, N.EINVAL), (type, got)
            assert got == 0, "the server's choice is to serve them"
    assert c.read(MAX, 4096) == bytes(4096)
    assert c.write(0, MARK) == 0
    c.disconnect()


def zero_length_requests():
    # The spec asks for no disconnect; success is what this server means
    # to answer (it has a zero-length READ path), and ENOMEM "SHOULD NOT"
    # be returned at all.  Repeated, so that every worker thread gets one.
    for structured in (False, True):
        c = N.connect(sock, structured=structured)
        for i in range(40):
            for type in (N.CMD_READ, N.CMD_WRITE, N.CMD_TRIM,
                         N.CMD_WRITE_ZEROES, N.CMD_CACHE):
                for off in (0, 4096, c.size):
                    cookie = c.request(type, offset=off, length=0)
                    r = c.reply_all(cookie)
                    assert r[-1].error == 0, "zero-length command %d at %d, " \
                        "round %d: %r" % (type, off, i, r)
                    if type == N.CMD_READ and structured:
                        assert not r[0].simple and r[-1].done, r
                        assert all(x.type == N.REPLY_TYPE_NONE for x in r), r
        assert c.read(0, 4096) == MARK
        c.disconnect()


N.run_checks(max_block_size, absurd_write_not_allocated,
             oversized_write_drained, oversized_read_refused,
             max_size_requests_work, unaligned_requests_served,
             long_trim_and_zero, zero_length_requests)
PY
