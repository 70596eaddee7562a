#!/usr/bin/env bash
# A bounded fleecing store (snapnbd's x-max-store-bytes, beyond QEMU),
# against a reference model with seeded random writes (fleecing_store.py):
#  - x-on-store-full=break-snapshot: the point in time is exact until the
#    store is full, the snapshot fails to read after, and the guest's
#    writes all succeed;
#  - x-on-store-full=wait: a write that finds the store full waits until
#    the pull client discards part of the snapshot, then completes;
#  - wait with cbw-timeout (QEMU's): the waiting write fails after the
#    timeout (on-cbw-error=break-guest-write) and the snapshot holds;
#  - cbw-timeout with a store that hangs (a blkdebug breakpoint): the
#    write gives its copy up after the timeout, failing (break-guest-write;
#    the snapshot holds) or going on (break-snapshot; it is lost);
#  - blockdev-backup sync=none x-max-store-bytes: the job fails when its
#    store is full;
# with a raw store and a qcow2 store of 4 KiB clusters (copies of 4 KiB:
# the counters say so), the counters (x-cbw of query-named-block-nodes,
# query-jobs, query-block-jobs and the job's event) as the model says, no
# guest write lost, and qemu-img check passing on the disk and the store.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img
requires_libnbd_python

size=$((8 << 20))


dir=$tmp/store
mkdir -p "$dir"
make_disk "$dir/disk.raw" $size "$seed"
qemu-img convert -f raw -O qcow2 "$dir/disk.raw" "$dir/ref.qcow2"

run_case() { # MODE FORMAT
    local mode=$1 fmt=$2 extra=()
    cp "$dir/ref.qcow2" "$dir/disk.qcow2"
    rm -f "$dir/tmp.img"
    if [ "$fmt" = raw ]; then
        truncate -s $size "$dir/tmp.img"
    elif [ "$mode" = backup ]; then
        qemu-img create -q -f qcow2 -o cluster_size=4096 \
            -b "$dir/disk.qcow2" -F qcow2 "$dir/tmp.img"
        extra=(--export type=nbd,id=direct,node-name=disk,name=disk,writable=on)
    else
        qemu-img create -q -f qcow2 -o cluster_size=4096 "$dir/tmp.img" $size
    fi
    run_daemon snapnbd "$dir" "${extra[@]}"
    $PYTHON "$srcdir/fleecing_store.py" $mode "$dir/qmp.sock" \
        "$dir/nbd.sock" "$dir/tmp.img" $fmt "$seed" ||
        fail "$mode, $fmt store, seed $seed: $(tail -5 "$dir/daemon.log")"
    stop_daemon snapnbd
    qemu-img check -q "$dir/disk.qcow2" ||
        fail "$mode, $fmt store: the disk is not sound"
    if [ "$fmt" = qcow2 ]; then
        qemu-img check -q "$dir/tmp.img" ||
            fail "$mode, $fmt store: the store is not sound"
    fi
}

run_case break qcow2
run_case break raw
run_case wait qcow2
run_case wait raw
run_case timeout raw
run_case slow raw
run_case backup qcow2
