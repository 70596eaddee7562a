#!/usr/bin/env bash
# nbdinfo --map (NBD_CMD_BLOCK_STATUS, base:allocation) over a sparse raw
# file reports exactly the file's layout: holes as "3 hole,zero", written
# extents as "0 data" (also data that happens to be zero), as qemu-nbd does.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires nbdinfo qemu-io

img=$tmp/disk.img
truncate -s 16M "$img"
# Data at 1M (64K), 8M (4K, all zero bytes but allocated), 15M..16M (1M).
qemu-io -f raw -c 'write -P 1 1M 64K' -c 'write -P 3 15M 1M' "$img" >/dev/null
dd if=/dev/zero of="$img" bs=4096 seek=2048 count=1 conv=notrunc,fsync \
    status=none

# The filesystem must keep the holes for this test to mean anything.
[ "$(stat -c %b "$img")" -le $(( (64 + 4 + 1024) * 2 + 64 )) ] || {
    echo "$0: skipped: the filesystem does not keep sparse files"; exit 77; }

start_server "$tmp/sock" "$tmp/pid" -f raw -t "$img"

nbdinfo --map "$(uri "$tmp/sock")" >"$tmp/map" || fail "nbdinfo --map failed"
cat >"$tmp/expected" <<'EOM'
0 1048576 3 hole,zero
1048576 65536 0 data
1114112 7274496 3 hole,zero
8388608 4096 0 data
8392704 7335936 3 hole,zero
15728640 1048576 0 data
EOM
awk '{print $1, $2, $3, $4}' "$tmp/map" >"$tmp/got"
diff -u "$tmp/expected" "$tmp/got" || fail "block status map differs"

# The totals add up to the data and holes of the file.
nbdinfo --map --totals "$(uri "$tmp/sock")" >"$tmp/totals" ||
    fail "nbdinfo --map --totals failed"
# data: 64K + 4K + 1M = 1118208 bytes out of 16M
grep -Eq '^ *1118208 +[0-9.]+% +0 +data$' "$tmp/totals" ||
    fail "wrong data total: $(cat "$tmp/totals")"
grep -Eq '^ *15659008 +[0-9.]+% +3 +hole,zero$' "$tmp/totals" ||
    fail "wrong hole total: $(cat "$tmp/totals")"

# Block status for 1M from 512K (inside a hole, ending inside data): the
# first extent is a hole that stops at 1M, then data.
$PYTHON - "$(uri "$tmp/sock")" <<'EOP' || fail "nbdsh block_status check failed"
import sys, nbd
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(sys.argv[1])
ext = []
def cb(metacontext, offset, entries, err):
    if metacontext == nbd.CONTEXT_BASE_ALLOCATION:
        ext.extend(entries)
h.block_status(1 << 20, 512 * 1024, cb)
assert len(ext) >= 2, ext
assert ext[0] == 512 * 1024 and ext[1] == 3, ext      # hole,zero up to 1M
assert ext[3] == 0, ext                               # then data
h.shutdown()
EOP
