#!/usr/bin/env bash
# transaction is all or nothing: the action list is checked whole before
# anything is prepared (an unknown action type, a malformed action), and
# when one action's prepare fails (QEMU's "abort" action, or a backup of a
# missing node) the actions already prepared are undone: no job is left,
# the nodes can be deleted.  When every action prepares, all commit.
# Structural errors have QEMU's messages (compared with qemu-storage-daemon
# when it is installed).
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"

truncate -s 4M "$tmp/src.img" "$tmp/src2.img" "$tmp/tgt.img" "$tmp/tgt2.img"
sock=$tmp/qmp
start_qmp "$sock" "$tmp/pid"

tx() { echo '{"execute": "transaction", "arguments": {"actions": ['"$1"']}}'; }
backup() {
    echo '{"type": "blockdev-backup", "data": {"job-id": "'"$1"'", "device": "'"$2"'", "target": "'"$3"'", "sync": "none"}}'
}
add_raw() {
    echo '{"execute": "blockdev-add", "arguments": {"driver": "raw", "node-name": "'"$1"'", "file": {"driver": "file", "filename": "'"$2"'"}}}'
}

# --- structure: QEMU's messages ---------------------------------------------
structure=(
    '{"execute": "transaction"}'
    '{"execute": "transaction", "arguments": {"actions": 3}}'
    "$(tx '3')"
    "$(tx '{"data": {}}')"
    "$(tx '{"type": "abort"}')"
    "$(tx '{"type": "no-such-action", "data": {}}')"
    "$(tx '{"type": "abort", "data": {}, "x": 2}')"
    "$(tx '{"type": "abort", "data": {"x": 1}}')"
    "$(tx '{"type": "abort", "data": {}}')"
    '{"execute": "transaction", "arguments": {"actions": [{"type": "abort", "data": {}}], "properties": {"completion-mode": "grouped"}}}'
    '{"execute": "transaction", "arguments": {"actions": [], "properties": {"completion-mode": "sometimes"}}}'
    '{"execute": "transaction", "arguments": {"actions": [], "properties": {"completion-mode": 3}}}'
    '{"execute": "transaction", "arguments": {"actions": [], "properties": {"x": 1}}}'
    "$(tx '')"
)
qmp "$sock" "${structure[@]}" >"$tmp/out" || fail "structure"
cat >"$tmp/expected" <<'END'
{"error": {"class": "GenericError", "desc": "Parameter 'actions' is missing"}}
{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'actions', expected: array"}}
{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'actions[0]', expected: object"}}
{"error": {"class": "GenericError", "desc": "Parameter 'actions[0].type' is missing"}}
{"error": {"class": "GenericError", "desc": "Parameter 'actions[0].data' is missing"}}
{"error": {"class": "GenericError", "desc": "Parameter 'type' does not accept value 'no-such-action'"}}
{"error": {"class": "GenericError", "desc": "Parameter 'actions[0].x' is unexpected"}}
{"error": {"class": "GenericError", "desc": "Parameter 'actions[0].data.x' is unexpected"}}
{"error": {"class": "GenericError", "desc": "Transaction aborted using Abort action"}}
{"error": {"class": "GenericError", "desc": "Transaction aborted using Abort action"}}
{"error": {"class": "GenericError", "desc": "Parameter 'completion-mode' does not accept value 'sometimes'"}}
{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'properties.completion-mode', expected: string"}}
{"error": {"class": "GenericError", "desc": "Parameter 'properties.x' is unexpected"}}
{"return": {}}
END
diff -u "$tmp/expected" "$tmp/out" || fail "transaction errors"
if start_qsd "$tmp/qsd"; then
    qmp "$tmp/qsd" "${structure[@]}" >"$tmp/qsd.out" || fail "qsd"
    diff -u "$tmp/qsd.out" "$tmp/out" ||
        fail "transaction errors differ from qemu-storage-daemon's"
fi

# --- atomicity -------------------------------------------------------------
qmp "$sock" "$(add_raw src "$tmp/src.img")" "$(add_raw tgt "$tmp/tgt.img")" \
    "$(add_raw src2 "$tmp/src2.img")" "$(add_raw tgt2 "$tmp/tgt2.img")" \
    >"$tmp/out" || fail "blockdev-add"
jobs_now() {
    qmp "$sock" '{"execute": "query-jobs"}' | tail -1
}
no_jobs() {
    [ "$(jobs_now)" = '{"return": []}' ] || fail "$1: jobs left: $(jobs_now)"
}

# an unknown type after a valid action: nothing is prepared at all
out=$(qmp "$sock" "$(tx "$(backup j0 src tgt), {\"type\": \"no-such-action\", \"data\": {}}")")
grep -Fq "does not accept value 'no-such-action'" <<<"$out" || fail "unknown type: $out"
grep -q JOB_STATUS_CHANGE <<<"$out" && fail "a job was created before the list was checked: $out"
no_jobs "unknown type"

# a prepare that fails undoes the ones before it
out=$(qmp "$sock" "$(tx "$(backup j0 src tgt), {\"type\": \"abort\", \"data\": {}}")")
grep -Fq "Transaction aborted using Abort action" <<<"$out" || fail "abort: $out"
no_jobs "abort action"
out=$(qmp "$sock" "$(tx "$(backup j0 src tgt), $(backup j1 nonode tgt2)")")
grep -q '"error"' <<<"$out" || fail "backup of a missing node: $out"
no_jobs "failed second action"

# everything prepares: everything commits
out=$(qmp "$sock" "$(tx "$(backup j0 src tgt), $(backup j1 src2 tgt2)")")
grep -Fxq '{"return": {}}' <<<"$out" || fail "commit: $out"
now=$(jobs_now)
grep -q '"id": "j0"' <<<"$now" && grep -q '"id": "j1"' <<<"$now" ||
    fail "committed jobs: $now"
qmp "$sock" '{"execute": "job-cancel", "arguments": {"id": "j0"}}' \
    '{"execute": "job-cancel", "arguments": {"id": "j1"}}' \
    --wait-event BLOCK_JOB_CANCELLED --wait-event BLOCK_JOB_CANCELLED >/dev/null ||
    fail "cancel"
no_jobs "cancelled"
# nothing holds the nodes any more
out=$(qmp "$sock" '{"execute": "blockdev-del", "arguments": {"node-name": "tgt"}}' \
    '{"execute": "blockdev-del", "arguments": {"node-name": "tgt2"}}' \
    '{"execute": "blockdev-del", "arguments": {"node-name": "src"}}' \
    '{"execute": "blockdev-del", "arguments": {"node-name": "src2"}}')
[ "$(grep -c '^{"return": {}}$' <<<"$out")" = 4 ] || fail "nodes still held: $out"
