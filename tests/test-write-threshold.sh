#!/usr/bin/env bash
# block-set-write-threshold and BLOCK_WRITE_THRESHOLD (tests/write_threshold.py):
# writes, write-zeroes and discards over NBD that cross a node's threshold
# emit one event and disarm it, on a raw node and on a qcow2 image's file
# node as clusters are allocated (the thin-provisioning use); bad arguments
# get QEMU's errors.  The script asserts that on snapnbd, and its transcript
# must be qemu-storage-daemon 7.2's, line for line, where that is installed.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img

$PYTHON "$srcdir/write_threshold.py" snapnbd >"$tmp/snapnbd.out" 2>&1 || {
    cat "$tmp/snapnbd.out"
    fail "snapnbd's write threshold does not do what QEMU's does"
}
if command -v qemu-storage-daemon >/dev/null 2>&1 &&
   qemu-storage-daemon --version | grep -q 'version 7\.2\.'; then
    $PYTHON "$srcdir/write_threshold.py" qsd >"$tmp/qsd.out" 2>&1 || {
        cat "$tmp/qsd.out"
        fail "qemu-storage-daemon 7.2 does not do what the script expects"
    }
    diff -u "$tmp/qsd.out" "$tmp/snapnbd.out" ||
        fail "transcripts differ: qemu-storage-daemon (-) vs snapnbd (+)"
fi
cat "$tmp/snapnbd.out"
