#!/usr/bin/env bash
# With --tls-creds TLS is required (the spec's FORCEDTLS mode): before
# STARTTLS every option but STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD and
# nothing about the export is said; NBD_OPT_EXPORT_NAME hangs up; plain
# clients (qemu-img, nbdinfo) fail with an error instead of hanging.  After
# STARTTLS (ACK, then the handshake) options work, nothing negotiated
# before survives, and a second STARTTLS gets NBD_REP_ERR_INVALID.  A failed
# handshake closes the connection.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/tls-functions.sh"
requires qemu-img nbdinfo

tls_ca ca
tls_server_dir ca "$tmp/server"
tls_client_dir ca "$tmp/client" client1
img=$tmp/disk.img
truncate -s 1M "$img"
printf 'secret data' | dd of="$img" conv=notrunc status=none
sock=$tmp/sock
start_server "$sock" "$tmp/pid" -f raw -t -e 0 -x hidden-export \
    -D "hidden description" \
    --object "tls-creds-x509,id=tls0,endpoint=server,dir=$tmp/server" \
    --tls-creds tls0 "$img"

# Plain clients: an error naming TLS, quickly.
timeout 10 qemu-img info "nbd+unix:///hidden-export?socket=$sock" \
    >"$tmp/out" 2>&1 && fail "qemu-img without TLS was served"
[ $? -ne 124 ] || fail "qemu-img without TLS hung"
grep -q "TLS" "$tmp/out" || fail "qemu-img: no word of TLS: $(cat "$tmp/out")"
timeout 10 nbdinfo "nbd+unix:///hidden-export?socket=$sock" \
    >"$tmp/out" 2>&1 && fail "nbdinfo without TLS was served"
[ $? -ne 124 ] || fail "nbdinfo without TLS hung"
grep -q "description" "$tmp/out" && fail "nbdinfo learnt about the export"

export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 SOCK=$sock \
    CERTS=$tmp/client
$PYTHON - <<'PY' || fail "TLS-required rules"
import os, ssl, struct
import nbd_raw as N
sock = os.environ["SOCK"]
certs = os.environ["CERTS"]
NAME = "hidden-export"


def start_tls(c):
    """STARTTLS, then the TLS handshake on the client's socket."""
    r = c.option(N.OPT_STARTTLS)
    assert r == [(N.REP_ACK, b"")], r
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(certs, "ca-cert.pem"))
    ctx.load_cert_chain(os.path.join(certs, "client-cert.pem"),
                        os.path.join(certs, "client-key.pem"))
    c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")


def options_before_tls_get_tls_reqd():
    c = N.Client(sock)
    c.handshake()
    sent = [
        (N.OPT_LIST, b""),
        (N.OPT_INFO, c.info_payload(NAME, [N.INFO_NAME, N.INFO_DESCRIPTION])),
        (N.OPT_GO, c.info_payload(NAME)),
        (N.OPT_INFO, c.info_payload("no-such-export")),
        (N.OPT_STRUCTURED_REPLY, b""),
        (N.OPT_LIST_META_CONTEXT, c.meta_payload(NAME, ["base:"])),
        (N.OPT_SET_META_CONTEXT, c.meta_payload(NAME, ["base:allocation"])),
        (99, b"payload"),
        (0x7fffffff, b""),
    ]
    for opt, payload in sent:
        r = c.option(opt, payload)
        assert len(r) == 1 and r[0][0] == N.REP_ERR_TLS_REQD, (opt, r)
        msg = r[0][1].decode()
        assert "hidden" not in msg and "no-such" not in msg, msg
    # Still in negotiation, still plain: GO keeps failing.
    r = c.option(N.OPT_GO, c.info_payload(NAME))
    assert r[0][0] == N.REP_ERR_TLS_REQD, r
    r = c.option(N.OPT_ABORT)
    assert r == [(N.REP_ACK, b"")], r
    assert c.is_closed()


def export_name_before_tls_hangs_up():
    for name in (NAME, ""):
        c = N.Client(sock)
        c.handshake()
        c.send_option(N.OPT_EXPORT_NAME, name.encode())
        assert c.is_closed(), "EXPORT_NAME %r: got %r" % (name, c.unexpected)


def starttls_with_payload_is_invalid():
    c = N.Client(sock)
    c.handshake()
    r = c.option(N.OPT_STARTTLS, b"x")
    assert len(r) == 1 and r[0][0] == N.REP_ERR_INVALID, r
    # Nothing changed: still plain, still TLS required.
    r = c.option(N.OPT_LIST)
    assert r[0][0] == N.REP_ERR_TLS_REQD, r
    start_tls(c)
    r = c.option(N.OPT_LIST)
    assert r[-1][0] == N.REP_ACK, r


def options_after_tls():
    c = N.Client(sock)
    c.handshake()
    start_tls(c)
    r = c.option(N.OPT_LIST)
    assert r[0][0] == N.REP_SERVER and NAME.encode() in r[0][1], r
    assert r[-1] == (N.REP_ACK, b""), r
    r = c.option(N.OPT_STARTTLS)
    assert len(r) == 1 and r[0][0] == N.REP_ERR_INVALID, r
    # Structured replies were not negotiated on this session yet.
    r = c.meta_context(N.OPT_SET_META_CONTEXT, NAME, ["base:allocation"])
    assert r[-1][0] == N.REP_ERR_INVALID, r
    c.structured_reply()
    r = c.meta_context(N.OPT_SET_META_CONTEXT, NAME, ["base:allocation"])
    assert r[-1][0] == N.REP_ACK, r
    c.go(NAME)
    assert c.read(0, 11) == b"secret data"
    assert c.write(4096, b"x" * 70000) == 0
    assert c.read(4096, 70000) == b"x" * 70000
    c.disconnect()


def export_name_after_tls():
    c = N.Client(sock)
    c.handshake()
    start_tls(c)
    c.export_name(NAME)
    assert c.size == 1 << 20
    assert c.read(0, 6) == b"secret"
    c.disconnect()


def failed_handshake_closes():
    c = N.Client(sock)
    c.handshake()
    r = c.option(N.OPT_STARTTLS)
    assert r == [(N.REP_ACK, b"")], r
    # Not a TLS ClientHello: the server must hang up, not fall back.
    c.try_send(struct.pack(">QII", N.IHAVEOPT, N.OPT_LIST, 0))
    # A TLS alert record (type 21) may come first; then the server hangs up.
    got = b""
    while not c.is_closed():
        assert c.unexpected, "silence instead of a hang-up"
        got += c.unexpected
    assert got == b"" or got[0] == 21, "got %r" % got


def handshake_without_certificate_closes():
    c = N.Client(sock)
    c.handshake()
    r = c.option(N.OPT_STARTTLS)
    assert r == [(N.REP_ACK, b"")], r
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(certs, "ca-cert.pem"))
    try:
        c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")
        c.send_option(N.OPT_LIST)  # TLS 1.3: the refusal comes now
        c.option_reply()
    except (ssl.SSLError, N.Closed, ConnectionResetError, BrokenPipeError):
        return
    raise AssertionError("served without a client certificate")


N.run_checks(options_before_tls_get_tls_reqd, export_name_before_tls_hangs_up,
             starttls_with_payload_is_invalid, options_after_tls,
             export_name_after_tls, failed_handshake_closes,
             handshake_without_certificate_closes)
PY
