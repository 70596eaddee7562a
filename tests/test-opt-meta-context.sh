#!/usr/bin/env bash
# NBD_OPT_LIST/SET_META_CONTEXT: before NBD_OPT_STRUCTURED_REPLY they get
# NBD_REP_ERR_INVALID; queries in unknown namespaces (or unknown leaves of
# base:) are ignored; "base:" in LIST, and LIST with no query, list
# base:allocation; SET answers each selected context once, then the ACK,
# and a later SET replaces the earlier choice; a malformed payload gets
# NBD_REP_ERR_INVALID.
source "${srcdir:-$(dirname "$0")}/functions.sh"

truncate -s 1M "$tmp/disk.img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 -x disk "$tmp/disk.img"

export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 SOCK=$tmp/sock
$PYTHON - <<'PY' || fail "meta context rules"
import os, struct
import nbd_raw as N
sock = os.environ["SOCK"]
LIST, SET = N.OPT_LIST_META_CONTEXT, N.OPT_SET_META_CONTEXT
META, ACK = N.REP_META_CONTEXT, N.REP_ACK


def contexts(replies):
    """{name: id} of the META_CONTEXT replies before a final ACK."""
    assert replies[-1] == (ACK, b""), replies
    out = {}
    for r in replies[:-1]:
        assert r[0] == META, r
        assert r[2] not in out, "context %s sent twice" % r[2]
        out[r[2]] = r[1]
    return out


def before_structured_reply_invalid():
    c = N.Client(sock)
    c.handshake()
    for opt in (LIST, SET):
        for q in ([], ["base:allocation"]):
            r = c.meta_context(opt, "disk", q)
            assert len(r) == 1 and r[0][0] == N.REP_ERR_INVALID, (opt, q, r)
    c.structured_reply()
    assert "base:allocation" in contexts(c.meta_context(LIST, "disk", []))


def list_contexts():
    c = N.Client(sock)
    c.handshake()
    c.structured_reply()
    all_ = contexts(c.meta_context(LIST, "disk", []))
    assert "base:allocation" in all_, all_
    assert all(name.startswith(("base:", "qemu:")) for name in all_), all_
    base = contexts(c.meta_context(LIST, "disk", ["base:"]))
    assert base == {n: i for n, i in all_.items()
                    if n.startswith("base:")}, base
    one = contexts(c.meta_context(LIST, "disk", ["base:allocation"]))
    assert list(one) == ["base:allocation"], one
    # LIST selects nothing: a BLOCK_STATUS after GO is refused.
    c.go("disk")
    assert c.cmd(N.CMD_BLOCK_STATUS, offset=0, length=4096) == N.EINVAL


def unknown_namespaces_ignored():
    c = N.Client(sock)
    c.handshake()
    c.structured_reply()
    odd = ["nosuch:thing", "x-vendor:", "base:bogus", "base", ":", "",
           "qemu:no-such-context"]
    for opt in (LIST, SET):
        assert contexts(c.meta_context(opt, "disk", odd)) == {}, opt
        got = contexts(c.meta_context(opt, "disk",
                                      odd + ["base:allocation"] + odd))
        assert list(got) == ["base:allocation"], (opt, got)


def set_selects_and_replaces():
    c = N.Client(sock)
    c.handshake()
    c.structured_reply()
    ctx = contexts(c.meta_context(SET, "disk", ["base:allocation"]))
    assert list(ctx) == ["base:allocation"], ctx
    # A second SET replaces the first: here with nothing.
    assert contexts(c.meta_context(SET, "disk", [])) == {}
    c.go("disk")
    assert c.cmd(N.CMD_BLOCK_STATUS, offset=0, length=4096) == N.EINVAL

    c = N.Client(sock)
    c.handshake()
    c.structured_reply()
    ctx = contexts(c.meta_context(SET, "disk", ["base:allocation"]))
    c.go("disk")
    cookie = c.request(N.CMD_BLOCK_STATUS, offset=0, length=4096)
    r = c.reply_all(cookie)
    assert len(r) == 1 and r[0].type == N.REPLY_TYPE_BLOCK_STATUS, r
    assert r[0].block_status()[0] == ctx["base:allocation"], r


def unknown_export():
    # Contexts of an export that does not exist: an error, nothing set.
    c = N.Client(sock)
    c.handshake()
    c.structured_reply()
    for opt in (LIST, SET):
        r = c.meta_context(opt, "nope", ["base:allocation"])
        assert len(r) == 1 and r[0][0] & N.REP_FLAG_ERROR, r
        assert r[0][0] == N.REP_ERR_UNKNOWN, r   # the server's choice
    c.go("disk")
    assert c.cmd(N.CMD_BLOCK_STATUS, offset=0, length=4096) == N.EINVAL


def malformed_invalid():
    P = N.Client.meta_payload
    q = struct.pack(">I", 15) + b"base:allocation"
    bad = [
        b"",
        b"\0\0",
        P("disk", [], name_len=100),           # name past the payload
        P("disk", [], name_len=0xffffffff),
        struct.pack(">I", 4) + b"disk",        # no query count
        struct.pack(">I", 4) + b"disk\0\0",    # half a query count
        struct.pack(">I", 4) + b"disk" + struct.pack(">I", 2) + q,
        struct.pack(">I", 4) + b"disk" + struct.pack(">I", 1) + q[:-1],
        struct.pack(">I", 4) + b"disk" + struct.pack(">I", 1)
        + struct.pack(">I", 0xffffffff) + b"base:allocation",
        struct.pack(">I", 4) + b"disk" + struct.pack(">I", 0xffffffff),
        P("disk", ["base:allocation"]) + b"\0",  # trailing byte
    ]
    c = N.Client(sock)
    c.handshake()
    c.structured_reply()
    for opt in (LIST, SET):
        for payload in bad:
            r = c.option(opt, payload)
            assert len(r) == 1 and r[0][0] == N.REP_ERR_INVALID, \
                "option %d, payload %r: %r" % (opt, payload, r)
    assert "base:allocation" in contexts(c.meta_context(SET, "disk",
                                                        ["base:allocation"]))
    c.go("disk")
    assert c.cmd(N.CMD_BLOCK_STATUS, offset=0, length=4096) == 0


N.run_checks(before_structured_reply_invalid, list_contexts,
             unknown_namespaces_ignored, set_selects_and_replaces,
             unknown_export, malformed_invalid)
PY
