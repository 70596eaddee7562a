#!/usr/bin/env bash
# Backing chains: three qcow2 layers (the top one larger than the others,
# so its tail reads as zeroes past the backing's end), a chain ending in a
# sparse raw file, a backing named relative to the overlay's directory and
# found from another working directory, and a backing without the backing
# format extension (probed).  Each is served like qemu-img reads it, with
# qemu-nbd's block status map.  Loops (a chain that comes back to itself)
# and missing backing files are one-line errors that leave the images
# untouched.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qcow2-functions.sh"
requires qemu-io sha256sum

mkdir "$tmp/base" "$tmp/top"
cd "$tmp/top"  # relative backing names are resolved from the overlay

# Three qcow2 layers, 64K clusters, v3 base under a v2 middle.
qemu-img create -q -f qcow2 -o cluster_size=65536 ../base/base.qcow2 8M
qemu-io -f qcow2 -c 'write -P 1 0 3M' -c 'write -z 4M 1M' \
    -c 'write -P 2 6M 2M' ../base/base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=4096 \
    -b ../base/base.qcow2 -F qcow2 mid.qcow2 12M
qemu-io -f qcow2 -c 'write -P 3 1M 100K' -c 'write -P 4 7M 2M' \
    mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 16M
qemu-io -f qcow2 -c 'write -P 5 2M 64K' -c 'write -z 6M 1M' \
    -c 'write -P 6 15M 16K' top.qcow2 >/dev/null
cd /
check_served "$tmp/top/top.qcow2" chain3

# A qcow2 overlay on a sparse raw file.
truncate -s 8M "$tmp/base/base.raw"
qemu-io -f raw -c 'write -P 7 1M 1M' -c 'write -P 8 5M 64K' \
    "$tmp/base/base.raw" >/dev/null
qemu-img create -q -f qcow2 -b ../base/base.raw -F raw \
    "$tmp/top/onraw.qcow2" 8M
qemu-io -f qcow2 -c 'write -P 9 1536K 1M' "$tmp/top/onraw.qcow2" >/dev/null
check_served "$tmp/top/onraw.qcow2" onraw

# No backing format extension: the format is probed (qcow2 magic).  The
# extension comes first after the header; a zero type ends the list.
qemu-img create -q -f qcow2 -b ../base/base.qcow2 -F qcow2 \
    "$tmp/top/probed.qcow2" 8M
hl=$(peek32 "$tmp/top/probed.qcow2" 100)
[ "$(peek32 "$tmp/top/probed.qcow2" "$hl")" = $((16#e2792aca)) ] ||
    fail "the backing format extension is not first"
poke "$tmp/top/probed.qcow2" "$hl" '\0\0\0\0'
check_served "$tmp/top/probed.qcow2" probed
# ... and probed as raw when the backing is not qcow2.
qemu-img create -q -f qcow2 -b ../base/base.raw -F raw \
    "$tmp/top/probedraw.qcow2" 8M
poke "$tmp/top/probedraw.qcow2" "$(peek32 "$tmp/top/probedraw.qcow2" 100)" \
    '\0\0\0\0'
start_server "$tmp/sock" "$tmp/pid" -r -t -f qcow2 "$tmp/top/probedraw.qcow2"
qemu-img compare -f raw -F raw "$tmp/base/base.raw" "$(uri "$tmp/sock")" >/dev/null ||
    fail "probed raw backing reads differently"
_stop_server "$tmp/pid"

# refused PATTERN IMG: snapnbd -r IMG fails with a one-line error matching
# PATTERN, and no image of the directory changed.
refused() {
    local pattern=$1 img=$2 rc
    sha256sum "$tmp"/top/*.qcow2 >"$tmp/sums"
    timeout 10 "$SNAPNBD" -r -f qcow2 -k "$tmp/nosock" "$img" \
        >"$tmp/out" 2>"$tmp/err" && rc=0 || rc=$?
    [ $rc -ne 0 ] && [ $rc -lt 124 ] ||
        fail "$img: exit status $rc: $(cat "$tmp/err")"
    [ "$(wc -l <"$tmp/err")" -eq 1 ] ||
        fail "$img: not a one-line error: $(cat "$tmp/err")"
    grep -Eq -- "$pattern" "$tmp/err" ||
        fail "$img: error does not match '$pattern': $(cat "$tmp/err")"
    sha256sum --quiet -c "$tmp/sums" || fail "$img: an image changed"
}

# A loop of two images, and an image that is its own backing file.
cd "$tmp/top"
qemu-img create -q -f qcow2 a.qcow2 1M
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 b.qcow2
qemu-img rebase -q -u -b b.qcow2 -F qcow2 a.qcow2
qemu-img create -q -f qcow2 self.qcow2 1M
qemu-img rebase -q -u -b self.qcow2 -F qcow2 self.qcow2
qemu-img create -q -f qcow2 -u -b gone.qcow2 -F qcow2 orphan.qcow2 1M
cd /
refused "a\.qcow2.*loops" "$tmp/top/b.qcow2"
refused "self\.qcow2.*loops" "$tmp/top/self.qcow2"
refused "backing.*gone\.qcow2" "$tmp/top/orphan.qcow2"
# Writable: writes copy-on-write into the top layer (partial clusters of
# 64K filled from a v2 middle layer with 4K clusters and from the base);
# the backing files are never written.
sha256sum "$tmp"/base/* "$tmp/top/mid.qcow2" >"$tmp/lower"
qemu-img convert -O raw "$tmp/top/top.qcow2" "$tmp/expect.raw"
writes=(-c 'write -P 10 1000K 100K' -c 'write -P 11 7100K 8K'
        -c 'write -P 12 4090K 12K' -c 'write -z 6200K 4K')
qemu-io -f raw "${writes[@]}" "$tmp/expect.raw" >/dev/null
start_server "$tmp/sock" "$tmp/pid" -t -f qcow2 "$tmp/top/top.qcow2"
qemu-io -f raw "${writes[@]}" "$(uri "$tmp/sock")" >/dev/null ||
    fail "writing through the chain failed"
_stop_server "$tmp/pid"
sha256sum --quiet -c "$tmp/lower" || fail "a backing file changed"
qemu-img check -q "$tmp/top/top.qcow2" || fail "the top layer is damaged"
qemu-img compare -q -f qcow2 -F raw "$tmp/top/top.qcow2" "$tmp/expect.raw" ||
    fail "the chain reads differently after the writes"
