#!/usr/bin/env bash
# snapnbd-backup restore checks every chunk of the chain against its
# recorded SHA-256 before it writes anything: a damaged chain is refused
# (exit 3, naming the backup and the offset) and the target is not
# touched, unless --force, which restores it with a warning.  And no run
# leaves DIR/.lock behind: not a failed connect (full into a new
# directory leaves no directory either), not an inc that fails, not a
# backup that succeeds.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-tool-functions.sh"

size=$((16 << 20))
disk=$tmp/disk.qcow2
dir=$tmp/backups
sock=$tmp/src.sock
src=$(uri "$sock")

no_lock() {
    [ ! -e "$dir/.lock" ] || fail "$1: $dir/.lock was left behind"
}

# A failed connect: neither the directory nor a lock stays.
one_line_error "cannot connect" 1 "$backup" full "$src" "$dir"
[ ! -e "$dir" ] || fail "a failed full backup left $dir: $(ls -a "$dir")"

qemu-img create -q -f qcow2 "$disk" $size
qemu-io -f qcow2 -c 'write -P 1 0 4M' -c 'write -P 2 8M 2M' "$disk" >/dev/null
qemu-img bitmap --add "$disk" b0
serve "$sock" "$disk" -r
"$backup" full "$src" "$dir" >/dev/null || fail "full backup failed"
stop_serving "$sock"
no_lock "a full backup"
one_line_error "cannot connect" 1 "$backup" inc "$src" "$dir" -B b0
no_lock "a failed inc"
qemu-io -f qcow2 -c 'write -P 3 1M 1M' "$disk" >/dev/null
serve "$sock" "$disk" -r -B b0
"$backup" inc "$src" "$dir" -B b0 >/dev/null || fail "inc failed"
stop_serving "$sock"
no_lock "an inc"
qemu-img convert -O raw "$disk" "$tmp/expect.raw"

# A sound chain restores.
"$backup" restore -q "$dir" "$tmp/out.raw" || fail "restore of a sound chain"
cmp "$tmp/expect.raw" "$tmp/out.raw" || fail "restored data differ"
rm "$tmp/out.raw"

# One byte of the full backup's data, which the incremental does not hide
# (its chunk 8M..10M).
f=$dir/0001-full.qcow2
off=$(qemu-img map --output=json "$f" | $PYTHON -c '
import json, sys
for e in json.load(sys.stdin):
    if e["data"] and e["start"] <= 8 << 20 < e["start"] + e["length"]:
        print(e["offset"] + (8 << 20) - e["start"]); break')
[ -n "$off" ] || fail "no data cluster at 8M in the full backup"
printf '\377' | dd of="$f" bs=1 seek=$((off + 100)) conv=notrunc status=none

st=0
"$backup" restore "$dir" "$tmp/out.raw" >"$tmp/stdout" 2>"$tmp/err" || st=$?
[ $st -eq 3 ] || fail "a damaged chain: exit $st, not 3: $(cat "$tmp/err")"
tail -n 1 "$tmp/err" | grep -q "^snapnbd-backup: 0002-inc: not restored: 1 of 2 backups in its chain fail verification (first: 0001-full: 2097152 bytes at offset 8388608: checksum mismatch); --force restores anyway$" ||
    fail "the refusal does not name the chunk: $(cat "$tmp/err")"
[ ! -e "$tmp/out.raw" ] || fail "the target was touched"

# --force restores what there is, with a warning.
"$backup" restore -q --force "$dir" "$tmp/out.raw" 2>"$tmp/err" ||
    fail "restore --force: $(cat "$tmp/err")"
grep -q "warning: 0002-inc: restoring a chain that fails verification" \
    "$tmp/err" || fail "no warning: $(cat "$tmp/err")"
cmp -s "$tmp/expect.raw" "$tmp/out.raw" && fail "--force restored other data"
cmp -n $((8 << 20)) "$tmp/expect.raw" "$tmp/out.raw" ||
    fail "--force: the sound part differs"
one_line_error "--force is for 'restore', not 'verify'" 2 \
    "$backup" verify --force "$dir"
