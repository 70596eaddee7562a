#!/usr/bin/env bash
# snapnbd-backup's progress bar: drawn on stderr when it is a terminal
# (bytes done, rate, ETA, and 100 % at the end), erased afterwards; never
# drawn when stderr is not a terminal, or with --no-progress; drawn anyway
# with --progress.  The summary goes to stdout either way.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-tool-functions.sh"
requires script

size=$((32 << 20))
disk=$tmp/disk.qcow2
sock=$tmp/src.sock
src=$(uri "$sock")

qemu-img create -q -f qcow2 "$disk" $size
qemu-io -f qcow2 -c 'write -P 1 0 8M' "$disk" >/dev/null
serve "$sock" "$disk" -r

# on_tty DIR ARGS...: a full backup to DIR with a terminal as stderr; the
# terminal's output in $tmp/tty.
on_tty() {
    local d=$1
    shift
    script -qec "'$backup' full $* '$src' '$tmp/$d' 2>&1 >/dev/null" \
        /dev/null >"$tmp/tty" </dev/null || fail "backup on a terminal failed"
}

on_tty b1
grep -q '100%.*8.0 MiB / 8.0 MiB.*/s ETA' "$tmp/tty" ||
    fail "no progress bar on a terminal: $(cat -v "$tmp/tty")"
grep -q $'\r\e\\[K$' "$tmp/tty" || fail "the bar is not erased: $(cat -v "$tmp/tty")"

on_tty b2 --no-progress
[ ! -s "$tmp/tty" ] || fail "--no-progress drew: $(cat -v "$tmp/tty")"

"$backup" full "$src" "$tmp/b3" >"$tmp/out" 2>"$tmp/err" || fail "backup failed"
[ ! -s "$tmp/err" ] || fail "drew on a file: $(cat -v "$tmp/err")"
grep -q '^0001-full: read 8388608 bytes' "$tmp/out" || fail "summary: $(cat "$tmp/out")"

"$backup" full --progress "$src" "$tmp/b4" >/dev/null 2>"$tmp/err" ||
    fail "backup with --progress failed"
grep -q '100%' "$tmp/err" || fail "--progress did not draw: $(cat -v "$tmp/err")"
