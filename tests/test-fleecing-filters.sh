#!/usr/bin/env bash
# Filter-based fleecing, QEMU's recipe (copy-before-write + snapshot-access
# nodes added with blockdev-add, the snapshot exported), run unchanged
# against snapnbd and, when installed, qemu-storage-daemon:
#  - clients write the live disk through the copy-before-write node while a
#    reader pulls the snapshot (qemu-img convert, guided by block status,
#    and plain reads): the pulled image is the disk as it was when the
#    filter was added, and the live disk has every write.  QEMU 7.2 is
#    run for comparison only: under writes its snapshot-access block
#    status reports zeroes the guest wrote after the point in time, and
#    its reads race its copy-before-write (seen here: both pulls differ
#    from the point in time in some runs), so its result is printed, not
#    asserted;
#  - snapnbd only (beyond QEMU 7.2): writes that reach the disk through an
#    export of the disk itself, not through the filter, are copied before
#    too;
#  - snapnbd: discarding a range of the snapshot (a tool has read it)
#    shrinks the fleecing store, the range can no longer be read, and it
#    is no longer copied before writes;
#  - a fleecing store that fills up: on-cbw-error=break-guest-write fails
#    the guest's writes and keeps the snapshot; break-snapshot lets them
#    through and the snapshot can no longer be read; nothing hangs.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img qemu-io mount umount
requires_libnbd_python

size=$((32 << 20))
daemons=(snapnbd)
command -v qemu-storage-daemon >/dev/null && daemons+=(qemu-storage-daemon)


fleece() { $PYTHON "$srcdir/fleecing_filters.py" "$@"; }

for d in "${daemons[@]}"; do
    dir=$tmp/$d
    mkdir -p "$dir"
    make_disk "$dir/disk.raw" $size "$seed"
    qemu-img convert -f raw -O qcow2 "$dir/disk.raw" "$dir/disk.qcow2"
    cp "$dir/disk.qcow2" "$dir/ref.qcow2"
    qemu-img create -q -f qcow2 "$dir/tmp.qcow2" $size
    extra=() peer=qsd
    if [ "$d" = snapnbd ]; then
        extra=(--export type=nbd,id=direct,node-name=disk,name=direct,writable=on)
        peer=direct
    fi
    run_daemon "$d" "$dir" "${extra[@]}"
    fleece recipe "$dir/qmp.sock" "$dir/nbd.sock" "$dir/tmp.qcow2" \
        "$dir/ref.qcow2" "$seed" $peer ||
        fail "$d, seed $seed: the fleecing recipe failed"
    stop_daemon "$d"
    qemu-img check -q "$dir/disk.qcow2" || fail "$d: the disk is not sound"
    qemu-img check -q "$dir/tmp.qcow2" || fail "$d: the store is not sound"

    if [ "$d" = snapnbd ]; then
        cp "$dir/ref.qcow2" "$dir/disk.qcow2"
        rm -f "$dir/tmp.qcow2"
        qemu-img create -q -f qcow2 "$dir/tmp.qcow2" $size
        run_daemon "$d" "$dir"
        fleece discard "$dir/qmp.sock" "$dir/nbd.sock" "$dir/tmp.qcow2" ||
            fail "snapshot-access discard"
        stop_daemon "$d"
        qemu-img check -q "$dir/tmp.qcow2" ||
            fail "the store is not sound after discards"
    fi

    small=$dir/small
    mkdir -p "$small"
    mount -t tmpfs -o size=1M tmpfs "$small" || fail "cannot mount a tmpfs"
    cleanup_fn "umount -l '$small' 2>/dev/null"
    for mode in break-guest-write break-snapshot; do
        cp "$dir/ref.qcow2" "$dir/disk.qcow2"
        rm -f "$small/tmp.qcow2"
        qemu-img create -q -f qcow2 "$small/tmp.qcow2" $size
        run_daemon "$d" "$dir"
        fleece cbw-error "$dir/qmp.sock" "$dir/nbd.sock" "$small/tmp.qcow2" \
            $mode "$seed" || fail "$d: on-cbw-error=$mode"
        stop_daemon "$d"
        qemu-img check -q "$dir/disk.qcow2" ||
            fail "$d, $mode: the disk is not sound"
    done
    umount -l "$small"
done
