#!/usr/bin/env bash
# Pull-mode backup (sync=none, "fleecing") with the QMP sequence used on
# qemu-storage-daemon: blockdev-add a qcow2 overlay whose backing is the
# live node, blockdev-backup sync=none into it, block-export-add of the
# overlay.  While four NBD clients write random ranges to the live export,
# a fifth reads the point-in-time export: it is the disk as it was when the
# job started (qemu-img compare), its block status reports zero only where
# the disk was zero (and, on a fresh disk, everywhere it was), and the live
# export lost no write.  Then the export
# and the job go (BLOCK_JOB_CANCELLED), the overlay is deleted, and
# qemu-img check finds it sound.  Last, a disk that is all zero when the
# job starts keeps its point in time too.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img
requires_libnbd_python

size=$((64 << 20))
start_live_disk $size

for round in 1 2; do
    cp --sparse=always "$tmp/disk.img" "$tmp/ref$round.img"
    # Round 2: clusters larger than the copy's 64 KiB chunks, so that the
    # job must copy whole clusters (a partial one would be completed from
    # the backing: the live, changing source).
    cluster=$((round == 1 ? 65536 : 1048576))
    qemu-img create -q -f qcow2 -F raw -b "$tmp/disk.img" \
        -o cluster_size=$cluster "$tmp/fleece$round.qcow2" $size
    jobs_py 'QMP(sys.argv[1]).cmd("blockdev-add", {"driver": "qcow2",
                 "node-name": "tmp", "backing": "disk",
                 "file": {"driver": "file", "filename": sys.argv[2]}})' \
        "$qmp" "$tmp/fleece$round.qcow2" || fail "blockdev-add of the overlay"
    job='{"execute": "blockdev-backup", "arguments": {"job-id": "f'$round'",
          "device": "disk", "target": "tmp", "sync": "none"}}'
    # The first round's disk is fresh: its zero chunks are exactly its holes.
    BACKUP_LOAD_EXACT_MAP=$((round == 1)) \
    $PYTHON "$srcdir/backup_load.py" run "$qmp" "$nbdsock" "$job" \
        "$tmp/ref$round.img" $((seed + round)) 4 "$tmp/pit$round.img" ||
        fail "round $round (seed $seed): the load run failed"
    qemu-img compare -q -f raw -F raw "$tmp/ref$round.img" \
        "$tmp/pit$round.img" ||
        fail "round $round (seed $seed): the point-in-time export is not" \
             "the disk as it was when the job started"
    jobs_py 'QMP(sys.argv[1]).cmd("blockdev-del", {"node-name": "tmp"})' \
        "$qmp" || fail "blockdev-del of the overlay after the job"
    qemu-img check -q "$tmp/fleece$round.qcow2" ||
        fail "round $round: the overlay is not a sound qcow2 image"
done

# A disk that is all zero when the job starts: the overlay's zeroes are the
# live disk's, which will change, so copy-before-write must still store
# them (a target "known to read as zero" would skip them).
truncate -s 8M "$tmp/empty.img"
qemu-img create -q -f qcow2 -F raw -b "$tmp/empty.img" "$tmp/fl-empty.qcow2"
jobs_py 'q = QMP(sys.argv[1])
q.cmd("blockdev-add", {"driver": "raw", "node-name": "empty",
      "file": {"driver": "file", "filename": sys.argv[2]}})
q.cmd("block-export-add", {"type": "nbd", "id": "e-empty",
      "node-name": "empty", "name": "empty", "writable": True})
q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "fl-empty",
      "backing": "empty", "file": {"driver": "file", "filename": sys.argv[3]}})
q.cmd("blockdev-backup", {"job-id": "f-empty", "device": "empty",
      "target": "fl-empty", "sync": "none"})
q.cmd("block-export-add", {"type": "nbd", "id": "pit-empty",
      "node-name": "fl-empty", "name": "pit-empty"})' \
    "$qmp" "$tmp/empty.img" "$tmp/fl-empty.qcow2" ||
    fail "could not start fleecing an empty disk"
qemu-io -f raw -c 'write -P 0xab 1M 64K' -c 'write -z 3M 64K' \
    "nbd+unix:///empty?socket=$nbdsock" >/dev/null || fail "write to empty"
rc=0
qemu-io -f raw -r -c 'read -P 0 1M 64K' \
    "nbd+unix:///pit-empty?socket=$nbdsock" >"$tmp/pit-empty.out" 2>&1 || rc=$?
grep -q "Pattern verification failed" "$tmp/pit-empty.out" &&
    fail "the point in time of an empty disk shows a later write"
[ $rc -eq 0 ] || fail "reading the empty disk's point in time: $(cat "$tmp/pit-empty.out")"
