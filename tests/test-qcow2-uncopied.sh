#!/usr/bin/env bash
# L2 and L1 entries without the COPIED flag whose cluster has refcount 1
# (what a crash in the middle of an internal snapshot leaves): QEMU copies
# such a cluster on write and frees the old one, and so does snapnbd.
# Images written by qemu-io get COPIED cleared on random entries (SEED=n
# repeats a run), then take the same random writes, write-zeroes and
# discards through snapnbd (checked against a model) and through qemu-io;
# both read like the model, qemu-img check finds the same errors in both
# (the flags still missing; snapnbd's copies leave the old clusters
# allocated, as leaks, where QEMU frees them), and after qemu-img check -r all both
# are clean and still read like the model.
# An entry without COPIED that names metadata (L1, its own L2 table,
# refcount table, refcount block) gives that cluster one reference more
# than its refcount: the writable open counts the references and raises
# the refcount (one line says so), so the write copies the cluster and
# the metadata stays as it was (QEMU would write into it in place and
# free it).  One naming the first cluster past the end of the file
# (refcount 0) is never handed out to another write: the write there
# copies it too.  Every write reads back, nothing before is lost, and
# qemu-img check finds no corruption.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qcow2-functions.sh"
requires qemu-io
seed=${SEED:-$RANDOM}
echo "seed $seed"
helper() { "$PYTHON" "$srcdir/qcow2_uncopied.py" "$@"; }

# check_counts IMG: "corruptions leaks check-errors" of qemu-img check.
check_counts() {
    qemu-img check --output=json "$1" 2>/dev/null |
        "$PYTHON" -c 'import json, sys; r = json.load(sys.stdin)
print(r.get("corruptions", 0), r.get("leaks", 0), r.get("check-errors", 0))'
}

# seeded NAME CLUSTER-SIZE SEED
seeded() {
    local name=$1 cs=$2 s=$3 size=$((8 << 20)) ours theirs i
    local img=$tmp/$name.qcow2 q=$tmp/$name.qemu.qcow2 model=$tmp/$name.raw
    qemu-img create -q -f qcow2 -o cluster_size="$cs" "$img" "$size"
    qemu-io -f qcow2 -c 'write -P 0x61 0 3M' -c 'write -P 0x62 4M 1M' \
        -c 'write -P 0x63 5632K 1500K' "$img" >/dev/null
    qemu-img convert -f qcow2 -O raw "$img" "$model"
    helper clear "$img" "$s" || fail "$name: could not clear flags"
    cp "$img" "$q"
    [ "$(check_counts "$img" | cut -d' ' -f1)" -gt 0 ] ||
        fail "$name: qemu-img check sees no missing COPIED flag"
    helper ops "$s" "$size" "$cs" "$tmp/$name.ops" "$tmp/$name.cmds"

    start_server "$tmp/$name.sock" "$tmp/$name.pid" -t --discard=unmap \
        -f qcow2 "$img" 2>"$tmp/$name.err"
    helper apply "$(uri "$tmp/$name.sock")" "$tmp/$name.ops" "$model" ||
        fail "$name: requests through snapnbd: $(cat "$tmp/$name.err")"
    _stop_server "$tmp/$name.pid"
    ! grep -q corrupt "$tmp/$name.err" ||
        fail "$name: marked corrupt: $(cat "$tmp/$name.err")"

    qemu-io -d unmap -f qcow2 "$q" <"$tmp/$name.cmds" >/dev/null ||
        fail "$name: qemu-io failed"
    qemu-img compare -q -f raw -F qcow2 "$model" "$q" ||
        fail "$name: qemu-io's image differs from the model"
    qemu-img compare -q -f raw -F qcow2 "$model" "$img" ||
        fail "$name: snapnbd's image differs from the model"
    ours=$(check_counts "$img")
    theirs=$(check_counts "$q")
    echo "$name: qemu-img check (corruptions leaks check-errors):" \
        "snapnbd $ours, qemu-io $theirs"
    # snapnbd leaves the old clusters allocated where QEMU frees them (a
    # leak, reclaimed by check -r: another entry may still name them), so
    # the leak counts may differ; corruptions and errors must not.
    [ "$(cut -d' ' -f1,3 <<<"$ours")" = "$(cut -d' ' -f1,3 <<<"$theirs")" ] ||
        fail "$name: qemu-img check differs from qemu-io's image"
    for i in "$img" "$q"; do
        qemu-img check -q -r all "$i" >/dev/null 2>&1
        qemu-img check -q "$i" || fail "$name: $i not clean after repair"
        qemu-img compare -q -f raw -F qcow2 "$model" "$i" ||
            fail "$name: $i differs from the model after repair"
    done
}

seeded c4k 4096 "$seed"
seeded c64k 65536 "$((seed + 1))"
seeded c512 512 "$((seed + 2))"

# repaired NAME GUEST TARGET MESSAGE: the entry of GUEST names TARGET
# without COPIED; the open says MESSAGE, a write there succeeds, nothing
# written before is lost, the metadata is intact, and qemu-img check
# finds no corruption.
repaired() {
    local name=$1 guest=$2 target=$3 msg=$4 cs=4096
    local img=$tmp/$name.qcow2
    qemu-img create -q -f qcow2 -o cluster_size=$cs "$img" 8M
    # Tables for [0, 2M) and [2M, 4M) of 4K clusters, nothing after.
    qemu-io -f qcow2 -c 'write -P 1 0 4K' -c 'write -P 2 2M 8K' \
        "$img" >/dev/null
    helper point "$img" "$guest" "$target" >/dev/null ||
        fail "$name: could not point the entry"
    start_server "$tmp/$name.sock" "$tmp/$name.pid" -t -f qcow2 "$img" \
        2>"$tmp/$name.err"
    # The good write allocates one cluster in the first table.
    helper writes "$(uri "$tmp/$name.sock")" 8192 "$guest" "$cs" ||
        fail "$name: $(cat "$tmp/$name.err")"
    _stop_server "$tmp/$name.pid"
    grep -q "$msg" "$tmp/$name.err" ||
        fail "$name: unexpected log: $(cat "$tmp/$name.err")"
    ! grep -q "corrupt" "$tmp/$name.err" ||
        fail "$name: marked corrupt: $(cat "$tmp/$name.err")"
    qemu-io -r -f qcow2 -c 'read -P 0x11 8K 4K' -c 'read -P 1 0 4K' \
        -c 'read -P 2 2M 4K' -c "read -P 0x22 $guest 4K" \
        "$img" >"$tmp/$name.read" 2>&1
    ! grep -q -e Pattern -e error "$tmp/$name.read" ||
        fail "$name: data lost: $(cat "$tmp/$name.read")"
    # Leaks (the cluster the entry named before `point`, and for l2 the
    # old table, copied since its refcount went to 2) but no corruption.
    [ "$(check_counts "$img" | cut -d' ' -f1,3)" = "0 0" ] ||
        fail "$name: qemu-img check: $(qemu-img check "$img" 2>&1)"
    echo "$name: $(head -1 "$tmp/$name.err")"
}

under="has 2 references but refcount 1; repaired the refcounts"
repaired l1 $(((2048 << 10) + 4096)) l1 "$under"
repaired l2 $(((2048 << 10) + 4096)) l2 "$under"
repaired reftable $(((2048 << 10) + 4096)) reftable "$under"
repaired refblock $(((2048 << 10) + 4096)) refblock "$under"
# The first cluster past the end has refcount 0: the good write in the
# first table must not take it (the entry in the second table names it).
repaired reused $(((2048 << 10) + 8192)) end "exceeding the end of the file"
