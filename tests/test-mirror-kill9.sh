#!/usr/bin/env bash
# kill -9 of the daemon while a mirror copies, once it is ready, and just
# after its switch, under two QD16 writers (hole-punching zeroes and trims
# too): every image is qemu-img check clean (leaks allowed) and readable,
# and a marker flushed before the kill is where the export wrote it
# (mirror_kill9.py).
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img
requires_libnbd_python

$PYTHON "$srcdir/mirror_kill9.py" "$SNAPNBD" "$tmp" "$seed" 6 ||
    fail "seed $seed: an image was not sound after kill -9"
