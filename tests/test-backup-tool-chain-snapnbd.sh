#!/usr/bin/env bash
# tests/test-backup-tool-chain.sh with snapnbd -r -B as the server instead
# of qemu-nbd: the same cycle of a full and three incremental backups must
# hold.  Skipped while snapnbd has no -B/--bitmap.
source "${srcdir:-$(dirname "$0")}/functions.sh"
if ! "$SNAPNBD" --help 2>&1 | grep -e '--bitmap' | grep -qv 'not supported'; then
    echo "$0: skipped: snapnbd has no -B/--bitmap"
    exit 77
fi
BITMAP_SERVER=$SNAPNBD exec bash "$srcdir/test-backup-tool-chain.sh"
