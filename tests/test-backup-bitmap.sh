#!/usr/bin/env bash
# Incremental backup jobs (sync=incremental, sync=bitmap) over QMP, with NBD
# clients writing through the live export:
#  - a full + 3 incremental cycle: one transaction adds bitmap b0 and starts
#    a full drive-backup; each incremental goes into a new qcow2 overlay of
#    the previous backup (drive-backup sync=incremental mode=existing, the
#    second one blockdev-add + blockdev-backup sync=bitmap
#    bitmap-mode=on-success) while four clients write, partly where the
#    job copies and partly where it does not.  After each step the chain
#    equals a copy of the disk taken when the job started (qemu-img
#    compare), the job's total progress is the bitmap's dirty bytes, and
#    qemu-img map finds no more than that in the overlay;
#  - bitmap-mode: a cancelled on-success job loses no bit and keeps the
#    writes made meanwhile; a cancelled always job clears exactly what it
#    copied; never leaves the bitmap as it was; while a job runs its bitmap
#    is busy (clear, remove, disable and a second backup are refused);
#  - the argument checks, with QEMU's messages;
#  - pull mode: bitmap + sync=none fleecing + export of the overlay with the
#    bitmap (frozen by block-dirty-bitmap-disable in the transaction): a
#    client reads only the dirty ranges of the point in time, and those
#    applied to the previous point in time give this one.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img qemu-io
requires_libnbd_python

size=$((64 << 20))
start_live_disk $size
B() { $PYTHON "$srcdir/backup_bitmap.py" "$@"; }

B errors "$qmp" "$nbdsock" "$tmp" || fail "argument checks"

# Bytes that qemu-img map finds allocated in the top layer of IMAGE.
allocated() {
    qemu-img map --output=json "$1" | $PYTHON -c '
import json, sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"] == 0))'
}

# Step 0: the full backup, and b0 from the same instant.
cp --sparse=always "$tmp/disk.img" "$tmp/ref0.img"
job='{"execute": "transaction", "arguments": {"actions": [
      {"type": "block-dirty-bitmap-add",
       "data": {"node": "disk", "name": "b0"}},
      {"type": "drive-backup", "data": {"job-id": "full", "device": "disk",
       "target": "'$tmp/back0.qcow2'", "format": "qcow2", "sync": "full",
       "speed": 25165824}}]}}'
B run "$qmp" "$nbdsock" "$job" full "$tmp/ref0.img" "$seed" 0 >/dev/null ||
    fail "full backup (seed $seed)"
qemu-img compare -q -f raw -F qcow2 "$tmp/ref0.img" "$tmp/back0.qcow2" ||
    fail "the full backup is not the point in time (seed $seed)"

for step in 1 2 3; do
    # More changes through NBD, besides the writes made during the last job.
    qemu-io -f raw -c "write -P $step $((step * 5 + 1))M 300k" \
        "$(uri "$nbdsock" disk)" >/dev/null || fail "step $step: qemu-io"
    dirty=$(B count "$qmp" b0)
    [ "$dirty" -gt 0 ] && [ "$dirty" -lt $((size / 4)) ] ||
        fail "step $step: b0 has $dirty dirty bytes"
    cp --sparse=always "$tmp/disk.img" "$tmp/ref$step.img"
    qemu-img create -q -f qcow2 -F qcow2 -b "$tmp/back$((step - 1)).qcow2" \
        "$tmp/back$step.qcow2" $size
    if [ $step = 2 ]; then
        jobs_py 'QMP(sys.argv[1]).cmd("blockdev-add", {"driver": "qcow2",
                     "node-name": "inc2", "file": {"driver": "file",
                     "filename": sys.argv[2]}})' \
            "$qmp" "$tmp/back2.qcow2" || fail "blockdev-add of the overlay"
        job='{"execute": "blockdev-backup", "arguments": {"job-id": "inc2",
              "device": "disk", "target": "inc2", "sync": "bitmap",
              "bitmap": "b0", "bitmap-mode": "on-success", "speed": 4194304}}'
    else
        job='{"execute": "drive-backup", "arguments": {"job-id": "inc'$step'",
              "device": "disk", "target": "'$tmp/back$step.qcow2'",
              "mode": "existing", "format": "qcow2", "sync": "incremental",
              "bitmap": "b0", "speed": 4194304}}'
    fi
    total=$(B run "$qmp" "$nbdsock" "$job" "inc$step" "$tmp/ref$step.img" \
                $((seed + step)) $step) || fail "step $step (seed $seed)"
    [ $step = 2 ] && { jobs_py 'QMP(sys.argv[1]).cmd("blockdev-del",
                           {"node-name": "inc2"})' "$qmp" ||
                       fail "blockdev-del of the overlay"; }
    [ "$total" = "$dirty" ] ||
        fail "step $step: the job would copy $total bytes, $dirty are dirty"
    qemu-img check -q "$tmp/back$step.qcow2" || fail "step $step: unsound"
    qemu-img compare -q -f raw -F qcow2 "$tmp/ref$step.img" \
        "$tmp/back$step.qcow2" ||
        fail "step $step (seed $seed): the chain is not the point in time"
    alloc=$(allocated "$tmp/back$step.qcow2")
    [ "$alloc" -gt 0 ] && [ "$alloc" -le "$dirty" ] ||
        fail "step $step: $alloc bytes in the overlay, $dirty dirty"
    echo "$0: step $step: $dirty dirty bytes, $alloc in the overlay"
done
# The writes of the last job are in b0 for the next one.
[ "$(B count "$qmp" b0)" -gt 0 ] || fail "b0 lost the last job's writes"

B modes "$qmp" "$nbdsock" "$tmp" || fail "bitmap-mode semantics"
B pull "$qmp" "$nbdsock" "$tmp/disk.img" "$tmp" "$seed" ||
    fail "pull mode (seed $seed)"
