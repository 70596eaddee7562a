# tests/backup-functions.sh - sourced by the tests/test-backup-*.sh, after
# functions.sh.
#
#   requires_libnbd_python   skip unless the system python has libnbd
#   start_daemon ARGS...     start snapnbd in daemon mode (no image) with its
#                            QMP socket at $qmp and ARGS (--blockdev,
#                            --nbd-server, --export...); stopped at exit
#   make_disk PATH SIZE SEED a sparse image of random chunks and holes
#   start_live_disk SIZE     make_disk $tmp/disk.img, served by start_daemon
#                            as raw node "disk" (discard=unmap), exported
#                            writable as "disk" on $nbdsock
#   jobs_py CODE ARGS...     run python CODE with tests/jobs_qmp imported
#   seed                     $SNAPNBD_SEED, or a random one; printed, and
#                            failure messages name it

requires_libnbd_python() {
    $PYTHON -c 'import nbd' 2>/dev/null || {
        echo "$0: skipped: python3-libnbd is not installed"
        exit 77
    }
}

seed=${SNAPNBD_SEED:-$(( (RANDOM << 15) | RANDOM ))}
echo "$0: seed $seed (SNAPNBD_SEED=$seed replays it)"
qmp=$tmp/qmp.sock
nbdsock=$tmp/nbd.sock

start_daemon() {
    local pidfile=$tmp/daemon.pid i
    rm -f "$pidfile" "$qmp"
    "$SNAPNBD" --pid-file="$pidfile" --qmp "unix:$qmp,server,wait=off" "$@" &
    cleanup_fn "_stop_server '$pidfile'"
    for i in $(seq 200); do
        if [ -S "$qmp" ] && [ -s "$pidfile" ]; then
            return 0
        fi
        kill -0 $! 2>/dev/null || fail "snapnbd exited at start: $*"
        sleep 0.05
    done
    fail "snapnbd did not start: $*"
}

jobs_py() {
    $PYTHON -c "import sys; sys.path.insert(0, '$srcdir')
from jobs_qmp import *
$1" "${@:2}"
}

make_disk() {
    jobs_py "make_disk('$1', $2, $3)"
}

start_live_disk() {
    make_disk "$tmp/disk.img" "$1" "$seed"
    start_daemon \
        --blockdev "driver=raw,node-name=disk,discard=unmap,file.driver=file,file.filename=$tmp/disk.img" \
        --nbd-server "addr.type=unix,addr.path=$nbdsock" \
        --export type=nbd,id=e0,node-name=disk,name=disk,writable=on
}

# run_daemon DAEMON DIR ARGS...: snapnbd (or qemu-storage-daemon, to
# compare) with QMP on DIR/qmp.sock, the qcow2 DIR/disk.qcow2 as node
# "disk" and an NBD server on DIR/nbd.sock, plus ARGS; its pid in $pid.
# stop_daemon DAEMON: SIGTERM, and it must exit.
run_daemon() {
    local name=$1 daemon=$1 dir=$2 i
    shift 2
    [ "$daemon" = snapnbd ] && daemon=$SNAPNBD
    "$daemon" --chardev "socket,path=$dir/qmp.sock,server=on,wait=off,id=m0" \
        --monitor chardev=m0 \
        --blockdev "driver=qcow2,node-name=disk,file.driver=file,file.filename=$dir/disk.qcow2" \
        --nbd-server "addr.type=unix,addr.path=$dir/nbd.sock" "$@" \
        >"$dir/daemon.log" 2>&1 &
    pid=$!
    cleanup_fn "kill $pid 2>/dev/null"
    for i in $(seq 200); do
        [ -S "$dir/qmp.sock" ] && [ -S "$dir/nbd.sock" ] && return 0
        kill -0 $pid 2>/dev/null || fail "$name exited: $(cat "$dir/daemon.log")"
        sleep 0.05
    done
    fail "$name did not start"
}

stop_daemon() {
    local i
    kill $pid
    for i in $(seq 100); do
        kill -0 $pid 2>/dev/null || { wait $pid 2>/dev/null; return 0; }
        sleep 0.05
    done
    fail "$1 ignored SIGTERM"
}
