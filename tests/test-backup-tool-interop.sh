#!/usr/bin/env bash
# snapnbd-backup against qemu-nbd -B and against snapnbd -B on the same
# image gives the same backups: a full and two incrementals through each
# server read the same bytes, record the same chunks with the same
# checksums (the servers' block status and bitmap maps agree), and
# restore the same disk.  Skipped while snapnbd has no -B.
source "${srcdir:-$(dirname "$0")}/functions.sh"
BITMAP_SERVER=qemu-nbd
source "$srcdir/backup-tool-functions.sh"
if ! "$SNAPNBD" --help 2>&1 | grep -e '--bitmap' | grep -qv 'not supported'; then
    echo "$0: skipped: snapnbd has no -B/--bitmap"
    exit 77
fi

size=$((64 << 20))
disk=$tmp/disk.qcow2
sock=$tmp/src.sock
src=$(uri "$sock")

qemu-img create -q -f qcow2 "$disk" $size
write_random "$disk" "$seed" 40
qemu-img bitmap --add "$disk" b0

# backup_both KIND ARGS...: the same backup through each server.
backup_both() {
    local server
    for server in qemu-nbd "$SNAPNBD"; do
        BITMAP_SERVER=$server serve "$sock" "$disk" -r "$@"
        "$backup" "$kind" "$src" "$tmp/$(basename "$server")" "$@" >/dev/null ||
            fail "$kind through $server failed"
        stop_serving "$sock"
    done
}

for step in 0 1 2; do
    if [ $step -eq 0 ]; then
        kind=full
        backup_both
    else
        write_random "$disk" $((seed + step)) 20
        kind=inc
        backup_both -B b0
        qemu-img bitmap --clear "$disk" b0
    fi
    name=$(printf '%04d-%s' $((step + 1)) $kind)
    for key in bytes-read bytes-dirty bytes-data bytes-zero sums-sha256; do
        [ "$(field "$tmp/qemu-nbd" "$name" $key)" = "$(field "$tmp/snapnbd" "$name" $key)" ] ||
            fail "step $step (seed $seed): $key differs: qemu-nbd $(field "$tmp/qemu-nbd" "$name" $key), snapnbd $(field "$tmp/snapnbd" "$name" $key)"
    done
    cmp -s "$tmp/qemu-nbd/$name.sums" "$tmp/snapnbd/$name.sums" ||
        fail "step $step (seed $seed): the chunks differ"
    "$backup" restore "$tmp/snapnbd/$name" "$tmp/restored.raw" >/dev/null ||
        fail "step $step: restore failed"
    qemu-img compare -q -f qcow2 -F raw "$disk" "$tmp/restored.raw" ||
        fail "step $step (seed $seed): the backup through snapnbd is not the disk"
done
