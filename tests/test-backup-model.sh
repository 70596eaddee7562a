#!/usr/bin/env bash
# The fast slice of the model-based backup test (tests/backup_model.py):
# fixed seeds covering each sync mode (seed % 7 picks full, top, none,
# incremental, bitmap on-success/always/never), plus the shapes of issue
# 17's known bugs: seed 22 (sync=top into a qcow2 target added with
# "backing": null) and seed 9 (a fleecing target with detect-zeroes=on).
# Each seed writes through 2-4 NBD clients while a backup job runs, then
# checks the target against the model's point in time, the bitmap against
# the model's dirty set, qemu-img check, and that the daemon answers
# query-jobs and stops on SIGTERM.  A failure prints the seed, the shape
# and the command that replays it.  The long mode is
# "./run backup-model [N]" (or tests/backup_model.py --seeds N).
# SNAPNBD_MODEL_SEEDS="1 2 3" overrides the seed list.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img qemu-io
$PYTHON -c 'import nbd' 2>/dev/null || {
    echo "$0: skipped: python3-libnbd is not installed"
    exit 77
}

# 261 and 429: fleecing readers racing write-zeroes (block status was not
# serialised against the overlay's copy-before-write).
seeds=${SNAPNBD_MODEL_SEEDS:-"1 2 3 4 5 6 7 22 9 261 429"}
args=()
for s in $seeds; do
    args+=(--seed "$s")
done
$PYTHON "$srcdir/backup_model.py" --timeout 40 --budget 150 "${args[@]}" ||
    fail "the backup model failed for some seeds (see above)"
