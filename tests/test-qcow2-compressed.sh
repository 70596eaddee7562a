#!/usr/bin/env bash
# Compressed clusters (qemu-img convert -c: raw deflate) with 4K, 64K and
# 2M clusters, mixed with data that does not compress (stored plain) and
# holes, and a compressed image used as a backing file: served as qemu-img
# reads them, with qemu-nbd's block status map.  A compressed cluster that
# ends in the file's last, partial sector is read too (the last one
# written is always such a cluster).
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qcow2-functions.sh"
requires qemu-io

src=$tmp/src.raw
truncate -s 12M "$src"
qemu-io -f raw -c 'write -P 0x3c 0 1M' -c 'write -P 0x61 2500K 300K' \
    -c 'write -P 0x7e 12220K 68K' "$src" >/dev/null
# Incompressible bytes stay uncompressed in the image.
head -c 1M /dev/urandom | dd of="$src" bs=64K seek=96 conv=notrunc status=none
# Text compresses, but not to nothing.
seq 1 200000 | head -c 1M | dd of="$src" bs=64K seek=128 conv=notrunc status=none

for cs in 4096 65536 2097152; do
    img=$tmp/c$cs.qcow2
    qemu-img convert -c -f raw -O qcow2 -o cluster_size=$cs "$src" "$img"
    # Smaller than the same image uncompressed: compressed clusters.
    qemu-img convert -f raw -O qcow2 -o cluster_size=$cs "$src" "$tmp/plain"
    [ "$(stat -c %s "$img")" -lt "$(stat -c %s "$tmp/plain")" ] ||
        fail "$img: nothing was compressed"
    check_served "$img"
done

# A compressed image as the backing of an overlay that rewrites some of it.
qemu-img create -q -f qcow2 -b "$tmp/c65536.qcow2" -F qcow2 "$tmp/over.qcow2"
qemu-io -f qcow2 -c 'write -P 0x44 512K 8K' -c 'write -z 2600K 64K' \
    "$tmp/over.qcow2" >/dev/null
check_served "$tmp/over.qcow2"
