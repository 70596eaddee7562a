#!/usr/bin/env bash
# An image marked dirty (lazy refcounts, left by a crash) is repaired when
# snapnbd opens it for writing, as QEMU does: refcounts too low (which
# qemu-img check calls errors) and leaked clusters are recounted from the
# metadata, snapshots and bitmaps included, the dirty bit is cleared, and
# the data, the internal snapshot and the bitmap are intact.  Read-only it
# is served as it is.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qcow2-functions.sh"
requires qemu-io

img=$tmp/d.qcow2
qemu-img create -q -f qcow2 -o lazy_refcounts=on "$img" 64M
qemu-img bitmap --add "$img" b0
qemu-io -f qcow2 -c 'write -P 1 0 1M' -c 'write -P 2 10M 3M' \
    -c 'write -z 20M 64K' "$img" >/dev/null
qemu-img snapshot -c s1 "$img"
qemu-img convert -O raw -l s1 "$img" "$tmp/s1.raw"
# qemu-io's abort is a crash: the dirty bit stays, the refcounts lag.
(qemu-io -f qcow2 -c 'write -P 3 512K 1M' -c 'write -P 4 30M 2M' -c abort \
    "$img" >/dev/null 2>&1) 2>/dev/null && fail "qemu-io did not abort"
[ "$(peek64 "$img" 72)" = 1 ] || fail "the image is not marked dirty"
# Make it worse: a data cluster in use with refcount 0 (the one holding
# guest offset 10M), which qemu-img check reports as an error.
data=$(qemu-img map -U --output=json "$img" | $PYTHON -c 'import json,sys
for e in json.load(sys.stdin):
    if e["start"] <= 10 << 20 < e["start"] + e["length"] and "offset" in e:
        print(e["offset"] + (10 << 20) - e["start"]); break')
rt=$(peek64 "$img" 48)
rb=$(peek64 "$img" "$rt")
poke "$img" $((rb + 2 * (data >> 16))) '\0\0'
rc=0; qemu-img check "$img" >"$tmp/check" 2>&1 || rc=$?
[ $rc -eq 2 ] || fail "the damage is not an error for qemu-img ($rc): $(cat "$tmp/check")"
qemu-img convert -U -O raw "$img" "$tmp/expect.raw"

# Read-only: served as it is, nothing written.
sum=$(sha256sum <"$img")
start_server "$tmp/sock" "$tmp/pid" -r -t -f qcow2 "$img"
qemu-img compare -q -F raw "$tmp/expect.raw" "$(uri "$tmp/sock")" ||
    fail "the dirty image reads wrong read-only"
_stop_server "$tmp/pid"
[ "$(sha256sum <"$img")" = "$sum" ] || fail "a read-only open wrote"

# Writable: repaired at open, then written.
start_server "$tmp/sock" "$tmp/pid" -t -f qcow2 "$img"
qemu-io -f raw -c 'write -P 5 40M 64K' "$(uri "$tmp/sock")" >/dev/null ||
    fail "writing the repaired image failed"
_stop_server "$tmp/pid"
qemu-io -f raw -c 'write -P 5 40M 64K' "$tmp/expect.raw" >/dev/null
qemu-img check -q "$img" || fail "still damaged after the repair"
[ "$(peek64 "$img" 72)" = 0 ] || fail "the dirty bit is still set"
qemu-img compare -q -f qcow2 -F raw "$img" "$tmp/expect.raw" ||
    fail "the data changed in the repair"
qemu-img convert -O raw -l s1 "$img" "$tmp/s1.after"
cmp -s "$tmp/s1.raw" "$tmp/s1.after" || fail "the snapshot changed"
qemu-img info "$img" | grep -q "name: b0" || fail "the bitmap is gone"
