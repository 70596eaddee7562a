#!/usr/bin/env bash
# x-dirty-bitmap: an nbd client node opened with
# x-dirty-bitmap=qemu:dirty-bitmap:b0 reads that context instead of
# base:allocation, as QEMU does: a dirty range is not data (exported again,
# base:allocation says "hole"), a clean one is data.  The re-exported map
# must equal, granule by granule, what nbdinfo --map=qemu:dirty-bitmap:b0
# reports on the remote, and line by line what qemu-storage-daemon's nbd
# node reports the same way (where it is installed).  A bitmap the server
# does not have is QEMU's open error.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
source "$srcdir/qmp-functions.sh"
requires qemu-img qemu-io nbdinfo
requires_libnbd_python

img=$tmp/disk.qcow2
qemu-img create -q -f qcow2 "$img" 16M
qemu-img bitmap --add "$img" b0
qemu-io -f qcow2 -c 'write -P 1 1M 100K' -c 'write -P 2 5M 1M' \
    -c 'write -z 9M 64K' -c 'write -P 3 12345678 10' "$img" >/dev/null
asock=$tmp/a.sock
start_server "$asock" "$tmp/a.pid" -r -t -e 8 -f qcow2 -x disk -B b0 "$img"

start_daemon --nbd-server "addr.type=unix,addr.path=$nbdsock"
add_node() { # CONTEXT: blockdev-add's outcome, "ok" or the error text
    jobs_py "q = QMP('$qmp')
r = q.execute('blockdev-add', {'driver': 'nbd', 'node-name': 'bm',
      'read-only': True, 'server': {'type': 'unix', 'path': '$asock'},
      'export': 'disk', 'x-dirty-bitmap': '$1'})
print('ok' if 'return' in r else r['error']['class'] + ': ' + r['error']['desc'])"
}
out=$(add_node qemu:dirty-bitmap:nope)
[ "$out" = "GenericError: requested x-dirty-bitmap qemu:dirty-bitmap:nope not found" ] ||
    fail "missing bitmap: got '$out'"
[ "$(add_node qemu:dirty-bitmap:b0)" = ok ] || fail "blockdev-add failed"
jobs_py "q = QMP('$qmp')
q.cmd('block-export-add', {'type': 'nbd', 'id': 'v', 'node-name': 'bm',
      'name': 'view'})" || fail "export of the node failed"

nbdinfo --map=qemu:dirty-bitmap:b0 "$(uri "$asock" disk)" >"$tmp/remote.map"
nbdinfo --map "$(uri "$nbdsock" view)" >"$tmp/view.map"
grep -q dirty "$tmp/remote.map" || fail "the remote bitmap has no dirty range"
# Per 512-byte unit: dirty (1) must be a hole (1), clean (0) data (0).
$PYTHON - "$tmp/remote.map" "$tmp/view.map" <<'EOF' || fail "maps differ"
import sys
def units(path):
    out = []
    for line in open(path):
        off, length, typ = (int(x) for x in line.split()[:3])
        assert off == len(out) * 512, (path, line)
        out += [typ & 1] * (length // 512)
    return out
r, v = units(sys.argv[1]), units(sys.argv[2])
assert len(r) == len(v) == 16 << 11, (len(r), len(v))
bad = [i * 512 for i in range(len(r)) if r[i] != v[i]]
assert not bad, f"differ at offsets {bad[:5]}"
assert 1 in r and 0 in r
EOF

# The same node in qemu-storage-daemon maps the same way.
if command -v qemu-storage-daemon >/dev/null; then
    qsock=$tmp/qsd-nbd.sock
    qemu-storage-daemon \
        --blockdev "driver=nbd,node-name=bm,read-only=on,server.type=unix,server.path=$asock,export=disk,x-dirty-bitmap=qemu:dirty-bitmap:b0" \
        --nbd-server "addr.type=unix,addr.path=$qsock" \
        --export type=nbd,id=v,node-name=bm,name=view \
        --pidfile "$tmp/qsd.pid" >"$tmp/qsd.log" 2>&1 &
    cleanup_fn "_stop_server '$tmp/qsd.pid'"
    for i in $(seq 100); do [ -S "$qsock" ] && break; sleep 0.05; done
    nbdinfo --map "$(uri "$qsock" view)" >"$tmp/qsd.map" ||
        fail "qemu-storage-daemon: $(cat "$tmp/qsd.log")"
    diff -u "$tmp/qsd.map" "$tmp/view.map" ||
        fail "x-dirty-bitmap maps differently from qemu-storage-daemon"
fi
