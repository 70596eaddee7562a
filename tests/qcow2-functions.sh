# tests/qcow2-functions.sh - sourced by tests/test-qcow2-*.sh after
# functions.sh.  QEMU is the oracle: what snapnbd serves from a qcow2 image
# must read like the image does in qemu-img, and its block status map must
# be qemu-nbd's, line for line.
#
#   poke FILE OFFSET BYTES     write printf-escaped BYTES at OFFSET in place
#   poke64 FILE OFFSET VALUE   write VALUE as a big-endian 64-bit field
#   peek64 FILE OFFSET         a big-endian 64-bit field, in decimal
#   peek32 FILE OFFSET         a big-endian 32-bit field, in decimal
#   start_qemu_nbd SOCK PID IMG [ARGS...]   qemu-nbd -r -t on unix SOCK
#   start_qemu_writable SOCK PID IMG [ARGS...]   the same without -r
#   check_served IMG [NAME]    serve IMG (snapnbd -r -f qcow2) and check it
#                              against qemu-img and qemu-nbd
requires qemu-img qemu-nbd nbdinfo nbdcopy

poke() {
    printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

poke64() {
    poke "$1" "$2" "$(printf '%016x' "$3" | sed 's/../\\x&/g')"
}

peek64() {
    echo $((16#$(od -An -t x8 --endian=big -j "$2" -N 8 "$1" | tr -d ' ')))
}

peek32() {
    echo $((16#$(od -An -t x4 --endian=big -j "$2" -N 4 "$1" | tr -d ' ')))
}

start_qemu_nbd() {
    start_qemu_writable "$1" "$2" "$3" -r "${@:4}"
}

start_qemu_writable() {
    local sock=$1 pidfile=$2 img=$3 i
    shift 3
    rm -f "$pidfile"
    qemu-nbd -t -k "$sock" --pid-file="$pidfile" "$@" "$img" \
        2>"$tmp/qemu-nbd.err" &
    cleanup_fn "_stop_server '$pidfile'"
    for i in $(seq 100); do
        [ -S "$sock" ] && [ -s "$pidfile" ] && return 0
        kill -0 $! 2>/dev/null || fail "qemu-nbd exited: $(cat "$tmp/qemu-nbd.err")"
        sleep 0.05
    done
    fail "qemu-nbd did not start"
}

# check_served IMG [NAME]: the export reads like the image (qemu-img compare,
# and a full copy without extents against qemu-img convert), and nbdinfo
# --map matches qemu-nbd's for the same image.
check_served() {
    local img=$1 name=${2:-$(basename "$1")}
    local s=$tmp/$name.snap.sock q=$tmp/$name.qemu.sock
    start_server "$s" "$s.pid" -r -t -f qcow2 "$img"
    start_qemu_nbd "$q" "$q.pid" "$img" -f qcow2

    qemu-img compare -f qcow2 -F raw "$img" "$(uri "$s")" >"$tmp/cmp.out" ||
        fail "$name: export differs from the image: $(cat "$tmp/cmp.out")"
    qemu-img convert -f qcow2 -O raw "$img" "$tmp/$name.ref.raw"
    nbdcopy --no-extents "$(uri "$s")" "$tmp/$name.got.raw" ||
        fail "$name: nbdcopy failed"
    cmp "$tmp/$name.ref.raw" "$tmp/$name.got.raw" ||
        fail "$name: copied bytes differ"
    rm -f "$tmp/$name.ref.raw" "$tmp/$name.got.raw"

    nbdinfo --map "$(uri "$s")" >"$tmp/$name.map.snap" ||
        fail "$name: nbdinfo --map failed"
    nbdinfo --map "$(uri "$q")" >"$tmp/$name.map.qemu" ||
        fail "$name: nbdinfo --map on qemu-nbd failed"
    diff -u "$tmp/$name.map.qemu" "$tmp/$name.map.snap" ||
        fail "$name: block status map differs from qemu-nbd's"
    _stop_server "$s.pid"
    _stop_server "$q.pid"
}
