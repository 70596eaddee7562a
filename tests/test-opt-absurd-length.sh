#!/usr/bin/env bash
# Absurd option lengths: the server refuses them (here: it hangs up)
# without allocating them, and keeps serving other clients meanwhile.
# A large but bounded payload is read and refused with an error reply.
source "${srcdir:-$(dirname "$0")}/functions.sh"

truncate -s 1M "$tmp/disk.img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 "$tmp/disk.img"

export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 SOCK=$tmp/sock PIDFILE=$tmp/pid
$PYTHON - <<'PY' || fail "absurd option length rules"
import os
import nbd_raw as N
sock = os.environ["SOCK"]
pid = N.server_pid(os.environ["PIDFILE"])
rss0 = N.rss_kib(pid)
ABSURD = (0xffffffff, 0x80000000, 0x40000000)


def rss_stays_small():
    rss = N.rss_kib(pid)
    assert rss < rss0 + 64 * 1024, "RSS grew from %d to %d KiB" % (rss0, rss)


def working_client():
    c = N.connect(sock)
    assert c.read(0, 4096) == bytes(4096)
    return c


def absurd_lengths_refused():
    for opt in (99, N.OPT_LIST, N.OPT_GO, N.OPT_INFO, N.OPT_EXPORT_NAME,
                N.OPT_SET_META_CONTEXT, N.OPT_STRUCTURED_REPLY):
        for length in ABSURD:
            c = N.Client(sock)
            c.handshake()
            c.send_option(opt, b"\0" * 64, length=length)
            # The server may refuse with an error or hang up; this one
            # hangs up rather than read gigabytes.
            assert c.is_closed(), "option %d length %#x: %r" % (
                opt, length, c.unexpected)
            rss_stays_small()
    working_client().disconnect()


def others_served_during_absurd_option():
    # Clients that announced absurd options and then stall must not
    # block anyone else.
    stalled = []
    for length in ABSURD + (16 << 20, 1 << 20):
        c = N.Client(sock)
        c.handshake()
        c.send_option(99, b"\0" * 1000, length=length)
        stalled.append(c)
    w = working_client()
    w.write(0, b"\x5a" * 4096)
    assert w.read(0, 4096) == b"\x5a" * 4096
    w.disconnect()
    rss_stays_small()
    for c in stalled:
        c.close()


def large_bounded_payload_refused():
    # Above the server's 64 KiB option limit but sane: the payload is
    # read, refused (ERR_TOO_BIG is the server's choice), and the next
    # option works.
    c = N.Client(sock)
    c.handshake()
    for opt in (99, N.OPT_GO, N.OPT_LIST):
        r = c.option(opt, bytes(1 << 20))
        assert len(r) == 1 and r[0][0] & N.REP_FLAG_ERROR, r
        assert r[0][0] in (N.REP_ERR_TOO_BIG, N.REP_ERR_UNSUP,
                           N.REP_ERR_INVALID), r
    c.go("")
    assert c.read(65536, 512) == bytes(512)
    rss_stays_small()


N.run_checks(absurd_lengths_refused, others_served_during_absurd_option,
             large_bounded_payload_refused)
PY
