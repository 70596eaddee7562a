# tests/functions.sh - sourced by every tests/test-*.sh.
#
#   requires CMD...        skip (exit 77) unless each command exists
#   cleanup_fn CMD...      run CMD at exit (in reverse order of registration)
#   tmpdir                 a private directory, removed at exit: $tmp
#   start_server SOCK PID ARGS...   start snapnbd on unix socket SOCK
#                          with pid file PID, wait until it listens;
#                          it is killed (and must die on SIGTERM) at exit
#   uri SOCK [NAME]        the NBD URI of a unix socket export
#   requires_plugin        skip unless nbdkit is installed and $SNAPNBD_PLUGIN
#                          names the built nbdkit-snapnbd-plugin.so
#   run_nbdkit ARGS...     run nbdkit (with the sanitizer runtime preloaded
#                          when the plugin was built with ASan)
#   start_nbdkit SOCK PID ARGS...   start nbdkit -f on unix socket SOCK with
#                          pid file PID, wait until it serves; at exit it
#                          is stopped with SIGTERM and must exit with 0
#   fail MSG               print MSG and exit 1
#   qemu_img_create ARGS...   qemu-img create ARGS; retried when QEMU's
#                          PBKDF2 benchmark (LUKS) could not measure; any
#                          other error fails the test
#   thread_ids PID         the thread ids of process PID, sorted, one a line
#   thread_attr PID TID ATTR   of thread TID of process PID: its nice value
#                          (nice), CPU affinity (cpus: Cpus_allowed_list)
#                          or name (name)
#   new_thread_attrs PID BEFORE ATTR   ATTR of each thread of PID that file
#                          BEFORE (thread_ids output) does not list, sorted,
#                          each value once
set -u
set -o pipefail

: "${SNAPNBD:?SNAPNBD must name the built server (make check sets it)}"
: "${srcdir:=$(dirname "$0")}"
export LANG=C
# nbdsh runs "python3" from PATH: make it the system one, which has libnbd.
export PATH=/usr/bin:$PATH
# qemu-storage-daemon through tests/qsd-shim, which keeps QEMU 7.2's QMP
# socket out of reach until the daemon has started (see there why).
PATH=$(cd "$srcdir/qsd-shim" && pwd):$PATH

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
    # (snapnbd leaves the pid file, as qemu-nbd: gone means stopped here)
    kill "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
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

# QEMU 7.2 as Debian ships it (the backport of QEMU's c72cab5) times its
# PBKDF2 benchmark with getrusage, which the scheduler updates late: on a
# loaded machine a run may read 0 ms, and creating a LUKS image fails with
# "Unable to get accurate CPU usage" (QEMU fixed it in 2025: it retries).
# qemu-img then leaves no image, and a test fails later, far from the cause.
qemu_img_create() {
    local i err=$tmp/.qemu-img-create.err
    for i in $(seq 10); do
        qemu-img create "$@" 2>"$err" && return 0
        grep -q "Unable to get accurate CPU usage" "$err" || break
        echo "$0: $(cat "$err"): retrying" >&2
    done
    fail "qemu-img create $*: $(cat "$err")"
}

# --- a server's threads (/proc) ---------------------------------------------
thread_ids() {
    ls "/proc/$1/task" | sort
}

thread_attr() {
    local dir=/proc/$1/task/$2
    case $3 in
    # field 19 of stat, counted after the name, which may hold spaces
    nice) awk '{ sub(/.*\) /, ""); print $17 }' "$dir/stat" ;;
    cpus) awk '/^Cpus_allowed_list/ { print $2 }' "$dir/status" ;;
    name) cat "$dir/comm" ;;
    *) fail "thread_attr: unknown attribute '$3'" ;;
    esac
}

new_thread_attrs() {
    local pid=$1 before=$2 attr=$3 t
    comm -13 "$before" <(thread_ids "$pid") | while read -r t; do
        # (a thread may end meanwhile)
        thread_attr "$pid" "$t" "$attr" 2>/dev/null
    done | sort -u
}

# The system interpreter has libnbd's Python bindings.
PYTHON=/usr/bin/python3

# --- the nbdkit plugin (tests/test-nbdkit-plugin*.sh) -----------------------
_nbdkit_env=()
requires_plugin() {
    requires nbdkit
    if [ -z "${SNAPNBD_PLUGIN:-}" ] || [ ! -f "$SNAPNBD_PLUGIN" ]; then
        echo "$0: skipped: SNAPNBD_PLUGIN does not name the built plugin"
        exit 77
    fi
    plugin_env
}

# How nbdkit must run $SNAPNBD_PLUGIN (for a test that uses the plugin in
# one step only, where it is there): nbdkit itself is not built with ASan,
# so a sanitized plugin needs the runtime loaded first.  nbdkit's own
# allocations are not ours to check.
plugin_env() {
    _nbdkit_env=()
    local asan
    asan=$(ldd "$SNAPNBD_PLUGIN" 2>/dev/null | awk '/libasan/ { print $3 }')
    if [ -n "$asan" ]; then
        _nbdkit_env=(env "LD_PRELOAD=$asan"
                     "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0")
    fi
}

run_nbdkit() {
    "${_nbdkit_env[@]}" nbdkit "$@"
}

# Stop an nbdkit we started: SIGTERM, then its exit status must be 0.
_stop_nbdkit() {
    local pidfile=$1 pid=$2 i st=0
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$0: FAIL: nbdkit $pid ignored SIGTERM" >&2
        kill -9 "$pid" 2>/dev/null
        exit 1
    fi
    wait "$pid" || st=$?
    rm -f "$pidfile"
    if [ "$st" -ne 0 ]; then
        echo "$0: FAIL: nbdkit exited with status $st" >&2
        exit 1
    fi
}

start_nbdkit() {
    local sock=$1 pidfile=$2 pid i
    shift 2
    rm -f "$pidfile" "$sock"
    # Not through run_nbdkit: $! must be nbdkit itself (env execs it).
    "${_nbdkit_env[@]}" nbdkit -f -U "$sock" -P "$pidfile" "$@" &
    pid=$!
    cleanup_fn "_stop_nbdkit '$pidfile' $pid"
    for i in $(seq 200); do
        if [ -S "$sock" ] && [ -s "$pidfile" ]; then
            return 0
        fi
        kill -0 $pid 2>/dev/null || fail "nbdkit exited at start: $*"
        sleep 0.05
    done
    fail "nbdkit did not start: $*"
}
