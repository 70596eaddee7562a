#!/usr/bin/env bash
# blockdev-add, blockdev-del and query-named-block-nodes as QEMU has them:
# a qcow2 overlay over a qcow2 backing node (by reference), raw over a file
# node, nested "file" objects; the node list with QEMU's members, the
# backing chain nested in "image" unless flat=true; schema errors (missing,
# unexpected, mistyped members, bad enum values, unknown references, bad
# node names) with QEMU's messages; blockdev-del refused for a backing node,
# a node another node uses, and a node the monitor did not add.  Where
# qemu-storage-daemon is installed, the same commands must give the same
# errors and the same node fields; and which nodes have a dirty-flag
# (over stdio, beside qemu-storage-daemon).
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"
requires qemu-img

qemu-img create -f qcow2 "$tmp/base.qcow2" 64M >/dev/null
qemu-img create -f qcow2 -b "$tmp/base.qcow2" -F qcow2 "$tmp/top.qcow2" >/dev/null
truncate -s 1M "$tmp/raw.img"
sock=$tmp/qmp
start_qmp "$sock" "$tmp/pid"

add() { echo '{"execute": "blockdev-add", "arguments": '"$1"'}'; }
graph=(
    "$(add '{"driver": "qcow2", "node-name": "base", "read-only": true, "file": {"driver": "file", "filename": "'"$tmp/base.qcow2"'"}}')"
    "$(add '{"driver": "qcow2", "node-name": "top", "read-only": true, "backing": "base", "file": {"driver": "file", "filename": "'"$tmp/top.qcow2"'"}}')"
    "$(add '{"driver": "file", "node-name": "f", "filename": "'"$tmp/raw.img"'", "read-only": true}')"
    "$(add '{"driver": "raw", "node-name": "r", "file": "f", "read-only": true, "detect-zeroes": "on", "cache": {"no-flush": true}}')"
)
errors=(
    "$(add '{"node-name": "x"}')"
    "$(add '{"driver": "nosuchdriver", "node-name": "x"}')"
    "$(add '{"driver": "raw", "node-name": "x"}')"
    "$(add '{"driver": "raw", "node-name": "x", "file": {"filename": "/dev/null"}}')"
    "$(add '{"driver": "raw", "node-name": "x", "file": {"driver": "file", "filename": 3}}')"
    "$(add '{"driver": "raw", "node-name": "x", "file": {"driver": "file", "filename": "/dev/null", "bogus": 1}}')"
    "$(add '{"driver": "raw", "node-name": "x", "file": "f", "read-only": "yes"}')"
    "$(add '{"driver": "raw", "node-name": "x", "file": "f", "discard": "maybe"}')"
    "$(add '{"driver": "raw", "node-name": "x", "file": "f", "cache": {"direct": 1}}')"
    "$(add '{"driver": "raw", "node-name": "x", "file": "f", "offset": "1"}')"
    "$(add '{"driver": "raw", "node-name": "x", "file": 3}')"
    "$(add '{"driver": "qcow2", "node-name": "x", "file": "f", "backing": 3}')"
    "$(add '{"driver": "raw", "node-name": "x", "file": "nonode"}')"
    "$(add '{"driver": "raw", "file": "f"}')"
    "$(add '{"driver": "raw", "node-name": "top", "file": "f", "read-only": true}')"
    "$(add '{"driver": "raw", "node-name": "1bad", "file": "f"}')"
    "$(add '{"driver": "file", "node-name": "nf", "filename": "'"$tmp/missing"'"}')"
    '{"execute": "blockdev-del", "arguments": {"node-name": "base"}}'
    '{"execute": "blockdev-del", "arguments": {"node-name": "f"}}'
    '{"execute": "blockdev-del", "arguments": {"node-name": "nonode"}}'
)

qmp "$sock" "${graph[@]}" >"$tmp/out" || fail "building the graph"
[ "$(grep -c '^{"return": {}}$' "$tmp/out")" = 4 ] || fail "graph: $(cat "$tmp/out")"
qmp "$sock" "${errors[@]}" >"$tmp/errors" || fail "errors"
cat >"$tmp/expected" <<END
{"error": {"class": "GenericError", "desc": "Parameter 'driver' is missing"}}
{"error": {"class": "GenericError", "desc": "Parameter 'driver' does not accept value 'nosuchdriver'"}}
{"error": {"class": "GenericError", "desc": "Parameter 'file' is missing"}}
{"error": {"class": "GenericError", "desc": "Parameter 'file.driver' is missing"}}
{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'file.filename', expected: string"}}
{"error": {"class": "GenericError", "desc": "Parameter 'file.bogus' is unexpected"}}
{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'read-only', expected: boolean"}}
{"error": {"class": "GenericError", "desc": "Parameter 'discard' does not accept value 'maybe'"}}
{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'cache.direct', expected: boolean"}}
{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'offset', expected: integer"}}
{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'file', expected: BlockdevRef"}}
{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'backing', expected: BlockdevRefOrNull"}}
{"error": {"class": "GenericError", "desc": "Cannot find device='nonode' nor node-name='nonode'"}}
{"error": {"class": "GenericError", "desc": "'node-name' must be specified for the root node"}}
{"error": {"class": "GenericError", "desc": "Duplicate nodes with node-name='top'"}}
{"error": {"class": "GenericError", "desc": "Invalid node-name: '1bad'"}}
{"error": {"class": "GenericError", "desc": "Could not open '$tmp/missing': No such file or directory"}}
{"error": {"class": "GenericError", "desc": "Node 'base' is busy: node is used as backing hd of 'top'"}}
{"error": {"class": "GenericError", "desc": "Block device f is in use"}}
{"error": {"class": "GenericError", "desc": "Failed to find node with node-name='nonode'"}}
END
diff -u "$tmp/expected" "$tmp/errors" || fail "blockdev errors differ from QEMU's"

# A node added implicitly (top's file) is not the monitor's to delete.
qmp "$sock" '{"execute": "query-named-block-nodes", "arguments": {"flat": true}}' >"$tmp/flat"
qmp "$sock" '{"execute": "query-named-block-nodes"}' >"$tmp/nested"
child=$("$PYTHON" -c '
import json, sys
nodes = json.loads(open(sys.argv[1]).read())["return"]
print([n["node-name"] for n in nodes if n["file"] == sys.argv[2] and n["drv"] == "file"][0])
' "$tmp/flat" "$tmp/top.qcow2") || fail "no file node for top: $(cat "$tmp/flat")"
out=$(qmp "$sock" '{"execute": "blockdev-del", "arguments": {"node-name": "'"$child"'"}}')
grep -Fq "\"desc\": \"Node $child is not owned by the monitor\"" <<<"$out" ||
    fail "deleting an implicit node: $out"

# The fields of the named nodes.
"$PYTHON" - "$tmp" <<'PY' || fail "node fields"
import json, sys
tmp = sys.argv[1]
def nodes(name):
    return {n["node-name"]: n for n in json.loads(open(tmp + "/" + name).read())["return"]}
flat, nested = nodes("flat"), nodes("nested")
keys = {"iops_rd", "detect_zeroes", "image", "iops_wr", "ro", "node-name",
        "backing_file_depth", "drv", "iops", "bps_wr", "write_threshold",
        "encrypted", "bps", "bps_rd", "cache", "file"}
top, base, r = flat["top"], flat["base"], flat["r"]
assert set(top) == keys | {"backing_file"}, set(top) ^ keys
assert set(base) == keys and set(r) == keys, (set(base) ^ keys, set(r) ^ keys)
assert top["drv"] == "qcow2" and top["ro"] is True and top["file"] == tmp + "/top.qcow2", top
assert top["backing_file"] == tmp + "/base.qcow2" and top["backing_file_depth"] == 1, top
img = top["image"]
assert img["virtual-size"] == 64 << 20 and img["format"] == "qcow2", img
assert img["filename"] == tmp + "/top.qcow2" and img["dirty-flag"] is False, img
assert img["backing-filename"] == tmp + "/base.qcow2", img
assert img["full-backing-filename"] == tmp + "/base.qcow2", img
assert img["backing-filename-format"] == "qcow2", img
assert "backing-image" not in img, "flat=true nests the backing image"
bimg = nested["top"]["image"]["backing-image"]
assert bimg["filename"] == tmp + "/base.qcow2" and bimg["format"] == "qcow2", bimg
assert "backing-image" not in nested["base"]["image"]
assert r["drv"] == "raw" and r["file"] == tmp + "/raw.img", r
assert r["detect_zeroes"] == "on", r
assert r["cache"] == {"no-flush": True, "direct": False, "writeback": True}, r
assert r["image"]["virtual-size"] == 1 << 20 and r["backing_file_depth"] == 0, r
assert flat["f"]["drv"] == "file" and flat["f"]["image"]["format"] == "file"
PY

# The same commands on qemu-storage-daemon: same errors, same fields.
if start_qsd "$tmp/qsd"; then
    qmp "$tmp/qsd" "${graph[@]}" >/dev/null || fail "qsd graph"
    qmp "$tmp/qsd" "${errors[@]}" >"$tmp/qsd-errors" || fail "qsd errors"
    diff -u "$tmp/qsd-errors" "$tmp/errors" ||
        fail "blockdev errors differ from qemu-storage-daemon's"
    qmp "$tmp/qsd" '{"execute": "query-named-block-nodes"}' >"$tmp/qsd-nodes"
    "$PYTHON" - "$tmp/qsd-nodes" "$tmp/nested" <<'PY' || fail "node fields differ from qemu-storage-daemon's"
import json, sys
def named(path):
    return {n["node-name"]: n for n in json.loads(open(path).read())["return"]
            if not n["node-name"].startswith("#")}
# what snapnbd does not report: qcow2 internals
optional = {"cluster-size", "format-specific", "actual-size"}
def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k not in optional}
    return v
q, s = named(sys.argv[1]), named(sys.argv[2])
assert set(q) == set(s), (set(q), set(s))
for name in q:
    if strip(q[name]) != strip(s[name]):
        print(name, json.dumps(strip(q[name]), sort_keys=True), "\n", json.dumps(strip(s[name]), sort_keys=True))
        sys.exit(1)
PY
fi

# Which nodes QEMU 7.2 gives a dirty-flag (bdrv_get_info answers: file,
# qcow2, and raw or filters over them; not null-co, null-aio, nor what is
# over them), and null-aio under its own name.
truncate -s 1M "$tmp/info.raw"
for prog in snapnbd $qmp_stdio_qsd; do
    bin=$prog
    [ $prog = snapnbd ] && bin=$SNAPNBD
    printf '%s\n' '{"execute": "qmp_capabilities"}' \
        '{"execute": "query-named-block-nodes", "arguments": {"flat": true}}' \
        '{"execute": "quit"}' |
    timeout 30 "$bin" --chardev stdio,id=m --monitor chardev=m \
        --blockdev "driver=file,node-name=f,filename=$tmp/info.raw" \
        --blockdev driver=raw,node-name=r,file=f \
        --blockdev driver=blkdebug,node-name=bd,image=f \
        --blockdev driver=null-co,node-name=n \
        --blockdev driver=null-aio,node-name=na \
        --blockdev driver=raw,node-name=rn,file=n \
        --blockdev driver=copy-on-read,node-name=cor,file=n \
        --object throttle-group,id=tg \
        --blockdev driver=throttle,node-name=th,throttle-group=tg,file=na |
    sed -n 3p | /usr/bin/python3 -c '
import json, sys
for n in sorted(json.load(sys.stdin)["return"], key=lambda n: n["node-name"]):
    i = n["image"]
    print(n["node-name"], n["drv"], i["format"], "dirty-flag" in i,
          i.get("dirty-flag"))' > "$tmp/info.$prog" ||
        fail "$prog: query-named-block-nodes over stdio"
done
grep -qx "na null-aio null-aio False None" "$tmp/info.snapnbd" ||
    fail "null-aio: $(cat "$tmp/info.snapnbd")"
grep -qx "r raw raw True False" "$tmp/info.snapnbd" ||
    fail "raw over file: $(cat "$tmp/info.snapnbd")"
if [ -n "$qmp_stdio_qsd" ]; then
    diff -u "$tmp/info.$qmp_stdio_qsd" "$tmp/info.snapnbd" ||
        fail "dirty-flag and drivers: qemu-storage-daemon (-) vs snapnbd (+)"
fi
