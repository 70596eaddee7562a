#!/usr/bin/env bash
# Persistent dirty bitmaps and -B, with qemu-img and qemu-nbd as oracles:
#  - bitmaps made by qemu-img and filled by qemu-io writes are served by
#    snapnbd -r -B exactly as qemu-nbd -r -B serves them: the same meta
#    contexts, in the same order, and the same nbdinfo --map for each;
#  - written through snapnbd (writable), the enabled bitmaps record the
#    writes and are stored back: qemu-img check is clean, qemu-img info
#    lists them with the auto flag, and qemu-nbd then maps them with the
#    new writes dirty;
#  - after kill -9 the bitmaps are marked in use (qemu-img info) and
#    snapnbd refuses to export them as inconsistent;
#  - a missing bitmap is qemu-nbd's one-line error.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qcow2-functions.sh"
requires qemu-io

img=$tmp/disk.qcow2
qemu-img create -q -f qcow2 "$img" 64M
qemu-img bitmap --add "$img" b0
qemu-img bitmap --add -g 1M "$img" b1
qemu-img bitmap --add --disable "$img" off
qemu-io -f qcow2 -c 'write -P 1 1M 100K' -c 'write -P 2 30M 4M' \
    -c 'write -z 50M 64K' -c 'discard 40M 1M' "$img" >/dev/null

# same_maps LABEL: every context through snapnbd -r -B equals qemu-nbd's.
same_maps() {
    local label=$1 ctx
    start_server "$tmp/s.sock" "$tmp/s.pid" -r -t -f qcow2 -B b0 -B b1 "$img"
    start_qemu_nbd "$tmp/q.sock" "$tmp/q.pid" "$img" -f qcow2 -B b0 -B b1
    nbdinfo --json "$(uri "$tmp/s.sock")" | grep -A4 '"contexts"' >"$tmp/ctx.s"
    nbdinfo --json "$(uri "$tmp/q.sock")" | grep -A4 '"contexts"' >"$tmp/ctx.q"
    diff -u "$tmp/ctx.q" "$tmp/ctx.s" || fail "$label: contexts differ"
    for ctx in qemu:dirty-bitmap:b0 qemu:dirty-bitmap:b1 base:allocation; do
        nbdinfo --map="$ctx" "$(uri "$tmp/s.sock")" >"$tmp/map.s.${ctx##*:}" ||
            fail "$label: nbdinfo --map=$ctx failed"
        nbdinfo --map="$ctx" "$(uri "$tmp/q.sock")" >"$tmp/map.q"
        diff -u "$tmp/map.q" "$tmp/map.s.${ctx##*:}" ||
            fail "$label: $ctx map differs"
    done
    _stop_server "$tmp/s.pid"
    _stop_server "$tmp/q.pid"
}
same_maps "made by qemu"

# Written through snapnbd: b0 and b1 record the writes, 'off' does not.
start_server "$tmp/s.sock" "$tmp/s.pid" -t -f qcow2 -B b0 "$img"
qemu-io -f raw -c 'write -P 9 10M 8K' -c 'write -z 60M 2M' \
    -c 'write -P 9 63M 1M' "$(uri "$tmp/s.sock")" >/dev/null ||
    fail "writes through snapnbd failed"
nbdinfo --map=qemu:dirty-bitmap:b0 "$(uri "$tmp/s.sock")" >"$tmp/live.map"
grep -Eq '^ *10485760 +65536 +1 +dirty' "$tmp/live.map" ||
    fail "the live bitmap misses a write: $(cat "$tmp/live.map")"
_stop_server "$tmp/s.pid"
qemu-img check -q "$img" || fail "qemu-img check after storing bitmaps"
qemu-img info --output=json "$img" >"$tmp/info"
for b in b0 b1 off; do grep -q "\"name\": \"$b\"" "$tmp/info" ||
    fail "bitmap $b was not stored"; done
grep -q in-use "$tmp/info" && fail "bitmaps left in use after a clean close"
same_maps "stored by snapnbd"
grep -Eq '^ *62914560 +2097152 +1 +dirty' "$tmp/map.s.b1" ||
    fail "write-zeroes not recorded in b1: $(cat "$tmp/map.s.b1")"
start_qemu_nbd "$tmp/q.sock" "$tmp/q.pid" "$img" -f qcow2 -B off
nbdinfo --map=qemu:dirty-bitmap:off "$(uri "$tmp/q.sock")" >"$tmp/off.map"
_stop_server "$tmp/q.pid"
grep -q dirty "$tmp/off.map" && fail "a disabled bitmap recorded writes"

# kill -9: the bitmaps stay marked in use and are refused.
start_server "$tmp/s.sock" "$tmp/s.pid" -t -f qcow2 "$img"
qemu-io -f raw -c 'write -P 7 5M 4K' "$(uri "$tmp/s.sock")" >/dev/null
kill -9 "$(cat "$tmp/s.pid")"
sleep 0.2
qemu-img info "$img" | grep -q in-use || fail "no in-use flag after kill -9"
"$SNAPNBD" -r -k "$tmp/x.sock" -f qcow2 -B b0 "$img" 2>"$tmp/err" &&
    fail "an inconsistent bitmap was exported"
grep -q "Bitmap 'b0' is inconsistent" "$tmp/err" ||
    fail "unclear error for an inconsistent bitmap: $(cat "$tmp/err")"
qemu-img check -q "$img" >/dev/null 2>&1; [ $? -le 3 ] || fail "image corrupt"

# A bitmap that does not exist: qemu-nbd's message, one line.
"$SNAPNBD" -r -k "$tmp/x.sock" -f qcow2 -B nope "$img" 2>"$tmp/err" &&
    fail "a missing bitmap was accepted"
[ "$(cat "$tmp/err")" = "snapnbd: Bitmap 'nope' is not found" ] ||
    fail "wrong error: $(cat "$tmp/err")"
