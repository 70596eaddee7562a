# tests/functions.sh - sourced by every tests/test-*.sh.
#
#   requires CMD...        skip (exit 77) unless each command exists
#   cleanup_fn CMD...      run CMD at exit (in reverse order of registration)
#   tmpdir                 a private directory, removed at exit: $tmp
#   start_server SOCK PID ARGS...   start snapnbd on unix socket SOCK
#                          with pid file PID, wait until it listens;
#                          it is killed (and must die on SIGTERM) at exit
#   uri SOCK [NAME]        the NBD URI of a unix socket export
#   fail MSG               print MSG and exit 1
set -u
set -o pipefail

: "${SNAPNBD:?SNAPNBD must name the built server (make check sets it)}"
: "${srcdir:=$(dirname "$0")}"
export LANG=C
# nbdsh runs "python3" from PATH: make it the system one, which has libnbd.
export PATH=/usr/bin:$PATH

_cleanups=()
_run_cleanups() {
    local i
    for ((i = ${#_cleanups[@]} - 1; i >= 0; i--)); do
        eval "${_cleanups[$i]}" || :
    done
}
trap _run_cleanups EXIT
trap 'exit 1' INT TERM

cleanup_fn() { _cleanups+=("$*"); }

requires() {
    local c
    for c in "$@"; do
        if ! command -v "$c" >/dev/null 2>&1; then
            echo "$0: skipped: '$c' is not installed"
            exit 77
        fi
    done
}

fail() {
    echo "$0: FAIL: $*" >&2
    exit 1
}

tmp=$(mktemp -d /tmp/snapnbd-test.XXXXXX)
cleanup_fn "rm -rf '$tmp'"

# Stop a server we started and check that SIGTERM is enough.
_stop_server() {
    local pidfile=$1 pid i
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "$0: FAIL: server $pid ignored SIGTERM" >&2
    kill -9 "$pid" 2>/dev/null
    exit 1
}

start_server() {
    local sock=$1 pidfile=$2 i
    shift 2
    rm -f "$pidfile"
    "$SNAPNBD" -k "$sock" --pid-file="$pidfile" "$@" &
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

uri() {
    echo "nbd+unix:///${2:-}?socket=$1"
}

# The system interpreter has libnbd's Python bindings.
PYTHON=/usr/bin/python3
