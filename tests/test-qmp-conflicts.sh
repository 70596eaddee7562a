#!/usr/bin/env bash
# Graph shapes and commands that must conflict (tests/qmp_conflicts.py):
# two writable qcow2 nodes on one image, two qcow2 nodes over one file
# node, backups whose target reaches the source through a child link (and
# the reverse), two backups on one source (QEMU runs both), backups and
# writable exports sharing a target (which snapnbd refuses on purpose: the
# row says so), blockdev-del of nodes in use by an
# export, a job or a parent, bitmap commands on busy bitmaps, missing jobs.
# Each case runs in a fresh daemon; each command's outcome (success, or the
# error class and the essential words of the message) must be what
# qemu-storage-daemon 7.2 gives; after every case the daemon answers
# query-jobs and stops on SIGTERM within 5 s.  Where qemu-storage-daemon is
# installed the same table runs against it too (a 7.2 that disagrees means
# the table is wrong) and the two daemons' outcome classes are diffed.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img qemu-io

status=0
if command -v qemu-storage-daemon >/dev/null 2>&1; then
    $PYTHON "$srcdir/qmp_conflicts.py" qsd >"$tmp/qsd.out" 2>&1 || {
        if qemu-storage-daemon --version | grep -q 'version 7\.2\.'; then
            cat "$tmp/qsd.out"
            fail "qemu-storage-daemon 7.2 does not give the table's outcomes"
        fi
        echo "$0: note: this qemu-storage-daemon is not 7.2 and differs" \
             "from the table:"
        grep -A3 '^FAIL' "$tmp/qsd.out" || :
    }
fi
$PYTHON "$srcdir/qmp_conflicts.py" snapnbd >"$tmp/snapnbd.out" 2>&1 || status=1
cat "$tmp/snapnbd.out"
if [ -f "$tmp/qsd.out" ]; then
    # The outcome classes, case by case: qemu-storage-daemon vs snapnbd.
    classes() {
        grep -E '^(ok|FAIL) |^  classes' "$1" |
            sed -E 's/^(ok|FAIL) [a-z]+: /case /'
    }
    echo "--- outcome classes: qemu-storage-daemon (<) vs snapnbd (>)"
    diff <(classes "$tmp/qsd.out") <(classes "$tmp/snapnbd.out") || :
fi
[ $status -eq 0 ] ||
    fail "snapnbd's outcomes differ from qemu-storage-daemon 7.2's (above)"
