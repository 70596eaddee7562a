#!/usr/bin/env bash
# blockdev-mirror and drive-mirror arguments: granularity, buf-size,
# speed, on-source-error/on-target-error, copy-mode, replaces, mode and
# format, with QEMU 7.2's checks and error texts; where
# qemu-storage-daemon is installed, the same commands run against it and
# must answer the same.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
source "$srcdir/qmp-functions.sh"
requires qemu-img
requires_libnbd_python

start_daemon
qsd_sock=
if start_qsd "$tmp/qsd.sock"; then
    qsd_sock=$tmp/qsd.sock
fi
PYTHONPATH=$srcdir $PYTHON "$srcdir/mirror_args.py" "$tmp" "$qmp" $qsd_sock ||
    fail "the mirror arguments are not checked as QEMU checks them"
