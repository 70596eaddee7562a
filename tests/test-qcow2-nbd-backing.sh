#!/usr/bin/env bash
# A qcow2 overlay whose header names an NBD export as its backing file
# (nbd+unix:// URI, the legacy nbd:unix:PATH:exportname=NAME, and a header
# without the backing format extension, probed as QEMU does; a raw base and
# a qcow2 base whose bytes the export serves) is served: it reads like
# qemu-img and qemu-nbd read it, with qemu-nbd's block status map, and
# writes through snapnbd land in the overlay only (the base export is
# read-only and its file unchanged).  A base that cannot be reached fails
# the open with a one-line error.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qcow2-functions.sh"
requires qemu-io sha256sum

# The base: a raw file served read-only by a second snapnbd, to any number
# of clients (the overlay's server, qemu-img, qemu-nbd).
truncate -s 8M "$tmp/base.raw"
qemu-io -f raw -c 'write -P 1 0 1M' -c 'write -P 2 3M 512K' \
    -c 'write -P 3 7M 1M' "$tmp/base.raw" >/dev/null
base_sum=$(sha256sum <"$tmp/base.raw")
start_server "$tmp/base.sock" "$tmp/base.pid" -r -t -e 0 -x base -f raw \
    "$tmp/base.raw"
base_uri=$(uri "$tmp/base.sock" base)

# The overlay, written by qemu-io once (through the NBD backing too).
qemu-img create -q -f qcow2 -o cluster_size=65536 -b "$base_uri" -F raw \
    "$tmp/ov.qcow2" 8M
qemu-io -f qcow2 -c 'write -P 5 512K 64K' -c 'write -z 3M 64K' \
    -c 'write -P 6 6M 100K' "$tmp/ov.qcow2" >/dev/null
check_served "$tmp/ov.qcow2" uri

# Writes through snapnbd go to the overlay; the base stays as it was.
start_server "$tmp/ov.sock" "$tmp/ov.pid" -t -f qcow2 "$tmp/ov.qcow2"
qemu-io -f raw -c 'write -P 7 100K 8K' -c 'write -P 8 3200K 70K' \
    -c 'write -z 7M 64K' "$(uri "$tmp/ov.sock")" >/dev/null ||
    fail "writes through the overlay failed"
_stop_server "$tmp/ov.pid"
[ "$(sha256sum <"$tmp/base.raw")" = "$base_sum" ] ||
    fail "a write reached the base"
qemu-img check -q "$tmp/ov.qcow2" || fail "qemu-img check after the writes"
cp "$tmp/base.raw" "$tmp/want.raw"
qemu-io -f raw -c 'write -P 5 512K 64K' -c 'write -z 3M 64K' \
    -c 'write -P 6 6M 100K' -c 'write -P 7 100K 8K' -c 'write -P 8 3200K 70K' \
    -c 'write -z 7M 64K' "$tmp/want.raw" >/dev/null
qemu-img compare -q -f raw -F qcow2 "$tmp/want.raw" "$tmp/ov.qcow2" ||
    fail "the overlay does not read as base + writes in qemu-img"
# Every written range is allocated in the overlay (depth 0 in its map).
qemu-img map --output=json "$tmp/ov.qcow2" >"$tmp/map.json"
$PYTHON - "$tmp/map.json" <<'PY' || fail "a write is not in the overlay"
import json, sys
top = [(m["start"], m["start"] + m["length"])
       for m in json.load(open(sys.argv[1])) if m["depth"] == 0]
K = 1024
for start, n in [(100*K, 8*K), (512*K, 64*K), (3200*K, 70*K), (6144*K, 100*K),
                 (7168*K, 64*K)]:
    assert any(a <= start and start + n <= b for a, b in top), (start, n, top)
PY
check_served "$tmp/ov.qcow2" written

# The legacy name, and no backing format extension (QEMU probes: raw here).
qemu-img create -q -f qcow2 \
    -b "nbd:unix:$tmp/base.sock:exportname=base" -F raw "$tmp/legacy.qcow2" 8M
qemu-io -f qcow2 -c 'write -P 9 1M 64K' "$tmp/legacy.qcow2" >/dev/null
check_served "$tmp/legacy.qcow2" legacy
hl=$(peek32 "$tmp/legacy.qcow2" 100)
[ "$(peek32 "$tmp/legacy.qcow2" "$hl")" = $((16#e2792aca)) ] ||
    fail "the backing format extension is not first"
poke "$tmp/legacy.qcow2" "$hl" '\0\0\0\0'
check_served "$tmp/legacy.qcow2" probed

# A qcow2 base whose bytes an export serves (-f raw): the header's format
# (qcow2) is opened over NBD, and probed as qcow2 without the extension.
qemu-img create -q -f qcow2 "$tmp/base2.qcow2" 8M
qemu-io -f qcow2 -c 'write -P 10 2M 1M' "$tmp/base2.qcow2" >/dev/null
start_server "$tmp/base2.sock" "$tmp/base2.pid" -r -t -e 0 -f raw \
    "$tmp/base2.qcow2"
qemu-img create -q -f qcow2 -b "$(uri "$tmp/base2.sock")" -F qcow2 \
    "$tmp/onq.qcow2" 8M
qemu-io -f qcow2 -c 'write -P 11 2560K 4K' "$tmp/onq.qcow2" >/dev/null
check_served "$tmp/onq.qcow2" onqcow2
poke "$tmp/onq.qcow2" "$(peek32 "$tmp/onq.qcow2" 100)" '\0\0\0\0'
check_served "$tmp/onq.qcow2" onqcow2probed
qemu-io -r -f qcow2 -c 'read -P 10 2M 512K' -c 'read -P 11 2560K 4K' \
    "$tmp/onq.qcow2" >"$tmp/onq.read" 2>&1
! grep -q Pattern "$tmp/onq.read" || fail "qcow2 base: $(cat "$tmp/onq.read")"
_stop_server "$tmp/base2.pid"

# The base gone: a one-line error naming the overlay, nothing served.
_stop_server "$tmp/base.pid"
if "$SNAPNBD" -r -f qcow2 -k "$tmp/gone.sock" "$tmp/ov.qcow2" \
    2>"$tmp/gone.err"; then
    fail "served an overlay whose NBD base is gone"
fi
grep -q "Could not open backing file of '$tmp/ov.qcow2'" "$tmp/gone.err" ||
    fail "unexpected error: $(cat "$tmp/gone.err")"
[ "$(wc -l <"$tmp/gone.err")" -eq 1 ] ||
    fail "more than one line: $(cat "$tmp/gone.err")"
