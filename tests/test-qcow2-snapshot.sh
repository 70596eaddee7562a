#!/usr/bin/env bash
# -l/--load-snapshot: internal snapshots made by qemu-img snapshot -c after
# different qemu-io writes (v3 and v2 images, an overlay whose snapshot
# reads through its backing, a snapshot taken before the disk grew) read
# like qemu-img convert -l reads them, with qemu-nbd -l's block status map.
# A plain -l argument is an id first, then a name; snapshot.id= and
# snapshot.name= must both match when both are given.  -l makes the export
# read-only and never writes the image.  A missing snapshot is qemu-nbd's
# one-line error; a damaged snapshot table is a one-line error naming the
# problem (with or without -l, as QEMU refuses such images), no crash, and
# the image is left alone.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qcow2-functions.sh"
requires qemu-io sha256sum

img=$tmp/snap.qcow2
qemu-img create -q -f qcow2 -o cluster_size=65536 "$img" 8M
qemu-io -f qcow2 -c 'write -P 1 0 3M' -c 'write -P 2 5M 64K' "$img" >/dev/null
qemu-img snapshot -c first "$img"
qemu-io -f qcow2 -c 'write -P 3 1M 1M' -c 'write -z 2M 512K' \
    -c 'discard 5M 64K' "$img" >/dev/null
qemu-img snapshot -c second "$img"
qemu-io -f qcow2 -c 'write -P 4 100K 8K' -c 'write -P 5 7M 1M' "$img" >/dev/null
# Snapshot id 3 is named "1": "-l 1" must still mean id 1.
qemu-img snapshot -c 1 "$img"
qemu-io -f qcow2 -c 'write -P 6 0 8M' "$img" >/dev/null
qemu-img resize -q "$img" 12M
qemu-io -f qcow2 -c 'write -P 7 10M 64K' "$img" >/dev/null
qemu-img snapshot -c grown "$img"
qemu-io -f qcow2 -c 'write -z 0 12M' "$img" >/dev/null

v2=$tmp/v2.qcow2
qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=4096 "$v2" 4M
qemu-io -f qcow2 -c 'write -P 8 4K 100K' "$v2" >/dev/null
qemu-img snapshot -c old "$v2"
qemu-io -f qcow2 -c 'write -P 9 0 4M' "$v2" >/dev/null

base=$tmp/base.qcow2 over=$tmp/over.qcow2
qemu-img create -q -f qcow2 "$base" 4M
qemu-io -f qcow2 -c 'write -P 10 0 4M' "$base" >/dev/null
qemu-img create -q -f qcow2 -b "$base" -F qcow2 "$over"
qemu-io -f qcow2 -c 'write -P 11 1M 64K' "$over" >/dev/null
qemu-img snapshot -c s "$over"
qemu-io -f qcow2 -c 'write -P 12 0 4M' "$over" >/dev/null

sha256sum "$tmp"/*.qcow2 >"$tmp/sums"

# served IMG SNAP CONVERT_L: snapnbd -l SNAP reads like qemu-img convert
# -l CONVERT_L, and its map is qemu-nbd -l SNAP's.
served() {
    local img=$1 snap=$2 param=$3 s=$tmp/s.sock q=$tmp/q.sock
    start_server "$s" "$s.pid" -t -l "$snap" "$img"
    start_qemu_nbd "$q" "$q.pid" "$img" -l "$snap"
    qemu-img convert -f qcow2 -l "$param" -O raw "$img" "$tmp/ref.raw"
    nbdcopy --no-extents "$(uri "$s")" "$tmp/got.raw" ||
        fail "-l $snap: nbdcopy failed"
    cmp "$tmp/ref.raw" "$tmp/got.raw" ||
        fail "$img -l $snap: reads differ from qemu-img convert -l $param"
    nbdinfo --map "$(uri "$q")" >"$tmp/map.qemu" || fail "qemu-nbd map"
    nbdinfo --map "$(uri "$s")" >"$tmp/map.snap" || fail "-l $snap: map"
    diff -u "$tmp/map.qemu" "$tmp/map.snap" ||
        fail "$img -l $snap: map differs from qemu-nbd -l's"
    nbdinfo "$(uri "$s")" | grep -q 'is_read_only: true' ||
        fail "-l $snap: the export is writable"
    rm -f "$tmp/ref.raw" "$tmp/got.raw"
    _stop_server "$s.pid"
    _stop_server "$q.pid"
}

served "$img" first snapshot.name=first
served "$img" 2 snapshot.id=2
served "$img" 1 snapshot.id=1                  # the id, not the name "1"
served "$img" snapshot.name=1 snapshot.id=3    # the name
served "$img" snapshot.id=1,snapshot.name=first snapshot.name=first
served "$img" grown snapshot.name=grown
served "$v2" old snapshot.name=old
served "$over" s snapshot.name=s
# Each snapshot really differs from the others and from the active disk.
for a in first second 1 grown; do
    qemu-img convert -f qcow2 -l "snapshot.name=$a" -O raw "$img" "$tmp/$a.raw"
done
qemu-img convert -f qcow2 -O raw "$img" "$tmp/active.raw"
[ "$(sha256sum "$tmp"/*.raw | awk '{print $1}' | sort -u | wc -l)" -eq 5 ] ||
    fail "the snapshots of the test image are not all different"
sha256sum --quiet -c "$tmp/sums" || fail "an image changed while served"

# refused PATTERN IMG ARGS...: snapnbd fails with one line matching
# PATTERN, and no image changed.
refused() {
    local pattern=$1 img=$2 rc=0
    shift 2
    timeout 10 "$SNAPNBD" -k "$tmp/nosock" "$@" "$img" \
        >"$tmp/out" 2>"$tmp/err" || rc=$?
    [ $rc -ne 0 ] && [ $rc -lt 124 ] ||
        fail "$* $img: exit status $rc: $(cat "$tmp/err")"
    [ "$(wc -l <"$tmp/err")" -eq 1 ] ||
        fail "$* $img: not a one-line error: $(cat "$tmp/err")"
    grep -Eq -- "$pattern" "$tmp/err" ||
        fail "$* $img: error does not match '$pattern': $(cat "$tmp/err")"
    sha256sum --quiet -c "$tmp/sums" || fail "$* $img: an image changed"
}

# Missing snapshots: qemu-nbd's message, word for word.
qemu-nbd -k "$tmp/nosock" -l nosuch "$img" 2>"$tmp/qerr" && fail "qemu-nbd?"
msg=$(sed 's/^qemu-nbd: //' "$tmp/qerr")
[ "$msg" = "Failed to load snapshot: Can't find snapshot" ] ||
    fail "qemu-nbd says '$msg'"
refused "^snapnbd: $msg\$" "$img" -l nosuch
refused "^snapnbd: $msg\$" "$img" -l 9
refused "^snapnbd: $msg\$" "$img" -l snapshot.id=first
refused "^snapnbd: $msg\$" "$img" -l snapshot.id=1,snapshot.name=second
refused "^snapnbd: $msg\$" "$img" -l snapshot.id=
refused "^snapnbd: $msg\$" "$base" -l first    # no snapshots at all

# Damaged snapshot tables, in copies of the image.  Entry 0 starts at the
# table offset: l1_table_offset(8) l1_size(4) id_size(2) name_size(2) ...
# extra_data_size at +36.
table=$(peek64 "$img" 64)
damaged() {
    local name=$1 pattern=$2 off=$3 val=$4 bytes=$5 d=$tmp/bad-$1.qcow2
    shift 5
    cp "$img" "$d"
    poke "$d" "$off" "$(printf "%0$((bytes * 2))x" "$val" | sed 's/../\\x&/g')"
    sha256sum "$d" >>"$tmp/sums"
    refused "$pattern" "$d" "$@"
}
damaged count "too many snapshots" 60 70000 4 -r
damaged unaligned "snapshot table offset 0x[0-9a-f]+ is not cluster aligned" \
    64 $((table + 8)) 8 -r
damaged beyond "snapshot table entry 0 .* lies outside the file" \
    64 $((1 << 40)) 8 -r
damaged extra "too much extra metadata in snapshot table entry 0" \
    $((table + 36)) 100000 4 -r
# A last entry whose id runs past the end of the file: a one-entry table
# in a cluster of its own at the end.
cp "$img" "$tmp/bad-names.qcow2"
end=$(( ($(stat -c %s "$img") + 65535) / 65536 * 65536 ))
truncate -s "$end" "$tmp/bad-names.qcow2"
entry=$(dd if="$img" bs=1 skip="$table" count=40 status=none | od -An -tx1 |
        tr -d ' \n' | sed 's/../\\x&/g')
printf "$entry" >>"$tmp/bad-names.qcow2"
poke "$tmp/bad-names.qcow2" $((end + 12)) '\377\377'
poke "$tmp/bad-names.qcow2" 60 '\0\0\0\1'
poke64 "$tmp/bad-names.qcow2" 64 "$end"
sha256sum "$tmp/bad-names.qcow2" >>"$tmp/sums"
refused "snapshot table entry 0 \(offset 0x[0-9a-f]+\) lies outside the file" \
    "$tmp/bad-names.qcow2" -r
damaged l1 "snapshot 'first' \(id 1\): L1 table offset 0x[0-9a-f]+ is unaligned or outside the file" \
    "$table" $((1 << 40)) 8 -l first
damaged l1big "snapshot 'first' \(id 1\): L1 table too large" \
    $((table + 8)) $((1 << 30)) 4 -l first
# A damaged L1 table of one snapshot does not keep the others from loading.
start_server "$tmp/s.sock" "$tmp/s.pid" -t -l second "$tmp/bad-l1.qcow2"
qemu-img convert -f qcow2 -l snapshot.name=second -O raw "$img" "$tmp/ref.raw"
nbdcopy "$(uri "$tmp/s.sock")" "$tmp/got.raw" && cmp "$tmp/ref.raw" "$tmp/got.raw" ||
    fail "snapshot 'second' of an image with a damaged snapshot 'first'"
_stop_server "$tmp/s.pid"
sha256sum --quiet -c "$tmp/sums" || fail "an image changed"
