#!/usr/bin/env bash
# Under nbdkit -r the plugin opens the image read-only and takes no write
# lock: qemu-img info reads the image while it is served, before and after
# a client, as with qemu-nbd -r.  Without -r the first writable connection
# makes the graph writable (the write lock taken then, so qemu-img info is
# refused as qemu-nbd's would be), and writes land.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img qemu-io nbdinfo
requires_plugin

img=$tmp/disk.qcow2
qemu-img create -q -f qcow2 "$img" 4M
qemu-io -f qcow2 -c 'write -P 0x5a 0 64k' "$img" >/dev/null

start_nbdkit "$tmp/s1" "$tmp/p1" -r "$SNAPNBD_PLUGIN" file="$img"
qemu-img info "$img" >"$tmp/info" 2>&1 || fail "nbdkit -r: qemu-img info: $(cat "$tmp/info")"
qemu-io -r -f raw -c 'read -P 0x5a 0 64k' "$(uri "$tmp/s1")" >"$tmp/out" 2>&1 ||
    fail "nbdkit -r: read: $(cat "$tmp/out")"
grep -q "verification failed" "$tmp/out" && fail "nbdkit -r: wrong data"
nbdinfo "$(uri "$tmp/s1")" | grep -q "is_read_only: true" || fail "nbdkit -r: not read-only"
qemu-img info "$img" >"$tmp/info" 2>&1 ||
    fail "nbdkit -r, after a client: qemu-img info: $(cat "$tmp/info")"
_stop_nbdkit "$tmp/p1" "$(cat "$tmp/p1")"

# Writable: the lock comes with the first writable connection.
start_nbdkit "$tmp/s2" "$tmp/p2" "$SNAPNBD_PLUGIN" file="$img"
qemu-io -f raw -c 'write -P 0xa5 64k 64k' "$(uri "$tmp/s2")" >"$tmp/out" 2>&1 ||
    fail "writable: write: $(cat "$tmp/out")"
qemu-img info "$img" >"$tmp/info" 2>&1 &&
    fail "writable: qemu-img info ran beside a writer"
grep -q "lock" "$tmp/info" || fail "writable: not a lock error: $(cat "$tmp/info")"
nbdinfo "$(uri "$tmp/s2")" | grep -q "is_read_only: false" || fail "writable: read-only"
_stop_nbdkit "$tmp/p2" "$(cat "$tmp/p2")"
qemu-io -f qcow2 -c 'read -P 0xa5 64k 64k' "$img" | grep -q "verification failed" &&
    fail "the write did not land"
qemu-img check -q "$img" || fail "image not clean"
