#!/usr/bin/env bash
# nbdcopy reads the whole export into a file identical to the image (sparse
# areas included), and copies a file into the export so that the image
# becomes identical to that file.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires nbdcopy qemu-img qemu-io

img=$tmp/disk.img
truncate -s 32M "$img"
qemu-io -f raw -c 'write -P 0x11 0 1M' -c 'write -P 0x22 5M 12345' \
    -c 'write -P 0x33 31M 1M' "$img" >/dev/null
cp --sparse=always "$img" "$tmp/orig.img"

start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 "$img"

# Export -> file.
nbdcopy "$(uri "$tmp/sock")" "$tmp/out.img" || fail "nbdcopy from NBD failed"
cmp "$tmp/orig.img" "$tmp/out.img" || fail "copy out differs from the image"

# File -> export: random data everywhere except a zero hole in the middle,
# which must overwrite the image's old data there.
head -c 32M /dev/urandom >"$tmp/src.img"
dd if=/dev/zero of="$tmp/src.img" bs=1M seek=4 count=4 conv=notrunc \
    status=none
nbdcopy "$tmp/src.img" "$(uri "$tmp/sock")" || fail "nbdcopy to NBD failed"
qemu-img compare -f raw -F raw "$tmp/src.img" "$img" >/dev/null ||
    fail "image differs from the file copied in"

# And back out through a pipe, with several connections and requests.
nbdcopy --connections=2 --requests=16 "$(uri "$tmp/sock")" - |
    cmp - "$tmp/src.img" || fail "copy to a pipe differs"
