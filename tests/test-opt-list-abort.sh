#!/usr/bin/env bash
# NBD_OPT_LIST and NBD_OPT_STRUCTURED_REPLY with a payload get
# NBD_REP_ERR_INVALID (and change nothing); NBD_OPT_LIST lists the export;
# NBD_OPT_ABORT is acknowledged, then the server closes, and a client that
# closes without reading the ACK does not hurt the server.
source "${srcdir:-$(dirname "$0")}/functions.sh"

truncate -s 1M "$tmp/disk.img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 -x my-disk "$tmp/disk.img"

export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 SOCK=$tmp/sock PIDFILE=$tmp/pid
$PYTHON - <<'PY' || fail "LIST/STRUCTURED_REPLY/ABORT rules"
import os, struct
import nbd_raw as N
sock = os.environ["SOCK"]
pid = N.server_pid(os.environ["PIDFILE"])


def list_with_payload_invalid():
    c = N.Client(sock)
    c.handshake()
    for payload in (b"x", b"\0\0\0\0", b"my-disk"):
        r = c.option(N.OPT_LIST, payload)
        assert len(r) == 1 and r[0][0] == N.REP_ERR_INVALID, r
    r = c.option(N.OPT_LIST)
    assert r == [(N.REP_SERVER, struct.pack(">I", 7) + b"my-disk"),
                 (N.REP_ACK, b"")], r


def structured_reply_with_payload_invalid():
    c = N.Client(sock)
    c.handshake()
    r = c.option(N.OPT_STRUCTURED_REPLY, b"\0\0\0\0")
    assert len(r) == 1 and r[0][0] == N.REP_ERR_INVALID, r
    # Refused means not negotiated: no DF, and READ gets a simple reply.
    c.go("my-disk")
    assert not c.eflags & N.FLAG_SEND_DF, hex(c.eflags)
    cookie = c.request(N.CMD_READ, offset=0, length=512)
    r = c.reply_all(cookie)
    assert len(r) == 1 and r[0].simple and r[0].payload == bytes(512), r


def structured_reply_accepted():
    c = N.Client(sock)
    c.handshake()
    c.structured_reply()
    c.go("my-disk")
    assert c.eflags & N.FLAG_SEND_DF, hex(c.eflags)
    cookie = c.request(N.CMD_READ, offset=0, length=512)
    r = c.reply_all(cookie)
    assert not r[0].simple, r
    c.disconnect()


def abort_acks_then_closes():
    for before in ((), (N.OPT_LIST,), (N.OPT_STRUCTURED_REPLY, 99)):
        c = N.Client(sock)
        c.handshake()
        for opt in before:
            c.option(opt)
        r = c.option(N.OPT_ABORT)
        assert r == [(N.REP_ACK, b"")], r
        assert c.is_closed(), "still open after ABORT (%r)" % c.unexpected


def abort_without_reading():
    for i in range(20):
        c = N.Client(sock)
        c.handshake()
        c.send_option(N.OPT_ABORT)
        c.close()
    # Also with the greeting never read at all.
    for i in range(20):
        c = N.Client(sock)
        c.send(struct.pack(">I", N.FLAG_FIXED_NEWSTYLE))
        c.send_option(N.OPT_ABORT)
        c.close()
    os.kill(pid, 0)
    c = N.connect(sock, "my-disk")
    assert c.read(0, 512) == bytes(512)
    c.disconnect()


N.run_checks(list_with_payload_invalid, structured_reply_with_payload_invalid,
             structured_reply_accepted, abort_acks_then_closes,
             abort_without_reading)
PY
