#!/usr/bin/env bash
# Pull-mode backups of a disk that keeps being written, with
# qemu-storage-daemon: a full backup and three incremental ones, each of a
# point in time (a sync=none job into an overlay, exported with the bitmap
# that a transaction froze at that instant), while a client writes random
# ranges to the live disk all along (it only pauses, with nothing in
# flight, around each transaction).  For each backup:
#  - restoring it gives the point-in-time export as it was read
#    (qemu-img compare with a copy taken through the same export);
#  - a marker written to the live disk after the point in time is not in
#    it (the live disk did move on);
#  - an incremental read no more than its bitmap's dirty bytes.
# At the end the writer has written, every layer is sound and the chain
# verifies.  PULL_DAEMON names the daemon (qemu-storage-daemon unless set;
# snapnbd takes the same options).  PULL_PAUSE=0 keeps the writes going
# across the transactions too, which needs a daemon whose transaction
# quiesces writes as QEMU's does.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-tool-functions.sh"
PULL_DAEMON=${PULL_DAEMON:-qemu-storage-daemon}
requires "$PULL_DAEMON"
$PYTHON -c 'import nbd' 2>/dev/null || {
    echo "$0: skipped: python3-libnbd is not installed"
    exit 77
}

size=$((64 << 20))
disk=$tmp/disk.qcow2
dir=$tmp/backups
qmp=$tmp/qmp.sock
nbdsock=$tmp/nbd.sock
guest=$(uri "$nbdsock" guest)
pit=$(uri "$nbdsock" pit)
pull() { $PYTHON "$srcdir/backup_tool_pull.py" "$@"; }

qemu-img create -q -f qcow2 "$disk" $size
write_random "$disk" "$seed" 30
head -c 65536 /dev/urandom >"$tmp/marker"

"$PULL_DAEMON" \
    --blockdev "driver=qcow2,node-name=disk,file.driver=file,file.filename=$disk" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=guest,node-name=disk,name=guest,writable=on \
    --chardev "socket,id=qmp0,path=$qmp,server=on,wait=off" \
    --monitor chardev=qmp0 &
echo $! >"$tmp/qsd.pid"
cleanup_fn "_stop_server '$tmp/qsd.pid'"
for i in $(seq 200); do [ -S "$nbdsock" ] && [ -S "$qmp" ] && break; sleep 0.05; done
[ -S "$nbdsock" ] || fail "$PULL_DAEMON did not start"

pull writer "$guest" "$seed" "$tmp/stop" >"$tmp/writes" &
writer=$!
cleanup_fn "touch '$tmp/stop'; wait $writer"

pause_writer() {
    touch "$tmp/stop.pause"
    for i in $(seq 200); do [ -e "$tmp/stop.paused" ] && return; sleep 0.05; done
    fail "the writer does not pause"
}

names=(0001-full 0002-inc 0003-inc 0004-inc)
for step in 0 1 2 3; do
    old=${step/#0/}; old=${old:+b$step}
    qemu-img create -q -f qcow2 "$tmp/fleece$step.qcow2" $size
    # No write in flight across the transaction, unless PULL_PAUSE=0: then
    # the daemon must quiesce writes itself, as QEMU's transaction does.
    # The writer goes on during the backup either way.
    [ "${PULL_PAUSE:-1}" = 0 ] || pause_writer
    pull begin "$qmp" "$tmp/fleece$step.qcow2" "b$((step + 1))" $old ||
        fail "step $step: could not start the point in time"
    rm -f "$tmp/stop.pause"
    marker_at=$(( (step * 7 + 3) << 20 ))
    qemu-io -f raw -c "write -s $tmp/marker $marker_at 64k" "$guest" >/dev/null ||
        fail "step $step: marker write failed"
    if [ -z "$old" ]; then
        "$backup" full "$pit" "$dir" >/dev/null || fail "full backup failed"
    else
        dirty=$(map_bytes "$pit" "qemu:dirty-bitmap:$old" 1)
        "$backup" inc "$pit" "$dir" --bitmap "$old" >/dev/null ||
            fail "step $step: inc failed"
        read=$(field "$dir" "${names[$step]}" bytes-read)
        [ "$read" -le "$dirty" ] ||
            fail "step $step: read $read bytes, more than $dirty dirty"
    fi
    qemu-img convert -f raw -O raw "$pit" "$tmp/ref.raw" ||
        fail "step $step: copying the point in time failed"
    pull end "$qmp" $old || fail "step $step: could not end the point in time"

    rm -f "$tmp/restored.raw"
    "$backup" restore "$dir/${names[$step]}" "$tmp/restored.raw" >/dev/null ||
        fail "step $step: restore failed"
    qemu-img compare -q -f raw -F raw "$tmp/ref.raw" "$tmp/restored.raw" ||
        fail "step $step (seed $seed): the backup is not the point in time"
    dd if="$tmp/restored.raw" bs=64k skip=$((marker_at >> 16)) count=1 \
        status=none | cmp -s - "$tmp/marker" &&
        fail "step $step: a write after the point in time is in the backup"
done

touch "$tmp/stop"
wait $writer || fail "the writer failed"
[ "$(cat "$tmp/writes")" -gt 0 ] || fail "the writer wrote nothing"
echo "$0: $(cat "$tmp/writes") writes during the backups"
for name in "${names[@]}"; do
    qemu-img check -q "$dir/$name.qcow2" || fail "$name is not sound"
done
"$backup" verify "$dir" >/dev/null || fail "the chain does not verify"
