#!/usr/bin/env bash
# Thousands of random writes, write-zeroes and trims of random sizes and
# alignments, 16 in flight, through snapnbd into qcow2 images of several
# kinds (cluster sizes 512 B to 2 MiB, v2 and v3, refcount widths 1 to 64
# bits, with and without a backing file, one starting as compressed
# clusters), mirrored into a raw reference.
# Afterwards qemu-img check finds no error and qemu-img compare finds the
# image equal to the reference.  Small images with small clusters make the
# refcount table grow and the L2 cache evict.  What snapnbd wrote is then
# served read-only like qemu-nbd serves it, block status map included
# (zero clusters, preallocated zeroes, holes).  SEED=n repeats a run.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qcow2-functions.sh"
requires qemu-img qemu-io
seed=${SEED:-$RANDOM}
echo "seed $seed"

# wait_unlocked IMG: once seen (rarely, under load) the image's lock
# outlived the server by a moment; wait for it, and name any holder.
wait_unlocked() {
    for _ in $(seq 50); do
        qemu-img info "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    ls -l /proc/[0-9]*/fd 2>/dev/null | grep -F "$1" >&2
    fail "$1 is still locked after the server exited"
}

# run NAME CREATE-OPTIONS BACKING(-|raw|qcow2) [SNAPNBD-OPTIONS...]
run() {
    local name=$1 opts=$2 backing=$3 cs trim=()
    shift 3
    cs=$(sed -n 's/.*cluster_size=\([0-9]*\).*/\1/p' <<<"$opts")
    local img=$tmp/$name.qcow2 ref=$tmp/$name.raw
    case $backing in
    -)  qemu-img create -q -f qcow2 -o "$opts" "$img" 24M
        truncate -s 24M "$ref" ;;
    compressed) # no backing: the image starts as compressed clusters
        truncate -s 24M "$ref"
        qemu-io -f raw -c 'write -P 0x5a 0 10M' -c 'write -P 0x33 14M 6M' \
            "$ref" >/dev/null
        seq 1 900000 | head -c 4M | dd of="$ref" bs=1M seek=10 \
            conv=notrunc status=none
        qemu-img convert -c -f raw -O qcow2 -o "$opts" "$ref" "$img" ;;
    *)  qemu-img create -q -f "$backing" "$tmp/$name.base" 16M
        qemu-io -f "$backing" -c 'write -P 0x5a 0 12M' -c 'write -z 2M 1M' \
            "$tmp/$name.base" >/dev/null
        qemu-img create -q -f qcow2 -o "$opts" -b "$tmp/$name.base" \
            -F "$backing" "$img" 24M
        qemu-img convert -O raw "$img" "$ref" ;;
    esac
    # v2 trims expose the backing file, which the reference cannot model.
    [[ $opts == *compat=0.10* && $backing != - ]] && trim=(--no-trim)
    start_server "$tmp/sock" "$tmp/pid" -f qcow2 --discard=unmap "$@" "$img"
    /usr/bin/python3 "$srcdir/random_io.py" "$(uri "$tmp/sock")" "$ref" \
        "$seed" "${COUNT:-1500}" --granule "$cs" "${trim[@]}" ||
        fail "$name: I/O failed (seed $seed)"
    _stop_server "$tmp/pid"
    wait_unlocked "$img"
    qemu-img check -q "$img" || fail "$name: qemu-img check (seed $seed)"
    qemu-img compare -q -f qcow2 -F raw "$img" "$ref" ||
        fail "$name: image differs from the reference (seed $seed)"
    check_served "$img" "$name"
    seed=$((seed + 1))
}

run v3-64k cluster_size=65536 -
run v3-512-rc1 cluster_size=512,refcount_bits=1 qcow2 --cache=writeback
run v2-4k cluster_size=4096,compat=0.10 raw
run v3-2m-rc64 cluster_size=2097152,refcount_bits=64 raw
run v3-4k-rc8 cluster_size=4096,refcount_bits=8 qcow2
# Overwrites and trims of compressed clusters, several to a host cluster.
run v3-4k-compressed cluster_size=4096 compressed
