#!/usr/bin/env bash
# tests/test-backup-tool-pull.sh with snapnbd's daemon mode (--blockdev,
# --nbd-server, --export, --monitor, QMP) instead of qemu-storage-daemon:
# the same pull-mode backups of a disk being written must hold.  Skipped
# while snapnbd has no -B/--bitmap.
#
# Unlike the qemu-storage-daemon run, the writer keeps writing across the
# transactions too (PULL_PAUSE=0): snapnbd's transaction holds client
# writes back while it runs, so every write is either in the point in time
# and the old bitmap, or after it and in the new one.  (Without that gate
# this test failed in 3 of 3 runs.)
source "${srcdir:-$(dirname "$0")}/functions.sh"
if ! "$SNAPNBD" --help 2>&1 | grep -e '--bitmap' | grep -qv 'not supported'; then
    echo "$0: skipped: snapnbd has no -B/--bitmap"
    exit 77
fi
PULL_PAUSE=${PULL_PAUSE:-0} PULL_DAEMON=$SNAPNBD exec bash "$srcdir/test-backup-tool-pull.sh"
