# tests/qmp-functions.sh - the control socket's helpers, sourced after
# functions.sh by tests/test-qmp-*.sh.
#
#   start_qmp SOCK PID ARGS...   start snapnbd with QMP on the unix socket
#                          SOCK (--qmp=unix:SOCK,server,wait=off) and pid
#                          file PID, plus ARGS (an image, or nothing for
#                          daemon mode); wait until QMP listens; at exit it
#                          is stopped and must die on SIGTERM
#   qmp SOCK ARGS...       tests/qmp.py: negotiate, send each message,
#                          print every reply and event (one a line)
#   qmp_raw SOCK MSG...    send raw bytes, no negotiation; print all output
#   start_qsd SOCK         start qemu-storage-daemon with QMP on SOCK (for
#                          comparisons) and wait until it accepts a
#                          connection; returns 1 when it is not installed
#   normalize              sed filter: timestamps and versions -> fixed text

QMP_PY=$srcdir/qmp.py

start_qmp() {
    local sock=$1 pidfile=$2 i
    shift 2
    rm -f "$pidfile" "$sock"
    "$SNAPNBD" --qmp="unix:$sock,server,wait=off" --pid-file="$pidfile" \
        "$@" &
    cleanup_fn "_stop_server '$pidfile'"
    for i in $(seq 100); do
        if [ -S "$sock" ] && [ -s "$pidfile" ]; then
            return 0
        fi
        kill -0 $! 2>/dev/null || fail "server exited at start: $*"
        sleep 0.05
    done
    fail "server did not start: $*"
}

qmp() {
    local sock=$1
    shift
    "$PYTHON" "$QMP_PY" "$sock" "$@"
}

qmp_raw() {
    local sock=$1
    shift
    "$PYTHON" "$QMP_PY" --raw "$sock" "$@"
}

_stop_qsd() {
    kill "$1" 2>/dev/null || return 0
    wait "$1" 2>/dev/null || :
}

# Does the unix socket accept a connection?  QEMU binds its socket before
# it listens: a client that connects in between is refused, and on a
# loaded machine "in between" can last (qmp then fails to connect).
_accepts() {
    [ -S "$1" ] && "$PYTHON" -c 'import socket, sys
socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$1" 2>/dev/null
}

start_qsd() {
    local sock=$1 i
    command -v qemu-storage-daemon >/dev/null 2>&1 || return 1
    rm -f "$sock"
    qemu-storage-daemon \
        --chardev "socket,path=$sock,server=on,wait=off,id=qmp0" \
        --monitor chardev=qmp0 >/dev/null 2>&1 &
    cleanup_fn "_stop_qsd $!"
    for i in $(seq 400); do
        _accepts "$sock" && return 0
        sleep 0.05
    done
    fail "qemu-storage-daemon does not accept connections on $sock"
}

normalize() {
    sed -E -e 's/"seconds": [0-9]+, "microseconds": [0-9]+/"seconds": S, "microseconds": U/g' \
           -e 's/"version": \{[^}]*\}, "package": "[^"]*"\}/"version": V}/g'
}
