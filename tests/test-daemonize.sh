#!/usr/bin/env bash
# qemu-storage-daemon's --daemonize and --pidfile, as scripts that start it
# use them, beside qemu-storage-daemon 7.2 where it is installed (the same
# statuses and messages):
#  - the parent exits 0 once the daemon has started, its pid file written;
#    the daemon works in / with /dev/null on stdin, stdout and stderr, and
#    serves; SIGTERM removes the pid file, given relative to the old cwd;
#  - a second daemon given the same pid file fails (the file is locked),
#    and the first keeps it;
#  - a pid file that cannot be created, a bad option and --chardev stdio
#    fail in the parent's status, with the daemon's message on stderr;
#  - qemu-nbd's --pid-file is locked too (qemu-nbd 7.2's message).
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires nbdinfo qemu-img
export QSD_SHIM=off  # no QMP here: the shim has nothing to guard

qsd=
if command -v qemu-storage-daemon >/dev/null 2>&1 &&
   qemu-storage-daemon --version | grep -q 'version 7\.2\.'; then
    qsd=qemu-storage-daemon
fi
qemu-img create -q -f raw "$tmp/disk.raw" 1M
mkdir "$tmp/cwd"

# daemon PROG NAME ARGS...: runs it from $tmp/cwd; status and stderr in
# $tmp/NAME.PROG.{rc,err}, the daemon's name for messages replaced
daemon() {
    local prog=$1 name=$2 bin rc
    shift 2
    bin=$prog
    [ "$prog" = snapnbd ] && bin=$SNAPNBD
    (cd "$tmp/cwd" && timeout 30 "$bin" "$@") > /dev/null 2> "$tmp/$name.err"
    rc=$?
    echo $rc > "$tmp/$name.$prog.rc"
    sed "s/^$prog: /DAEMON: /" "$tmp/$name.err" > "$tmp/$name.$prog.err"
    return $rc
}

compare() {
    local name=$1
    [ -n "$qsd" ] || return 0
    diff -u "$tmp/$name.$qsd.rc" "$tmp/$name.snapnbd.rc" ||
        fail "$name: exit status: qemu-storage-daemon (-) vs snapnbd (+)"
    diff -u "$tmp/$name.$qsd.err" "$tmp/$name.snapnbd.err" ||
        fail "$name: stderr: qemu-storage-daemon (-) vs snapnbd (+)"
}

for prog in snapnbd $qsd; do
    sock=$tmp/$prog.sock
    daemon $prog start --daemonize --pidfile ../$prog.pid \
        --blockdev "driver=file,node-name=f0,filename=$tmp/disk.raw" \
        --nbd-server "addr.type=unix,addr.path=$sock" \
        --export type=nbd,id=e0,node-name=f0 ||
        fail "$prog --daemonize: status $(cat "$tmp/start.$prog.rc"): $(cat "$tmp/start.$prog.err")"
    [ -s "$tmp/start.$prog.err" ] && fail "$prog said: $(cat "$tmp/start.$prog.err")"
    pid=$(cat "$tmp/$prog.pid") || fail "$prog: no pid file once the parent exited"
    cleanup_fn "kill $pid 2>/dev/null"
    kill -0 "$pid" || fail "$prog: pid $pid is not running"
    [ "$(readlink "/proc/$pid/cwd")" = / ] ||
        fail "$prog: works in $(readlink "/proc/$pid/cwd"), not /"
    for fd in 0 1 2; do
        [ "$(readlink "/proc/$pid/fd/$fd")" = /dev/null ] ||
            fail "$prog: fd $fd is $(readlink "/proc/$pid/fd/$fd")"
    done
    [ "$(nbdinfo --size "$(uri "$sock" f0)")" = 1048576 ] ||
        fail "$prog: the daemon does not serve"

    # a second daemon on the same pid file
    daemon $prog second --daemonize --pidfile ../$prog.pid \
        --blockdev driver=null-co,node-name=n0 && fail "$prog: a second daemon started"
    [ "$(cat "$tmp/$prog.pid")" = "$pid" ] || fail "$prog: the pid file changed"
    kill -0 "$pid" || fail "$prog: the first daemon died"

    daemon $prog nodir --pidfile "$tmp/no/such/dir.pid" \
        --blockdev driver=null-co,node-name=n0
    daemon $prog bad --daemonize --blockdev driver=nope,node-name=n0
    daemon $prog stdio --daemonize --chardev stdio,id=m

    kill -TERM "$pid"
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$pid" 2>/dev/null && fail "$prog: still running after SIGTERM"
    [ -e "$tmp/$prog.pid" ] && fail "$prog: the pid file stays after SIGTERM"
done
for name in start second nodir bad stdio; do
    compare $name
done
grep -qx "DAEMON: cannot create PID file: Cannot lock pid file: Resource temporarily unavailable" \
    "$tmp/second.snapnbd.err" || fail "second: $(cat "$tmp/second.snapnbd.err")"
grep -qx "DAEMON: cannot create PID file: Could not create '$tmp/no/such/dir.pid': No such file or directory" \
    "$tmp/nodir.snapnbd.err" || fail "nodir: $(cat "$tmp/nodir.snapnbd.err")"
grep -qx "DAEMON: --chardev stdio,id=m: cannot use stdio with -daemonize" \
    "$tmp/stdio.snapnbd.err" || fail "stdio: $(cat "$tmp/stdio.snapnbd.err")"

# qemu-nbd's --pid-file: locked too
start_server "$tmp/a.sock" "$tmp/n.pid" -f raw -t "$tmp/disk.raw"
"$SNAPNBD" -f raw -k "$tmp/b.sock" --pid-file="$tmp/n.pid" "$tmp/disk.raw" \
    2> "$tmp/err" && fail "a second server took a locked pid file"
grep -qx "snapnbd: Cannot lock pid file: Resource temporarily unavailable" \
    "$tmp/err" || fail "qemu-nbd mode: $(cat "$tmp/err")"
echo "daemonize and pid files: ok${qsd:+, as qemu-storage-daemon}"
