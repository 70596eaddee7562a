#!/usr/bin/env bash
# RBD snapshots through QMP, against a real one-node Ceph cluster
# (tests/ceph-cluster.sh), on an rbd disk (raw over rbd) that two NBD
# clients keep writing through its export (tests/rbd_snapshot_live.py):
#  - blockdev-snapshot-internal-sync creates an RBD snapshot
#    (rbd_snap_create), blockdev-snapshot-delete-internal-sync removes it,
#    a failing transaction removes its snapshot again;
#    query-named-block-nodes lists them as QEMU does (id = name,
#    vm-state-size = the image size), and "rbd snap ls" and qemu-img
#    snapshot -l (QEMU's rbd driver) list the same;
#  - the point-in-time export: a snapshot taken with the writers quiet,
#    opened read-only by blockdev-add driver=rbd snapshot=NAME and exported,
#    is the disk at that instant while the writers go on; one taken while
#    they write does not move; "rbd export IMAGE@SNAP" gives the same bytes;
#  - QEMU's errors for rbd snapshots (duplicate name, delete by id alone
#    or by an id other than the name), and, when qemu-storage-daemon has
#    the rbd driver, the same QMP replies from it.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
source "$srcdir/ceph-cluster.sh"
source "$srcdir/qmp-functions.sh"
requires qemu-img
requires_libnbd_python
requires_rbd
start_ceph
conf=$CEPH_CONF
size=$((16 << 20))

make_disk "$tmp/disk.raw" $size "$seed"
rbd import --object-size 1M "$tmp/disk.raw" rbd/src >/dev/null 2>&1 ||
    fail "rbd import"
start_daemon \
    --blockdev "driver=raw,node-name=disk,file.driver=rbd,file.pool=rbd,file.image=src,file.conf=$conf" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=e0,node-name=disk,name=live,writable=on
$PYTHON "$srcdir/rbd_snapshot_live.py" "$qmp" "$nbdsock" "$tmp" "$seed" "$conf" ||
    fail "seed $seed: live rbd snapshots failed"
_stop_server "$tmp/daemon.pid"

# Ceph and QEMU see what QMP made.
[ "$(rbd snap ls --format json rbd/src | $PYTHON -c 'import json, sys; print(" ".join(s["name"] for s in json.load(sys.stdin)))')" = s1 ] ||
    fail "rbd snap ls: $(rbd snap ls rbd/src)"
rbd export rbd/src@s1 "$tmp/s1.raw" >/dev/null 2>&1 || fail "rbd export @s1"
cmp "$tmp/s1.raw" "$tmp/at-s1.raw" || fail "seed $seed: rbd/src@s1 is not the disk at s1"
rbd export rbd/src "$tmp/head.raw" >/dev/null 2>&1 || fail "rbd export"
cmp "$tmp/head.raw" "$tmp/final.raw" || fail "seed $seed: rbd/src lost writes"
if qemu_has_rbd; then
    qemu-img snapshot -l "rbd:rbd/src:conf=$conf" >"$tmp/list"
    [ "$(awk 'NR > 2 { print $1, $2, $3, $4 }' "$tmp/list")" = "s1 s1 16 MiB" ] ||
        fail "qemu-img snapshot -l: $(cat "$tmp/list")"
    qemu-img compare -q -f raw -F raw "rbd:rbd/src@s1:conf=$conf" "$tmp/at-s1.raw" ||
        fail "seed $seed: QEMU reads @s1 differently"
fi

# QEMU's replies for rbd snapshots, compared with qemu-storage-daemon's.
sequence() { # image
    echo '{"execute": "blockdev-add", "arguments": {"driver": "raw", "node-name": "d", "file": {"driver": "rbd", "pool": "rbd", "image": "'"$1"'", "conf": "'"$conf"'"}}}'
    echo '{"execute": "blockdev-snapshot-internal-sync", "arguments": {"device": "d", "name": "a"}}'
    echo '{"execute": "blockdev-snapshot-internal-sync", "arguments": {"device": "d", "name": "a"}}'
    echo '{"execute": "blockdev-snapshot-internal-sync", "arguments": {"device": "d", "name": ""}}'
    echo '{"execute": "blockdev-snapshot-internal-sync", "arguments": {"device": "d", "name": "b"}}'
    echo '{"execute": "blockdev-snapshot-delete-internal-sync", "arguments": {"device": "d", "id": "a"}}'
    echo '{"execute": "blockdev-snapshot-delete-internal-sync", "arguments": {"device": "d", "id": "x", "name": "a"}}'
    echo '{"execute": "blockdev-snapshot-delete-internal-sync", "arguments": {"device": "d", "name": "nope"}}'
    echo '{"execute": "blockdev-snapshot-delete-internal-sync", "arguments": {"device": "d", "name": "a"}}'
    echo '{"execute": "blockdev-snapshot-delete-internal-sync", "arguments": {"device": "d", "id": "b", "name": "b"}}'
}
rbd create --size 4M rbd/e1 && rbd create --size 4M rbd/e2 || fail "rbd create"
start_qmp "$tmp/qmp2" "$tmp/pq"
mapfile -t cmds < <(sequence e1)
qmp "$tmp/qmp2" "${cmds[@]}" | grep -v '"event"' >"$tmp/replies"
cat "$tmp/replies"
grep -c '"error"' "$tmp/replies" | grep -qx 5 || fail "replies: $(cat "$tmp/replies")"
[ -z "$(rbd snap ls rbd/e1)" ] || fail "snapshots left: $(rbd snap ls rbd/e1)"
if qemu_has_rbd && start_qsd "$tmp/qsd"; then
    mapfile -t cmds < <(sequence e2)
    qmp "$tmp/qsd" "${cmds[@]}" | grep -v '"event"' >"$tmp/qreplies"
    diff -u "$tmp/qreplies" "$tmp/replies" ||
        fail "replies differ from qemu-storage-daemon's"
    echo "$0: the same replies as qemu-storage-daemon"
fi
echo "$0: ok"
