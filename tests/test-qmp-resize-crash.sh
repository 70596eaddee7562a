#!/usr/bin/env bash
# block_resize of a qcow2 image whose L1 table must move (512-byte
# clusters, 1 MiB -> 64 MiB) is killed with SIGKILL at each step of the
# move, held there by a blkdebug breakpoint: after the new table's
# clusters are allocated, after it is written, and just before the header
# switches to it.  Each time the image is sound (qemu-img check finds at
# most leaked clusters), still 1 MiB with its data, and a new resize
# completes.  Then internal snapshots are killed the same way while they
# update refcounts and COPIED flags (see below).
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"
requires qemu-img qemu-io

check_after_kill() { # IMG: no corruption (exit 0, or 3 for leaks only)
    local rc=0
    qemu-img check "$1" >"$tmp/check" 2>&1 || rc=$?
    [ $rc -eq 0 ] || [ $rc -eq 3 ] ||
        fail "$1 corrupt after kill -9: $(cat "$tmp/check")"
}

# The QMP thread of snapnbd (pid in $1) sleeps in futex: held at the
# breakpoint (idle, it waits in poll).
wait_held() {
    local pid=$1 i t
    for i in $(seq 200); do
        for t in /proc/"$pid"/task/*; do
            [ "$(cat "$t/comm" 2>/dev/null)" = qmp ] || continue
            # syscall 202 is futex on x86_64, 98 on aarch64
            case $(cut -d' ' -f1 "$t/syscall" 2>/dev/null) in
            202|98) return 0 ;;
            esac
        done
        sleep 0.05
    done
    fail "the QMP thread never reached the breakpoint"
}

# crash_at EVENT COMMAND: start, break at EVENT, run COMMAND, kill -9.
crash_at() {
    local event=$1 command=$2 pid
    start_qmp "$tmp/qmp" "$tmp/pid"
    pid=$(cat "$tmp/pid")
    qmp "$tmp/qmp" \
        '{"execute": "blockdev-add", "arguments": {"driver": "qcow2", "node-name": "q", "file": {"driver": "blkdebug", "node-name": "dbg", "image": {"driver": "file", "filename": "'"$tmp/d.qcow2"'"}}}}' \
        '{"execute": "x-blkdebug-break", "arguments": {"node": "dbg", "event": "'"$event"'", "tag": "bp"}}' \
        >"$tmp/setup" || fail "setup: $(cat "$tmp/setup")"
    grep -q error "$tmp/setup" && fail "setup: $(cat "$tmp/setup")"
    qmp "$tmp/qmp" "$command" >/dev/null 2>&1 &
    local client=$!
    wait_held "$pid"
    kill -9 "$pid"
    wait "$client" 2>/dev/null
    rm -f "$tmp/pid"
}

qemu-img create -q -f qcow2 -o cluster_size=512 "$tmp/d.qcow2" 1M
qemu-io -c 'write -P 0x5a 0 1M' "$tmp/d.qcow2" >/dev/null
resize='{"execute": "block_resize", "arguments": {"node-name": "q", "size": 67108864}}'
for event in l1_grow_alloc_table l1_grow_write_table l1_grow_activate_table; do
    crash_at "$event" "$resize"
    check_after_kill "$tmp/d.qcow2"
    size=$(qemu-img info --output=json "$tmp/d.qcow2" |
           sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
    [ "$size" = 1048576 ] || fail "after a kill at $event: size $size"
    qemu-io -c 'read -P 0x5a 0 1M' "$tmp/d.qcow2" | grep -q 'verification failed' &&
        fail "data lost after a kill at $event"
done

# The same image resizes fine afterwards.
start_qmp "$tmp/qmp" "$tmp/pid"
qmp "$tmp/qmp" \
    '{"execute": "blockdev-add", "arguments": {"driver": "qcow2", "node-name": "q", "file": {"driver": "file", "filename": "'"$tmp/d.qcow2"'"}}}' \
    "$resize" >"$tmp/out" || fail "resize: $(cat "$tmp/out")"
grep -q error "$tmp/out" && fail "resize: $(cat "$tmp/out")"
_stop_server "$tmp/pid"
check_after_kill "$tmp/d.qcow2"
qemu-img info "$tmp/d.qcow2" | grep -q '(67108864 bytes)' ||
    fail "the resize after the crashes did not take"

# Internal snapshots killed while refcounts and COPIED flags disagree (the
# snapshot taken: the flags cleared, not yet the second references
# counted; the snapshot deleted: its references dropped, the flags not yet
# set again).  Both run under the dirty bit: snapnbd's next writable open
# recounts and sets the flags, writes go on, and qemu-img check is clean
# afterwards, without -r.  The snapshot exists wholly or not at all.
after_snapshot_kill() { # EXPECTED-SNAPSHOT-LIST
    start_server "$tmp/nbd" "$tmp/pid" -f qcow2 "$tmp/d.qcow2"
    qemu-io -f raw -c 'write -P 0x6b 0 64k' "$(uri "$tmp/nbd")" >/dev/null ||
        fail "snapnbd could not write the image after the snapshot kill"
    _stop_server "$tmp/pid"
    qemu-img check -q "$tmp/d.qcow2" ||
        fail "not sound after a snapshot kill and snapnbd's repair"
    qemu-io -c 'read -P 0x6b 0 64k' -c 'read -P 0x5a 64k 960k' \
        -c 'read -P 0 1M 63M' "$tmp/d.qcow2" |
        grep -q 'verification failed' && fail "data lost after a snapshot kill"
    local names
    names=$(qemu-img snapshot -l "$tmp/d.qcow2" | awk 'NR > 2 { print $2 }' |
            tr '\n' ' ')
    [ "$names" = "$1" ] || fail "snapshots after the kill: '$names'"
}
crash_at l1_update '{"execute": "blockdev-snapshot-internal-sync", "arguments": {"device": "q", "name": "s"}}'
after_snapshot_kill ""
qemu-img snapshot -c s1 "$tmp/d.qcow2"
crash_at l1_update '{"execute": "blockdev-snapshot-delete-internal-sync", "arguments": {"device": "q", "name": "s1"}}'
after_snapshot_kill ""
exit 0
