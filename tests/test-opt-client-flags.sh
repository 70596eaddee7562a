#!/usr/bin/env bash
# Client flags (proto.md, newstyle negotiation): the server MUST close the
# connection on client flags it does not know; NBD_FLAG_C_NO_ZEROES drops
# the 124 zero bytes after NBD_OPT_EXPORT_NAME, and without it they are
# sent; NBD_OPT_EXPORT_NAME for an unknown export terminates the session.
source "${srcdir:-$(dirname "$0")}/functions.sh"

truncate -s 1M "$tmp/disk.img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 -x disk "$tmp/disk.img"

export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 SOCK=$tmp/sock
$PYTHON - <<'PY' || fail "client flag rules"
import os, struct
import nbd_raw as N
sock = os.environ["SOCK"]
FIXED = N.FLAG_FIXED_NEWSTYLE


def greeting_advertises_fixed_newstyle_and_no_zeroes():
    c = N.Client(sock)
    g = c.greeting()
    assert g == N.FLAG_FIXED_NEWSTYLE | N.FLAG_NO_ZEROES, hex(g)


def unknown_client_flags_close():
    for bad in (1 << 2, 1 << 15, 1 << 31, 0xffffffff,
                FIXED | N.FLAG_NO_ZEROES | 1 << 7):
        c = N.Client(sock)
        c.handshake(bad)
        assert c.is_closed(), "client flags %#x: not closed" % bad


def no_fixed_newstyle_closes():
    # A SHOULD-level choice of the server: it serves fixed-newstyle
    # clients only (qemu-nbd also serves plain newstyle ones).
    c = N.Client(sock)
    c.handshake(0)
    assert c.is_closed(), "client without fixed newstyle served"


def no_zeroes_honoured():
    c = N.Client(sock)
    c.handshake(FIXED | N.FLAG_NO_ZEROES)
    assert c.export_name("disk") == b""
    assert c.size == 1 << 20
    # The very next bytes must be the reply to this READ, not zeroes.
    c.request(N.CMD_READ, offset=0, length=512, cookie=0x123)
    magic = struct.unpack(">I", c.recv(4))[0]
    assert magic == N.SIMPLE_REPLY_MAGIC, "got %#x: padding sent" % magic


def zeroes_sent_without_no_zeroes():
    c = N.Client(sock)
    c.handshake(FIXED)
    assert c.export_name("disk") == bytes(124)
    assert c.size == 1 << 20 and c.eflags & N.FLAG_HAS_FLAGS
    assert c.read(0, 512) == bytes(512)
    c.disconnect()


def export_name_unknown_closes():
    for name in ("nope", "", "DISK", "disk/"):
        c = N.Client(sock)
        c.handshake()
        c.send_option(N.OPT_EXPORT_NAME, name.encode())
        assert c.is_closed(), "EXPORT_NAME %r: not closed" % name


def export_name_with_nul_is_not_truncated():
    # Names never contain NUL, so "disk\0x" names no export: the server
    # must not cut it at the NUL and serve "disk" instead.
    for name in (b"disk\0", b"disk\0other"):
        c = N.Client(sock)
        c.handshake()
        c.send_option(N.OPT_EXPORT_NAME, name)
        assert c.is_closed(), "EXPORT_NAME %r served export 'disk'" % name


def export_name_after_options():
    c = N.Client(sock)
    c.handshake()
    assert c.option(N.OPT_LIST)[-1][0] == N.REP_ACK
    c.export_name("disk")
    assert c.read(4096, 4096) == bytes(4096)
    c.disconnect()


N.run_checks(greeting_advertises_fixed_newstyle_and_no_zeroes,
             unknown_client_flags_close, no_fixed_newstyle_closes,
             no_zeroes_honoured, zeroes_sent_without_no_zeroes,
             export_name_unknown_closes, export_name_with_nul_is_not_truncated,
             export_name_after_options)
PY
