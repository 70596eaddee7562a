#!/usr/bin/env bash
# A damaged qcow2 image served writable never has its metadata written
# over, as with QEMU's overlap checks: a write that would (an L1 entry
# naming the header or the refcount table) fails with EIO, one line says
# "Marking image as corrupt: ...", the corrupt bit is set in the header,
# every later write fails, and the image is refused for writing until
# repaired (read-only is fine).  qemu-img check then finds corruption, not
# a lost header.  Damage that the writable open's count of references
# sees is dealt with before any write: an L2 entry naming the L1 table
# (its refcount is raised and the COPIED flag cleared, so the write
# copies the cluster), a compressed entry reaching past the end of the
# file (that cluster is never handed out), a refcount table whose missing
# block hides the header (the open is refused, the file unchanged).  A
# dirty image whose L1 entry points far beyond the end of the file is
# repaired and served, with QEMU's complaint about the reference, not a
# crash.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qcow2-functions.sh"
requires qemu-io

MAGIC=$(printf 'QFI\373' | od -An -t x1)

# The servers' messages go to $tmp/log (and failures to start still to
# the test's output).
printf '#!/bin/sh\nexec "%s" "$@" 2>>"%s"\n' "$SNAPNBD" "$tmp/log" \
    >"$tmp/snapnbd-logged"
chmod +x "$tmp/snapnbd-logged"
serve() {
    : >"$tmp/log"
    SNAPNBD=$tmp/snapnbd-logged start_server "$tmp/sock" "$tmp/pid" -t \
        -f qcow2 "$@"
}

# nbd_write IMG OFFSET [OFFSET2]: serve IMG writable, write 4K of 0x55 at
# OFFSET, which must fail with EIO; then 4K at OFFSET2, which must fail too
# (the image is corrupt now).  The server's log is in $tmp/log.
nbd_write_fails() {
    local img=$1 off=$2 off2=${3:-$2}
    serve "$img"
    $PYTHON - "$(uri "$tmp/sock")" "$off" "$off2" <<'EOP' ||
import sys, errno, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for off in (int(sys.argv[2]), int(sys.argv[3])):
    try:
        h.pwrite(b'\x55' * 4096, off)
        raise SystemExit("the write at %d succeeded" % off)
    except nbd.Error as e:
        assert e.errnum == errno.EIO, (off, e)
h.shutdown()
EOP
        fail "$img: $(cat "$tmp/log")"
    _stop_server "$tmp/pid"
}

# nbd_write_ok IMG OFFSET OFFSET2: serve IMG writable; 4K of 0x55 at
# OFFSET and OFFSET2 must be written and read back.
nbd_write_ok() {
    local img=$1
    serve "$img"
    qemu-io -f raw -c "write -P 0x55 $2 4K" -c "write -P 0x55 $3 4K" \
        -c "read -P 0x55 $2 4K" -c "read -P 0x55 $3 4K" \
        "$(uri "$tmp/sock")" >"$tmp/io" 2>&1 ||
        fail "$img: $(cat "$tmp/io" "$tmp/log")"
    ! grep -q -e verification -e failed "$tmp/io" ||
        fail "$img: $(cat "$tmp/io" "$tmp/log")"
    _stop_server "$tmp/pid"
}

# kept NAME IMG PATTERN OFFSET...: the log says PATTERN and nothing was
# marked corrupt; the header survived; qemu-img check finds no corruption;
# the 0x55 written at each OFFSET reads back.
kept() {
    local name=$1 img=$2 pattern=$3 off
    shift 3
    grep -q "$pattern" "$tmp/log" ||
        fail "$name: no message matching '$pattern': $(cat "$tmp/log")"
    ! grep -q corrupt "$tmp/log" || fail "$name: $(cat "$tmp/log")"
    [ "$(head -c 4 "$img" | od -An -t x1)" = "$MAGIC" ] ||
        fail "$name: the qcow2 magic was overwritten"
    qemu-img check --output=json "$img" >"$tmp/check" 2>/dev/null
    grep -q '"corruptions"' "$tmp/check" &&
        fail "$name: corruptions: $(qemu-img check "$img" 2>&1)"
    for off in "$@"; do
        qemu-io -r -f qcow2 -c "read -P 0x55 $off 4K" "$img" |
            grep -q verification && fail "$name: lost the write at $off"
    done
    true
}

# after NAME IMG PATTERN: the log says why, once; the header survived and
# says corrupt; qemu-img check finds corruption; snapnbd refuses to open
# it writable but serves it read-only.
after() {
    local name=$1 img=$2 pattern=$3 rc=0
    grep -q "Marking image as corrupt: .*$pattern" "$tmp/log" ||
        fail "$name: no corruption message matching '$pattern': $(cat "$tmp/log")"
    [ "$(grep -c corrupt "$tmp/log")" -eq 1 ] ||
        fail "$name: not one line: $(cat "$tmp/log")"
    [ "$(head -c 4 "$img" | od -An -t x1)" = "$MAGIC" ] ||
        fail "$name: the qcow2 magic was overwritten"
    qemu-img info "$img" | grep -q "corrupt: true" ||
        fail "$name: not marked corrupt: $(qemu-img info "$img")"
    qemu-img check "$img" >"$tmp/check" 2>&1 || rc=$?
    [ $rc -eq 2 ] || fail "$name: qemu-img check exit $rc: $(cat "$tmp/check")"
    "$SNAPNBD" -f qcow2 -k "$tmp/nosock" "$img" 2>"$tmp/err" &&
        fail "$name: a corrupt image was opened writable"
    grep -q "marked corrupt" "$tmp/err" || fail "$name: $(cat "$tmp/err")"
    start_server "$tmp/rsock" "$tmp/rpid" -r -t -f qcow2 "$img"
    nbdinfo "$(uri "$tmp/rsock")" >/dev/null || fail "$name: not served -r"
    _stop_server "$tmp/rpid"
}

# 1. The issue's reproducer: L1[0] = 0x1000 (unaligned, no COPIED flag).
# Copying that "L2 table" freed cluster 0, and the data went there.
img=$tmp/l1.qcow2
qemu-img create -q -f qcow2 "$img" 1M
l1=$(peek64 "$img" 40)
poke64 "$img" "$l1" $((0x1000))
nbd_write_fails "$img" 65536
after l1-unaligned "$img" "L2 table offset 0x1000 unaligned"

# 2. The refcount table lost its first block: every cluster it covered
# looks free, the header included, and the new block would go there.
# The writable open counts the references, finds the header without a
# refcount and no place for the block: refused, the image unchanged
# (qemu-nbd opens it and fails the first write).
img=$tmp/rt.qcow2
qemu-img create -q -f qcow2 "$img" 4M
rt=$(peek64 "$img" 48)
poke64 "$img" "$rt" 0
cp "$img" "$tmp/rt.orig"
"$SNAPNBD" -t -f qcow2 -k "$tmp/nosock" "$img" 2>"$tmp/err" &&
    fail "reftable: opened writable"
grep -q "cluster 0 has 1 reference but refcount 0, and the refcounts cannot be repaired here (no place for a refcount block); repair it with 'qemu-img check -r all'" "$tmp/err" ||
    fail "reftable: $(cat "$tmp/err")"
cmp -s "$img" "$tmp/rt.orig" || fail "reftable: the refused image changed"
qemu-img check -q -r all "$img" >/dev/null 2>&1
serve "$img"
nbdsh -u "$(uri "$tmp/sock")" -c 'h.pwrite(b"\x55" * 4096, 0); h.flush()' ||
    fail "reftable: no write after the repair"
_stop_server "$tmp/pid"
qemu-img check -q "$img" || fail "reftable: not clean"

# 3. An L2 entry (owned: COPIED) names the L1 table: a write in place
# would overwrite it (qemu-nbd marks the image corrupt).  The writable open
# counts two users of the L1 table's cluster, raises its refcount and
# clears the COPIED flag: the write copies the cluster instead.
img=$tmp/l2.qcow2
qemu-img create -q -f qcow2 "$img" 4M
qemu-io -f qcow2 -c 'write -P 1 0 64K' "$img" >/dev/null
l1=$(peek64 "$img" 40)
l2=$(( $(peek64 "$img" "$l1") & 0x00fffffffffffe00 ))
poke64 "$img" "$l2" $(( (1 << 63) | l1 ))
nbd_write_ok "$img" 0 1048576
kept l2-on-l1 "$img" "cluster $(printf '%#x' "$l1") has 2 references but refcount 1; repaired the refcounts" 0 1048576
[ "$(peek64 "$img" 40)" = "$l1" ] || fail "l2-on-l1: the L1 table moved"

# 4. An L1 entry (owned) names the refcount table: the new L2 entry would
# be written into it.
img=$tmp/l1rt.qcow2
qemu-img create -q -f qcow2 "$img" 4M
l1=$(peek64 "$img" 40)
rt=$(peek64 "$img" 48)
poke64 "$img" "$l1" $(( (1 << 63) | rt ))
nbd_write_fails "$img" 65536 1048576
after l1-on-reftable "$img" "L2 table at offset $(printf '%#x' "$rt") lies on other metadata"

# 5. A compressed entry whose sector count reaches the free cluster past
# the end of the file: the overwrite of that compressed cluster takes the
# free cluster for its data and then, freeing the compressed bytes, freed
# it again under the data (qemu-io loses the write so, once another write
# reuses the cluster).  The fuzzer's find.  The open now keeps that
# cluster from the allocator, and the overwrite leaves it allocated.
img=$tmp/cz.qcow2
truncate -s 64K "$tmp/cz.raw"
qemu-io -f raw -c 'write -P 0x21 0 64K' "$tmp/cz.raw" >/dev/null
qemu-img convert -c -f raw -O qcow2 -o cluster_size=4096 "$tmp/cz.raw" "$img"
l1=$(peek64 "$img" 40)
l2=$(( $(peek64 "$img" "$l1") & 0x00fffffffffffe00 ))
last=$(peek64 "$img" $((l2 + 15 * 8)))
# 4K clusters: the offset in bits 0..57, the extra sectors in 58..61.
coff=$(( last & ((1 << 58) - 1) ))
end=$(stat -c %s "$img")
[ $(( last >> 62 )) = 1 ] && [ $(( coff / 4096 )) = $(( (end - 1) / 4096 )) ] ||
    fail "compressed: not the layout expected: $(printf '%#x' "$last")"
poke64 "$img" $((l2 + 15 * 8)) $(( (1 << 62) | (8 << 58) | coff ))
nbd_write_ok "$img" 61440 0
kept compressed-extent "$img" "ERROR: counting reference for region exceeding the end of the file" 61440 0

# 6. Dirty (lazy refcounts after a crash) with an L1 entry far beyond the
# end of the file: the repair said nothing of it and overflowed its array.
img=$tmp/dirty.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4096 "$img" 8M
qemu-io -f qcow2 -c 'write -P 2 0 1M' "$img" >/dev/null
l1=$(peek64 "$img" 40)
poke64 "$img" $((l1 + 8)) $(( (1 << 63) | (1 << 50) ))
poke "$img" 79 '\1'
serve "$img"
qemu-io -f raw -c 'write -P 3 64K 64K' -c 'read -P 2 0 64K' \
    -c 'read -P 3 64K 64K' -c 'read -P 2 128K 512K' "$(uri "$tmp/sock")" \
    >"$tmp/io" || fail "dirty: I/O failed: $(cat "$tmp/io" "$tmp/log")"
grep -q verification "$tmp/io" && fail "dirty: wrong data: $(cat "$tmp/io")"
_stop_server "$tmp/pid"
grep -q "counting reference for region exceeding the end of the file" \
    "$tmp/log" || fail "dirty: no complaint: $(cat "$tmp/log")"
[ "$(peek64 "$img" 72)" = 0 ] || fail "dirty: the dirty bit is still set"
qemu-io -f qcow2 -c 'read -P 3 64K 64K' "$img" | grep -q verification &&
    fail "dirty: the data written does not read back"
true
