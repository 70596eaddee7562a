#!/usr/bin/env bash
# query-qmp-schema (server/qmp-schema.json, generated into C at build
# time) and the dispatcher's checks made with it:
#  - the introspection is valid: every type it names is defined, unions
#    have a branch per tag value, and its commands are exactly those of
#    query-commands;
#  - every argument the schema lists for a command is accepted (arguments
#    built from the schema, every member filled, each union branch);
#  - bad arguments (wrong type, unknown, missing, bad enum value, nested in
#    structs, unions, lists and transaction actions) get QEMU's class and
#    text, compared with qemu-storage-daemon 7.2 when it is installed;
#  - the query commands' replies and the events are what the schema
#    declares for them;
#  - the commands and events qemu-storage-daemon also has are typed as in
#    its introspection (a subset of its members, branches and values, save
#    snapnbd's additions).
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"

start_qmp "$tmp/qmp" "$tmp/pid"
qsd=()
if start_qsd "$tmp/qsd"; then
    qsd=("$tmp/qsd")
fi
(cd "$tmp" && "$PYTHON" "$srcdir/qmp_schema.py" "$tmp/qmp" "${qsd[@]}") ||
    fail "query-qmp-schema checks failed"
kill -0 "$(cat "$tmp/pid")" || fail "snapnbd died"
