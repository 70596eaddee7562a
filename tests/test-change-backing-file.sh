#!/usr/bin/env bash
# change-backing-file as qemu-storage-daemon 7.2 answers it
# (tests/change_backing_file.py): bad devices and images in QEMU's words
# and order, the name (and the image's own format) written into a root's
# and into a read-only backing image's header, which is read-only again
# after; both images pass qemu-img check.  Where qemu-storage-daemon 7.2 is
# installed the transcripts must be identical.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img

$PYTHON "$srcdir/change_backing_file.py" snapnbd "$tmp/s" >"$tmp/snapnbd.out" 2>&1 || {
    cat "$tmp/snapnbd.out"
    fail "change-backing-file failed its own checks"
}
grep -qx "top: backing mid.qcow2 format qcow2" "$tmp/snapnbd.out" ||
    fail "top's header: $(cat "$tmp/snapnbd.out")"
grep -qx "mid: backing base2.qcow2 format qcow2" "$tmp/snapnbd.out" ||
    fail "mid's header: $(cat "$tmp/snapnbd.out")"
if command -v qemu-storage-daemon >/dev/null 2>&1 &&
   qemu-storage-daemon --version | grep -q 'version 7\.2\.'; then
    $PYTHON "$srcdir/change_backing_file.py" qsd "$tmp/q" >"$tmp/qsd.out" 2>&1 || {
        cat "$tmp/qsd.out"
        fail "qemu-storage-daemon 7.2 failed the script's checks"
    }
    diff -u "$tmp/qsd.out" "$tmp/snapnbd.out" ||
        fail "transcripts differ: qemu-storage-daemon (-) vs snapnbd (+)"
fi
cat "$tmp/snapnbd.out"
