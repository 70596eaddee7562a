#!/usr/bin/env bash
# Image locking is QEMU's (OFD locks on bytes 100+perm / 200+perm):
#  - while snapnbd serves an image writable, qemu-img resize fails on the
#    "resize" lock, and succeeds again once the server is gone;
#  - a process that does not share "write" (OFD read lock on byte 201, as
#    a running QEMU VM holds) makes a writable snapnbd fail to start with a
#    message naming the image, while -r still starts;
#  - one that does not share "consistent read" (byte 200) blocks -r too;
#  - one that holds "resize" (byte 103) blocks snapnbd, which unshares it.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img

img=$tmp/disk.img
truncate -s 4M "$img"

# Locking must work on this filesystem for the test to mean anything.
start_server "$tmp/sock" "$tmp/pid" -f raw -t "$img"
if qemu-img resize -f raw "$img" +1M >"$tmp/out" 2>&1; then
    fail "qemu-img resize succeeded while the image is served"
fi
grep -q 'lock' "$tmp/out" || fail "resize failed without a lock message: $(cat "$tmp/out")"
[ "$(stat -c %s "$img")" -eq $((4 * 1024 * 1024)) ] || fail "image was resized"
_stop_server "$tmp/pid"
qemu-img resize -f raw "$img" +1M >/dev/null ||
    fail "resize still fails after the server stopped (lock leaked)"

cat >"$tmp/hold.py" <<'EOP'
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
# struct flock { short l_type, l_whence; off_t l_start, l_len; pid_t l_pid; }
fl = struct.pack("hhqqi4x", fcntl.F_RDLCK, os.SEEK_SET, int(sys.argv[2]), 1, 0)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, fl)
print("locked", flush=True)
time.sleep(60)
EOP

hold() {
    # hold BYTE: a background process takes an OFD read lock on BYTE.
    rm -f "$tmp/locked"
    $PYTHON "$tmp/hold.py" "$img" "$1" >"$tmp/locked" &
    holder=$!
    cleanup_fn "kill $holder 2>/dev/null"
    for i in $(seq 100); do
        grep -q locked "$tmp/locked" 2>/dev/null && return
        kill -0 $holder 2>/dev/null || fail "could not take the lock on $1"
        sleep 0.05
    done
    fail "lock holder did not start"
}
release() { kill $holder; wait $holder 2>/dev/null; }

refused() {
    # refused PERM ARGS...: snapnbd must exit with an error naming the
    # image, the permission PERM and a lock, without ever listening.
    local perm=$1 pid i rc
    shift
    rm -f "$tmp/bad.sock"
    "$SNAPNBD" -f raw -k "$tmp/bad.sock" "$@" "$img" 2>"$tmp/err" &
    pid=$!
    for i in $(seq 50); do
        kill -0 $pid 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 $pid 2>/dev/null; then
        kill $pid; wait $pid
        fail "started although the \"$perm\" lock is taken: $*"
    fi
    wait $pid && rc=0 || rc=$?
    [ $rc -ne 0 ] || fail "exit status 0 on a lock conflict: $*"
    grep -qF "$img" "$tmp/err" || fail "error does not name the image: $(cat "$tmp/err")"
    grep -q "\"$perm\" lock" "$tmp/err" ||
        fail "error does not name the \"$perm\" lock: $(cat "$tmp/err")"
}

n=0
starts() {
    n=$((n + 1))
    start_server "$tmp/s$n" "$tmp/p$n" -f raw "$@" "$img"
    _stop_server "$tmp/p$n"
}

hold 201               # write not shared, like a running VM's disk
refused write
refused write -t -e 2
starts -r
release

hold 200               # consistent read not shared
refused 'consistent read'
refused 'consistent read' -r
release

hold 103               # someone holds resize, which snapnbd does not share
refused resize
release

hold 101               # another writer sharing everything: fine
starts
release

starts                 # and nothing is left locked
