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
#   qmp_stdio_both NAME ARGS...   stdin (QMP input) to snapnbd and, where
#                          it is installed, to qemu-storage-daemon 7.2, each
#                          with QMP on stdio and ARGS; the transcripts
#                          (filtered as QEMU's _filter_qmp does, and the
#                          export naming snapnbd keeps on purpose, without
#                          the events the pattern $qmp_drop names) go to
#                          $tmp/NAME.snapnbd and .qemu-storage-daemon and
#                          must be the same

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

# QEMU's _filter_qmp, and the one wording snapnbd keeps on purpose (a
# permission conflict names the export: docs/snapnbd.pod)
_stdio_filter() {
    sed -E -e 's/\r$//' -e '1s/^\{"QMP": .*/QMP_VERSION/' \
        -e 's/"seconds": *[0-9]+, *"microseconds": *[0-9]+/TIMESTAMP/' \
        -e "s/NBD export '[^']*'/an unnamed block device/" \
        -e "s#$tmp#TMP#g" | grep -Ev -e "$qmp_drop"
}

qmp_drop='^$'
qmp_stdio_qsd=
if command -v qemu-storage-daemon >/dev/null 2>&1 &&
   qemu-storage-daemon --version | grep -q 'version 7\.2\.'; then
    qmp_stdio_qsd=qemu-storage-daemon
fi

qmp_stdio_both() {
    local name=$1 input prog bin
    shift
    input=$(cat)
    for prog in snapnbd $qmp_stdio_qsd; do
        bin=$prog
        [ "$prog" = snapnbd ] && bin=$SNAPNBD
        rm -f "$tmp/nbd.sock"
        timeout 60 "$bin" --chardev stdio,id=stdio --monitor chardev=stdio \
            "$@" <<< "$input" > "$tmp/raw" 2> "$tmp/err" ||
            fail "$name: $prog exited with $?: $(cat "$tmp/err")"
        _stdio_filter < "$tmp/raw" > "$tmp/$name.$prog"
    done
    head -1 "$tmp/$name.snapnbd" | grep -qx QMP_VERSION ||
        fail "$name: no greeting: $(cat "$tmp/$name.snapnbd")"
    if [ -n "$qmp_stdio_qsd" ]; then
        diff -u "$tmp/$name.$qmp_stdio_qsd" "$tmp/$name.snapnbd" ||
            fail "$name: transcripts differ: qemu-storage-daemon (-) vs snapnbd (+)"
    fi
}
