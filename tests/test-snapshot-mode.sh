#!/usr/bin/env bash
# -s/--snapshot: writes go to a temporary qcow2 overlay in $TMPDIR (else
# /var/tmp) that never has a name there, so nothing is left behind, even
# after kill -9; the image is opened read-only and never changes.  The same
# writes through snapnbd -s and qemu-nbd -s, on a raw image and on a qcow2
# chain, give the same bytes and the same maps of both meta contexts
# (-A: the overlay is depth 1).  -s with -r exports read-only.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qcow2-functions.sh"
requires qemu-io sha256sum

raw=$tmp/disk.raw
truncate -s 4M "$raw"
qemu-io -f raw -c 'write -P 1 0 1M' -c 'write -P 2 3M 64K' "$raw" >/dev/null
qemu-img create -q -f qcow2 "$tmp/base.qcow2" 6M
qemu-io -f qcow2 -c 'write -P 3 0 2M' "$tmp/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b "$tmp/base.qcow2" -F qcow2 "$tmp/top.qcow2"
qemu-io -f qcow2 -c 'write -P 4 1M 2M' "$tmp/top.qcow2" >/dev/null
sha256sum "$raw" "$tmp"/*.qcow2 >"$tmp/sums"
mkdir "$tmp/snaptmp" "$tmp/qemutmp"

# The overlay of server PID: one deleted file under DIR among its
# descriptors, and nothing named in DIR.
overlay_hidden() {
    local pid=$1 dir=$2
    ls -l "/proc/$pid/fd" | grep -q " $dir/.* (deleted)\$" ||
        fail "no deleted overlay file of $pid in $dir: $(ls -l "/proc/$pid/fd")"
    [ -z "$(ls -A "$dir")" ] || fail "$dir is not empty: $(ls -A "$dir")"
}

# image_read_only PID IMG: PID holds IMG open, and only for reading.
image_read_only() {
    local modes
    modes=$(ls -l "/proc/$1/fd" | grep " $2\$" | cut -c1-4 | sort -u)
    [ "$modes" = "lr-x" ] || fail "$2 is open with modes '$modes' by $1"
}

# writes URI: the same writes, zeroes and trims on either server.
writes() {
    qemu-io -f raw -c 'write -P 0x55 100K 200K' -c 'write -z 768K 64K' \
        -c 'discard 3M 64K' -c 'write -P 0x66 4032K 64K' "$1" >/dev/null ||
        fail "writes to $1 failed"
}

# same FMT IMG: the same writes through snapnbd -s and qemu-nbd -s read
# back alike, with the same maps; the image is untouched meanwhile.
same() {
    local fmt=$1 img=$2 s=$tmp/s.sock q=$tmp/q.sock ctx
    TMPDIR=$tmp/snaptmp start_server "$s" "$s.pid" -s -A -t -f "$fmt" "$img"
    TMPDIR=$tmp/qemutmp start_qemu_writable "$q" "$q.pid" "$img" -s -A -f "$fmt"
    overlay_hidden "$(cat "$s.pid")" "$tmp/snaptmp"
    image_read_only "$(cat "$s.pid")" "$img"
    writes "$(uri "$s")"
    writes "$(uri "$q")"
    qemu-io -f raw -r -c 'read -P 0x55 100K 200K' -c 'read -P 0 768K 64K' \
        -c 'read -P 0x66 4032K 64K' "$(uri "$s")" | grep -q '^read 65536' ||
        fail "$img: the writes are not visible through snapnbd -s"
    qemu-img compare -f raw -F raw "$(uri "$q")" "$(uri "$s")" >"$tmp/cmp" ||
        fail "$img: contents differ from qemu-nbd -s's: $(cat "$tmp/cmp")"
    for ctx in base:allocation qemu:allocation-depth; do
        nbdinfo --map=$ctx "$(uri "$q")" >"$tmp/map.qemu"
        nbdinfo --map=$ctx "$(uri "$s")" >"$tmp/map.snap"
        diff -u "$tmp/map.qemu" "$tmp/map.snap" ||
            fail "$img: $ctx map differs from qemu-nbd -s's"
    done
    grep -q "  1  local\$" "$tmp/map.snap" || fail "$img: no write in the overlay"
    sha256sum --quiet -c "$tmp/sums" || fail "$img changed while served"
    _stop_server "$s.pid"
    _stop_server "$q.pid"
    sha256sum --quiet -c "$tmp/sums" || fail "$img changed"
    [ -z "$(ls -A "$tmp/snaptmp")" ] || fail "left behind: $(ls -A "$tmp/snaptmp")"
}
same raw "$raw"
same qcow2 "$tmp/top.qcow2"

# kill -9 with written data in the overlay: nothing is left behind.
TMPDIR=$tmp/snaptmp start_server "$tmp/s.sock" "$tmp/s.pid" -s -t -f raw "$raw"
writes "$(uri "$tmp/s.sock")"
pid=$(cat "$tmp/s.pid")
kill -9 "$pid"
wait "$pid" 2>/dev/null || :
rm -f "$tmp/s.pid"
[ -z "$(ls -A "$tmp/snaptmp")" ] || fail "left behind after kill -9: $(ls -A "$tmp/snaptmp")"
sha256sum --quiet -c "$tmp/sums" || fail "an image changed"

# Without TMPDIR the overlay goes to /var/tmp, as in QEMU.
(unset TMPDIR; start_server "$tmp/s.sock" "$tmp/s.pid" -s -t -f raw "$raw"
 ls -l "/proc/$(cat "$tmp/s.pid")/fd" | grep -q ' /var/tmp/.* (deleted)$' ||
     fail "the overlay is not in /var/tmp"
 _stop_server "$tmp/s.pid") || exit 1

# -s with -r: read-only, like qemu-nbd.
start_server "$tmp/s.sock" "$tmp/s.pid" -s -r -t -f raw "$raw"
nbdinfo "$(uri "$tmp/s.sock")" | grep -q 'is_read_only: true' ||
    fail "-s -r exports writable"
_stop_server "$tmp/s.pid"
sha256sum --quiet -c "$tmp/sums" || fail "an image changed"

# A $TMPDIR that cannot hold the overlay: a one-line error naming it.
rc=0
TMPDIR=$tmp/nosuchdir "$SNAPNBD" -s -f raw -k "$tmp/nosock" "$raw" \
    2>"$tmp/err" || rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] &&
    grep -q "temporary overlay in '$tmp/nosuchdir'" "$tmp/err" ||
    fail "unusable TMPDIR: status $rc: $(cat "$tmp/err")"
