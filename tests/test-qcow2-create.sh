#!/usr/bin/env bash
# Images made by snapnbd's qcow2 create (the one backup targets and -s
# overlays are made with) are what qemu-img expects: qemu-img check finds
# nothing, qemu-img info shows the size, cluster size, version, refcount
# width, lazy refcounts and backing file asked for, and the image then
# takes writes through snapnbd (its refcount structures suffice).  Bad
# options are one-line errors.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img qemu-io
create=${QCOW2_CREATE:-$(dirname "$SNAPNBD")/tests/qcow2-create}

field() { # field IMG KEY: a value from qemu-img info's JSON
    /usr/bin/python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."):
    d = d.get(k) if isinstance(d, dict) else None
print("" if d is None else str(d).lower())' "$tmp/info" "$2"
}

# made NAME SIZE OPTS KEY=VALUE...: create, check, compare info fields.
made() {
    local name=$1 size=$2 opts=$3 kv
    shift 3
    # shellcheck disable=SC2086
    "$create" "$tmp/$name.qcow2" "$size" $opts || fail "$name: create failed"
    qemu-img check -q "$tmp/$name.qcow2" || fail "$name: qemu-img check"
    qemu-img info --output=json "$tmp/$name.qcow2" >"$tmp/info"
    for kv in "virtual-size=$size" "$@"; do
        [ "$(field "$tmp/$name.qcow2" "${kv%%=*}")" = "${kv#*=}" ] ||
            fail "$name: ${kv%%=*} is '$(field x "${kv%%=*}")', not '${kv#*=}'"
    done
}

truncate -s 64M "$tmp/base.raw"
made default $((1 << 30)) "" cluster-size=65536 format-specific.data.compat=1.1 \
    format-specific.data.refcount-bits=16
made v2-4k $((100 << 20)) "compat=0.10 cluster_size=4096" \
    cluster-size=4096 format-specific.data.compat=0.10
made tiny-512 $((64 << 20)) "cluster_size=512" cluster-size=512
made rc1 $((64 << 20)) "refcount_bits=1" format-specific.data.refcount-bits=1
made big-2m $((1 << 40)) "cluster_size=2M refcount_bits=64" \
    cluster-size=2097152 format-specific.data.refcount-bits=64
made lazy $((1 << 20)) "lazy_refcounts=on" \
    format-specific.data.lazy-refcounts=true
made backed $((64 << 20)) "backing_file=base.raw backing_fmt=raw" \
    backing-filename=base.raw backing-filename-format=raw
made probed $((64 << 20)) "backing_file=base.raw" backing-filename-format=raw
made prealloc $((32 << 20)) "preallocation=metadata cluster_size=4096"
# preallocation=metadata maps every cluster, reading as zeroes.
[ "$(qemu-img map --output=json "$tmp/prealloc.qcow2" | grep -c '"data": true')" -ge 1 ] ||
    fail "prealloc: no cluster mapped"
truncate -s 32M "$tmp/zero.raw"
qemu-img compare -q -f qcow2 -F raw "$tmp/prealloc.qcow2" "$tmp/zero.raw" ||
    fail "prealloc: does not read as zeroes"

# Written through snapnbd, a 512-byte-cluster image outgrows its first
# refcount table; qemu-img still finds it consistent.
table_offset() { od -An -t x8 --endian=big -j 48 -N 8 "$1"; }
old_table=$(table_offset "$tmp/tiny-512.qcow2")
start_server "$tmp/sock" "$tmp/pid" -f qcow2 "$tmp/tiny-512.qcow2"
qemu-io -f raw -c 'write -P 3 0 40M' "$(uri "$tmp/sock")" >/dev/null ||
    fail "writing the new image failed"
_stop_server "$tmp/pid"
qemu-img check -q "$tmp/tiny-512.qcow2" || fail "tiny-512 after writes"
[ "$(table_offset "$tmp/tiny-512.qcow2")" != "$old_table" ] ||
    fail "the refcount table did not move: the test tests nothing"
qemu-io -f qcow2 -c 'read -P 3 0 40M' "$tmp/tiny-512.qcow2" >/dev/null ||
    fail "tiny-512 reads back wrong"

# Bad options: one line naming the problem, no image left half made.
bad() {
    local pattern=$1
    shift
    "$create" "$tmp/bad.qcow2" "$@" 2>"$tmp/err" && fail "accepted: $*"
    [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -Eq "$pattern" "$tmp/err" ||
        fail "bad error for $*: $(cat "$tmp/err")"
    [ ! -e "$tmp/bad.qcow2" ] || fail "an image was left behind for $*"
}
bad "Cluster size" 1048576 cluster_size=1000
bad "Cluster size" 1048576 cluster_size=4M
bad "multiple of 512" 1000
bad "compatibility" 1048576 compat=2.0
bad "compat=1.1" 1048576 compat=0.10 lazy_refcounts=on
bad "preallocation" 1048576 preallocation=full
bad "Invalid option 'bogus'" 1048576 bogus=1
