#!/usr/bin/env bash
# Damaged qcow2 images never crash snapnbd nor get written to.  Bad
# headers (truncated file, bad magic or version, cluster_bits out of range,
# lying header length, absurd or misplaced L1 table, backing file name
# outside the header, unknown incompatible bits, external data file,
# encryption, an extension longer than the header area, a bad bitmap
# directory) make snapnbd exit
# with a one-line error naming the file; the dirty and corrupt bits are
# fine read-only.  Bad L1/L2 entries and undecodable compressed clusters
# fail only the reads that touch them (EIO), and the server keeps serving.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qcow2-functions.sh"
requires qemu-io sha256sum

good=$tmp/good.qcow2
qemu-img create -q -f qcow2 -o cluster_size=65536 "$good" 4M
qemu-io -f qcow2 -c 'write -P 0x42 0 1M' "$good" >/dev/null
hl=$(peek32 "$good" 100)  # header length: the first extension starts here

# bad NAME PATTERN [poke OFFSET BYTES | truncate SIZE]...: a damaged copy
# of the good image is refused with a one-line error matching PATTERN.
bad() {
    local name=$1 pattern=$2 img=$tmp/$1.qcow2 rc sum
    shift 2
    cp "${src:-$good}" "$img"
    while [ $# -gt 0 ]; do
        case $1 in
        poke) poke "$img" "$2" "$3"; shift 3 ;;
        truncate) truncate -s "$2" "$img"; shift 2 ;;
        esac
    done
    sum=$(sha256sum <"$img")
    timeout 10 "$SNAPNBD" -r -f qcow2 -k "$tmp/nosock" "$img" \
        >/dev/null 2>"$tmp/err" && rc=0 || rc=$?
    [ $rc -eq 1 ] || fail "$name: exit status $rc: $(cat "$tmp/err")"
    [ "$(wc -l <"$tmp/err")" -eq 1 ] ||
        fail "$name: not a one-line error: $(cat "$tmp/err")"
    grep -q -- "$img" "$tmp/err" || fail "$name: file not named: $(cat "$tmp/err")"
    grep -Eq -- "$pattern" "$tmp/err" ||
        fail "$name: error does not match '$pattern': $(cat "$tmp/err")"
    [ "$(sha256sum <"$img")" = "$sum" ] || fail "$name: the image changed"
    [ ! -S "$tmp/nosock" ] || fail "$name: left a socket"
}

bad short50 "too short" truncate 50
bad short80 "too short" truncate 80
bad magic "bad magic" poke 0 'QFI\0'
bad version "version 4" poke 4 '\0\0\0\4'
bad cbits8 "cluster_bits 8" poke 20 '\0\0\0\10'
bad cbits22 "cluster_bits 22" poke 20 '\0\0\0\26'
bad cbitshuge "cluster_bits 4294967295" poke 20 '\377\377\377\377'
bad hlen-short "header length 64" poke 100 '\0\0\0\100'
bad hlen-huge "header length" poke 100 '\1\0\0\0'
bad size-huge "virtual size" poke 24 '\377\377\377\377\377\377\377\377'
bad l1-huge "L1 table too large" poke 36 '\177\377\377\377'
bad l1-small "L1 table too small" poke 36 '\0\0\0\0'
bad l1-beyond "L1 table.*outside the file" poke 40 '\0\0\20\0\0\0\0\0'
bad l1-unaligned "L1 table offset.*not cluster aligned" \
    poke 47 '\10'
# (the file ends where the L1 table starts: as in QEMU, a file's length is
# rounded up to 512 bytes, so a table cut short inside a sector is read
# with a zero tail, and qemu-nbd serves that image too)
bad l1-end "L1 table.*outside the file" truncate "$(peek64 "$good" 40)"
bad backing-long "backing file name too long" \
    poke 8 '\0\0\0\0\0\0\20\0' poke 16 '\0\0\23\210'
bad backing-outside "backing file name.*outside" \
    poke 8 '\0\0\0\0\0\0\377\370' poke 16 '\0\0\0\20'
bad incompat5 "incompatible feature bit 5" poke 79 '\40'
bad incompat63 "incompatible feature bit 63" poke 72 '\200'
bad datafile "external data file" poke 79 '\4'
bad extl2 "extended L2" poke 79 '\20'
bad ctype-bit "compression type 0 does not match" poke 79 '\10'
bad encrypted "encrypted" poke 35 '\1'
bad ext-len "extension.*runs past" poke $((hl + 4)) '\177\377\377\0'

# Persistent bitmaps (qemu-img bitmap): a directory outside the file, an
# entry with no name, a granularity QEMU does not support.
bm=$tmp/bitmaps.src
cp "$good" "$bm"
qemu-img bitmap --add "$bm" b0
ext=$($PYTHON - "$bm" <<'EOP'
import struct, sys
d = open(sys.argv[1], "rb").read(65536)
off = struct.unpack(">I", d[100:104])[0]
while True:
    t, n = struct.unpack(">II", d[off:off + 8])
    if t == 0x23852875 or t == 0:
        break
    off += 8 + (n + 7) // 8 * 8
print(off if t else -1)
EOP
)
[ "$ext" -gt 0 ] || fail "qemu-img bitmap wrote no bitmaps extension"
dir=$(peek64 "$bm" $((ext + 24)))
src=$bm bad bitmap-dir "bitmaps: invalid directory" \
    poke $((ext + 24)) '\0\0\0\0\177\377\0\0'
src=$bm bad bitmap-noname "bitmaps: directory entry.*invalid" \
    poke $((dir + 18)) '\0\0'
src=$bm bad bitmap-gran "bitmap 'b0' has an invalid or unsupported" \
    poke $((dir + 17)) '\100'

# A real zstd image (when this qemu-img can make one).
if qemu-img create -q -f qcow2 -o compression_type=zstd "$tmp/zstd.src" 1M \
        2>/dev/null; then
    src=$tmp/zstd.src bad zstd "compression type 1 \(zstd\) is not supported"
fi

# Dirty and corrupt bits: served read-only, as qemu-nbd -r does.
cp "$good" "$tmp/dirty.qcow2"; poke "$tmp/dirty.qcow2" 79 '\1'
check_served "$tmp/dirty.qcow2"
cp "$good" "$tmp/corrupt.qcow2"; poke "$tmp/corrupt.qcow2" 79 '\2'
check_served "$tmp/corrupt.qcow2"

# Read-time damage, 4K clusters: each L1 entry maps 2M.
img=$tmp/entries.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4096 "$img" 8M
qemu-io -f qcow2 -c 'write -P 0x42 0 8M' "$img" >/dev/null
l1=$(peek64 "$img" 40)
l1e() { peek64 "$img" $((l1 + 8 * $1)); }
l2_2=$(( $(l1e 2) & 0x00fffffffffffe00 ))
l2_3=$(( $(l1e 3) & 0x00fffffffffffe00 ))
poke64 "$img" $l1 $(( $(l1e 0) | 0x200 ))           # unaligned L2 table
poke64 "$img" $((l1 + 8)) $(( (1 << 63) | (1 << 40) )) # L2 table past the end
poke64 "$img" $l2_2 $(( $(peek64 "$img" $l2_2) | 0x200 )) # unaligned cluster
# Compressed clusters: past the end of the file, and 512 zero bytes of the
# header cluster, which are no deflate stream.
poke64 "$img" $((l2_3 + 8)) $(( (1 << 62) | (1 << 40) ))
poke64 "$img" $((l2_3 + 16)) $(( (1 << 62) | 2048 ))
sum=$(sha256sum <"$img")
start_server "$tmp/sock" "$tmp/pid" -r -t -f qcow2 "$img"
$PYTHON - "$(uri "$tmp/sock")" <<'EOP' || fail "read-time damage not handled"
import sys, errno, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
M = 1024 * 1024
for off in (0, 1 * M + 4096, 2 * M, 3 * M, 4 * M, 6 * M + 4096, 6 * M + 8192):
    try:
        h.pread(512, off)
        raise SystemExit("read at %d did not fail" % off)
    except nbd.Error as e:
        assert e.errnum == errno.EIO, (off, e)
# Everything else still reads, and the server is alive.
assert h.pread(4096, 4 * M + 4096) == b'\x42' * 4096
assert h.pread(4096, 6 * M) == b'\x42' * 4096
assert h.pread(2 * M - 12288, 6 * M + 12288) == b'\x42' * (2 * M - 12288)
h.shutdown()
EOP
_stop_server "$tmp/pid"
[ "$(sha256sum <"$img")" = "$sum" ] || fail "the damaged image changed"

# Writable opens of damaged images write nothing either: a bad bitmap
# directory behind an autoclear bit snapnbd would otherwise clear.
cp "$bm" "$tmp/w1.qcow2"
poke "$tmp/w1.qcow2" 95 '\3'
poke "$tmp/w1.qcow2" $((ext + 24)) '\0\0\0\0\177\377\0\0'
sum=$(sha256sum <"$tmp/w1.qcow2")
"$SNAPNBD" -f qcow2 -k "$tmp/nosock" "$tmp/w1.qcow2" 2>"$tmp/err" &&
    fail "w1: a damaged image was opened for writing"
grep -q "bitmaps: invalid directory" "$tmp/err" || fail "w1: $(cat "$tmp/err")"
[ "$(sha256sum <"$tmp/w1.qcow2")" = "$sum" ] || fail "w1: the image changed"

# A refcount table entry with only reserved bits set is no refcount block
# (QEMU masks them too): taken for one at offset 0, the header would be
# overwritten by the refcounts of new clusters.
qemu-img create -q -f qcow2 -o cluster_size=512 "$tmp/w2.qcow2" 4M
rt=$(peek64 "$tmp/w2.qcow2" 48)
poke64 "$tmp/w2.qcow2" $((rt + 8)) 1
start_server "$tmp/sock" "$tmp/pid" -f qcow2 "$tmp/w2.qcow2"
qemu-io -f raw -c 'write -P 7 0 1M' "$(uri "$tmp/sock")" >/dev/null ||
    fail "w2: writes failed"
_stop_server "$tmp/pid"
qemu-img check -q "$tmp/w2.qcow2" || fail "w2: the image is damaged"
qemu-io -f qcow2 -c 'read -P 7 0 1M' "$tmp/w2.qcow2" | grep -q verification &&
    fail "w2: the data reads back wrong"
true
