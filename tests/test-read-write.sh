#!/usr/bin/env bash
# Data written through NBD with qemu-io lands in the file at the right
# offsets, reads back with the same pattern, and the image stays intact.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-io qemu-img

img=$tmp/disk.img
truncate -s 64M "$img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t "$img"

qemu-io -f raw -c 'write -P 0x5a 4096 65536' -c 'write -P 0xa5 1M 512' \
    -c 'read -P 0x5a 4096 65536' -c 'read -P 0xa5 1M 512' \
    -c 'read -P 0 0 4096' "$(uri "$tmp/sock")" >"$tmp/out" ||
    fail "qemu-io failed: $(cat "$tmp/out")"
grep -q 'Pattern verification failed' "$tmp/out" && fail "pattern mismatch"

# The same writes on a local reference copy must give an identical file.
truncate -s 64M "$tmp/ref.img"
qemu-io -f raw -c 'write -P 0x5a 4096 65536' -c 'write -P 0xa5 1M 512' \
    "$tmp/ref.img" >/dev/null
qemu-img compare -f raw -F raw "$tmp/ref.img" "$img" ||
    fail "image differs from the reference"
