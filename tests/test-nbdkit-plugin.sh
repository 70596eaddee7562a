#!/usr/bin/env bash
# The nbdkit plugin (nbdkit-snapnbd-plugin.so) serves an image through the
# block layer:
#  - qemu-io writes land in the file (qemu-img compare with a reference) and
#    read back with their pattern;
#  - nbdinfo shows the flags (multi-conn, FUA, trim, zero, fast zero, cache)
#    and nbdinfo --map the file's holes and data;
#  - trim and write zeroes punch holes (NO_HOLE keeps the blocks), FUA
#    writes and cache requests work, two connections see each other's data;
#  - nbdkit -r and readonly=true make the export read-only, offset= shifts it;
#  - a bad parameter, a missing file= or file, and an unknown format are
#    refused with a clear message and nbdkit exits non-zero; a probed qcow2
#    image is served as qcow2 once the block layer has the driver (refused
#    before), and format=raw serves it as raw bytes.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-io qemu-img nbdinfo fallocate
requires_plugin

K=1024
M=$((1024 * 1024))
img=$tmp/disk.img
truncate -s 64M "$img"

# Holes must be kept and punched here, or the map checks mean nothing.
truncate -s 1M "$tmp/probe"
fallocate -l 1M "$tmp/probe" && fallocate -p -o 0 -l 64K "$tmp/probe" ||
    { echo "$0: skipped: no hole punching on this filesystem"; exit 77; }

start_nbdkit "$tmp/sock" "$tmp/pid" "$SNAPNBD_PLUGIN" file="$img"
u=$(uri "$tmp/sock")

# --- data: qemu-io patterns land in the file -------------------------------
ops=(-c 'write -P 0x5a 64K 64K' -c 'write -P 0xa5 1M 4K'
     -c 'write -P 0x33 8M 1M' -c 'write -P 0x77 3000 700')
qemu-io -f raw "${ops[@]}" \
    -c 'read -P 0x5a 64K 64K' -c 'read -P 0xa5 1M 4K' \
    -c 'read -P 0x33 8M 1M' -c 'read -P 0x77 3000 700' \
    -c 'read -P 0 0 3000' -c 'read -P 0 9M 1M' "$u" >"$tmp/out" ||
    fail "qemu-io failed: $(cat "$tmp/out")"
grep -q 'Pattern verification failed' "$tmp/out" && fail "pattern mismatch"

truncate -s 64M "$tmp/ref.img"
qemu-io -f raw "${ops[@]}" "$tmp/ref.img" >/dev/null
qemu-img compare -f raw -F raw "$tmp/ref.img" "$img" ||
    fail "image differs from the reference"
qemu-img compare -f raw -F raw "$tmp/ref.img" "$u" ||
    fail "export differs from the reference"

# --- flags ---------------------------------------------------------------
nbdinfo "$u" >"$tmp/info" || fail "nbdinfo failed"
for f in can_multi_conn can_fua can_flush can_trim can_zero can_fast_zero \
         can_cache; do
    grep -q "^[[:space:]]*$f: true" "$tmp/info" ||
        fail "$f is not true: $(cat "$tmp/info")"
done
grep -q "is_read_only: false" "$tmp/info" || fail "export is read-only"
grep -q "export-size: $((64 * M))" "$tmp/info" || fail "wrong size"
grep -q "base:allocation" "$tmp/info" || fail "no base:allocation"

# --- block status: the map is the file's layout ----------------------------
map() {
    nbdinfo --map "$u" | awk '{ print $1, $2, $3, $4 }'
}
map >"$tmp/got" || fail "nbdinfo --map failed"
cat >"$tmp/expected" <<EOM
0 $((4 * K)) 0 data
$((4 * K)) $((60 * K)) 3 hole,zero
$((64 * K)) $((64 * K)) 0 data
$((128 * K)) $((M - 128 * K)) 3 hole,zero
$M $((4 * K)) 0 data
$((M + 4 * K)) $((7 * M - 4 * K)) 3 hole,zero
$((8 * M)) $M 0 data
$((9 * M)) $((55 * M)) 3 hole,zero
EOM
# The first 4K block holds the write at 3000.  nbdkit may or may not merge
# adjacent extents of one type: compare merged maps.
merge() {
    awk '$3 == t && $1 == e { e += $2; next }
         { if (t != "") print s, e - s, t, n; s = $1; e = $1 + $2; t = $3; n = $4 }
         END { print s, e - s, t, n }' "$1"
}
merge "$tmp/expected" >"$tmp/expected.m"
merge "$tmp/got" >"$tmp/got.m"
diff -u "$tmp/expected.m" "$tmp/got.m" || fail "block status map differs"

# --- trim, write zeroes, FUA, cache, two connections ------------------------
$PYTHON - "$u" "$img" <<'EOP' || fail "trim/zero/FUA/cache check failed"
import os, sys, nbd
uri, img = sys.argv[1:3]
K, M = 1024, 1024 * 1024

def blocks():
    """Allocated KiB of the image (st_blocks counts 512 bytes)."""
    return os.stat(img).st_blocks // 2

h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(uri)
h.flush()

# trim [8M, 8M+256K): zeroes, and a hole in the file
b = blocks()
h.trim(256 * K, 8 * M)
h.flush()
assert h.pread(256 * K, 8 * M) == bytes(256 * K), "trimmed range not zero"
# (a punch in the middle of an extent may cost an extent tree block)
assert b - blocks() >= 240, f"trim did not punch a hole ({b} -> {blocks()})"

# write zeroes [8M+256K, +256K), holes allowed: punched
b = blocks()
h.zero(256 * K, 8 * M + 256 * K)
h.flush()
assert h.pread(256 * K, 8 * M + 256 * K) == bytes(256 * K)
assert b - blocks() >= 240, f"write zeroes did not punch ({b} -> {blocks()})"

# write zeroes with NO_HOLE: zero, still allocated
b = blocks()
h.zero(256 * K, 8 * M + 512 * K, nbd.CMD_FLAG_NO_HOLE)
h.flush()
assert h.pread(256 * K, 8 * M + 512 * K) == bytes(256 * K)
assert b - blocks() < 16, "write zeroes with NO_HOLE deallocated"

# fast zero is advertised and works on a plain file
h.zero(64 * K, 8 * M + 768 * K, nbd.CMD_FLAG_FAST_ZERO)
assert h.pread(64 * K, 8 * M + 768 * K) == bytes(64 * K)

# block status sees the punched holes
ext = []
def cb(metacontext, offset, entries, err):
    if metacontext == nbd.CONTEXT_BASE_ALLOCATION:
        ext.extend(entries)
h.block_status(512 * K, 8 * M, cb)
assert ext[0] >= 512 * K and ext[1] == 3, f"no hole after trim/zero: {ext}"
ext.clear()
h.block_status(4 * K, M, cb, nbd.CMD_FLAG_REQ_ONE)
assert len(ext) == 2 and ext[0] == 4 * K and ext[1] == 0, f"REQ_ONE: {ext}"

# FUA write, cache request
h.pwrite(b"\xc3" * 4 * K, 20 * M, nbd.CMD_FLAG_FUA)
h.cache(M, 8 * M)
with open(img, "rb") as f:
    f.seek(20 * M)
    assert f.read(4 * K) == b"\xc3" * 4 * K, "FUA write not in the file"

# A second connection sees the first one's writes
h2 = nbd.NBD()
h2.connect_uri(uri)
h.pwrite(b"\x42" * 512, 30 * M)
h.flush()
assert h2.pread(512, 30 * M) == b"\x42" * 512, "second connection"
h2.shutdown()

# Reads past the end fail, and the connection survives
try:
    h.pread(4096, 64 * M - 2048)
    raise AssertionError("read past the end succeeded")
except nbd.Error:
    pass
assert h.pread(512, 30 * M) == b"\x42" * 512
h.shutdown()
EOP
_stop_nbdkit "$tmp/pid" "$(cat "$tmp/pid")"

# --- read-only: nbdkit -r, readonly=true ------------------------------------
sum=$(md5sum <"$img")
check_read_only() {
    # check_read_only NBDKIT-ARGS...: the export is read-only and readable
    start_nbdkit "$tmp/sock-ro" "$tmp/pid-ro" "$@"
    nbdinfo "$(uri "$tmp/sock-ro")" | grep -q "is_read_only: true" ||
        fail "$*: export is not read-only"
    $PYTHON - "$(uri "$tmp/sock-ro")" <<'EOP' || fail "$*: write check failed"
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert h.is_read_only()
for op in (lambda: h.pwrite(b"x" * 4096, 0), lambda: h.zero(4096, 0),
           lambda: h.trim(4096, 0)):
    try:
        op()
        raise AssertionError("a write-like request succeeded")
    except nbd.Error:
        pass
assert h.pread(4096, 9 * 1024 * 1024 - 4096) == b"\x33" * 4096
h.shutdown()
EOP
    _stop_nbdkit "$tmp/pid-ro" "$(cat "$tmp/pid-ro")"
}
check_read_only -r "$SNAPNBD_PLUGIN" file="$img"
check_read_only "$SNAPNBD_PLUGIN" file="$img" readonly=true
[ "$(md5sum <"$img")" = "$sum" ] || fail "read-only export changed the file"

# --- offset= ---------------------------------------------------------------
start_nbdkit "$tmp/sock-off" "$tmp/pid-off" "$SNAPNBD_PLUGIN" \
    file="$img" offset=8M format=raw cache=none aio=io_uring \
    detect-zeroes=unmap discard=unmap
nbdinfo --size "$(uri "$tmp/sock-off")" | grep -qx $((56 * M)) ||
    fail "offset=8M: wrong size"
qemu-io -f raw -c 'read -P 0x33 896K 128K' -c 'write -P 0x99 1M 4K' \
    "$(uri "$tmp/sock-off")" >"$tmp/out" || fail "offset: qemu-io failed"
grep -q 'Pattern verification failed' "$tmp/out" && fail "offset: bad data"
qemu-io -f raw -r -c 'read -P 0x99 9M 4K' "$img" >"$tmp/out" ||
    fail "offset: qemu-io on the file failed"
grep -q 'Pattern verification failed' "$tmp/out" &&
    fail "offset: write did not land at 8M + 1M"
_stop_nbdkit "$tmp/pid-off" "$(cat "$tmp/pid-off")"

# --- errors: clear message, non-zero exit, nothing served -------------------
refused() {
    # refused PATTERN PARAMS...: nbdkit must exit non-zero saying PATTERN
    local pattern=$1 st=0 pid i deadlock=
    shift
    "${_nbdkit_env[@]}" nbdkit -U - "$SNAPNBD_PLUGIN" "$@" \
        --run 'echo served' >"$tmp/err" 2>&1 &
    pid=$!
    for i in $(seq 600); do
        kill -0 $pid 2>/dev/null || break
        # With the ASan runtime preloaded, nbdkit (even with its own file
        # plugin) can deadlock in libp11-kit's destructor when it exits on
        # an error: the message is out, so that counts as exiting with 1.
        if [ ${#_nbdkit_env[@]} -gt 0 ] && [ "$i" -gt 40 ] &&
           grep -q 'error:' "$tmp/err"; then
            kill -9 $pid 2>/dev/null
            deadlock=1
            break
        fi
        sleep 0.05
    done
    [ -z "$deadlock" ] && kill -0 $pid 2>/dev/null &&
        { kill -9 $pid; fail "nbdkit hung: $*"; }
    wait $pid 2>/dev/null || st=$?
    [ "$st" -ne 0 ] || fail "nbdkit accepted: $*"
    grep -q served "$tmp/err" && fail "nbdkit served: $*"
    grep -q "$pattern" "$tmp/err" ||
        fail "no '$pattern' in the message for $*: $(cat "$tmp/err")"
}
refused "unknown parameter 'bogus'" file="$img" bogus=1
refused "file=" format=raw
refused "$tmp/missing.img" file="$tmp/missing.img"
refused "No such file" file="$tmp/missing.img"
refused "invalid cache mode 'fast'" file="$img" cache=fast
refused "discard option 'sometimes'" file="$img" discard=sometimes
refused "detect-zeroes" file="$img" detect-zeroes=maybe
refused "aio" file="$img" aio=carrier-pigeon
refused "format 'vmdk' is not supported" file="$img" format=vmdk
refused "offset" file="$img" offset=-1
refused "readonly" file="$img" readonly=perhaps
qemu-img create -f qcow2 "$tmp/disk.qcow2" 16M >/dev/null
qemu-io -f qcow2 -c 'write -P 0x61 1M 64K' "$tmp/disk.qcow2" >/dev/null
# (Clients run here, not with --run: under the ASan preload they would
# inherit LD_PRELOAD, and libp11-kit can then deadlock at their exit.)
if run_nbdkit "$SNAPNBD_PLUGIN" --dump-plugin |
       grep -q '^snapnbd_formats=.*qcow2'; then
    # The block layer has qcow2: a probed qcow2 image is served as qcow2.
    start_nbdkit "$tmp/sock-q" "$tmp/pid-q" "$SNAPNBD_PLUGIN" \
        file="$tmp/disk.qcow2" readonly=true
    nbdinfo --size "$(uri "$tmp/sock-q")" | grep -qx $((16 * M)) ||
        fail "qcow2: wrong size"
    qemu-io -f raw -r -c 'read -P 0x61 1M 64K' "$(uri "$tmp/sock-q")" \
        >"$tmp/out" || fail "qcow2: qemu-io failed: $(cat "$tmp/out")"
    grep -q 'Pattern verification failed' "$tmp/out" && fail "qcow2: bad data"
    _stop_nbdkit "$tmp/pid-q" "$(cat "$tmp/pid-q")"
else
    refused "format 'qcow2' is not supported" file="$tmp/disk.qcow2"
    refused "format 'qcow2' is not supported" file="$tmp/disk.qcow2" \
        format=qcow2
fi
# Given format=raw, a qcow2 file is served as raw bytes.
start_nbdkit "$tmp/sock-r" "$tmp/pid-r" "$SNAPNBD_PLUGIN" \
    file="$tmp/disk.qcow2" format=raw
nbdinfo --size "$(uri "$tmp/sock-r")" |
    grep -qx "$(stat -c %s "$tmp/disk.qcow2")" ||
    fail "format=raw on a qcow2 file: wrong size"
_stop_nbdkit "$tmp/pid-r" "$(cat "$tmp/pid-r")"

# --help and --dump-plugin describe the plugin.
run_nbdkit "$SNAPNBD_PLUGIN" --help >"$tmp/help" 2>&1 || fail "--help failed"
grep -q "file=<IMAGE>" "$tmp/help" || fail "--help: $(cat "$tmp/help")"
run_nbdkit "$SNAPNBD_PLUGIN" --dump-plugin >"$tmp/dump" 2>&1 ||
    fail "--dump-plugin failed"
grep -q "^thread_model=parallel" "$tmp/dump" || fail "not parallel"
grep -q "^snapnbd_version=" "$tmp/dump" || fail "no version in --dump-plugin"
exit 0
