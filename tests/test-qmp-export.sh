#!/usr/bin/env bash
# Exporting over QMP, as with qemu-storage-daemon: blockdev-add (raw over
# file) + nbd-server-start + block-export-add, then real clients read and
# write through the export (nbdinfo, qemu-img, nbdsh) and the bytes land in
# the file.  blockdev-del is refused while the node is exported;
# block-export-del then emits BLOCK_EXPORT_DELETED and blockdev-del works.
# mode=safe refuses while a client is connected, mode=hard cuts it; the
# export shows shutting-down until its last client has gone; nbd-server-stop
# ends every export.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"
requires nbdinfo nbdsh qemu-img qemu-io

img=$tmp/disk.img
truncate -s 16M "$img"
qemu-io -f raw -c 'write -P 0x11 0 1M' "$img" >/dev/null
sock=$tmp/qmp
nbd=$tmp/nbd
start_qmp "$sock" "$tmp/pid"

ok() { grep -Fxq '{"return": {}}' <<<"$1" || fail "expected success: $1"; }
err() {
    grep -Fq "\"desc\": \"$2\"" <<<"$1" || fail "expected error '$2': $1"
}

ok "$(qmp "$sock" '{"execute": "blockdev-add", "arguments": {"driver": "raw", "node-name": "disk", "file": {"driver": "file", "filename": "'"$img"'"}}}')"
err "$(qmp "$sock" '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e0", "node-name": "disk"}}')" \
    "NBD server not running"
ok "$(qmp "$sock" '{"execute": "nbd-server-start", "arguments": {"addr": {"type": "unix", "data": {"path": "'"$nbd"'"}}}}')"
err "$(qmp "$sock" '{"execute": "nbd-server-start", "arguments": {"addr": {"type": "unix", "data": {"path": "'"$nbd"'"}}}}')" \
    "NBD server already running"
ok "$(qmp "$sock" '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e0", "node-name": "disk", "writable": true, "description": "the disk"}}')"
err "$(qmp "$sock" '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e0", "node-name": "disk", "name": "other"}}')" \
    "Block export id 'e0' is already in use"
err "$(qmp "$sock" '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e1", "node-name": "disk"}}')" \
    "NBD server already has export named 'disk'"
err "$(qmp "$sock" '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e1", "node-name": "nonode"}}')" \
    "Cannot find device='' nor node-name='nonode'"
err "$(qmp "$sock" '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e1", "node-name": "disk", "name": "ro", "bitmaps": ["b0"]}}')" \
    "Bitmap 'b0' is not found"
ok "$(qmp "$sock" '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e1", "node-name": "disk", "name": "ro"}}')"
out=$(qmp "$sock" '{"execute": "query-block-exports"}')
[ "$out" = '{"return": [{"node-name": "disk", "shutting-down": false, "type": "nbd", "id": "e1"}, {"node-name": "disk", "shutting-down": false, "type": "nbd", "id": "e0"}]}' ] ||
    fail "query-block-exports: $out"

# --- clients ------------------------------------------------------------------
nbdinfo --list "$(uri "$nbd")" >"$tmp/list" || fail "nbdinfo --list"
grep -q 'export="disk"' "$tmp/list" && grep -q 'export="ro"' "$tmp/list" &&
    grep -q 'description: the disk' "$tmp/list" || fail "exports: $(cat "$tmp/list")"
[ "$(nbdinfo --size "$(uri "$nbd" disk)")" = 16777216 ] || fail "size"
nbdsh -u "$(uri "$nbd" ro)" -c 'assert h.is_read_only()' ||
    fail "export ro is not read-only"
qemu-io -f raw -c 'read -P 0x11 0 1M' -c 'write -P 0x22 2M 64k' \
    "$(uri "$nbd" disk)" >"$tmp/io" || fail "qemu-io: $(cat "$tmp/io")"
grep -q 'Pattern verification failed' "$tmp/io" && fail "read through the export"
nbdsh -u "$(uri "$nbd" disk)" -c 'h.pwrite(b"\x33" * 4096, 8 << 20)' -c 'h.flush()' ||
    fail "nbdsh write"
qemu-io -f raw -c 'read -P 0x22 2M 64k' -c 'read -P 0x33 8M 4k' -c 'read -P 0 12M 4k' \
    "$img" >"$tmp/io" || fail "qemu-io on the file"
grep -q 'Pattern verification failed' "$tmp/io" && fail "writes did not land: $(cat "$tmp/io")"
qemu-img compare -f raw "$(uri "$nbd" ro)" "$img" >/dev/null ||
    fail "the read-only export differs from the file"

# --- deleting -------------------------------------------------------------------
err "$(qmp "$sock" '{"execute": "blockdev-del", "arguments": {"node-name": "disk"}}')" \
    "Node disk is in use"
out=$(qmp "$sock" '{"execute": "block-export-del", "arguments": {"id": "e1"}}')
grep -q '"event": "BLOCK_EXPORT_DELETED", "data": {"id": "e1"}' <<<"$out" ||
    fail "no BLOCK_EXPORT_DELETED: $out"
err "$(qmp "$sock" '{"execute": "block-export-del", "arguments": {"id": "e1"}}')" \
    "Export 'e1' is not found"

# A connected client: safe refuses, hard cuts it, the event follows.
nbdsh -u "$(uri "$nbd" disk)" -c "open('$tmp/connected', 'w').close()" \
    -c 'import time' \
    -c 'for i in range(300): h.pread(512, 0); time.sleep(0.1)' 2>/dev/null &
client=$!
for i in $(seq 200); do
    [ -e "$tmp/connected" ] && break
    sleep 0.05
done
err "$(qmp "$sock" '{"execute": "block-export-del", "arguments": {"id": "e0", "mode": "safe"}}')" \
    "export 'e0' still in use"
err "$(qmp "$sock" '{"execute": "blockdev-del", "arguments": {"node-name": "disk"}}')" \
    "Node disk is in use"
out=$(qmp "$sock" '{"execute": "block-export-del", "arguments": {"id": "e0", "mode": "hard"}}' \
          '{"execute": "query-block-exports"}' --wait-event BLOCK_EXPORT_DELETED \
          '{"execute": "query-block-exports"}') || fail "hard delete: $out"
grep -Fq '"shutting-down": true' <<<"$out" || grep -Fq '"event": "BLOCK_EXPORT_DELETED", "data": {"id": "e0"}}
{"return": []}' <<<"$out" || fail "export state while shutting down: $out"
[ "$(tail -1 <<<"$out")" = '{"return": []}' ] || fail "export left: $out"
wait $client && fail "the client was not cut"
ok "$(qmp "$sock" '{"execute": "blockdev-del", "arguments": {"node-name": "disk"}}')"
out=$(qmp "$sock" '{"execute": "query-named-block-nodes"}')
[ "$out" = '{"return": []}' ] || fail "nodes left: $out"

# --- nbd-server-stop ends the exports -----------------------------------------
ok "$(qmp "$sock" '{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n0"}}')"
ok "$(qmp "$sock" '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e2", "node-name": "n0"}}')"
out=$(qmp "$sock" '{"execute": "nbd-server-stop"}' '{"execute": "query-block-exports"}')
grep -q '"event": "BLOCK_EXPORT_DELETED", "data": {"id": "e2"}' <<<"$out" ||
    fail "nbd-server-stop: $out"
[ "$(tail -1 <<<"$out")" = '{"return": []}' ] || fail "exports left: $out"
[ ! -e "$nbd" ] || fail "NBD socket left behind"
err "$(qmp "$sock" '{"execute": "nbd-server-stop"}')" "NBD server not running"
# and it starts again, on TCP this time
ok "$(qmp "$sock" '{"execute": "nbd-server-start", "arguments": {"addr": {"type": "inet", "data": {"host": "127.0.0.1", "port": "0"}}}}')"
