#!/usr/bin/env bash
# snapnbd-backup: a full backup and three incremental ones of a qcow2 disk
# exported with its persistent dirty bitmap ($BITMAP_SERVER -r -B NAME:
# qemu-nbd unless set).  Between backups qemu-io writes random data,
# zeroes and discards to the disk (and so marks the bitmaps).  After each
# backup:
#  - restoring the newest backup, and qemu-img convert of its qcow2 file
#    alone, give the disk as it is (qemu-img compare);
#  - the incremental read no more than the bytes the bitmap marks dirty
#    (nbdinfo counts them), and its own count of dirty bytes is nbdinfo's;
#    data zeroed since the full is written as zeroes that shadow it;
#  - the layer is sound (qemu-img check), backed by the previous one by a
#    relative name.
# At the end every backup of the chain still restores the disk as it was
# when that backup was taken: to a new file (sparse), and to NBD exports
# full of other data (one of them without write-zeroes); verify passes and
# list shows the chain in order.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-tool-functions.sh"

size=$((64 << 20))
disk=$tmp/disk.qcow2
dir=$tmp/backups
sock=$tmp/src.sock
src=$(uri "$sock")

qemu-img create -q -f qcow2 "$disk" $size
qemu-io -f qcow2 -c 'write -P 0x55 8M 1M' "$disk" >/dev/null
write_random "$disk" "$seed" 40
qemu-img bitmap --add "$disk" b0

json_field() { # json_field FILE KEY: a top-level value of qemu-img info
    $PYTHON -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$1" "$2"
}

# check_newest NAME PARENT STEP: the newest backup NAME restores the disk.
check_newest() {
    local name=$1 parent=$2 step=$3 layer=$dir/$1.qcow2
    qemu-img convert -O raw "$disk" "$tmp/ref$step.raw"
    "$backup" restore "$dir/$name" "$tmp/restored.raw" >/dev/null ||
        fail "step $step: restore of $name failed"
    qemu-img compare -q -f raw -F raw "$tmp/ref$step.raw" "$tmp/restored.raw" ||
        fail "step $step (seed $seed): restoring $name does not give the disk"
    qemu-img compare -q -f qcow2 -F raw "$layer" "$tmp/ref$step.raw" ||
        fail "step $step (seed $seed): qemu-img reads $name's chain differently"
    qemu-img check -q "$layer" || fail "step $step: $name is not sound"
    qemu-img info --output=json "$layer" >"$tmp/info"
    [ "$(json_field "$tmp/info" backing-filename)" = "$parent" ] ||
        fail "step $step: $name's backing file is not '$parent'"
}

# inc STEP BITMAP NAME PARENT: an incremental backup through BITMAP.
inc() {
    local step=$1 bm=$2 name=$3 parent=$4 dirty read
    serve "$sock" "$disk" -r -B "$bm"
    dirty=$(map_bytes "$src" "qemu:dirty-bitmap:$bm" 1)
    "$backup" inc "$src" "$dir" --bitmap "$bm" >"$tmp/out" ||
        fail "step $step: inc failed"
    stop_serving "$sock"
    grep -q "^$name: read " "$tmp/out" || fail "step $step: no summary for $name"
    read=$(field "$dir" "$name" bytes-read)
    [ "$dirty" -gt 0 ] && [ "$read" -gt 0 ] ||
        fail "step $step: nothing dirty ($dirty) or nothing read ($read)"
    [ "$read" -le "$dirty" ] ||
        fail "step $step: read $read bytes, more than the $dirty dirty ones"
    [ "$(field "$dir" "$name" bytes-dirty)" -eq "$dirty" ] ||
        fail "step $step: counted $(field "$dir" "$name" bytes-dirty) dirty bytes, nbdinfo $dirty"
    check_newest "$name" "$parent.qcow2" "$step"
}

serve "$sock" "$disk" -r
"$backup" full "$src" "$dir" >/dev/null || fail "full backup failed"
stop_serving "$sock"
[ "$(field "$dir" 0001-full bytes-read)" -lt $size ] ||
    fail "the full backup read holes and zeroes too"
check_newest 0001-full "" 0

# 1: data of the full backup zeroed; the zeroes must shadow it.  (The
# zeroing comes after the random writes, which could land in it.)
write_random "$disk" $((seed + 1)) 20
qemu-io -f qcow2 -c 'write -z 8M 1M' "$disk" >/dev/null
inc 1 b0 0002-inc 0001-full
[ "$(field "$dir" 0002-inc bytes-zero)" -ge $((1 << 20)) ] ||
    fail "step 1: the zeroed megabyte was not written as zeroes"
qemu-img bitmap --clear "$disk" b0

# 2: unaligned small writes inside bitmap granules.
qemu-io -f qcow2 -c 'write -P 7 1000448 4096' -c 'write -P 8 33554944 512' \
    "$disk" >/dev/null
write_random "$disk" $((seed + 2)) 20
inc 2 b0 0003-inc 0002-inc
# The next backup tracks its changes in a new bitmap.
qemu-img bitmap --add "$disk" b1
qemu-img bitmap --remove "$disk" b0

write_random "$disk" $((seed + 3)) 20
inc 3 b1 0004-inc 0003-inc

# Every backup still restores its point in time.
names=(0001-full 0002-inc 0003-inc 0004-inc)
for step in 0 1 2 3; do
    rm -f "$tmp/restored.raw"
    "$backup" restore "$dir/${names[$step]}.qcow2" "$tmp/restored.raw" \
        >/dev/null || fail "restore of ${names[$step]} failed"
    qemu-img compare -q -f raw -F raw "$tmp/ref$step.raw" "$tmp/restored.raw" ||
        fail "(seed $seed) ${names[$step]} no longer restores its point in time"
done
# A file target is written sparse: only what qemu-img maps as data.
data=$(qemu-img map --output=json "$dir/0004-inc.qcow2" | $PYTHON -c '
import json, sys
m = [e for e in json.load(sys.stdin) if e["data"] and not e["zero"]]
print(sum(e["length"] for e in m) + 4096 * len(m))')
[ $(( $(stat -c %b "$tmp/restored.raw") * 512 )) -le "$data" ] ||
    fail "the restored file is not sparse ($(stat -c %b "$tmp/restored.raw") blocks, $data bytes of data)"

# To an NBD export full of other data: its zeroes must be written there.
qemu-img create -q -f raw "$tmp/target.raw" $size
qemu-io -f raw -c "write -P 0xaa 0 $size" "$tmp/target.raw" >/dev/null
tsock=$tmp/target.sock
rm -f "$tsock" "$tsock.pid"
qemu-nbd -t -f raw -k "$tsock" --pid-file="$tsock.pid" "$tmp/target.raw" &
cleanup_fn "_stop_server '$tsock.pid'"
for i in $(seq 100); do [ -S "$tsock" ] && break; sleep 0.05; done
"$backup" restore "$dir" "$(uri "$tsock")" >/dev/null ||
    fail "restore of the newest backup to an NBD export failed"
_stop_server "$tsock.pid"
qemu-img compare -q -f raw -F raw "$tmp/ref3.raw" "$tmp/target.raw" ||
    fail "(seed $seed) restoring to an NBD export does not give the disk"

# To an export that cannot write zeroes (nbdkit's nozero filter): zeroes
# go as data.
if command -v nbdkit >/dev/null; then
    qemu-io -f raw -c "write -P 0xbb 0 $size" "$tmp/target.raw" >/dev/null
    rm -f "$tsock" "$tsock.pid"
    nbdkit -U "$tsock" -P "$tsock.pid" --filter=nozero file \
        "$tmp/target.raw" zeromode=none
    cleanup_fn "_stop_server '$tsock.pid'"
    "$backup" restore "$dir" "$(uri "$tsock")" >/dev/null ||
        fail "restore to an export without write-zeroes failed"
    _stop_server "$tsock.pid"
    qemu-img compare -q -f raw -F raw "$tmp/ref3.raw" "$tmp/target.raw" ||
        fail "(seed $seed) restoring to an export without write-zeroes" \
             "does not give the disk"
fi

"$backup" verify "$dir/0004-inc" >"$tmp/out" || fail "verify failed"
[ "$(grep -c ': ok' "$tmp/out")" -eq 4 ] || fail "verify did not check 4 backups"
"$backup" list "$dir" | awk 'NR > 1 { printf "%s:%s ", $1, $2 }' >"$tmp/out"
[ "$(cat "$tmp/out")" = "0001-full:- 0002-inc:0001-full 0003-inc:0002-inc 0004-inc:0003-inc " ] ||
    fail "list shows: $(cat "$tmp/out")"
