#!/usr/bin/env bash
# Bad input and a dying server for the nbd client node:
#  - blockdev-add driver=nbd with no server listening, an export the
#    server lacks, a refused TCP port, a missing member or a bad value
#    fails with QEMU's class and sentence (the same as
#    qemu-storage-daemon's where it is installed);
#  - the remote server killed (-9) with requests in flight: the client of
#    the re-exported node gets EIO (reconnect-delay=0), is not
#    disconnected, and the daemon goes on serving its other export and
#    QMP; once the server is back the node reconnects by itself;
#  - with reconnect-delay=10 a read issued while the server is down waits
#    and succeeds when the server comes back;
#  - a push backup whose target server dies mid-job fails with EIO, and
#    the node can be deleted while it tries to reconnect.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img qemu-io
requires_libnbd_python

qemu-img create -q -f raw "$tmp/base.img" 16M
qemu-io -f raw -c "write -P 0x11 0 16M" "$tmp/base.img" >/dev/null
asock=$tmp/a.sock
start_a() {
    rm -f "$asock"
    start_server "$asock" "$tmp/a.pid" -t -e 8 -f raw -x base "$tmp/base.img"
}
start_a
start_daemon --nbd-server "addr.type=unix,addr.path=$nbdsock"

# 1. Refusals, as (class: desc) lines, snapnbd's and qemu-storage-daemon's.
cat >"$tmp/refusals.py" <<EOF
import sys
sys.path.insert(0, '$srcdir')
from jobs_qmp import QMP
q = QMP(sys.argv[1])
a = {'type': 'unix', 'path': '$asock'}
for args in [{'server': {'type': 'unix', 'path': '$tmp/none.sock'}},
             {'server': a, 'export': 'nope'},
             {'server': {'type': 'inet', 'host': '127.0.0.1', 'port': '1'}},
             {'server': {'type': 'inet', 'host': '127.0.0.1'}},
             {'export': 'base'},
             {'server': a, 'export': 'base', 'reconnect-delay': -1},
             {'server': a, 'export': 'base', 'open-timeout': 'x'},
             {'server': a, 'export': 'base', 'tls-creds': 'nope'},
             {'server': a, 'export': 'base', 'bogus': 1}]:
    args.update({'driver': 'nbd', 'node-name': 'n1'})
    r = q.execute('blockdev-add', args)
    print(r['error']['class'] + ': ' + r['error']['desc']
          if 'error' in r else 'accepted')
EOF
$PYTHON "$tmp/refusals.py" "$qmp" >"$tmp/refusals.snapnbd" ||
    fail "refusals: QMP failed"
cat >"$tmp/refusals.want" <<EOF
GenericError: Failed to connect to '$tmp/none.sock': No such file or directory
GenericError: Requested export not available
GenericError: Failed to connect to '127.0.0.1:1': Connection refused
GenericError: Parameter 'server.port' is missing
GenericError: Parameter 'server' is missing
GenericError: Parameter 'reconnect-delay' expects uint32_t
GenericError: Parameter 'open-timeout' expects uint64
GenericError: No TLS credentials with id 'nope'
GenericError: Parameter 'bogus' is unexpected
EOF
diff -u "$tmp/refusals.want" "$tmp/refusals.snapnbd" ||
    fail "blockdev-add refusals differ from QEMU's"
if command -v qemu-storage-daemon >/dev/null; then
    qemu-storage-daemon --chardev "socket,path=$tmp/qsd.sock,server=on,wait=off,id=m" \
        --monitor chardev=m --pidfile "$tmp/qsd.pid" >/dev/null 2>&1 &
    cleanup_fn "_stop_server '$tmp/qsd.pid'"
    $PYTHON "$tmp/refusals.py" "$tmp/qsd.sock" >"$tmp/refusals.qsd" ||
        fail "qemu-storage-daemon: QMP failed"
    diff -u "$tmp/refusals.qsd" "$tmp/refusals.snapnbd" ||
        fail "blockdev-add refusals differ from qemu-storage-daemon's"
fi

# 2. The server dies under I/O.
jobs_py "q = QMP('$qmp')
q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': 'r',
      'server': {'type': 'unix', 'path': '$asock'}, 'export': 'base'})
q.cmd('blockdev-add', {'driver': 'null-co', 'node-name': 'z'})
q.cmd('block-export-add', {'type': 'nbd', 'id': 'chain', 'node-name': 'r',
      'name': 'chain', 'writable': True})
q.cmd('block-export-add', {'type': 'nbd', 'id': 'local', 'node-name': 'z',
      'name': 'local'})" || fail "setup failed"
$PYTHON - "$(uri "$nbdsock" chain)" "$(uri "$nbdsock" local)" \
    "$(cat "$tmp/a.pid")" "$qmp" "$srcdir" <<'EOF' || fail "server death"
import errno, os, sys, time
import nbd
sys.path.insert(0, sys.argv[5])
from jobs_qmp import QMP
chain, local, apid, qmp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
h = nbd.NBD()
h.connect_uri(chain)
assert h.pread(4096, 0) == b"\x11" * 4096
bufs = [nbd.Buffer(1 << 20) for _ in range(16)]
cookies = [h.aio_pread(b, i << 20) for i, b in enumerate(bufs)]
os.kill(apid, 9)
while h.aio_in_flight() > 0:
    h.poll(1000)
deadline = time.monotonic() + 10
while True:
    try:
        h.pread(4096, 0)
    except nbd.Error as e:
        assert e.errnum == errno.EIO, e
        break
    assert time.monotonic() < deadline, "reads still succeed"
    time.sleep(0.05)
t = time.monotonic()
try:
    h.pwrite(b"\x22" * 4096, 0)
    sys.exit("a write succeeded with the server dead")
except nbd.Error as e:
    assert e.errnum == errno.EIO, e
assert time.monotonic() - t < 2, "EIO took too long with reconnect-delay=0"
assert h.aio_is_ready(), "the client was disconnected"
loc = nbd.NBD()
loc.connect_uri(local)
assert loc.pread(4096, 0) == bytes(4096)
names = [n["node-name"] for n in QMP(qmp).cmd("query-named-block-nodes")]
assert "r" in names and "z" in names, names
print("EIO ok")
EOF

start_a
$PYTHON - "$(uri "$nbdsock" chain)" <<'EOF' || fail "no reconnect"
import sys, time
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
deadline = time.monotonic() + 15
while True:
    try:
        assert h.pread(4096, 0) == b"\x11" * 4096
        break
    except nbd.Error:
        assert time.monotonic() < deadline, "never reconnected"
        time.sleep(0.1)
EOF

# 3. reconnect-delay: a read waits for the server to come back.
jobs_py "q = QMP('$qmp')
q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': 'r2',
      'server': {'type': 'unix', 'path': '$asock'}, 'export': 'base',
      'reconnect-delay': 10})
q.cmd('block-export-add', {'type': 'nbd', 'id': 'chain2', 'node-name': 'r2',
      'name': 'chain2'})" || fail "reconnect-delay setup failed"
kill -9 "$(cat "$tmp/a.pid")"
rm -f "$tmp/a.pid"
# Back in a second; the cleanup of a.pid stops it.
(sleep 1; rm -f "$asock"
 exec "$SNAPNBD" -k "$asock" --pid-file="$tmp/a.pid" -t -e 8 -f raw -x base \
     "$tmp/base.img") &
$PYTHON - "$(uri "$nbdsock" chain2)" <<'EOF' || fail "reconnect-delay"
import sys, time
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
t = time.monotonic()
assert h.pread(65536, 1 << 20) == b"\x11" * 65536
took = time.monotonic() - t
assert took < 10, f"read took {took:.1f} s"
print(f"read waited {took:.1f} s for the server")
EOF

# 4. The target server of a push backup dies mid-job: the job ends with
# an I/O error, the daemon lives on.
qemu-img create -q -f raw "$tmp/src.img" 32M
qemu-io -f raw -c "write -P 0x77 0 32M" "$tmp/src.img" >/dev/null
qemu-img create -q -f raw "$tmp/tgt.img" 32M
tsock=$tmp/t.sock
start_server "$tsock" "$tmp/t.pid" -t -f raw -x t "$tmp/tgt.img"
jobs_py "import os, signal, time
q = QMP('$qmp')
q.cmd('blockdev-add', {'driver': 'raw', 'node-name': 'src',
      'file': {'driver': 'file', 'filename': '$tmp/src.img'}})
q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': 'tgt',
      'server': {'type': 'unix', 'path': '$tsock'}, 'export': 't'})
q.cmd('blockdev-backup', {'job-id': 'push', 'device': 'src', 'target': 'tgt',
      'sync': 'full', 'speed': 4 << 20})
time.sleep(0.5)
os.kill(int(open('$tmp/t.pid').read()), signal.SIGKILL)
ev = q.wait_event('BLOCK_JOB_COMPLETED', device='push', timeout=60)
assert 'error' in ev['data'], ev
print('job:', ev['data']['error'])
assert ev['data']['offset'] < 32 << 20, ev
q.cmd('blockdev-del', {'node-name': 'tgt'})
assert q.cmd('query-block-jobs') == []" || fail "push backup to a dying server"
