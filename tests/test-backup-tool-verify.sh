#!/usr/bin/env bash
# snapnbd-backup verify: a sound chain passes (exit 0, one "ok" per
# backup); each kind of damage is found, named, and exits 3:
#  - a byte flipped in a data cluster of the incremental's qcow2 file;
#  - the same in the full backup, found when verifying the incremental
#    (verify checks the whole chain);
#  - data written over a range the incremental recorded as zeroes;
#  - an edited checksum file.
# Each time the file is put back and verify passes again, so each failure
# is the damage's doing.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-tool-functions.sh"

size=$((32 << 20))
disk=$tmp/disk.qcow2
dir=$tmp/backups
sock=$tmp/src.sock
src=$(uri "$sock")

qemu-img create -q -f qcow2 "$disk" $size
qemu-io -f qcow2 -c 'write -P 1 0 4M' -c 'write -P 2 16M 2M' "$disk" >/dev/null
qemu-img bitmap --add "$disk" b0
serve "$sock" "$disk" -r
"$backup" full "$src" "$dir" >/dev/null || fail "full backup failed"
stop_serving "$sock"
qemu-io -f qcow2 -c 'write -P 3 1M 1M' -c 'write -z 16M 1M' "$disk" >/dev/null
serve "$sock" "$disk" -r -B b0
"$backup" inc "$src" "$dir" -B b0 >/dev/null || fail "inc failed"
stop_serving "$sock"
grep -q '^16777216 1048576 zero$' "$dir/0002-inc.sums" ||
    fail "the zeroed range is not recorded as zero: $(cat "$dir/0002-inc.sums")"

verify_ok() {
    "$backup" verify "$dir/0002-inc" >"$tmp/out" 2>"$tmp/err" ||
        fail "$1: verify fails: $(cat "$tmp/err")"
    [ "$(grep -c ': ok' "$tmp/out")" -eq 2 ] || fail "$1: $(cat "$tmp/out")"
}

# verify_bad WHAT PATTERN: verify must exit 3, and say PATTERN.
verify_bad() {
    local st=0
    "$backup" verify "$dir/0002-inc.qcow2" >"$tmp/out" 2>"$tmp/err" || st=$?
    [ $st -eq 3 ] || fail "$1: verify exited with $st, not 3: $(cat "$tmp/err")"
    grep -Eq "$2" "$tmp/err" || fail "$1: verify did not say '$2': $(cat "$tmp/err")"
    tail -n 1 "$tmp/err" | grep -q '^snapnbd-backup: ' ||
        fail "$1: no summary line: $(cat "$tmp/err")"
}

# host_offset FILE GUEST: where the guest offset's data lies in the file.
host_offset() {
    qemu-img map --output=json "$1" | $PYTHON -c '
import json, sys
g = int(sys.argv[1])
for e in json.load(sys.stdin):
    if e["depth"] == 0 and e["data"] and e["start"] <= g < e["start"] + e["length"]:
        print(e["offset"] + g - e["start"]); break' "$2"
}

# flip FILE OFFSET: one byte of FILE inverted.
flip() {
    local b
    b=$(od -An -tu1 -j "$2" -N 1 "$1" | tr -d ' ')
    printf "\\$(printf %03o $((255 - b)))" |
        dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

verify_ok "sound chain"

# The incremental's chunk at 1M is the megabyte it read; the full's is its
# first 4M.
for layer in "0002-inc 1048576 1048576" "0001-full 4194304 0"; do
    set -- $layer
    layer=$1
    f=$dir/$layer.qcow2
    cp "$f" "$tmp/saved.qcow2"
    off=$(host_offset "$f" $((1 << 20)))
    [ -n "$off" ] || fail "$layer: no data cluster at 1M"
    flip "$f" $((off + 12345))
    verify_bad "flipped byte in $layer" "^$layer: $2 bytes at offset $3: checksum mismatch"
    cp "$tmp/saved.qcow2" "$f"
    verify_ok "$layer put back"
done

cp "$dir/0002-inc.qcow2" "$tmp/saved.qcow2"
qemu-io -f qcow2 -c 'write -P 9 16896k 4k' "$dir/0002-inc.qcow2" >/dev/null
verify_bad "data over zeroes" "^0002-inc: 1048576 bytes at offset 16777216: no longer zero"
cp "$tmp/saved.qcow2" "$dir/0002-inc.qcow2"
verify_ok "zeroes put back"

cp "$dir/0001-full.sums" "$tmp/saved.sums"
sed -i '2s/data ./data 0/; 2s/data 00/data 11/' "$dir/0001-full.sums"
cmp -s "$dir/0001-full.sums" "$tmp/saved.sums" && fail "the sums file did not change"
verify_bad "edited sums" "0001-full.sums: the checksum file differs"
cp "$tmp/saved.sums" "$dir/0001-full.sums"
verify_ok "sums put back"
