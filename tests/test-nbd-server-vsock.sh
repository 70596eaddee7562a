#!/usr/bin/env bash
# --nbd-server addr.type=vsock / nbd-server-start over vsock, as
# qemu-storage-daemon does (for a virtual machine's NBD client): the server
# listens on the vsock port (another bind of it fails with "Address already
# in use" until nbd-server-stop frees it), and bad cids and ports get
# QEMU's words (test-qmp-daemon's table has them too).  Where the kernel
# can connect to itself over vsock (vsock_loopback), nbdinfo reads the
# export through it.  Skipped without AF_VSOCK.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires nbdinfo

vsock_bind() { # vsock_bind PORT: 0 when (any cid, PORT) could be bound
    /usr/bin/python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
try:
    s.bind((socket.VMADDR_CID_ANY, int(sys.argv[1])))
except OSError as e:
    print(e.strerror)
    sys.exit(1)
PY
}
/usr/bin/python3 -c 'import socket; socket.socket(socket.AF_VSOCK)' 2>/dev/null || {
    echo "$0: skipped: no AF_VSOCK here"
    exit 77
}
port=$((20000 + RANDOM % 20000))
vsock_bind "$port" >/dev/null || fail "vsock port $port is taken before the test"

truncate -s 8M "$tmp/disk.raw"
"$SNAPNBD" --pid-file="$tmp/pid" \
    --blockdev "driver=file,node-name=f0,filename=$tmp/disk.raw" \
    --nbd-server "addr.type=vsock,addr.cid=4294967295,addr.port=$port" \
    --export type=nbd,id=e0,node-name=f0,name=disk \
    --chardev "socket,id=m0,path=$tmp/qmp.sock,server=on,wait=off" \
    --monitor m0 2>"$tmp/err" &
cleanup_fn "_stop_server '$tmp/pid'"
for _ in $(seq 100); do [ -s "$tmp/pid" ] && break; sleep 0.05; done
[ -s "$tmp/pid" ] || fail "the daemon did not start: $(cat "$tmp/err")"

got=$(vsock_bind "$port") && fail "vsock port $port is not taken by the server"
[ "$got" = "Address already in use" ] || fail "binding the server's port: $got"

# A second server on the same port: QEMU's words for the bind.
"$SNAPNBD" --nbd-server "addr.type=vsock,addr.cid=4294967295,addr.port=$port" \
    >"$tmp/err2" 2>&1 && fail "a second server bound the same vsock port"
grep -q "Failed to bind socket: Address already in use" "$tmp/err2" ||
    fail "second server: $(cat "$tmp/err2")"

if /usr/bin/python3 -c '
import socket, sys
c = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
c.settimeout(2)
c.connect((socket.VMADDR_CID_LOCAL, int(sys.argv[1])))' "$port" 2>/dev/null; then
    [ "$(timeout 10 nbdinfo --size "nbd+vsock://1:$port/disk")" = 8388608 ] ||
        fail "nbdinfo over vsock loopback"
else
    echo "$0: note: no vsock loopback here; the export was not read over vsock"
fi

/usr/bin/python3 -c '
import sys
sys.path.insert(0, sys.argv[2])
from jobs_qmp import QMP
QMP(sys.argv[1]).cmd("nbd-server-stop")' "$tmp/qmp.sock" "$srcdir" ||
    fail "nbd-server-stop failed"
vsock_bind "$port" >/dev/null || fail "nbd-server-stop did not free vsock port $port"
exit 0
