#!/usr/bin/env bash
# block_resize on rbd nodes, against a real one-node Ceph cluster
# (tests/ceph-cluster.sh): a raw node over an rbd node grows (the data
# stays, the new range reads as zeroes) and shrinks (the kept range keeps
# its data), and the rbd node itself grows; "rbd info" and qemu-img info
# (QEMU's rbd driver) report the new size, "rbd export" holds the data,
# and an export added afterwards serves the new size and takes a write at
# its end.  A read-only rbd node (a snapshot) refuses to resize.  When
# qemu-storage-daemon has the rbd driver, the same QMP replies come back
# from it.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/ceph-cluster.sh"
source "$srcdir/qmp-functions.sh"
requires qemu-io qemu-img nbdinfo
requires_rbd
start_ceph
conf=$CEPH_CONF
MiB=$((1 << 20))

rbd_size() {
    rbd info --format json "$1" | $PYTHON -c 'import json, sys; print(json.load(sys.stdin)["size"])'
}

make_image() { # name -> rbd/name of 8 MiB with data at 0 and 7M
    rbd create --size 8M --object-size 1M "rbd/$1" || fail "rbd create $1"
    qemu-io -f raw -c 'write -P 0x5a 0 1M' -c 'write -P 0x6b 7M 1M' \
        "rbd:rbd/$1:conf=$conf" >/dev/null 2>&1 ||
        fail "qemu-io write to rbd/$1"
}

node() { # node-name image [json for both nodes]
    printf '{"execute": "blockdev-add", "arguments": {"driver": "raw", "node-name": "%s"%s, "file": {"driver": "rbd", "node-name": "%s-f", "pool": "rbd", "image": "%s", "conf": "%s"%s}}}\n' \
        "$1" "${3:-}" "$1" "$2" "$conf" "${3:-}"
}
resize() { # node size
    printf '{"execute": "block_resize", "arguments": {"node-name": "%s", "size": %s}}\n' "$1" "$2"
}

sequence() { # prefix of the image names
    node g "${1}g"
    node s "${1}s"
    node f "${1}f"
    node ro "${1}f" ', "read-only": true' | sed 's/"image"/"snapshot": "s0", &/'
    resize g $((24 * MiB))
    resize s $((3 * MiB / 2))
    resize f-f $((16 * MiB))
    resize ro-f $((16 * MiB))
    resize ro $((16 * MiB))
}

for p in "" q; do
    for n in g s f; do
        make_image "$p$n"
    done
    rbd snap create "rbd/${p}f@s0" >/dev/null 2>&1 || fail "rbd snap create"
done

start_qmp "$tmp/qmp" "$tmp/pq"
sequence "" >"$tmp/cmds"
mapfile -t cmds <"$tmp/cmds"
qmp "$tmp/qmp" "${cmds[@]}" | grep -v '"event"' >"$tmp/replies"
cat "$tmp/replies"
expected='{"return": {}}
{"return": {}}
{"return": {}}
{"return": {}}
{"return": {}}
{"return": {}}
{"return": {}}'
[ "$(head -7 "$tmp/replies")" = "$expected" ] || fail "resize replies: $(cat "$tmp/replies")"
sed -n 8,9p "$tmp/replies" | grep -c "read only\|read-only" | grep -q 2 ||
    fail "a snapshot node resized: $(sed -n 8,9p "$tmp/replies")"

# The sizes as Ceph and QEMU see them.
[ "$(rbd_size rbd/g)" = $((24 * MiB)) ] || fail "rbd/g: $(rbd_size rbd/g)"
[ "$(rbd_size rbd/s)" = $((3 * MiB / 2)) ] || fail "rbd/s: $(rbd_size rbd/s)"
[ "$(rbd_size rbd/f)" = $((16 * MiB)) ] || fail "rbd/f: $(rbd_size rbd/f)"
[ "$(rbd_size rbd/f@s0)" = $((8 * MiB)) ] || fail "the snapshot resized: $(rbd_size rbd/f@s0)"
if qemu_has_rbd; then
    qemu-img info --output=json "rbd:rbd/g:conf=$conf" | grep -q "\"virtual-size\": $((24 * MiB))" ||
        fail "qemu-img info rbd/g: $(qemu-img info "rbd:rbd/g:conf=$conf")"
    qemu-img info --output=json "rbd:rbd/s:conf=$conf" | grep -q "\"virtual-size\": $((3 * MiB / 2))" ||
        fail "qemu-img info rbd/s: $(qemu-img info "rbd:rbd/s:conf=$conf")"
fi

# The data: grown images keep it and read zeroes past the old end, the
# shrunk one keeps its first 1.5 MiB.
truncate -s 8M "$tmp/ref.raw"
qemu-io -f raw -c 'write -P 0x5a 0 1M' -c 'write -P 0x6b 7M 1M' "$tmp/ref.raw" >/dev/null
cp "$tmp/ref.raw" "$tmp/ref-g.raw"; truncate -s 24M "$tmp/ref-g.raw"
cp "$tmp/ref.raw" "$tmp/ref-s.raw"; truncate -s 1536K "$tmp/ref-s.raw"
for n in g s; do
    rbd export "rbd/$n" "$tmp/$n.raw" >"$tmp/err" 2>&1 || fail "rbd export rbd/$n: $(cat "$tmp/err")"
    cmp "$tmp/$n.raw" "$tmp/ref-$n.raw" || fail "rbd/$n after resize: other bytes"
done

# An export added afterwards serves the new size and takes a write at its
# end, which Ceph then holds.
qmp "$tmp/qmp" \
    '{"execute": "nbd-server-start", "arguments": {"addr": {"type": "unix", "data": {"path": "'"$tmp/nbd"'"}}}}' \
    '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e0", "node-name": "g", "writable": true}}' \
    >"$tmp/out"
grep -q '"error"' "$tmp/out" && fail "export: $(cat "$tmp/out")"
u="nbd+unix:///g?socket=$tmp/nbd"
[ "$(nbdinfo --size "$u")" = $((24 * MiB)) ] || fail "export size: $(nbdinfo --size "$u")"
qemu-io -f raw -c 'write -P 0x7c 23M 1M' "$u" >/dev/null || fail "write at the new end"
qemu-img compare -q -f raw -F raw "$u" "$tmp/ref-g.raw" && fail "the write at the end was lost"
qemu-io -f raw -c 'write -P 0x7c 23M 1M' "$tmp/ref-g.raw" >/dev/null
qemu-img compare -q -f raw -F raw "$u" "$tmp/ref-g.raw" || fail "export after resize: other bytes"
_stop_server "$tmp/pq"
rm -f "$tmp/g.raw"
rbd export rbd/g "$tmp/g.raw" >"$tmp/err" 2>&1 || fail "rbd export rbd/g: $(cat "$tmp/err")"
cmp "$tmp/g.raw" "$tmp/ref-g.raw" || fail "rbd/g lacks the write past the old end"

# qemu-storage-daemon with the rbd driver answers the same.
if qemu_has_rbd && start_qsd "$tmp/qsd"; then
    sequence q >"$tmp/cmds"
    mapfile -t cmds <"$tmp/cmds"
    qmp "$tmp/qsd" "${cmds[@]}" | grep -v '"event"' >"$tmp/qreplies"
    diff -u "$tmp/qreplies" "$tmp/replies" || fail "replies differ from qemu-storage-daemon's"
    for n in g s f; do
        [ "$(rbd_size "rbd/q$n")" = "$(rbd_size "rbd/$n")" ] ||
            fail "rbd/q$n: qsd resized to $(rbd_size "rbd/q$n"), snapnbd to $(rbd_size "rbd/$n")"
    done
    echo "$0: the same replies and sizes as qemu-storage-daemon"
fi
echo "$0: ok"
