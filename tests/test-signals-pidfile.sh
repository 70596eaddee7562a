#!/usr/bin/env bash
# Stopping the server, as the man page promises:
#  - SIGTERM and SIGINT stop a daemon whose control socket waits for its
#    first client (--qmp=unix:PATH,server: QEMU's default wait=on), within
#    5 seconds;
#  - the pid file goes last: once it is gone, every image is flushed,
#    closed and unlocked, so qemu-img can open it for writing at once and
#    finds it clean (qcow2 metadata written back, no dirty flag).
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img qemu-io nbdsh

gone_within() { # PID SECONDS
    local i
    for i in $(seq $(($2 * 20))); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.05
    done
    return 1
}

for sig in TERM INT; do
    "$SNAPNBD" --qmp="unix:$tmp/wait-$sig.sock,server" 2>"$tmp/err" &
    pid=$!
    cleanup_fn "kill -9 $pid 2>/dev/null"
    for i in $(seq 100); do [ -S "$tmp/wait-$sig.sock" ] && break; sleep 0.05; done
    [ -S "$tmp/wait-$sig.sock" ] || fail "the QMP socket never appeared"
    sleep 0.2
    kill -$sig $pid
    gone_within $pid 5 ||
        fail "SIG$sig did not stop a server waiting for its QMP client (wait=on)"
    wait $pid || fail "SIG$sig while waiting for QMP: exit status $?"
done

img=$tmp/disk.qcow2
for round in 1 2 3; do
    rm -f "$img"
    qemu-img create -q -f qcow2 -o cluster_size=4k "$img" 256M
    pidf=$tmp/pid-$round
    sock=$tmp/nbd-$round.sock
    "$SNAPNBD" --qmp="unix:$tmp/qmp-$round.sock,server,wait=off" \
        --pid-file="$pidf" \
        --blockdev "driver=qcow2,node-name=d,file.driver=file,file.filename=$img" \
        --nbd-server "addr.type=unix,addr.path=$sock" \
        --export type=nbd,id=e,node-name=d,name=d,writable=on &
    pid=$!
    cleanup_fn "kill -9 $pid 2>/dev/null"
    for i in $(seq 100); do [ -s "$pidf" ] && [ -S "$sock" ] && break; sleep 0.05; done
    # Thousands of new clusters: much metadata in the write-back caches.
    nbdsh -u "nbd+unix:///d?socket=$sock" -c '
buf = b"\x5a" * 4096
for i in range(6000):
    h.aio_pwrite(buf, i * 40960)
    if h.aio_in_flight() > 32:
        h.poll(-1)
while h.aio_in_flight() > 0:
    h.poll(-1)
' || fail "round $round: the writes failed"
    # Started before the signal, so that it looks the moment the pid file
    # goes: no lock of QEMU's locking scheme may be left on the image.
    $PYTHON -c '
import fcntl, os, struct, sys
pidf, img = sys.argv[1:3]
F_OFD_GETLK = 36
fd = os.open(img, os.O_RDONLY)
print("ready", flush=True)
while os.path.exists(pidf):
    pass
for byte in list(range(100, 104)) + list(range(200, 204)):
    fl = struct.pack("hhxxxxqqi4x", fcntl.F_WRLCK, 0, byte, 1, 0)
    t = struct.unpack("hhxxxxqqi4x", fcntl.fcntl(fd, F_OFD_GETLK, fl))[0]
    assert t == fcntl.F_UNLCK, f"lock byte {byte} still held"
' "$pidf" "$img" > "$tmp/ready" &
    checker=$!
    for i in $(seq 100); do [ -s "$tmp/ready" ] && break; sleep 0.02; done
    kill $pid
    wait $checker || fail "round $round: the image was still locked when" \
        "the pid file vanished"
    out=$(qemu-img check "$img" 2>&1) ||
        fail "round $round: right after the pid file vanished the image" \
             "is not clean or still locked: $out"
    wait $pid || fail "round $round: exit status $?"
done
