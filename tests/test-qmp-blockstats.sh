#!/usr/bin/env bash
# query-blockstats counts, per node, the requests that reach it (reads,
# writes and write-zeroes, discards as unmap, flushes; bytes, operations,
# wr_highest_offset; latency only where requests enter the graph), with
# the image file's stats as "parent" and the file
# driver's discard counts as "driver-specific"; without query-nodes the
# list is empty (a storage daemon has no devices).  x-debug-query-block-graph
# lists the nodes, the users (an export's unnamed block backend) and the
# edges with their permissions.  When qemu-storage-daemon is installed, the
# same graph must come out of it, and its query-blockstats must have the
# same shape (QEMU 7.2 counts nothing per node: only the members compare).
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"
requires qemu-img qemu-io

setup() { # DIR
    echo '{"execute": "blockdev-add", "arguments": {"driver": "qcow2", "node-name": "q0", "file": {"driver": "file", "node-name": "q0-f", "filename": "'"$1/d.qcow2"'"}}}'
    echo '{"execute": "nbd-server-start", "arguments": {"addr": {"type": "unix", "data": {"path": "'"$1/nbd"'"}}}}'
    echo '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e0", "node-name": "q0", "writable": true}}'
}
queries() {
    echo '{"execute": "query-blockstats"}'
    echo '{"execute": "query-blockstats", "arguments": {"query-nodes": true}}'
    echo '{"execute": "x-debug-query-block-graph"}'
}
run() { # QMP DIR OUT
    local m
    mkdir -p "$2"
    qemu-img create -q -f qcow2 "$2/d.qcow2" 4M
    mapfile -t m < <(setup "$2")
    qmp "$1" "${m[@]}" >/dev/null || fail "setup failed"
    qemu-io -f raw -c 'write -P 1 0 1M' -c 'read 0 64k' -c 'read 64k 4k' \
        -c 'flush' -c 'discard 1M 64k' "nbd+unix:///q0?socket=$2/nbd" \
        >/dev/null || fail "I/O over NBD failed"
    mapfile -t m < <(queries)
    qmp "$1" "${m[@]}" | grep -v '"event"' >"$3" || fail "queries failed"
}

start_qmp "$tmp/s.qmp" "$tmp/s.pid"
run "$tmp/s.qmp" "$tmp/s" "$tmp/s.out"

$PYTHON - "$tmp/s.out" <<'END' || fail "snapnbd's counters are wrong"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert lines[0] == {"return": []}, lines[0]
nodes = {n["node-name"]: n for n in lines[1]["return"]}
q0 = nodes["q0"]
st = q0["stats"]
want = {"wr_bytes": 1 << 20, "wr_operations": 1, "rd_bytes": 69632,
        "rd_operations": 2, "unmap_operations": 1, "unmap_bytes": 65536,
        "wr_highest_offset": 1 << 20, "failed_wr_operations": 0,
        "invalid_rd_operations": 0}
for k, v in want.items():
    assert st[k] == v, f"q0 {k} = {st[k]}, expected {v}"
assert st["flush_operations"] >= 1, st
assert q0["parent"]["node-name"] == "q0-f", q0
f = nodes["q0-f"]
assert f["stats"]["wr_bytes"] >= 1 << 20, f
assert f["stats"]["wr_operations"] >= 1, f
assert f["driver-specific"]["driver"] == "file", f
assert "parent" not in f, f
# latency is kept where requests enter the graph, not in the nodes below
assert st["wr_total_time_ns"] > 0 and st["rd_total_time_ns"] > 0, st
# (the file's reads at open are the monitor's own: those are timed)
assert f["stats"]["wr_total_time_ns"] == 0, f
END

# The same graph and the same shape in qemu-storage-daemon.
shape() { # OUT
    $PYTHON - "$1" <<'END'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
print(json.dumps(lines[0]))
def keys(o):
    return {k: keys(v) if isinstance(v, dict) else type(v).__name__
            for k, v in o.items()}
for n in sorted(lines[1]["return"], key=lambda n: n["node-name"]):
    print(json.dumps(keys(n), sort_keys=True))
g = lines[2]["return"]
names = {n["id"]: (n["type"], n["name"]) for n in g["nodes"]}
print(sorted(names.values()))
for e in sorted((names[e["parent"]], names[e["child"]], e["name"],
                 e["perm"], e["shared-perm"]) for e in g["edges"]):
    print(json.dumps(e))
END
}
shape "$tmp/s.out" >"$tmp/s.shape" || fail "unexpected answers"
if start_qsd "$tmp/q.qmp"; then
    run "$tmp/q.qmp" "$tmp/q" "$tmp/q.out"
    shape "$tmp/q.out" >"$tmp/q.shape" || fail "qsd: unexpected answers"
    diff -u "$tmp/q.shape" "$tmp/s.shape" ||
        fail "snapnbd and qemu-storage-daemon differ"
fi
exit 0
