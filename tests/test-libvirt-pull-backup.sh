#!/usr/bin/env bash
# A pull-mode incremental backup with the QMP sequence libvirt uses, run
# against snapnbd unchanged (tests/libvirt_pull_backup.py): capability
# probe through query-qmp-schema (and what snapnbd lacks is not
# advertised), a checkpoint bitmap, a scratch qcow2 made with
# blockdev-create whose backing is the live disk, one transaction with the
# bitmap add/merge and blockdev-backup sync=none into the scratch node, an
# NBD export of it with the bitmap and allocation-depth.  Four threads
# write the disk all along; the export must be the disk at the instant of
# the transaction (each write in flight then whole or absent), the bitmap
# must cover exactly the writes between the checkpoint and the backup, and
# allocation depth must show in the scratch image only ranges written after
# the instant (a quarter of the disk, never written, stays the disk's).
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img
requires_libnbd_python

make_disk "$tmp/disk.raw" $((32 << 20)) "$seed"
qemu-img convert -f raw -O qcow2 "$tmp/disk.raw" "$tmp/disk.qcow2"
rm -f "$tmp/disk.raw"
start_daemon
$PYTHON "$srcdir/libvirt_pull_backup.py" "$qmp" "$nbdsock" "$tmp" "$seed" ||
    fail "libvirt's pull-mode backup failed (seed $seed)"
qemu-img check -q "$tmp/scratch.qcow2" || fail "the scratch image is unsound"
