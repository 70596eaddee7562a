#!/usr/bin/env bash
# Unknown options (any number, ones from newer spec versions included) get
# NBD_REP_ERR_UNSUP echoing the option, their payload is skipped, and the
# next option still parses.  NBD_OPT_STARTTLS on a server without TLS gets
# NBD_REP_ERR_POLICY (never NBD_REP_ERR_TLS_REQD) and the session goes on.
source "${srcdir:-$(dirname "$0")}/functions.sh"

truncate -s 1M "$tmp/disk.img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 "$tmp/disk.img"

export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 SOCK=$tmp/sock
$PYTHON - <<'PY' || fail "unknown option rules"
import os, struct
import nbd_raw as N
sock = os.environ["SOCK"]

# 0 and 4 were never defined; 11 (EXTENDED_HEADERS) and 12 are newer than
# this server; the rest are simply unknown.
UNKNOWN = (0, 4, 11, 12, 13, 99, 0x7fff, 0x7fffffff, 0x80000000, 0xffffffff)


def unknown_options_unsup():
    c = N.Client(sock)
    c.handshake()
    for opt in UNKNOWN:
        for payload in (b"", b"x", bytes(range(256)) * 4):
            r = c.option(opt, payload)
            assert len(r) == 1 and r[0][0] == N.REP_ERR_UNSUP, \
                "option %#x with %d bytes: %r" % (opt, len(payload), r)
            r[0][1].decode()  # an error message is UTF-8
    # The options parse on: LIST, then GO and a read.
    r = c.option(N.OPT_LIST)
    assert r == [(N.REP_SERVER, b"\0\0\0\0"), (N.REP_ACK, b"")], r
    c.go("")
    assert c.read(0, 4096) == bytes(4096)
    c.disconnect()


def unknown_option_payload_is_skipped():
    # A payload that looks like an option must not be parsed as one.
    c = N.Client(sock)
    c.handshake()
    fake = struct.pack(">QII", N.IHAVEOPT, N.OPT_LIST, 0)
    r = c.option(99, fake)
    assert r[0][0] == N.REP_ERR_UNSUP and len(r) == 1, r
    r = c.option(N.OPT_STRUCTURED_REPLY)
    assert r == [(N.REP_ACK, b"")], r


def starttls_without_tls_is_policy():
    c = N.Client(sock)
    c.handshake()
    r = c.option(N.OPT_STARTTLS)
    assert len(r) == 1, r
    assert r[0][0] != N.REP_ERR_TLS_REQD, "TLS_REQD from a server without TLS"
    # Both POLICY and UNSUP are allowed; this server answers POLICY.
    assert r[0][0] == N.REP_ERR_POLICY, r
    # No TLS was started: plain options and transmission go on.
    r = c.option(N.OPT_LIST)
    assert r[-1][0] == N.REP_ACK, r
    c.go("")
    assert c.read(0, 512) == bytes(512)
    c.disconnect()


def no_option_gets_tls_reqd():
    c = N.Client(sock)
    c.handshake()
    for opt in (N.OPT_LIST, N.OPT_STRUCTURED_REPLY, 99):
        for rtype, _ in c.option(opt):
            assert rtype != N.REP_ERR_TLS_REQD, opt
    r = c.info("")
    assert r[-1][0] == N.REP_ACK, r


N.run_checks(unknown_options_unsup, unknown_option_payload_is_skipped,
             starttls_without_tls_is_policy, no_option_gets_tls_reqd)
PY
