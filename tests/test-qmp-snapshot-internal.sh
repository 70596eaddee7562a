#!/usr/bin/env bash
# Internal qcow2 snapshots over QMP (blockdev-snapshot-internal-sync,
# blockdev-snapshot-delete-internal-sync, and the transaction action) of a
# disk that two NBD clients keep writing through its export:
#  - a snapshot taken with the writers quiet is exactly the disk then,
#    read back with qemu-img convert -l and with snapnbd -l, after the
#    head was written all over;
#  - snapshots taken, deleted and undone (a failing transaction) while
#    they write lose no write of the live disk;
#  - qemu-img snapshot -l lists what is left, qemu-img check is clean;
#  - QEMU's errors (unknown node, raw node, empty and duplicate names,
#    missing id and name, unknown snapshot), and, when qemu-storage-daemon
#    is installed, the same QMP sequence gives the same replies there
#    (dates aside).
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
source "$srcdir/qmp-functions.sh"
requires qemu-img qemu-io
requires_libnbd_python

size=$((16 << 20))
make_disk "$tmp/disk.raw" $size "$seed"
qemu-img convert -f raw -O qcow2 -o cluster_size=4096 "$tmp/disk.raw" \
    "$tmp/disk.qcow2"

start_daemon \
    --blockdev "driver=qcow2,node-name=disk,file.driver=file,file.filename=$tmp/disk.qcow2" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=e0,node-name=disk,name=live,writable=on

jobs_py "exec(open('$srcdir/snapshot_internal_live.py').read().replace('if __name__', 'if False and __name__')); main(*sys.argv[1:4], int(sys.argv[4]))" \
    "$qmp" "$nbdsock" "$tmp" "$seed" ||
    fail "seed $seed: live internal snapshots failed"
_stop_server "$tmp/daemon.pid"

qemu-img check -q "$tmp/disk.qcow2" || fail "seed $seed: disk.qcow2 is not sound"
names=$(qemu-img snapshot -l "$tmp/disk.qcow2" | awk 'NR > 2 { print $1 ":" $2 }' |
        tr '\n' ' ')
[ "$names" = "1:s1 3:s3 4:s5 " ] || fail "snapshots listed: $names"
for s in s1 s5; do
    qemu-img convert -f qcow2 -O raw -l "$s" "$tmp/disk.qcow2" "$tmp/$s.raw"
    cmp -s "$tmp/$s.raw" "$tmp/at-$s.raw" ||
        fail "seed $seed: snapshot $s is not the disk when it was taken"
done
qemu-img compare -q -f qcow2 -F raw "$tmp/disk.qcow2" "$tmp/final.raw" ||
    fail "seed $seed: the head lost writes"
# snapnbd -l serves the snapshot read-only.
start_server "$tmp/ro.sock" "$tmp/ro.pid" -r -l s1 "$tmp/disk.qcow2"
qemu-img compare -q -f raw -F raw "$(uri "$tmp/ro.sock")" "$tmp/at-s1.raw" ||
    fail "seed $seed: snapnbd -l s1 is not the disk at s1"
_stop_server "$tmp/ro.pid"

# Errors, as QEMU words them; the same sequence against qsd.
sequence() {
    local d=$1
    qemu-img create -q -f qcow2 "$d/a.qcow2" 1M
    qemu-img create -q -f raw "$d/r.raw" 1M
    echo '{"execute": "blockdev-add", "arguments": {"driver": "qcow2", "node-name": "q0", "file": {"driver": "file", "node-name": "q0-f", "filename": "'"$d/a.qcow2"'"}}}'
    echo '{"execute": "blockdev-add", "arguments": {"driver": "raw", "node-name": "r0", "file": {"driver": "file", "node-name": "r0-f", "filename": "'"$d/r.raw"'"}}}'
    echo '{"execute": "blockdev-snapshot-internal-sync", "arguments": {"device": "q0", "name": "a"}}'
    echo '{"execute": "blockdev-snapshot-internal-sync", "arguments": {"device": "q0", "name": "a"}}'
    echo '{"execute": "blockdev-snapshot-internal-sync", "arguments": {"device": "q0", "name": ""}}'
    echo '{"execute": "blockdev-snapshot-internal-sync", "arguments": {"device": "r0", "name": "a"}}'
    echo '{"execute": "blockdev-snapshot-internal-sync", "arguments": {"device": "nope", "name": "a"}}'
    echo '{"execute": "blockdev-snapshot-internal-sync", "arguments": {"device": "q0"}}'
    echo '{"execute": "blockdev-snapshot-internal-sync", "arguments": {"device": "q0", "name": "b"}}'
    echo '{"execute": "blockdev-snapshot-delete-internal-sync", "arguments": {"device": "q0"}}'
    echo '{"execute": "blockdev-snapshot-delete-internal-sync", "arguments": {"device": "nope", "id": "1"}}'
    echo '{"execute": "blockdev-snapshot-delete-internal-sync", "arguments": {"device": "q0", "name": "x"}}'
    echo '{"execute": "blockdev-snapshot-delete-internal-sync", "arguments": {"device": "q0", "id": "1", "name": "b"}}'
    echo '{"execute": "blockdev-snapshot-delete-internal-sync", "arguments": {"device": "q0", "id": "1"}}'
    echo '{"execute": "transaction", "arguments": {"actions": [{"type": "blockdev-snapshot-internal-sync", "data": {"device": "q0", "name": "t1"}}, {"type": "blockdev-snapshot-internal-sync", "data": {"device": "q0", "name": "t1"}}]}}'
    echo '{"execute": "transaction", "arguments": {"actions": [{"type": "blockdev-snapshot-internal-sync", "data": {"device": "q0", "name": "t2"}}]}}'
    echo '{"execute": "blockdev-snapshot-delete-internal-sync", "arguments": {"device": "q0", "name": "t2"}}'
}
replies() {
    grep -v '"event"' |
        sed -E 's/"(date-sec|date-nsec|vm-clock-sec|vm-clock-nsec)": [0-9]+/"\1": 0/g' |
        $PYTHON -c 'import json, sys
for line in sys.stdin:
    print(json.dumps(json.loads(line), sort_keys=True))'
}
mkdir -p "$tmp/s"
start_qmp "$tmp/s.qmp" "$tmp/s.pid"
mapfile -t msgs < <(sequence "$tmp/s")
qmp "$tmp/s.qmp" "${msgs[@]}" | replies >"$tmp/s.out" ||
    fail "the QMP session broke"
_stop_server "$tmp/s.pid"
qemu-img check -q "$tmp/s/a.qcow2" || fail "a.qcow2 is not sound"
names=$(qemu-img snapshot -l "$tmp/s/a.qcow2" | awk 'NR > 2 { print $1 ":" $2 }' |
        tr '\n' ' ')
[ "$names" = "2:b " ] || fail "a.qcow2 snapshots: $names"
cat >"$tmp/expected" <<'END'
{"return": {}}
{"return": {}}
{"return": {}}
{"error": {"class": "GenericError", "desc": "Snapshot with name 'a' already exists on device 'q0'"}}
{"error": {"class": "GenericError", "desc": "Name is empty"}}
{"error": {"class": "GenericError", "desc": "Block format 'raw' used by device 'r0' does not support internal snapshots"}}
{"error": {"class": "GenericError", "desc": "Cannot find device='nope' nor node-name='nope'"}}
{"error": {"class": "GenericError", "desc": "Parameter 'name' is missing"}}
{"return": {}}
{"error": {"class": "GenericError", "desc": "Name or id must be provided"}}
{"error": {"class": "GenericError", "desc": "Cannot find device='nope' nor node-name='nope'"}}
{"error": {"class": "GenericError", "desc": "Snapshot with id 'null' and name 'x' does not exist on device 'q0'"}}
{"error": {"class": "GenericError", "desc": "Snapshot with id '1' and name 'b' does not exist on device 'q0'"}}
{"return": {"date-nsec": 0, "date-sec": 0, "id": "1", "name": "a", "vm-clock-nsec": 0, "vm-clock-sec": 0, "vm-state-size": 0}}
{"error": {"class": "GenericError", "desc": "Snapshot with name 't1' already exists on device 'q0'"}}
{"return": {}}
{"return": {"date-nsec": 0, "date-sec": 0, "id": "3", "name": "t2", "vm-clock-nsec": 0, "vm-clock-sec": 0, "vm-state-size": 0}}
END
$PYTHON -c 'import json, sys
for line in sys.stdin:
    print(json.dumps(json.loads(line), sort_keys=True))' <"$tmp/expected" \
    >"$tmp/expected.sorted"
diff -u "$tmp/expected.sorted" "$tmp/s.out" || fail "snapnbd's replies differ"

if start_qsd "$tmp/q.qmp"; then
    mkdir -p "$tmp/q"
    mapfile -t msgs < <(sequence "$tmp/q")
    qmp "$tmp/q.qmp" "${msgs[@]}" | replies >"$tmp/q.out" || :
    diff -u "$tmp/q.out" "$tmp/s.out" ||
        fail "snapnbd and qemu-storage-daemon differ"
fi
exit 0
