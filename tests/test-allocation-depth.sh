#!/usr/bin/env bash
# -A/--allocation-depth: the qemu:allocation-depth meta context, with
# qemu-nbd -A as the oracle.  On a three-layer qcow2 chain whose layers
# have different sizes (so parts of the top read past the end of a
# backing) and on a sparse raw image, nbdinfo --map of both contexts gives
# qemu-nbd's lines.  On the wire: the contexts that LIST and SET answer for
# base:/qemu: queries, and a BLOCK_STATUS with both contexts selected (one
# chunk per context, base:allocation first, DONE on the last, REQ_ONE
# honoured in each) are qemu-nbd's too.  Without -A the context is not
# offered, on either server.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qcow2-functions.sh"
requires qemu-io

cd "$tmp"
qemu-img create -q -f qcow2 -o cluster_size=65536 base.qcow2 8M
qemu-io -f qcow2 -c 'write -P 1 0 3M' -c 'write -z 4M 1M' \
    -c 'write -P 2 6M 2M' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=4096 \
    -b base.qcow2 -F qcow2 mid.qcow2 12M
qemu-io -f qcow2 -c 'write -P 3 1M 100K' -c 'write -P 4 7M 2M' \
    mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 16M
qemu-io -f qcow2 -c 'write -P 5 2M 64K' -c 'write -z 6M 1M' \
    -c 'write -P 6 15M 16K' top.qcow2 >/dev/null
truncate -s 4M disk.raw
qemu-io -f raw -c 'write -P 7 1M 64K' -c 'write -P 8 3M 4K' disk.raw >/dev/null
cd /

# maps NAME FORMAT IMG: nbdinfo --map of both contexts through snapnbd -A
# and qemu-nbd -A are the same, and the top layer's depths are all there.
maps() {
    local name=$1 fmt=$2 img=$3 ctx
    local s=$tmp/$name.snap.sock q=$tmp/$name.qemu.sock
    start_server "$s" "$s.pid" -r -A -t -f "$fmt" "$img"
    start_qemu_nbd "$q" "$q.pid" "$img" -A -f "$fmt"
    for ctx in qemu:allocation-depth base:allocation; do
        nbdinfo --map="$ctx" "$(uri "$q")" >"$tmp/$name.qemu" ||
            fail "$name: nbdinfo --map=$ctx on qemu-nbd failed"
        nbdinfo --map="$ctx" "$(uri "$s")" >"$tmp/$name.snap" ||
            fail "$name: nbdinfo --map=$ctx failed"
        diff -u "$tmp/$name.qemu" "$tmp/$name.snap" ||
            fail "$name: $ctx map differs from qemu-nbd's"
        cp "$tmp/$name.snap" "$tmp/$name.$ctx"
    done
    nbdinfo --list "$(uri "$s")" | grep -q 'qemu:allocation-depth' ||
        fail "$name: nbdinfo --list does not show qemu:allocation-depth"
    _stop_server "$s.pid"
    _stop_server "$q.pid"
}
maps chain qcow2 "$tmp/top.qcow2"
# The chain's map must show every depth, or it proved little; a raw image
# is one layer, allocated everywhere.
for d in "0  absent" "1  local" "2  backing depth 2" "3  backing depth 3"; do
    grep -q " $d\$" "$tmp/chain.qemu:allocation-depth" ||
        fail "chain: no extent at depth '$d'"
done
maps raw raw "$tmp/disk.raw"
[ "$(cat "$tmp/raw.qemu:allocation-depth")" = \
  "         0     4194304    1  local" ] ||
    fail "raw: unexpected depth map: $(cat "$tmp/raw.qemu:allocation-depth")"

# Without -A neither server offers the context.
for server in snap qemu; do
    s=$tmp/noA.$server.sock
    if [ $server = snap ]; then
        start_server "$s" "$s.pid" -r -t -f qcow2 "$tmp/top.qcow2"
    else
        start_qemu_nbd "$s" "$s.pid" "$tmp/top.qcow2" -f qcow2
    fi
    if nbdinfo --map=qemu:allocation-depth "$(uri "$s")" >/dev/null 2>&1; then
        fail "$server without -A offers qemu:allocation-depth"
    fi
    _stop_server "$s.pid"
done

# transcript SOCK: what the server answers to meta context queries and to
# BLOCK_STATUS with both contexts, with context ids replaced by names.
transcript() {
    SOCK=$1 PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 $PYTHON - <<'PY'
import os
import nbd_raw as N
sock = os.environ["SOCK"]
LIST, SET = N.OPT_LIST_META_CONTEXT, N.OPT_SET_META_CONTEXT


def names(replies):
    assert replies[-1] == (N.REP_ACK, b""), replies
    return [r[2] for r in replies[:-1]]


c = N.Client(sock)
c.handshake()
c.structured_reply()
for q in ([], ["qemu:"], ["base:"], ["qemu:allocation-depth"],
          ["qemu:allocation-depth", "base:allocation"], ["qemu:nosuch"],
          ["qemu:allocation-depth:"], ["qemu:dirty-bitmap:"], ["qemu"]):
    print("LIST", q, sorted(names(c.meta_context(LIST, "disk", q))))
for q in (["qemu:"], ["base:"], ["qemu:allocation-depth"],
          ["base:allocation", "qemu:allocation-depth"]):
    print("SET", q, names(c.meta_context(SET, "disk", q)))
# The last SET selected both contexts, in this order.
ids = {r[1]: r[2] for r in c.meta_context(SET, "disk", [
    "qemu:allocation-depth", "base:allocation"])[:-1]}
assert len(ids) == 2, ids
c.go("disk")
for flags, offset, length in ((0, 0, c.size), (0, 1 << 20, 5 << 20),
                              (N.CMD_FLAG_REQ_ONE, 0, c.size),
                              (N.CMD_FLAG_REQ_ONE, 3 << 20, 1 << 20)):
    cookie = c.request(N.CMD_BLOCK_STATUS, flags=flags, offset=offset,
                       length=length)
    for r in c.reply_all(cookie):
        ctx, ext = r.block_status()
        print("STATUS", flags, offset, ids[ctx], ext, "DONE" if r.done else "")
PY
}

s=$tmp/wire.snap.sock q=$tmp/wire.qemu.sock
start_server "$s" "$s.pid" -r -A -t -x disk -f qcow2 "$tmp/top.qcow2"
start_qemu_nbd "$q" "$q.pid" "$tmp/top.qcow2" -A -x disk -f qcow2
transcript "$q" >"$tmp/wire.qemu" || fail "protocol transcript of qemu-nbd"
transcript "$s" >"$tmp/wire.snap" || fail "protocol transcript of snapnbd"
diff -u "$tmp/wire.qemu" "$tmp/wire.snap" ||
    fail "meta contexts or block status differ from qemu-nbd's"
# The transcript must show both contexts answered in one reply.
grep -q "STATUS 0 0 base:allocation .*\]\s*$" "$tmp/wire.snap" &&
    grep -q "STATUS 0 0 qemu:allocation-depth .* DONE$" "$tmp/wire.snap" ||
    fail "BLOCK_STATUS did not answer both contexts: $(cat "$tmp/wire.snap")"
