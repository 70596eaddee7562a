#!/usr/bin/env bash
# blkdebug under a qcow2 image: an EIO or ENOSPC injected at each metadata
# update point of qcow2 (and at the data write and the flush) during NBD
# writes fails exactly the write that needed it, with that errno; the
# server keeps serving; what was acknowledged reads back, survives a
# restart, and `qemu-img check` finds no corruption (leaked clusters are
# allowed, as in QEMU).  512-byte clusters make a few MiB of writes
# allocate refcount blocks and grow the refcount table too.  (For
# l1_update, refblock_alloc_hookup and reftable_update this needs qcow2 to
# undo its in-memory L1 or refcount-table change when writing it fails.)
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img nbdsh
$PYTHON -c 'import nbd' 2>/dev/null || {
    echo "$0: skipped: python3-libnbd is not installed"
    exit 77
}

size=$((16 << 20))
written=$((10 << 20))   # past 8 MiB: the refcount table grows
sock=$tmp/nbd.sock
img=$tmp/disk.qcow2

events="l1_update l2_load l2_update l2_alloc_write cluster_alloc
        refblock_alloc refblock_alloc_hookup reftable_update reftable_grow
        refblock_update cluster_free write_aio pwritev flush_to_disk"
for event in $events; do
    for err in EIO ENOSPC; do
        errno=$($PYTHON -c "import errno; print(errno.$err)")
        rm -f "$img"
        qemu-img create -q -f qcow2 -o cluster_size=512 "$img" $size
        opts="driver=qcow2,file.driver=blkdebug"
        opts+=",file.inject-error.0.event=$event"
        opts+=",file.inject-error.0.errno=$errno"
        opts+=",file.inject-error.0.once=on"
        opts+=",file.image.driver=file,file.image.filename=$img"
        start_server "$sock" "$tmp/pid" -t --image-opts "$opts"
        $PYTHON "$srcdir/blkdebug_writes.py" "$sock" $err "$tmp/ref" \
            $written || fail "$event/$err"
        _stop_server "$tmp/pid"
        qemu-img check -q "$img"
        rc=$?
        [ $rc = 0 ] || [ $rc = 3 ] ||
            fail "$event/$err: qemu-img check says $rc (corrupt image)"
        qemu-img compare -q -f qcow2 -F raw "$img" "$tmp/ref" ||
            fail "$event/$err: acknowledged writes lost after a restart"
    done
done

# The same rules from a config file in QEMU's format, with set-state: the
# error is armed only after the first L1 update (state 1 -> 2).
cat >"$tmp/blkdebug.conf" <<'EOC'
# fail the second L2 table allocation
[set-state]
state = "1"
event = "l1_update"
new_state = "2"

[inject-error]
state = "2"
event = "l2_alloc_write"
errno = "28"
once = "on"
EOC
rm -f "$img"
qemu-img create -q -f qcow2 -o cluster_size=512 "$img" $size
start_server "$sock" "$tmp/pid" -t --image-opts \
    "driver=qcow2,file.driver=blkdebug,file.config=$tmp/blkdebug.conf,file.image.driver=file,file.image.filename=$img"
nbdsh -u "$(uri "$sock")" -c '
import os
h.pwrite(b"\1" * 512, 0, nbd.CMD_FLAG_FUA)          # first L2: state 2
try:
    h.pwrite(b"\2" * 512, 1 << 20, nbd.CMD_FLAG_FUA) # second L2: fails
    assert False, "the second L2 allocation did not fail"
except nbd.Error as e:
    assert e.errno == "ENOSPC", e
h.pwrite(b"\2" * 512, 1 << 20, nbd.CMD_FLAG_FUA)
assert h.pread(512, 1 << 20) == b"\2" * 512
' || fail "config file rules"
_stop_server "$tmp/pid"
qemu-img check -q "$img"
rc=$?
[ $rc = 0 ] || [ $rc = 3 ] || fail "config file: qemu-img check says $rc"

# Bad rules are refused at open with QEMU's (7.2's blockdev-add) words.
for bad in "inject-error.0.event=nope:Parameter 'event' does not accept value 'nope'" \
           "inject-error.0.errno=5:Parameter 'inject-error[0].event' is missing" \
           "set-state.0.event=l1_update,set-state.0.colour=red:Invalid parameter 'colour'" \
           "align=3000:Cannot meet constraints with align" \
           "config=$tmp/none.conf:Could not read blkdebug config file: No such file or directory"; do
    out=$("$SNAPNBD" -k "$tmp/bad.sock" --image-opts \
        "driver=blkdebug,${bad%%:*},image.driver=file,image.filename=$img" 2>&1)
    [[ $out == *"${bad#*:}"* ]] || fail "blkdebug ${bad%%:*}: $out"
done

# align makes the node a device that needs it: a 512-byte write at 0
# reaches blkdebug as [0, 8 KiB) (io.c's read-modify-write), so a rule on
# the write of sector 8 fails it with align=8192, and not without.
truncate -s 1M "$tmp/disk.raw"
for align in 0 8192; do
    start_server "$sock" "$tmp/pid" -t --image-opts \
        "driver=blkdebug,align=$align,inject-error.0.event=pwritev,inject-error.0.iotype=write,inject-error.0.sector=8,image.driver=file,image.filename=$tmp/disk.raw"
    nbdsh -u "$(uri "$sock")" -c "
try:
    h.pwrite(b'\1' * 512, 0)
    failed = False
except nbd.Error as e:
    assert e.errno == 'EIO', e
    failed = True
assert failed == ($align == 8192), 'align=$align: failed=%s' % failed
" || fail "align=$align"
    _stop_server "$tmp/pid"
done
