#!/usr/bin/env bash
# The block-dirty-bitmap-* commands over QMP:
#  - add (granularity, persistent, disabled), then writes through an NBD
#    export set the bits of enabled bitmaps only; query-named-block-nodes
#    shows each bitmap's count, granularity and flags;
#  - clear, disable/enable, merge (of a disabled bitmap and a bitmap of
#    another granularity) give the bits QEMU's semantics give;
#  - transaction: a clear and an add with a failing action after them are
#    both undone (the bits are back, the new bitmap gone);
#  - errors: unknown node or bitmap, duplicate name, bad granularity,
#    persistent on a raw node, remove of an exported (busy) bitmap;
#  - a persistent bitmap survives blockdev-del + qemu-img: qemu-img info
#    lists it, qemu-nbd -B maps it as snapnbd did.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"
source "$srcdir/qcow2-functions.sh"
requires qemu-io

img=$tmp/disk.qcow2
qemu-img create -q -f qcow2 "$img" 64M
truncate -s 16M "$tmp/raw.img"
start_qmp "$tmp/qmp" "$tmp/pid"
Q() { qmp "$tmp/qmp" "$@" >"$tmp/out" || fail "qmp failed: $*"; }
ok() { Q "$@"; grep -q '"return"' "$tmp/out" || fail "$*: $(cat "$tmp/out")"; }
err() { # err PATTERN MSG...: the last reply is an error matching PATTERN
    local p=$1; shift
    Q "$@"; tail -1 "$tmp/out" | grep -q '"error"' && grep -q "$p" "$tmp/out" ||
        fail "expected error '$p' for $*: $(cat "$tmp/out")"
}
count() { # count BITMAP: its dirty bytes from query-named-block-nodes
    Q '{"execute":"query-named-block-nodes","arguments":{"flat":true}}'
    /usr/bin/python3 -c 'import json,sys
for n in json.loads(open(sys.argv[1]).read().splitlines()[-1])["return"]:
    for b in n.get("dirty-bitmaps", []):
        if b["name"] == sys.argv[2]: print(b["count"])' "$tmp/out" "$1"
}

ok '{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"d0","file":{"driver":"file","filename":"'"$img"'"}}}'
ok '{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"r0","file":{"driver":"file","filename":"'"$tmp/raw.img"'"}}}'
ok '{"execute":"block-dirty-bitmap-add","arguments":{"node":"d0","name":"b0","persistent":true}}'
# As on qemu-storage-daemon, query-block lists no devices.
Q '{"execute":"query-block"}'
grep -qx '{"return": \[\]}' "$tmp/out" || fail "query-block: $(cat "$tmp/out")"
ok '{"execute":"block-dirty-bitmap-add","arguments":{"node":"d0","name":"big","granularity":1048576}}'
ok '{"execute":"block-dirty-bitmap-add","arguments":{"node":"d0","name":"off","disabled":true}}'
err "Bitmap already exists: b0" '{"execute":"block-dirty-bitmap-add","arguments":{"node":"d0","name":"b0"}}'
err "Granularity must be power of 2" '{"execute":"block-dirty-bitmap-add","arguments":{"node":"d0","name":"x","granularity":1000}}'
err "Cannot find device='nope' nor node-name='nope'" '{"execute":"block-dirty-bitmap-add","arguments":{"node":"nope","name":"x"}}'
err "Can't make bitmap 'p' persistent in 'r0'" '{"execute":"block-dirty-bitmap-add","arguments":{"node":"r0","name":"p","persistent":true}}'
err "Dirty bitmap 'nope' not found" '{"execute":"block-dirty-bitmap-clear","arguments":{"node":"d0","name":"nope"}}'
# the other bitmap commands (and a merge's external source) name a missing
# node as QEMU's block_dirty_bitmap_lookup does
for cmd in clear enable disable remove; do
    err "Node 'nope' not found" '{"execute":"block-dirty-bitmap-'$cmd'","arguments":{"node":"nope","name":"b0"}}'
done
err "Node 'nope' not found" '{"execute":"block-dirty-bitmap-merge","arguments":{"node":"nope","target":"b0","bitmaps":["big"]}}'
err "Node 'nope' not found" '{"execute":"block-dirty-bitmap-merge","arguments":{"node":"d0","target":"b0","bitmaps":[{"node":"nope","name":"big"}]}}'

# Writes through an export of d0.
ok '{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix","data":{"path":"'"$tmp/nbd"'"}}}}'
ok '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e0","node-name":"d0","name":"d0","writable":true}}'
qemu-io -f raw -c 'write -P 1 0 100K' -c 'write -P 2 10M 64K' \
    "nbd+unix:///d0?socket=$tmp/nbd" >/dev/null || fail "writes failed"
[ "$(count b0)" = $((128 * 1024 + 64 * 1024)) ] || fail "b0 count $(count b0)"
[ "$(count big)" = $((2 * 1024 * 1024)) ] || fail "big count $(count big)"
[ "$(count off)" = 0 ] || fail "a disabled bitmap counted writes"

# merge b0 into off (disabled target): off gets b0's bits.
ok '{"execute":"block-dirty-bitmap-merge","arguments":{"node":"d0","target":"off","bitmaps":["b0"]}}'
[ "$(count off)" = "$(count b0)" ] || fail "merge: off $(count off)"
# A transaction whose last action fails undoes the clear and the add.
err "Transaction aborted using Abort action" '{"execute":"transaction","arguments":{"actions":[{"type":"block-dirty-bitmap-clear","data":{"node":"d0","name":"b0"}},{"type":"block-dirty-bitmap-add","data":{"node":"d0","name":"new"}},{"type":"abort","data":{}}]}}'
[ "$(count b0)" = $((192 * 1024)) ] || fail "aborted clear lost bits: $(count b0)"
[ -z "$(count new)" ] || fail "aborted add left bitmap 'new'"
# disable b0: a write is not recorded; enable: it is.
ok '{"execute":"block-dirty-bitmap-disable","arguments":{"node":"d0","name":"b0"}}'
qemu-io -f raw -c 'write -P 3 20M 64K' "nbd+unix:///d0?socket=$tmp/nbd" >/dev/null
[ "$(count b0)" = $((192 * 1024)) ] || fail "disabled b0 recorded a write"
ok '{"execute":"block-dirty-bitmap-enable","arguments":{"node":"d0","name":"b0"}}'
qemu-io -f raw -c 'write -P 3 30M 4K' "nbd+unix:///d0?socket=$tmp/nbd" >/dev/null
[ "$(count b0)" = $((256 * 1024)) ] || fail "enabled b0 missed a write"
# clear in a transaction that succeeds.
ok '{"execute":"transaction","arguments":{"actions":[{"type":"block-dirty-bitmap-clear","data":{"node":"d0","name":"big"}}]}}'
[ "$(count big)" = 0 ] || fail "clear left bits"

# An exported bitmap is busy.
err "Bitmap 'nope' is not found" '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e1","node-name":"d0","name":"pit","bitmaps":["nope"]}}'
ok '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e1","node-name":"d0","name":"pit","bitmaps":["off"]}}'
nbdinfo --map=qemu:dirty-bitmap:off "nbd+unix:///pit?socket=$tmp/nbd" >"$tmp/offmap" ||
    fail "cannot map the exported bitmap"
[ "$(grep -c dirty "$tmp/offmap")" -eq 2 ] || fail "off map: $(cat "$tmp/offmap")"
err "in use by another operation" '{"execute":"block-dirty-bitmap-remove","arguments":{"node":"d0","name":"off"}}'
ok '{"execute":"block-export-del","arguments":{"id":"e1"}}'
sleep 0.3
ok '{"execute":"block-dirty-bitmap-remove","arguments":{"node":"d0","name":"off"}}'

# Persistent b0 is stored when the node goes; qemu-nbd reads it.
qemu-io -f raw -c 'write -P 4 40M 4K' "nbd+unix:///d0?socket=$tmp/nbd" >/dev/null
ok '{"execute":"block-export-del","arguments":{"id":"e0"}}'
sleep 0.3
ok '{"execute":"blockdev-del","arguments":{"node-name":"d0"}}'
qemu-img check -q "$img" || fail "qemu-img check after blockdev-del"
qemu-img info "$img" | grep -q "name: b0" || fail "b0 not stored"
qemu-img info "$img" | grep -q "name: big" && fail "non-persistent 'big' stored"
start_qemu_nbd "$tmp/q.sock" "$tmp/q.pid" "$img" -f qcow2 -B b0
nbdinfo --map=qemu:dirty-bitmap:b0 "$(uri "$tmp/q.sock")" >"$tmp/map"
grep -Eq '^ *41943040 +65536 +1 +dirty' "$tmp/map" ||
    fail "qemu-nbd does not see the last write in b0: $(cat "$tmp/map")"
# 0, 10M, 30M, 40M: not 20M, written while b0 was disabled.
[ "$(grep -c dirty "$tmp/map")" -eq 4 ] || fail "b0 map: $(cat "$tmp/map")"
