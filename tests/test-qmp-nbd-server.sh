#!/usr/bin/env bash
# nbd-server-start and the export commands check their arguments as QEMU
# does (compared with qemu-storage-daemon when it is installed).  tls-creds
# names an --object, and then only TLS clients get in (no longer once the
# server restarts without it); max-connections=N serves at most N clients at
# once, the next one waits until one leaves; a socket path that cannot be
# bound is an error that leaves the server stopped.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"
source "$srcdir/tls-functions.sh"
requires nbdinfo nbdsh

mkdir "$tmp/psk"
tls_psk_file "$tmp/psk/keys.psk" alice
sock=$tmp/qmp
nbd=$tmp/nbd
start_qmp "$sock" "$tmp/pid" \
    --object "tls-creds-psk,id=tls0,endpoint=server,dir=$tmp/psk"
start_nbd() {
    echo '{"execute": "nbd-server-start", "arguments": {"addr": {"type": "unix", "data": {"path": "'"$nbd"'"}}'"$1"'}}'
}
export_it='{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e0", "node-name": "n0"}}'
qmp "$sock" '{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n0", "size": 1048576}}' >/dev/null

# --- argument errors, as QEMU words them --------------------------------------
start_args() {
    echo '{"execute": "nbd-server-start", "arguments": '"$1"'}'
}
errors=(
    "$(start_args '{}')"
    "$(start_args '{"addr": {"type": "unix"}}')"
    "$(start_args '{"addr": {"type": "unix", "data": {}}}')"
    "$(start_args '{"addr": {"type": "unix", "data": {"path": 3}}}')"
    "$(start_args '{"addr": {"type": "inet", "data": {"host": "127.0.0.1"}}}')"
    "$(start_args '{"addr": {"data": {"host": "127.0.0.1"}}}')"
    "$(start_args '{"addr": {"type": "udp"}}')"
    "$(start_args '{"addr": {"type": "unix", "data": {"path": "'"$nbd"'"}}, "max-connections": -1}')"
    "$(start_args '{"addr": {"type": "unix", "data": {"path": "'"$nbd"'"}}, "tls-creds": 1}')"
    "$(start_args '{"addr": {"type": "unix", "data": {"path": "'"$nbd"'"}}, "x": 1}')"
    '{"execute": "nbd-server-stop"}'
    '{"execute": "block-export-del", "arguments": {"id": "e0", "mode": "x"}}'
    '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "0e", "node-name": "n0"}}'
    '{"execute": "block-export-add", "arguments": {"type": "nbd", "node-name": "n0"}}'
)
qmp "$sock" "${errors[@]}" >"$tmp/errors" || fail "argument errors"
cat >"$tmp/expected" <<'END'
{"error": {"class": "GenericError", "desc": "Parameter 'addr' is missing"}}
{"error": {"class": "GenericError", "desc": "Parameter 'addr.data' is missing"}}
{"error": {"class": "GenericError", "desc": "Parameter 'addr.data.path' is missing"}}
{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'addr.data.path', expected: string"}}
{"error": {"class": "GenericError", "desc": "Parameter 'addr.data.port' is missing"}}
{"error": {"class": "GenericError", "desc": "Parameter 'addr.type' is missing"}}
{"error": {"class": "GenericError", "desc": "Parameter 'type' does not accept value 'udp'"}}
{"error": {"class": "GenericError", "desc": "Parameter 'max-connections' expects uint32_t"}}
{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'tls-creds', expected: string"}}
{"error": {"class": "GenericError", "desc": "Parameter 'x' is unexpected"}}
{"error": {"class": "GenericError", "desc": "NBD server not running"}}
{"error": {"class": "GenericError", "desc": "Parameter 'mode' does not accept value 'x'"}}
{"error": {"class": "GenericError", "desc": "Invalid block export id"}}
{"error": {"class": "GenericError", "desc": "Parameter 'id' is missing"}}
END
diff -u "$tmp/expected" "$tmp/errors" || fail "nbd-server-start errors"
if start_qsd "$tmp/qsd"; then
    qmp "$tmp/qsd" "${errors[@]}" >"$tmp/qsd-errors" || fail "qsd"
    diff -u "$tmp/qsd-errors" "$tmp/errors" ||
        fail "errors differ from qemu-storage-daemon's"
fi
[ ! -e "$nbd" ] || fail "a failed start left a socket"

# A path that names a file which is not a socket: refused, the file kept
# (QEMU would unlink it first; an image there would be gone).
echo keep >"$tmp/not-a-socket"
out=$(qmp "$sock" '{"execute": "nbd-server-start", "arguments": {"addr": {"type": "unix", "data": {"path": "'"$tmp/not-a-socket"'"}}}}')
grep -q '"error"' <<<"$out" || fail "nbd-server-start over a regular file: $out"
[ "$(cat "$tmp/not-a-socket")" = keep ] || fail "nbd-server-start removed a regular file"

# --- TLS ------------------------------------------------------------------------
out=$(qmp "$sock" "$(start_nbd ', "tls-creds": "nope"')")
grep -Fq "No TLS credentials with id 'nope'" <<<"$out" || fail "unknown creds: $out"
[ ! -e "$nbd" ] || fail "a failed start left a socket"
out=$(qmp "$sock" "$(start_nbd ', "tls-creds": "tls0"')" "$export_it")
[ "$(grep -c '^{"return": {}}$' <<<"$out")" = 2 ] || fail "TLS start: $out"
timeout 10 nbdinfo --is tls \
    "nbds+unix://alice@/n0?socket=$nbd&tls-psk-file=$tmp/psk/keys.psk" ||
    fail "a TLS client was refused"
timeout 10 nbdinfo "$(uri "$nbd" n0)" >"$tmp/out" 2>&1 &&
    fail "a plain client was let in"
qmp "$sock" '{"execute": "nbd-server-stop"}' >/dev/null
qmp "$sock" "$(start_nbd '')" "$export_it" >/dev/null
timeout 10 nbdinfo --size "$(uri "$nbd" n0)" >/dev/null ||
    fail "TLS still required after a restart without tls-creds"
qmp "$sock" '{"execute": "nbd-server-stop"}' >/dev/null

# --- max-connections --------------------------------------------------------------
qmp "$sock" "$(start_nbd ', "max-connections": 1')" "$export_it" >/dev/null
nbdsh -u "$(uri "$nbd" n0)" -c "open('$tmp/first', 'w').close()" \
    -c 'import time; time.sleep(2)' &
first=$!
for i in $(seq 100); do
    [ -e "$tmp/first" ] && break
    sleep 0.05
done
start=$(date +%s%N)
timeout 20 nbdinfo --size "$(uri "$nbd" n0)" >/dev/null || fail "second client"
waited=$(( ($(date +%s%N) - start) / 1000000 ))
wait $first || fail "first client"
[ "$waited" -ge 1000 ] ||
    fail "the second client was served beside the first (after ${waited} ms)"
qmp "$sock" '{"execute": "nbd-server-stop"}' >/dev/null

# --- a socket that cannot be bound ---------------------------------------------------
out=$(qmp "$sock" '{"execute": "nbd-server-start", "arguments": {"addr": {"type": "unix", "data": {"path": "'"$tmp/no/such/dir/sock"'"}}}}' \
    "$export_it")
grep -Fq "Failed to bind socket to $tmp/no/such/dir/sock: No such file or directory" <<<"$out" ||
    fail "bind error: $out"
grep -Fq "NBD server not running" <<<"$out" || fail "server running after a failed start: $out"
