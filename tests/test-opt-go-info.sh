#!/usr/bin/env bash
# NBD_OPT_INFO and NBD_OPT_GO: an unknown export gets NBD_REP_ERR_UNKNOWN
# with no NBD_REP_INFO before it; success sends NBD_INFO_EXPORT before the
# ACK, answers NAME/DESCRIPTION requests, ignores info types it does not
# know, and sends a self-consistent NBD_INFO_BLOCK_SIZE; a name length
# larger than the payload (and any other malformed payload) gets
# NBD_REP_ERR_INVALID and the next option still works.  Error messages are
# strings: valid UTF-8, at most 4096 bytes, whatever name the client sent.
source "${srcdir:-$(dirname "$0")}/functions.sh"

truncate -s 3M "$tmp/disk.img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 -x disk \
    -D "a test disk" "$tmp/disk.img"

export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 SOCK=$tmp/sock
$PYTHON - <<'PY' || fail "INFO/GO rules"
import os, struct
import nbd_raw as N
sock = os.environ["SOCK"]
SIZE = 3 << 20


def power_of_2(n):
    return n > 0 and n & (n - 1) == 0


def check_success(replies):
    """The common shape of a successful INFO/GO; returns {type: data}."""
    assert replies[-1] == (N.REP_ACK, b""), replies
    infos = {}
    for r in replies[:-1]:
        assert r[0] == N.REP_INFO, "not an INFO before the ACK: %r" % (r,)
        assert r[1] not in infos, "info %d sent twice" % r[1]
        infos[r[1]] = r[2]
    assert N.INFO_EXPORT in infos, "no NBD_INFO_EXPORT before the ACK"
    size, flags = struct.unpack(">QH", infos[N.INFO_EXPORT])
    assert size == SIZE, size
    assert flags & N.FLAG_HAS_FLAGS, hex(flags)
    if N.INFO_BLOCK_SIZE in infos:
        data = infos[N.INFO_BLOCK_SIZE]
        assert len(data) == 12, data
        bmin, bpref, bmax = struct.unpack(">III", data)
        assert power_of_2(bmin) and bmin <= 65536, bmin
        assert power_of_2(bpref) and bpref >= max(bmin, 512), bpref
        assert bmax >= bpref and bmax % bmin == 0, (bmin, bpref, bmax)
    return infos


def unknown_export_unknown():
    c = N.Client(sock)
    c.handshake()
    for opt in (N.OPT_INFO, N.OPT_GO):
        for name in ("", "nope", "Disk", "disk ", "dis"):
            for infos in ((), (N.INFO_NAME, N.INFO_BLOCK_SIZE)):
                r = c.info(name, infos, opt)
                assert len(r) == 1, "%r: INFO sent before the error: %r" % (
                    name, r)
                assert r[0][0] == N.REP_ERR_UNKNOWN, (name, r)
    c.go("disk")
    assert c.read(0, 512) == bytes(512)


def name_with_nul_is_not_truncated():
    # Names never contain NUL, so "disk\0..." is no export's name: an
    # error (UNKNOWN, or INVALID for the malformed string), never "disk".
    c = N.Client(sock)
    c.handshake()
    for opt in (N.OPT_INFO, N.OPT_GO):
        for name in (b"disk\0", b"disk\0x"):
            r = c.info(name, (), opt)
            assert len(r) == 1 and r[0][0] in (N.REP_ERR_UNKNOWN,
                                               N.REP_ERR_INVALID), \
                "option %d for %r answered as for 'disk': %r" % (opt, name, r)


def info_success():
    c = N.Client(sock)
    c.handshake()
    infos = check_success(c.info("disk"))
    # Information the client did not ask for stays optional.
    assert set(infos) <= {N.INFO_EXPORT, N.INFO_BLOCK_SIZE}, infos.keys()
    infos = check_success(c.info("disk", (N.INFO_NAME, N.INFO_DESCRIPTION,
                                          N.INFO_BLOCK_SIZE)))
    assert infos[N.INFO_NAME] == b"disk", infos
    assert infos[N.INFO_DESCRIPTION] == b"a test disk", infos
    assert N.INFO_BLOCK_SIZE in infos
    # INFO stays in negotiation: more options work, then GO.
    assert c.option(N.OPT_LIST)[-1][0] == N.REP_ACK
    check_success(c.go("disk"))
    assert c.read(SIZE - 512, 512) == bytes(512)
    c.disconnect()


def unknown_info_requests_ignored():
    c = N.Client(sock)
    c.handshake()
    infos = check_success(c.info("disk", (0x7fff, 4, 0xffff, N.INFO_NAME,
                                          N.INFO_NAME)))
    assert set(infos) <= {N.INFO_EXPORT, N.INFO_NAME, N.INFO_BLOCK_SIZE,
                          N.INFO_DESCRIPTION}, infos.keys()
    assert infos[N.INFO_NAME] == b"disk"
    check_success(c.go("disk", (0x1234,)))
    assert c.read(0, 512) == bytes(512)


def go_flags_match_info():
    c = N.Client(sock)
    c.handshake()
    c.structured_reply()
    a = check_success(c.info("disk"))[N.INFO_EXPORT]
    b = check_success(c.go("disk"))[N.INFO_EXPORT]
    assert a == b, (a, b)
    assert c.eflags & N.FLAG_SEND_DF


def malformed_payloads_invalid():
    P = N.Client.info_payload
    bad = [
        b"",                                  # no name length
        b"\0\0",                              # a truncated name length
        P("disk", name_len=100),              # name length past the payload
        P("disk", name_len=0xffffffff),
        P("disk", name_len=0x80000000),
        P("disk", name_len=5),                # swallows a byte of the count
        struct.pack(">I", 4) + b"disk",       # no info count
        struct.pack(">I", 4) + b"disk\0",     # half an info count
        P("disk", (), ninfos=1),              # count past the payload
        P("disk", (N.INFO_NAME,), ninfos=0xffff),
        P("disk", (N.INFO_NAME,), ninfos=2),
        P("disk", (N.INFO_NAME, N.INFO_BLOCK_SIZE), ninfos=1),  # trailing
        P("disk") + b"\0",                    # an odd trailing byte
    ]
    c = N.Client(sock)
    c.handshake()
    for opt in (N.OPT_INFO, N.OPT_GO):
        for payload in bad:
            r = c.option(opt, payload)
            assert len(r) == 1 and r[0][0] == N.REP_ERR_INVALID, \
                "option %d, payload %r: %r" % (opt, payload, r)
    check_success(c.go("disk"))
    assert c.read(0, 512) == bytes(512)


def error_messages_are_strings():
    c = N.Client(sock)
    c.handshake()
    c.structured_reply()
    problems = []
    for name in (b"a" * 4096, b"\xff\xfe", b"\xc3", "d\u00efsk".encode()):
        for opt, payload in (
                (N.OPT_INFO, N.Client.info_payload(name)),
                (N.OPT_GO, N.Client.info_payload(name)),
                (N.OPT_LIST_META_CONTEXT, N.Client.info_payload(name)[:-2]
                 + b"\0\0\0\0")):
            r = c.option(opt, payload)
            assert len(r) == 1 and r[0][0] & N.REP_FLAG_ERROR, r
            msg = r[0][1]
            if len(msg) > 4096:
                problems.append("option %d for a %d-byte name: a %d-byte "
                                "message" % (opt, len(name), len(msg)))
            try:
                msg.decode("utf-8")
            except UnicodeDecodeError:
                problems.append("option %d: message %r is not UTF-8" % (
                    opt, msg[:40]))
    assert not problems, "\n".join(problems)


N.run_checks(unknown_export_unknown, error_messages_are_strings, name_with_nul_is_not_truncated,
             info_success,
             unknown_info_requests_ignored, go_flags_match_info,
             malformed_payloads_invalid)
PY
