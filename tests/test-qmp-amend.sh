#!/usr/bin/env bash
# x-blockdev-amend of qcow2 images, as a job of type "amend" (QEMU 7.2's
# arguments, errors and job; when qemu-storage-daemon is installed, what it
# answers too must be answered alike): QEMU's options (nothing, or
# "encrypt", refused on an image that is not encrypted), and the options
# snapnbd adds with blockdev-create's names: lazy-refcounts (version 3
# only), version v3 -> v2 (zero clusters turned into unallocated or
# zeroed data clusters, the backing file name kept) and v2 -> v3, and the
# refusals qemu-img amend has for a downgrade (refcount width, snapshots)
# plus bitmaps, and any change of the refcount width.  Every image passes
# qemu-img check afterwards, keeps its data, and qemu-img info shows the
# new compat level and lazy refcounts.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"
requires qemu-img qemu-io

amend_py() { # QMP DIR MODE
    $PYTHON "$srcdir/amend_qmp.py" "$@"
}
export PYTHONPATH=$srcdir

make_images() {
    local d=$1
    mkdir -p "$d"
    qemu-img create -q -f qcow2 "$d/q.qcow2" 1M
}
make_extended_images() {
    local d=$1
    qemu-img create -q -f qcow2 "$d/zero.qcow2" 4M
    qemu-io -c 'write -P 0x11 0 1M' -c 'write -z 1M 1M' \
        -c 'write -P 0x22 2M 64k' -c 'write -z 2M 64k' "$d/zero.qcow2" >/dev/null
    qemu-img create -q -f qcow2 -o compat=0.10 "$d/base.qcow2" 4M
    qemu-io -c 'write -P 0x33 0 4M' "$d/base.qcow2" >/dev/null
    qemu-img create -q -f qcow2 -F qcow2 -b "$d/base.qcow2" "$d/over.qcow2"
    qemu-io -c 'write -z 0 64k' -c 'write -P 0x44 1M 64k' "$d/over.qcow2" >/dev/null
    qemu-img create -q -f qcow2 -o refcount_bits=64 "$d/wide.qcow2" 1M
    qemu-img create -q -f qcow2 "$d/snap.qcow2" 1M
    qemu-img snapshot -c s1 "$d/snap.qcow2"
    qemu-img create -q -f qcow2 "$d/bm.qcow2" 1M
    qemu-img bitmap --add "$d/bm.qcow2" b0
}

make_images "$tmp/s"
make_extended_images "$tmp/s"
start_qmp "$tmp/s.qmp" "$tmp/s.pid"
amend_py "$tmp/s.qmp" "$tmp/s" common >"$tmp/s.common" ||
    fail "common steps: $(cat "$tmp/s.common")"
amend_py "$tmp/s.qmp" "$tmp/s" extended >"$tmp/s.extended" ||
    fail "extended steps: $(cat "$tmp/s.extended")"
_stop_server "$tmp/s.pid"

cat >"$tmp/expected.common" <<'END'
amend concluded ok 1/1
error: Parameter 'options' is missing
error: Parameter 'options.driver' is missing
error: Cannot find device='' nor node-name='nope'
error: x-blockdev-amend doesn't support changing the block driver
error: Parameter 'options.x' is unexpected
error: Parameter 'options.state' is missing
amend concluded image is not encrypted, can't amend 1/1
END
diff -u "$tmp/expected.common" "$tmp/s.common" ||
    fail "snapnbd's answers differ"
cat >"$tmp/expected.extended" <<'END'
amend concluded ok 1/1
amend concluded Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater) 1/1
amend concluded ok 1/1
amend concluded Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater) 1/1
error: Parameter 'version' does not accept value 'v4'
amend concluded ok 1/1
amend concluded ok 1/1
amend concluded compat=0.10 requires refcount_bits=16 1/1
amend concluded ok 1/1
amend concluded snapnbd cannot change the refcount width of an image (64 bits) 1/1
amend concluded Refcount width must be a power of two and may not exceed 64 bits 1/1
amend concluded Internal snapshots prevent downgrade of image 1/1
amend concluded Cannot downgrade an image with persistent bitmaps 1/1
END
diff -u "$tmp/expected.extended" "$tmp/s.extended" ||
    fail "snapnbd's answers to the extended options differ"

d=$tmp/s
for f in q zero over wide snap bm base; do
    qemu-img check -q "$d/$f.qcow2" || fail "$f.qcow2 is not sound"
done
info() { qemu-img info --output=json "$1" | $PYTHON -c 'import json, sys
i = json.load(sys.stdin)
d = i["format-specific"]["data"]
print(d["compat"], d.get("lazy-refcounts"), d["refcount-bits"],
      i.get("backing-filename", "-"))'; }
[ "$(info "$d/zero.qcow2")" = "0.10 None 16 -" ] ||
    fail "zero.qcow2 after the downgrade: $(info "$d/zero.qcow2")"
[ "$(info "$d/over.qcow2")" = "1.1 True 16 $d/base.qcow2" ] ||
    fail "over.qcow2 after down- and upgrade: $(info "$d/over.qcow2")"
[ "$(info "$d/wide.qcow2")" = "1.1 False 64 -" ] ||
    fail "wide.qcow2 changed: $(info "$d/wide.qcow2")"
qemu-io -c 'read -P 0x11 0 1M' -c 'read -P 0 1M 3M' "$d/zero.qcow2" |
    grep -q 'verification failed' && fail "zero.qcow2 lost its data"
qemu-io -c 'read -P 0 0 64k' -c 'read -P 0x33 64k 960k' \
    -c 'read -P 0x44 1M 64k' -c 'read -P 0x33 1088k 2M' "$d/over.qcow2" |
    grep -q 'verification failed' && fail "over.qcow2 lost its data"
# The zero cluster over a backing file is data now, the one without a
# backing file is gone.
qemu-img map --output=json "$d/zero.qcow2" | grep -q '"start": 1048576, "length": [0-9]*, "depth": 0, "present": false' ||
    fail "zero.qcow2's zero clusters were not made unallocated"

if start_qsd "$tmp/q.qmp"; then
    make_images "$tmp/q"
    amend_py "$tmp/q.qmp" "$tmp/q" common >"$tmp/q.common" ||
        fail "qsd: $(cat "$tmp/q.common")"
    diff -u "$tmp/q.common" "$tmp/s.common" ||
        fail "snapnbd and qemu-storage-daemon differ"
fi
exit 0
