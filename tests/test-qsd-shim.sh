#!/usr/bin/env bash
# tests/qsd-shim, through which every test runs qemu-storage-daemon: it
# keeps a QMP socket hidden until the daemon has started (QEMU 7.2's
# monitor I/O thread can hang in accept4() on a client that connects
# during startup).  Its promises, checked:
#   1. the caller's pid file appears only once the socket is there under
#      its own name, and the PID in it is the process the caller started;
#   2. that socket answers QMP, and no hidden name is left;
#   3. a chardev it does not hide (a directory that does not exist) fails
#      with the daemon's own message, naming the path given;
#   4. QSD_SHIM=off passes the options through untouched.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-storage-daemon
[ "$(command -v qemu-storage-daemon)" -ef "$srcdir/qsd-shim/qemu-storage-daemon" ] ||
    fail "qemu-storage-daemon is not the shim: $(command -v qemu-storage-daemon)"

qmp() {
    /usr/bin/python3 - "$1" <<'PYEOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(10)
f = s.makefile("rwb")
assert b"QMP" in f.readline()
f.write(b'{"execute":"qmp_capabilities"}\n{"execute":"query-version"}\n')
f.flush()
f.readline()
print("qemu" in f.readline().decode() and "answers" or "no answer")
PYEOF
}

# 1, 2.
# Many nodes after the chardev keep the daemon in its startup a while
# after the socket is bound.
nodes=()
for i in $(seq 1500); do
    nodes+=(--blockdev "driver=null-co,node-name=n$i")
done
qemu-storage-daemon --chardev "socket,id=m,path=$tmp/qmp.sock,server=on,wait=off" \
    --monitor chardev=m --pidfile "$tmp/qsd.pid" "${nodes[@]}" &
pid=$!
cleanup_fn "kill $pid 2>/dev/null; wait $pid 2>/dev/null"
# Until the daemon has written its (hidden) pid file the socket must not
# be there under its name.
for _ in $(seq 1000); do
    if [ -S "$tmp/qmp.sock" ] && ! [ -s "$tmp/.h-$pid.pid" ] &&
       ! [ -s "$tmp/qsd.pid" ]; then
        fail "the socket showed before the daemon had started"
    fi
    [ -s "$tmp/qsd.pid" ] && break
    sleep 0.005
done
[ -s "$tmp/qsd.pid" ] || fail "no pid file"
[ -S "$tmp/qmp.sock" ] || fail "pid file, but no socket under its name"
[ "$(cat "$tmp/qsd.pid")" = "$pid" ] ||
    fail "pid file says $(cat "$tmp/qsd.pid"), the caller started $pid"
[ "$(qmp "$tmp/qmp.sock")" = answers ] || fail "QMP does not answer"
[ -z "$(find "$tmp" -name '.h-*')" ] || fail "hidden names left: $(ls -a "$tmp")"
kill "$pid"; wait "$pid" 2>/dev/null
echo "socket shown after startup, pid file after it, QMP answers"

# 3, 4.
for shim in on off; do
    QSD_SHIM=$shim qemu-storage-daemon \
        --chardev "socket,id=m,path=$tmp/no/q.sock,server=on,wait=off" \
        --monitor chardev=m 2>"$tmp/err.$shim" && fail "$shim: started"
    grep -q "Failed to bind socket to $tmp/no/q.sock: No such file" "$tmp/err.$shim" ||
        fail "$shim: $(cat "$tmp/err.$shim")"
done
echo "errors name the path given"
