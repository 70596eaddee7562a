#!/usr/bin/env bash
# block_resize as QEMU 7.2 does it: the node by node-name (a "device" names
# nothing in a storage daemon), QEMU's errors for missing, negative and
# unaligned sizes, raw and file nodes grown and shrunk, qcow2 grown with
# its L1 table extended in place (64 KiB clusters) and moved to new
# clusters (512-byte clusters, 1 MiB -> 64 MiB), qcow2 shrunk and grown
# again (the cut range reads as zeroes), and resize refused while a
# writable export or a backup job unshares it.  Every image passes
# qemu-img check, keeps its data, and has the new size; an export added
# afterwards serves the new size and takes writes at its end, and a dirty
# bitmap of a grown node records writes past its old end; a LUKS node
# grows its file past its header.  When
# qemu-storage-daemon is installed, the same QMP sequence runs against it
# and the replies must be the same (the holder that unshares resize is
# named differently: only the sentence up to it is compared).
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"
requires qemu-img qemu-io nbdinfo

make_images() {
    local d=$1
    mkdir -p "$d"
    qemu-img create -q -f qcow2 -o cluster_size=512 "$d/small.qcow2" 1M
    qemu-io -c 'write -P 0x11 0 1M' "$d/small.qcow2" >/dev/null
    qemu-img create -q -f qcow2 "$d/big.qcow2" 64M
    qemu-io -c 'write -P 0x22 0 1M' -c 'write -P 0x23 60M 1M' \
        "$d/big.qcow2" >/dev/null
    qemu-img create -q -f qcow2 "$d/shrink.qcow2" 64M
    qemu-io -c 'write -P 0x33 0 3M' -c 'write -P 0x34 40M 1M' \
        "$d/shrink.qcow2" >/dev/null
    qemu-img create -q -f raw "$d/r.raw" 1M
    qemu-img create -q -f raw "$d/src.raw" 4M
    qemu-img create -q -f raw "$d/tgt.raw" 4M
}

add() { # node-name driver file-node-name path
    printf '{"execute": "blockdev-add", "arguments": {"driver": "%s", "node-name": "%s", "file": {"driver": "file", "node-name": "%s", "filename": "%s"}}}' \
        "$2" "$1" "$3" "$4"
}
resize() { # key node size
    printf '{"execute": "block_resize", "arguments": {"%s": "%s", "size": %s}}' \
        "$1" "$2" "$3"
}

sequence() {
    local d=$1
    add small qcow2 small-f "$d/small.qcow2"; echo
    add big qcow2 big-f "$d/big.qcow2"; echo
    add shrink qcow2 shrink-f "$d/shrink.qcow2"; echo
    add r raw r-f "$d/r.raw"; echo
    add src raw src-f "$d/src.raw"; echo
    add tgt raw tgt-f "$d/tgt.raw"; echo
    echo '{"execute": "block-dirty-bitmap-add", "arguments": {"node": "r", "name": "b", "granularity": 65536}}'
    resize node-name nope 1048576; echo
    resize device small 1048576; echo
    echo '{"execute": "block_resize", "arguments": {"size": 512}}'
    echo '{"execute": "block_resize", "arguments": {"node-name": "small"}}'
    echo '{"execute": "block_resize", "arguments": {"node-name": "small", "size": "1"}}'
    resize node-name small -512; echo
    resize node-name small 1000; echo
    resize node-name small 67108864; echo
    resize node-name big 134217728; echo
    resize node-name shrink 2097152; echo
    resize node-name shrink 4194304; echo
    resize node-name r 1000; echo
    resize node-name r-f 8192; echo
    resize node-name r 3145728; echo
    echo '{"execute": "nbd-server-start", "arguments": {"addr": {"type": "unix", "data": {"path": "'"$d/nbd"'"}}}}'
    echo '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e0", "node-name": "big", "writable": true}}'
    resize node-name big 268435456; echo
    echo '{"execute": "block-export-del", "arguments": {"id": "e0"}}'
    echo '{"execute": "blockdev-backup", "arguments": {"job-id": "j0", "device": "src", "target": "tgt", "sync": "none", "speed": 1}}'
    resize node-name src 8388608; echo
    echo '{"execute": "job-cancel", "arguments": {"id": "j0"}}'
}

# Replies only (events and their order differ between the servers), with
# the holder that unshares a permission cut off.
replies() {
    grep -v '"event"' | sed -E 's/(and unshared by )[^"]*/\1.../'
}

l1_offset() { od -An -tx1 -j40 -N8 "$1" | tr -d ' \n'; }

run_snapnbd() {
    local d=$tmp/s
    make_images "$d"
    small_l1=$(l1_offset "$d/small.qcow2")
    big_l1=$(l1_offset "$d/big.qcow2")
    start_qmp "$tmp/s.qmp" "$tmp/s.pid"
    mapfile -t msgs < <(sequence "$d")
    qmp "$tmp/s.qmp" "${msgs[@]}" >"$tmp/s.out" ||
        fail "the QMP session broke: $(cat "$tmp/s.out")"
    # An export added now serves the new size and takes writes at its end.
    qmp "$tmp/s.qmp" \
        '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e1", "node-name": "small", "writable": true}}' \
        >>"$tmp/s.out"
    size=$(nbdinfo --size "nbd+unix:///small?socket=$d/nbd")
    [ "$size" = 67108864 ] || fail "export of the grown node: $size bytes"
    qemu-io -f raw -c 'write -P 0x44 66060288 1M' \
        "nbd+unix:///small?socket=$d/nbd" >/dev/null ||
        fail "write at the grown end over NBD"
    # The raw node's bitmap grew with it: a write past the old end is
    # recorded.
    qmp "$tmp/s.qmp" \
        '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e2", "node-name": "r", "writable": true, "bitmaps": ["b"]}}' \
        >"$tmp/e2.out"
    grep -q '"return"' "$tmp/e2.out" || fail "export of r: $(cat "$tmp/e2.out")"
    qemu-io -f raw -c 'write 2M 64k' "nbd+unix:///r?socket=$d/nbd" \
        >/dev/null || fail "write past the old end of r"
    nbdinfo --map=qemu:dirty-bitmap:b "nbd+unix:///r?socket=$d/nbd" |
        grep -Eq '^ *2097152 +65536 +1 ' ||
        fail "the bitmap did not record a write past the old end: $(
            nbdinfo --map=qemu:dirty-bitmap:b "nbd+unix:///r?socket=$d/nbd")"
    _stop_server "$tmp/s.pid"
}

run_snapnbd
replies <"$tmp/s.out" >"$tmp/s.replies"

cat >"$tmp/expected" <<'END'
{"return": {}}
{"return": {}}
{"return": {}}
{"return": {}}
{"return": {}}
{"return": {}}
{"return": {}}
{"error": {"class": "GenericError", "desc": "Cannot find device='' nor node-name='nope'"}}
{"error": {"class": "GenericError", "desc": "Cannot find device='small' nor node-name=''"}}
{"error": {"class": "GenericError", "desc": "Cannot find device='' nor node-name=''"}}
{"error": {"class": "GenericError", "desc": "Parameter 'size' is missing"}}
{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'size', expected: integer"}}
{"error": {"class": "GenericError", "desc": "Parameter 'size' expects a >0 size"}}
{"error": {"class": "GenericError", "desc": "The new size must be a multiple of 512"}}
{"return": {}}
{"return": {}}
{"return": {}}
{"return": {}}
{"return": {}}
{"return": {}}
{"return": {}}
{"return": {}}
{"return": {}}
{"error": {"class": "GenericError", "desc": "Permission conflict on node 'big': permissions 'resize' are both required by an unnamed block device (uses node 'big' as 'root' child) and unshared by ..."}}
{"return": {}}
{"return": {}}
{"error": {"class": "GenericError", "desc": "Permission conflict on node 'src': permissions 'resize' are both required by an unnamed block device (uses node 'src' as 'root' child) and unshared by ..."}}
{"return": {}}
{"return": {}}
END
diff -u "$tmp/expected" "$tmp/s.replies" || fail "snapnbd's replies differ"

# The images: sizes, data, consistency.
d=$tmp/s
check_image() { # file size qemu-io-commands...
    local f=$1 size=$2 got
    shift 2
    qemu-img check -q "$f" || fail "qemu-img check $f"
    got=$(qemu-img info --output=json "$f" |
          sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
    [ "$got" = "$size" ] || fail "$f: virtual size $got, expected $size"
    for c in "$@"; do
        qemu-io -c "$c" "$f" | grep -q '^read' || fail "$f: $c"
        qemu-io -c "$c" "$f" | grep -qi 'pattern verification failed' &&
            fail "$f: $c"
    done
}
check_image "$d/small.qcow2" 67108864 'read -P 0x11 0 1M' \
    'read -P 0 1M 62M' 'read -P 0x44 63M 1M'
check_image "$d/big.qcow2" 134217728 'read -P 0x22 0 1M' \
    'read -P 0x23 60M 1M' 'read -P 0 64M 64M'
check_image "$d/shrink.qcow2" 4194304 'read -P 0x33 0 2M' 'read -P 0 2M 2M'
# The 512-byte cluster image needed a larger L1 table than its cluster:
# it moved; the 64 KiB one grew in place.
[ "$(l1_offset "$d/small.qcow2")" != "$small_l1" ] ||
    fail "the L1 table of the 512-byte cluster image did not move"
[ "$(l1_offset "$d/big.qcow2")" = "$big_l1" ] ||
    fail "the L1 table of the 64 KiB cluster image moved"
size=$(stat -c %s "$d/r.raw")
[ "$size" = 3145728 ] || fail "raw image: $size bytes, expected 3145728"

# A LUKS node resizes its file past the header, as QEMU's.
qemu_img_create -q -f luks --object secret,id=sec0,data=abc \
    -o key-secret=sec0,iter-time=10 "$tmp/l.luks" 1M
qemu-io --object secret,id=sec0,data=abc -c 'write -P 0x66 0 1M' \
    --image-opts "driver=luks,key-secret=sec0,file.filename=$tmp/l.luks" \
    >/dev/null
start_qmp "$tmp/l.qmp" "$tmp/l.pid" --object secret,id=sec0,data=abc
qmp "$tmp/l.qmp" \
    '{"execute": "blockdev-add", "arguments": {"driver": "luks", "node-name": "l", "key-secret": "sec0", "file": {"driver": "file", "filename": "'"$tmp/l.luks"'"}}}' \
    '{"execute": "block_resize", "arguments": {"node-name": "l", "size": 4194304}}' \
    >"$tmp/l.out" || fail "luks: $(cat "$tmp/l.out")"
grep -q error "$tmp/l.out" && fail "luks: $(cat "$tmp/l.out")"
_stop_server "$tmp/l.pid"
qemu-io --object secret,id=sec0,data=abc -c 'read -P 0x66 0 1M' \
    -c 'read -P 0 1M 3M' \
    --image-opts "driver=luks,key-secret=sec0,file.filename=$tmp/l.luks" |
    grep -q 'verification failed' && fail "luks: wrong data after the resize"
qemu-img info --object secret,id=sec0,data=abc --image-opts \
    "driver=luks,key-secret=sec0,file.filename=$tmp/l.luks" |
    grep -q '(4194304 bytes)' || fail "luks: the size did not change"

# A qcow2 image with a persistent bitmap resized to 0 bytes: an empty
# bitmap table is one QEMU refuses to open the image with ("doesn't
# satisfy the constraints"); the bitmap is lost, as in QEMU 7.2, and the
# image stays valid (QMP fuzzer, seeds 1034907227 and 122132683).
qemu-img create -q -f qcow2 "$tmp/z.qcow2" 16M
qemu-img bitmap --add "$tmp/z.qcow2" b0
start_qmp "$tmp/z.qmp" "$tmp/z.pid"
qmp "$tmp/z.qmp" \
    '{"execute": "blockdev-add", "arguments": {"driver": "qcow2", "node-name": "z", "file": {"driver": "file", "filename": "'"$tmp/z.qcow2"'"}}}' \
    '{"execute": "block_resize", "arguments": {"node-name": "z", "size": 0}}' \
    '{"execute": "blockdev-del", "arguments": {"node-name": "z"}}' \
    >"$tmp/z.out" 2>&1 || fail "empty: $(cat "$tmp/z.out")"
grep -q error "$tmp/z.out" && fail "empty: $(cat "$tmp/z.out")"
_stop_server "$tmp/z.pid"
qemu-img check -q "$tmp/z.qcow2" ||
    fail "empty: a persistent bitmap made the 0-byte image unreadable"

# The same sequence against qemu-storage-daemon.
if start_qsd "$tmp/q.qmp"; then
    make_images "$tmp/q"
    mapfile -t msgs < <(sequence "$tmp/q")
    qmp "$tmp/q.qmp" "${msgs[@]}" '{"execute": "quit"}' >"$tmp/q.out" || :
    replies <"$tmp/q.out" | head -n "$(wc -l <"$tmp/s.replies")" \
        >"$tmp/q.replies"
    diff -u "$tmp/q.replies" "$tmp/s.replies" ||
        fail "snapnbd and qemu-storage-daemon differ"
fi
exit 0
