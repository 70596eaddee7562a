#!/usr/bin/env bash
# qcow2 images whose refcounts lie, served writable: a writable open counts
# every reference, raises the refcounts that miss one and clears COPIED
# flags on clusters with other users (one line says so), and keeps
# clusters referenced past the end of the file from the allocator, so no
# two guest clusters ever share a host cluster and no acknowledged write
# reads back wrong.  (qemu-nbd trusts the refcounts: on the same seeds it
# loses data on most; `tests/qcow2_refcount_lies.py DIR 1 60 --server
# qemu-nbd` shows it.)
#   1. the fuzz-qcow2 input that found it, over NBD, with qemu-io, served
#      by snapnbd and by nbdkit with the snapnbd plugin;
#   2. seeded random damage and requests against a model, served as the
#      image and as the backing file of an overlay committed into it
#      (SEED=n repeats a run, SEEDS=n sets how many; `./run refcount-lies
#      N` is the long mode);
#   3. a LUKS-encrypted image: its encryption header is a reference too
#      (an image marked dirty had its header's clusters freed by the
#      repair, and the next allocation wrote over the key material);
#   4. an undercount that cannot be repaired here refuses the writable
#      open and leaves the file as it was.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qcow2-functions.sh"
requires qemu-io

# 1. 512-byte clusters; an L2 entry of L1[2] is COPIED + zero flag and
# names 0xf600, past the end of the file.  The write allocated guest
# cluster 12 at 0xf600 and wrote guest cluster 130 in place there too.
img=$tmp/fuzz.qcow2
tail -c +2 "$srcdir/fuzz/crashes/qcow2/refcount-misses-copied-zero-cluster" \
    >"$img"
start_server "$tmp/fuzz.sock" "$tmp/fuzz.pid" -t \
    --image-opts "driver=qcow2,file.filename=$img,backing=" 2>"$tmp/fuzz.err"
qemu-io -f raw -c 'write -P 0x61 48 66600' -c 'read -P 0x61 48 66600' \
    "$(uri "$tmp/fuzz.sock")" >"$tmp/fuzz.io" 2>&1 ||
    fail "fuzz: $(cat "$tmp/fuzz.io")"
! grep -q -e verification -e failed "$tmp/fuzz.io" ||
    fail "fuzz: $(cat "$tmp/fuzz.io" "$tmp/fuzz.err")"
_stop_server "$tmp/fuzz.pid"
qemu-io -r -f qcow2 -c 'read -P 0x61 48 66600' "$img" | grep -q verification &&
    fail "fuzz: qemu-io reads the image wrong"
echo "fuzz input: written and read back; $(grep -c . "$tmp/fuzz.err") line(s) said"
# The same image through the nbdkit plugin, the other way users open it.
if command -v nbdkit >/dev/null 2>&1 && [ -f "${SNAPNBD_PLUGIN:-}" ]; then
    plugin_env
    tail -c +2 "$srcdir/fuzz/crashes/qcow2/refcount-misses-copied-zero-cluster" \
        >"$img"
    start_nbdkit "$tmp/kit.sock" "$tmp/kit.pid" "$SNAPNBD_PLUGIN" \
        file="$img" format=qcow2
    qemu-io -f raw -c 'write -P 0x62 48 66600' -c 'read -P 0x62 48 66600' \
        "$(uri "$tmp/kit.sock")" >"$tmp/kit.io" 2>&1 ||
        fail "plugin: $(cat "$tmp/kit.io")"
    ! grep -q -e verification -e failed "$tmp/kit.io" ||
        fail "plugin: $(cat "$tmp/kit.io")"
    _stop_nbdkit "$tmp/kit.pid" "$(cat "$tmp/kit.pid")"
    echo "fuzz input through the nbdkit plugin: written and read back"
fi

# 2. Seeded random damage; first the seed a CI run failed on (a new
# refcount block was put on a cluster a reference past the end of the file
# names, which then read as the block), and the same for the blocks and
# table that the refcount table's growth makes.
mkdir "$tmp/seeds"
"$PYTHON" "$srcdir/qcow2_refcount_lies.py" "$tmp/seeds" 6491 1 ||
    fail "random damage, seed 6491"
"$PYTHON" "$srcdir/qcow2_refcount_lies.py" "$tmp/seeds" --growth ||
    fail "refcount metadata over reserved clusters"
seed=${SEED:-$RANDOM}
seeds=${SEEDS:-40}
"$PYTHON" "$srcdir/qcow2_refcount_lies.py" "$tmp/seeds" "$seed" "$seeds" ||
    fail "random damage (SEED=$seed SEEDS=$seeds repeats it)"
# The same damage in a backing file that an active commit writes into: its
# references are counted when block-commit reopens it read-write.
"$PYTHON" "$srcdir/qcow2_refcount_lies.py" "$tmp/seeds" "$seed" \
    "$(( (seeds + 3) / 4 ))" --commit ||
    fail "random damage under a commit (SEED=$seed SEEDS=$seeds repeats it)"

# 3. A LUKS image marked dirty: the repair recounts every refcount.
sec=(--object secret,id=sec0,data=pw)
opts="driver=qcow2,file.filename=$tmp/luks.qcow2,encrypt.key-secret=sec0"
qemu_img_create -q -f qcow2 "${sec[@]}" -o \
    encrypt.format=luks,encrypt.key-secret=sec0,lazy_refcounts=on \
    "$tmp/luks.qcow2" 8M
qemu-io "${sec[@]}" --image-opts -c 'write -P 7 0 128K' "$opts" >/dev/null
poke "$tmp/luks.qcow2" 79 '\1'
start_server "$tmp/luks.sock" "$tmp/luks.pid" "${sec[@]}" -t \
    --image-opts "$opts" 2>"$tmp/luks.err"
qemu-io -f raw -c 'write -P 9 1M 192K' "$(uri "$tmp/luks.sock")" \
    >/dev/null || fail "luks: write failed: $(cat "$tmp/luks.err")"
_stop_server "$tmp/luks.pid"
qemu-io "${sec[@]}" --image-opts -c 'read -P 7 0 128K' \
    -c 'read -P 9 1M 192K' "$opts" >"$tmp/luks.io" 2>&1 ||
    fail "luks: cannot read the image back: $(cat "$tmp/luks.io")"
! grep -q verification "$tmp/luks.io" || fail "luks: $(cat "$tmp/luks.io")"
qemu-img check "${sec[@]}" --image-opts "$opts" >"$tmp/luks.check" 2>&1 ||
    fail "luks: $(cat "$tmp/luks.check")"
echo "luks: repaired, header intact, data reads back"

# 4. The refcount table's first block lost, the header's cluster with it;
# the new block has no place to go (its first cluster is the header).
img=$tmp/rt.qcow2
qemu-img create -q -f qcow2 "$img" 4M
qemu-io -f qcow2 -c 'write -P 5 0 64K' "$img" >/dev/null
poke64 "$img" "$(peek64 "$img" 48)" 0
cp "$img" "$tmp/rt.orig"
"$SNAPNBD" -t -f qcow2 -k "$tmp/rt.sock" "$img" 2>"$tmp/rt.err" &&
    fail "rt: opened writable"
[ "$(wc -l <"$tmp/rt.err")" = 1 ] || fail "rt: not one line: $(cat "$tmp/rt.err")"
grep -q "cluster 0 has 1 reference but refcount 0, and the refcounts cannot be repaired here" \
    "$tmp/rt.err" || fail "rt: $(cat "$tmp/rt.err")"
cmp -s "$img" "$tmp/rt.orig" || fail "rt: the refused image changed"
start_server "$tmp/rt.sock" "$tmp/rt.pid" -r -t -f qcow2 "$img"
qemu-io -r -f raw -c 'read -P 5 0 64K' "$(uri "$tmp/rt.sock")" |
    grep -q verification && fail "rt: not served read-only"
_stop_server "$tmp/rt.pid"
echo "refcount block lost: refused writable, served read-only"
