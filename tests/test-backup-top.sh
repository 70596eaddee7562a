#!/usr/bin/env bash
# sync=top: drive-backup of a qcow2 overlay (over a raw base) into a new
# qcow2 image (mode=absolute-paths), while four NBD clients write random
# ranges through the live export.  The target gets the base as its backing
# file and only the clusters allocated in the overlay when the job started:
# qemu-img compare finds it equal to a copy of the overlay taken before the
# job, qemu-img map shows nothing allocated in it that was not allocated in
# that copy, and qemu-img check finds it sound.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img qemu-io
requires_libnbd_python

size=$((64 << 20))
make_disk "$tmp/base.img" $size "$seed"
qemu-img create -q -f qcow2 -F raw -b "$tmp/base.img" "$tmp/top.qcow2" $size
# Some clusters of the overlay hold data, some zeroes, the rest is the base.
args=()
for i in $(seq 0 23); do
    off=$(( (seed / (i + 1) + i * 7919) % (size / 65536 - 16) * 65536 ))
    if [ $((i % 4)) -eq 0 ]; then
        args+=(-c "write -z $off 192k")
    else
        args+=(-c "write -P $((i + 1)) $off $(( (i % 3 + 1) * 65536 ))")
    fi
done
qemu-io -f qcow2 "${args[@]}" "$tmp/top.qcow2" >/dev/null ||
    fail "cannot prepare the overlay"
cp "$tmp/top.qcow2" "$tmp/ref.qcow2"
qemu-img convert -O raw "$tmp/ref.qcow2" "$tmp/ref.img"

start_daemon \
    --blockdev "driver=qcow2,node-name=disk,discard=unmap,file.driver=file,file.filename=$tmp/top.qcow2" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=e0,node-name=disk,name=disk,writable=on

job='{"execute": "drive-backup", "arguments": {"job-id": "t0",
      "device": "disk", "target": "'$tmp/backup.qcow2'", "format": "qcow2",
      "mode": "absolute-paths", "sync": "top", "speed": 33554432}}'
$PYTHON "$srcdir/backup_load.py" run "$qmp" "$nbdsock" "$job" \
    "$tmp/ref.img" "$seed" 4 || fail "seed $seed: the load run failed"

qemu-img check -q "$tmp/backup.qcow2" || fail "the backup is not sound"
backing=$(qemu-img info --output=json "$tmp/backup.qcow2" |
          $PYTHON -c 'import json, sys; print(json.load(sys.stdin)["backing-filename"])')
[ "$backing" = "$tmp/base.img" ] ||
    fail "the backup's backing file is '$backing', not the base"
qemu-img compare -q "$tmp/ref.qcow2" "$tmp/backup.qcow2" ||
    fail "seed $seed: the backup is not the overlay as it was when the job" \
         "started"
# Only what the overlay had allocated was copied.
jobs_py '
import json, subprocess
def top_ranges(path):
    m = json.loads(subprocess.check_output(
        ["qemu-img", "map", "--output=json", path]))
    merged = []
    for e in m:
        if e["depth"] != 0:
            continue
        s, t = e["start"], e["start"] + e["length"]
        if merged and merged[-1][1] == s:
            merged[-1] = (merged[-1][0], t)
        else:
            merged.append((s, t))
    return merged
ref = top_ranges(sys.argv[1])
got = top_ranges(sys.argv[2])
assert got, "nothing was copied"
for s, e in got:
    assert any(a <= s and e <= b for a, b in ref), \
        f"{s}..{e} is allocated in the backup but not in the overlay: {ref}"
' "$tmp/ref.qcow2" "$tmp/backup.qcow2" ||
    fail "seed $seed: sync=top copied more than the top layer"
