#!/usr/bin/env bash
# An NBD client node as a source: a snapnbd daemon opens the export of a
# remote snapnbd (blockdev-add driver=nbd) and exports it again.  The
# chained export reads identically (qemu-img compare) with the same block
# status (nbdinfo --map); writes, write-zeroes and discards through it land
# on the remote.  Then the client node is the backing file of a qcow2
# overlay: the overlay reads the remote's data, its own writes stay in the
# overlay, and qemu:allocation-depth shows the remote as depth 2.  Also the
# command line: snapnbd serving nbd+unix:// and nbd:// (TCP) filenames.
# Parallel I/O: nbdcopy through the chain, and 16 slow reads in flight at
# once on the node's one connection.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img qemu-io nbdinfo nbdcopy
requires_libnbd_python

size=$((16 << 20))
qemu-img create -q -f raw "$tmp/base.img" $size
qemu-io -f raw -c "write -P 0x11 0 1M" -c "write -P 0x22 3M 512k" \
    -c "write -P 0x23 4095k 3k" "$tmp/base.img" >/dev/null
asock=$tmp/a.sock
start_server "$asock" "$tmp/a.pid" -t -e 8 -f raw -x base "$tmp/base.img"
a=$(uri "$asock" base)

start_daemon --nbd-server "addr.type=unix,addr.path=$nbdsock"
qmp_do() { jobs_py "q = QMP('$qmp')
$1" || fail "QMP: $1"; }
qmp_do "q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': 'r',
        'server': {'type': 'unix', 'path': '$asock'}, 'export': 'base'})
q.cmd('block-export-add', {'type': 'nbd', 'id': 'chain', 'node-name': 'r',
      'name': 'chain', 'writable': True})"
c=$(uri "$nbdsock" chain)

# reads IMAGE-ARGS... -- qemu-io -c commands: every read is whole and
# matches its pattern.
reads() {
    local out
    out=$(qemu-io -f raw "$@" 2>&1) || return 1
    echo "$out" | grep -q "^read " &&
        ! echo "$out" | grep -q "Pattern verification failed"
}

# 1. The chained export reads as the remote, with its block status.
qemu-img compare -q -f raw -F raw "$a" "$c" || fail "chain reads differently"
nbdinfo --map "$a" >"$tmp/map.a"
nbdinfo --map "$c" >"$tmp/map.c"
diff -u "$tmp/map.a" "$tmp/map.c" || fail "chain: block status differs"
grep -q "hole,zero" "$tmp/map.c" || fail "chain: no hole reported"

# 2. Writes through the chain reach the remote.
qemu-io -f raw -c "write -P 0x33 5M 64k" -c "write -P 0x34 12345 999" \
    -c "write -z 2M 128k" -c "discard 0 64k" -c flush "$c" >/dev/null ||
    fail "write through the chain failed"
reads -c "read -P 0x33 5M 64k" -c "read -P 0x34 12345 999" \
    -c "read -P 0 2M 128k" "$a" || fail "the remote did not get the chain's writes"
qemu-img compare -q -f raw -F raw "$a" "$c" || fail "chain differs after writes"

# Many requests in flight through the one connection of the node (nbdcopy:
# 4 connections to the chain, 64 requests each): random data in, the same
# data out, and at the remote.
cp "$tmp/base.img" "$tmp/pattern.img"  # quiescent: the writes above are done
head -c $size /dev/urandom >"$tmp/random.img"
nbdcopy --connections=4 --requests=64 --request-size=65536 \
    "$tmp/random.img" "$c" || fail "nbdcopy into the chain failed"
nbdcopy --connections=4 --requests=64 "$c" "$tmp/back.img" ||
    fail "nbdcopy out of the chain failed"
cmp "$tmp/random.img" "$tmp/back.img" || fail "parallel I/O: chain differs"
qemu-img compare -q -f raw -F raw "$tmp/random.img" "$a" ||
    fail "parallel I/O: the remote differs"
nbdcopy "$tmp/pattern.img" "$c" || fail "nbdcopy: restoring the pattern"
cmp "$tmp/base.img" "$tmp/pattern.img" || fail "pattern not restored"

# 3. The client node as a backing file.
qmp_do "q.cmd('block-export-del', {'id': 'chain'})"
sleep 0.2
cp "$tmp/base.img" "$tmp/before-overlay.img" # quiescent: nobody writes a
qemu-img create -q -f qcow2 "$tmp/ov.qcow2" $size
qmp_do "q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'ov',
        'file': {'driver': 'file', 'filename': '$tmp/ov.qcow2'},
        'backing': 'r'})
q.cmd('block-export-add', {'type': 'nbd', 'id': 'ov', 'node-name': 'ov',
      'name': 'ov', 'writable': True, 'allocation-depth': True})"
o=$(uri "$nbdsock" ov)
qemu-img compare -q -f raw -F raw "$a" "$o" ||
    fail "overlay does not read its nbd backing"
qemu-io -f raw -c "write -P 0x44 0 64k" -c "write -P 0x45 3M 4k" "$o" \
    >/dev/null || fail "write to the overlay failed"
reads -c "read -P 0x44 0 64k" -c "read -P 0x11 64k 960k" \
    -c "read -P 0x45 3M 4k" -c "read -P 0x22 3076k 508k" "$o" ||
    fail "overlay reads wrong data"
cmp "$tmp/base.img" "$tmp/before-overlay.img" ||
    fail "the overlay's writes reached its backing"
nbdinfo --map=qemu:allocation-depth "$o" >"$tmp/depth"
grep -Eq '^ *0 +65536 +1 ' "$tmp/depth" ||
    fail "allocation depth: overlay cluster not at depth 1: $(cat "$tmp/depth")"
grep -Eq ' 2 +backing depth 2' "$tmp/depth" ||
    fail "allocation depth: nbd backing not at depth 2: $(cat "$tmp/depth")"
qmp_do "q.cmd('block-export-del', {'id': 'ov'})"
sleep 0.2
qmp_do "q.cmd('blockdev-del', {'node-name': 'ov'})
q.cmd('blockdev-del', {'node-name': 'r'})"
qemu-img check -q "$tmp/ov.qcow2" || fail "overlay: check failed"

# 4. The command line: an nbd+unix:// filename, and nbd:// over TCP.
csock=$tmp/c.sock
start_server "$csock" "$tmp/c.pid" -r -f raw -x again "$a"
qemu-img compare -q -f raw -F raw "$a" "$(uri "$csock" again)" ||
    fail "snapnbd nbd+unix://...: reads differently"
_stop_server "$tmp/c.pid"
# QEMU's older flat options, as qemu-io --image-opts takes them.
start_server "$csock" "$tmp/c.pid" -r -x again \
    --image-opts "driver=nbd,path=$asock,export=base"
qemu-img compare -q -f raw -F raw "$a" "$(uri "$csock" again)" ||
    fail "snapnbd --image-opts driver=nbd,path=...: reads differently"
_stop_server "$tmp/c.pid"

cp "$tmp/base.img" "$tmp/tcp.img"
started=
for attempt in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    rm -f "$tmp/t.pid"
    "$SNAPNBD" -t -e 8 -b 127.0.0.1 -p $port -f raw -x t --pid-file="$tmp/t.pid" \
        "$tmp/tcp.img" 2>"$tmp/err" &
    pid=$!
    for i in $(seq 100); do
        kill -0 $pid 2>/dev/null || break
        [ -s "$tmp/t.pid" ] && { started=yes; break; }
        sleep 0.05
    done
    [ -n "$started" ] && break
done
[ -n "$started" ] || fail "no TCP server: $(cat "$tmp/err")"
cleanup_fn "_stop_server '$tmp/t.pid'"
start_server "$csock" "$tmp/c.pid" -r -f raw -x again "nbd://127.0.0.1:$port/t"
qemu-img compare -q -U -f raw -F raw "$tmp/tcp.img" "$(uri "$csock" again)" ||
    fail "snapnbd nbd://127.0.0.1:$port/t: reads differently"

# 5. Requests run in parallel on the node's one connection: 16 reads of a
# remote whose every request takes 200 ms finish in far less than the
# 3.2 s they would take one at a time.
lsock=$tmp/slow.sock
start_server "$lsock" "$tmp/slow.pid" -t -e 8 \
    --image-opts driver=null-co,size=64M,latency-ns=200000000
start_server "$tmp/chain-slow.sock" "$tmp/chain-slow.pid" -t -e 8 -f raw \
    "$(uri "$lsock")"
$PYTHON - "$(uri "$tmp/chain-slow.sock")" <<'PY' || fail "requests serialised"
import sys, time
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
t = time.monotonic()
bufs = [nbd.Buffer(4096) for _ in range(16)]
for i, b in enumerate(bufs):
    h.aio_pread(b, i << 20)
while h.aio_in_flight() > 0:
    h.poll(-1)
took = time.monotonic() - t
print(f"16 reads of 200 ms each through the node: {took:.2f} s")
assert took < 1.6, f"{took:.2f} s: the node serialises its requests"
PY
