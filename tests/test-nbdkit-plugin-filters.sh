#!/usr/bin/env bash
# The nbdkit plugin under nbdkit filters:
#  - --filter=cow: writes, write zeroes and trims go to the overlay and read
#    back through the export; the image file is untouched (also with
#    readonly=true, which opens it read-only); block status passes through;
#  - --filter=blocksize: unaligned writes (read-modify-write in the filter)
#    and writes split at maxdata give the same file as the same writes done
#    locally;
#  - both filters stacked at once.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-io qemu-img nbdinfo
requires_plugin

filterdir=$(nbdkit --dump-config | sed -n 's/^filterdir=//p')
for f in cow blocksize; do
    [ -f "$filterdir/nbdkit-$f-filter.so" ] || {
        echo "$0: skipped: nbdkit's $f filter is not installed"; exit 77; }
done

M=$((1024 * 1024))
img=$tmp/disk.img
truncate -s 16M "$img"
qemu-io -f raw -c 'write -P 0x11 0 1M' -c 'write -P 0x22 8M 1M' "$img" \
    >/dev/null
cp --sparse=always "$img" "$tmp/orig.img"

# --- cow: the overlay takes every change ------------------------------------
for params in "" "readonly=true"; do
    # shellcheck disable=SC2086
    start_nbdkit "$tmp/sock" "$tmp/pid" --filter=cow "$SNAPNBD_PLUGIN" \
        file="$img" $params
    u=$(uri "$tmp/sock")
    nbdinfo "$u" | grep -q "is_read_only: false" ||
        fail "cow ($params): export is read-only"
    qemu-io -f raw -c 'write -P 0x33 4K 8K' -c 'write -z 512K 256K' \
        -c 'discard 8M 256K' -c 'write -P 0x44 15M 1M' \
        -c 'read -P 0x11 0 4K' -c 'read -P 0x33 4K 8K' \
        -c 'read -P 0 512K 256K' -c 'read -P 0x22 8912896 512K' \
        -c 'read -P 0x44 15M 1M' "$u" >"$tmp/out" ||
        fail "cow ($params): qemu-io failed: $(cat "$tmp/out")"
    grep -q 'Pattern verification failed' "$tmp/out" &&
        fail "cow ($params): pattern mismatch: $(cat "$tmp/out")"
    # Block status passes through the filter: data where the image has it.
    nbdinfo --map "$u" >"$tmp/map" || fail "cow ($params): nbdinfo --map"
    awk '$1 == 8388608 + 524288 || ($1 <= 9437184 - 4096 &&
         $1 + $2 >= 9437184 - 4096) { print $4 }' "$tmp/map" | grep -q data ||
        fail "cow ($params): no data at 8M+512K..9M: $(cat "$tmp/map")"
    _stop_nbdkit "$tmp/pid" "$(cat "$tmp/pid")"
    qemu-img compare -f raw -F raw "$tmp/orig.img" "$img" ||
        fail "cow ($params): the image file changed"
done

# --- blocksize: unaligned and large requests --------------------------------
ops=(-c 'write -P 0x55 1000 3000' -c 'write -P 0x66 5242780 2097352'
     -c 'write -z 12582919 100K' -c 'write -P 0x77 14M 1536')
cp --sparse=always "$tmp/orig.img" "$tmp/ref.img"
qemu-io -f raw "${ops[@]}" "$tmp/ref.img" >/dev/null

start_nbdkit "$tmp/sock-bs" "$tmp/pid-bs" --filter=blocksize \
    "$SNAPNBD_PLUGIN" file="$img" minblock=4K maxdata=64K maxlen=256K
u=$(uri "$tmp/sock-bs")
qemu-io -f raw "${ops[@]}" -c 'read -P 0x55 1000 3000' \
    -c 'read -P 0x66 5242780 2097352' -c 'read -P 0 12582919 100K' \
    -c 'read -P 0x11 0 1000' "$u" >"$tmp/out" ||
    fail "blocksize: qemu-io failed: $(cat "$tmp/out")"
grep -q 'Pattern verification failed' "$tmp/out" &&
    fail "blocksize: pattern mismatch"
qemu-img compare -f raw -F raw "$tmp/ref.img" "$u" ||
    fail "blocksize: export differs from the reference"
_stop_nbdkit "$tmp/pid-bs" "$(cat "$tmp/pid-bs")"
qemu-img compare -f raw -F raw "$tmp/ref.img" "$img" ||
    fail "blocksize: image differs from the reference"

# --- both: cow over blocksize over the plugin -------------------------------
sum=$(md5sum <"$img")
start_nbdkit "$tmp/sock-2" "$tmp/pid-2" --filter=cow --filter=blocksize \
    "$SNAPNBD_PLUGIN" file="$img" minblock=4K maxdata=64K
u=$(uri "$tmp/sock-2")
qemu-io -f raw -c 'write -P 0x99 100 1M' -c 'read -P 0x99 100 1M' \
    -c 'read -P 0x77 14M 1536' "$u" >"$tmp/out" ||
    fail "cow+blocksize: qemu-io failed: $(cat "$tmp/out")"
grep -q 'Pattern verification failed' "$tmp/out" &&
    fail "cow+blocksize: pattern mismatch"
_stop_nbdkit "$tmp/pid-2" "$(cat "$tmp/pid-2")"
[ "$(md5sum <"$img")" = "$sum" ] || fail "cow+blocksize: the image changed"
exit 0
