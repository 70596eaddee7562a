#!/usr/bin/env bash
# The control socket's session rules, as QEMU's: the greeting, commands
# refused until qmp_capabilities, a second qmp_capabilities refused, ids
# echoed whatever their type, query-version and query-commands; several
# clients at once, each negotiating for itself, events only to negotiated
# clients; and quit: the reply, then the process exits 0 and removes its
# sockets.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"

sock=$tmp/qmp
start_qmp "$sock" "$tmp/pid"
pid=$(cat "$tmp/pid")

# --- greeting and negotiation ---------------------------------------------
"$PYTHON" "$QMP_PY" --raw --greeting "$sock" \
    '{"execute": "query-version", "id": 1}' \
    '{"execute": "qmp_capabilities", "id": "two"}' \
    '{"execute": "query-version", "id": [3]}' \
    '{"execute": "qmp_capabilities", "id": 4}' >"$tmp/out" ||
    fail "qmp.py failed"
"$PYTHON" - "$tmp/out" <<'PY' || fail "greeting or version: $(cat "$tmp/out")"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
g = lines[0]["QMP"]
assert g["capabilities"] == [], g
v = g["version"]
assert set(v) == {"qemu", "package"} and set(v["qemu"]) == {"major", "minor", "micro"}, v
assert all(isinstance(x, int) for x in v["qemu"].values()), v
assert lines[3] == {"return": v, "id": [3]}, lines[3]
assert len(lines) == 5, lines
PY
grep -Fxq '{"id": 1, "error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with '"'qmp_capabilities'"'"}}' "$tmp/out" ||
    fail "a command before qmp_capabilities was not refused: $(cat "$tmp/out")"
grep -Fxq '{"return": {}, "id": "two"}' "$tmp/out" ||
    fail "qmp_capabilities failed: $(cat "$tmp/out")"
grep -Fxq '{"id": 4, "error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already complete, command ignored"}}' "$tmp/out" ||
    fail "a second qmp_capabilities was not refused: $(cat "$tmp/out")"

# --- query-commands lists what the socket serves ----------------------------
qmp "$sock" '{"execute": "query-commands"}' >"$tmp/out" || fail "query-commands"
for c in qmp_capabilities query-version query-commands quit transaction \
         blockdev-add blockdev-del query-named-block-nodes nbd-server-start \
         nbd-server-stop block-export-add block-export-del \
         query-block-exports; do
    grep -Fq "{\"name\": \"$c\"}" "$tmp/out" || fail "query-commands lacks $c"
done

# --- several clients; events go to negotiated clients only ----------------
# A negotiates and waits for the event; B connects and never negotiates.
qmp "$sock" '{"execute": "query-version"}' \
    --wait-event BLOCK_EXPORT_DELETED >"$tmp/a" 2>&1 &
a=$!
"$PYTHON" "$QMP_PY" --raw --quiet 3 "$sock" >"$tmp/b" 2>&1 &
b=$!
for i in $(seq 100); do
    grep -q return "$tmp/a" && break
    sleep 0.05
done
qmp "$sock" \
    '{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n0", "size": 1048576}}' \
    '{"execute": "nbd-server-start", "arguments": {"addr": {"type": "unix", "data": {"path": "'"$tmp/nbd"'"}}}}' \
    '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e0", "node-name": "n0"}}' \
    '{"execute": "block-export-del", "arguments": {"id": "e0"}}' >"$tmp/c" ||
    fail "client C: $(cat "$tmp/c")"
grep -q '"event": "BLOCK_EXPORT_DELETED", "data": {"id": "e0"}' "$tmp/c" ||
    fail "the client that deleted the export got no event: $(cat "$tmp/c")"
wait $a || fail "client A got no event: $(cat "$tmp/a")"
grep -q '"timestamp": {"seconds": [0-9]*, "microseconds": [0-9]*}, "event": "BLOCK_EXPORT_DELETED"' "$tmp/a" ||
    fail "event shape: $(cat "$tmp/a")"
wait $b
[ ! -s "$tmp/b" ] || fail "a client that did not negotiate got: $(cat "$tmp/b")"

# --- quit --------------------------------------------------------------------
qmp "$sock" '{"execute": "quit", "id": 9}' >"$tmp/out" || fail "quit"
grep -Fxq '{"return": {}, "id": 9}' "$tmp/out" || fail "quit reply: $(cat "$tmp/out")"
for i in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
done
kill -0 "$pid" 2>/dev/null && fail "still running after quit"
wait "$pid" || fail "exit status $? after quit"
[ ! -e "$sock" ] || fail "QMP socket left behind"
[ ! -e "$tmp/nbd" ] || fail "NBD socket left behind"
[ ! -e "$tmp/pid" ] || fail "pid file left behind"
