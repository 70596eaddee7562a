#!/usr/bin/env bash
# iothread objects are host threads ("IO <id>", as QEMU names them) that
# query-iothreads lists with their thread ids and poll properties; pinned
# to a CPU (taskset, as libvirt's iothreadpin does), they take the
# connections of an export bound to them (block-export-add iothread=):
# every thread a new connection to that export starts runs on that CPU,
# while a connection to an unbound export keeps the whole set.  object-del
# stops the thread; the connection it placed keeps serving.  x-iothreads
# (snapnbd's) spreads an export's connections over several, in turn.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"
source "$srcdir/backup-functions.sh"
requires taskset
requires_libnbd_python
[ "$(nproc)" -ge 2 ] || { echo "$0: skipped: needs 2 CPUs"; exit 77; }

truncate -s 4M "$tmp/disk.raw"
start_qmp "$tmp/qmp.sock" "$tmp/pid" \
    --object iothread,id=io0,poll-max-ns=100 --object iothread,id=io1
pid=$(cat "$tmp/pid")

field() { # field JSON-LINE EXPR: a python expression over the reply r
    "$PYTHON" -c 'import json, sys; r = json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"
}
iothreads=$(qmp "$tmp/qmp.sock" '{"execute": "query-iothreads"}')
[ "$(field "$iothreads" 'len(r["return"])')" = 2 ] || fail "query-iothreads: $iothreads"
[ "$(field "$iothreads" 'r["return"][0]["id"]')" = io0 ] || fail "order: $iothreads"
[ "$(field "$iothreads" 'r["return"][0]["poll-max-ns"]')" = 100 ] || fail "poll-max-ns: $iothreads"
tid0=$(field "$iothreads" 'r["return"][0]["thread-id"]')
tid1=$(field "$iothreads" 'r["return"][1]["thread-id"]')
name=$(thread_attr "$pid" "$tid0" name)
[ "$name" = "IO io0" ] || fail "thread $tid0 is not 'IO io0': $name"

taskset -p -c 1 "$tid0" >/dev/null || fail "cannot pin the iothread"
qmp "$tmp/qmp.sock" \
    '{"execute": "blockdev-add", "arguments": {"driver": "raw", "node-name": "d", "file": {"driver": "file", "filename": "'"$tmp/disk.raw"'"}}}' \
    '{"execute": "nbd-server-start", "arguments": {"addr": {"type": "unix", "data": {"path": "'"$tmp/nbd.sock"'"}}}}' \
    '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e0", "node-name": "d", "name": "bound", "iothread": "io0", "writable": true}}' \
    '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e1", "node-name": "d", "name": "free"}}' \
    >"$tmp/setup.out"
! grep -q error "$tmp/setup.out" || fail "setup: $(cat "$tmp/setup.out")"

tasks() { thread_ids "$pid"; }
cpus_of_new() { # cpus_of_new BEFORE-FILE: Cpus_allowed_list of new threads
    new_thread_attrs "$pid" "$1" cpus
}
# hold EXPORT READY-FILE STOP-FILE: a client connected until STOP-FILE
hold() {
    "$PYTHON" - "$(uri "$tmp/nbd.sock" "$1")" "$2" "$3" <<'EOP' &
import nbd, os, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(64):   # enough requests that every worker has started
    h.pread(4096, i * 4096)
open(sys.argv[2], "w").close()
while not os.path.exists(sys.argv[3]):
    time.sleep(0.02)
assert h.pread(512, 0) == bytes(512)
h.shutdown()
EOP
}
wait_file() {
    for _ in $(seq 200); do [ -e "$1" ] && return 0; sleep 0.05; done
    fail "$2"
}

tasks >"$tmp/before0"
hold bound "$tmp/b.ready" "$tmp/b.stop"; b=$!
wait_file "$tmp/b.ready" "the client of the bound export did not connect"
got=$(cpus_of_new "$tmp/before0")
[ "$got" = 1 ] || fail "threads of a connection to the bound export run on '$got', not CPU 1"

tasks >"$tmp/before1"
hold free "$tmp/f.ready" "$tmp/f.stop"; f=$!
wait_file "$tmp/f.ready" "the client of the unbound export did not connect"
all=$(thread_attr "$pid" "$pid" cpus)
got=$(cpus_of_new "$tmp/before1")
[ "$got" = "$all" ] || fail "an unbound export's connection runs on '$got', not '$all'"

# x-iothreads (snapnbd): connections take the listed iothreads in turn.
taskset -p -c 0 "$tid1" >/dev/null || fail "cannot pin io1"
qmp "$tmp/qmp.sock" \
    '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e2", "node-name": "d", "name": "spread", "x-iothreads": ["io0", "io1"]}}' \
    '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e3", "node-name": "d", "name": "both", "iothread": "io0", "x-iothreads": ["io1"]}}' \
    '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e4", "node-name": "d", "name": "nope", "x-iothreads": ["io1", "io9"]}}' \
    >"$tmp/spread.out"
[ "$(sed -n 1p "$tmp/spread.out")" = '{"return": {}}' ] ||
    fail "x-iothreads refused: $(cat "$tmp/spread.out")"
grep -q '"desc": "iothread and x-iothreads cannot be used together"' "$tmp/spread.out" ||
    fail "iothread with x-iothreads: $(cat "$tmp/spread.out")"
grep -q '"desc": "iothread \\"io9\\" not found"' "$tmp/spread.out" ||
    fail "an unknown iothread in x-iothreads: $(cat "$tmp/spread.out")"
for turn in 1 0 1; do
    rm -f "$tmp/s.ready" "$tmp/s.stop"
    tasks >"$tmp/before-s"
    hold spread "$tmp/s.ready" "$tmp/s.stop"; s=$!
    wait_file "$tmp/s.ready" "a client of the spread export did not connect"
    got=$(cpus_of_new "$tmp/before-s")
    [ "$got" = "$turn" ] || fail "x-iothreads: a connection runs on '$got', not CPU $turn"
    touch "$tmp/s.stop"
    wait "$s" || fail "a client of the spread export failed"
done

qmp "$tmp/qmp.sock" '{"execute": "object-del", "arguments": {"id": "io0"}}' \
    '{"execute": "query-iothreads"}' >"$tmp/del.out"
grep -q '"id": "io0"' "$tmp/del.out" && fail "io0 still listed: $(cat "$tmp/del.out")"
grep -q '"id": "io1"' "$tmp/del.out" || fail "io1 gone: $(cat "$tmp/del.out")"
[ ! -e "/proc/$pid/task/$tid0" ] || fail "the thread of io0 still runs"
touch "$tmp/b.stop" "$tmp/f.stop"
wait "$b" || fail "the bound export's client failed after object-del"
wait "$f" || fail "the unbound export's client failed"

# A bound export whose iothread is gone serves new clients where they are.
nbdinfo --size "$(uri "$tmp/nbd.sock" bound)" >/dev/null ||
    fail "the bound export refused a client after its iothread went"
echo "$0: ok"
