#!/usr/bin/env bash
# Point in time under load, sync=full: drive-backup through QMP while four
# NBD clients write random ranges (random sizes, unaligned ones, write
# zeroes, 16 requests in flight each) through the live export.  The backup
# equals a copy of the disk taken before the job (qemu-img compare), and
# the export lost none of the clients' writes.  Three rounds on the same
# live disk, each with its own seed.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img
requires_libnbd_python

size=$((64 << 20))
start_live_disk $size

for round in 1 2 3; do
    cp --sparse=always "$tmp/disk.img" "$tmp/ref$round.img"
    job='{"execute": "drive-backup", "arguments": {"job-id": "b'$round'",
          "device": "disk", "target": "'$tmp/backup$round.img'",
          "format": "raw", "sync": "full", "speed": 25165824}}'
    $PYTHON "$srcdir/backup_load.py" run "$qmp" "$nbdsock" "$job" \
        "$tmp/ref$round.img" $((seed + round)) 4 ||
        fail "round $round (seed $seed): the load run failed"
    qemu-img compare -q -f raw -F raw "$tmp/ref$round.img" \
        "$tmp/backup$round.img" ||
        fail "round $round (seed $seed): the backup is not the disk as it" \
             "was when the job started"
done
