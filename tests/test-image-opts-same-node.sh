#!/usr/bin/env bash
# The same image options through the three front ends give the same node:
# block/image-opts.c builds the options of all of them.
#  - The command line and the nbdkit plugin, with an offset, aio, discard
#    and detect-zeroes over a probed qcow2 image: the same graph (the
#    command line's snapnbd_image_open line and the plugin's "opened" line,
#    node names aside), the same export (size, flags) and the same bytes.
#  - A probed raw image is qemu-nbd's everywhere: the warning, and a write
#    that would make block 0 a qcow2 header fails with EPERM, through the
#    plugin too.
#  - QMP: a drive-mirror target opened as it is (mode existing, no format:
#    probed) is the node the command line makes of the same file
#    (query-named-block-nodes), for a qcow2 and a raw file; and a probed
#    raw target is protected as the command line's image is: mirroring a
#    source whose block 0 is a qcow2 header into it fails, as in QEMU;
#    and a target's name is read as the command line reads it.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img qemu-io nbdinfo nbdcopy
requires_libnbd_python
requires_plugin

size=$((4 << 20))
qemu-img create -q -f qcow2 "$tmp/d.qcow2" $size
qemu-io -f qcow2 -c 'write -P 0x61 0 1M' -c 'write -P 0x62 1M 1536' \
    "$tmp/d.qcow2" >/dev/null
truncate -s $size "$tmp/d.raw"
qemu-io -f raw -c 'write -P 0x63 4096 64k' "$tmp/d.raw" >/dev/null

# --- command line and plugin -------------------------------------------------

# The graph's description, node names left out.
graph() {
    sed -n 's/.*opened //p' "$1" | sed 's/\[[^]]*\]//g' | sort -u
}

# The export as nbdinfo sees it: what the options decide (the protocol
# details that differ between snapnbd and nbdkit, such as block sizes
# and multi-conn, are each server's own).
export_info() {
    nbdinfo --json "$1" | $PYTHON -c '
import json, sys
e = json.load(sys.stdin)["exports"][0]
for k in ("export-size", "is_read_only", "can_flush", "can_fua", "can_trim",
          "can_zero", "can_fast_zero", "can_cache", "can_df"):
    print(k, e.get(k))'
}

cli_opts=(-o 512 --aio=threads --discard=unmap --detect-zeroes=unmap)
kit_opts=(offset=512 aio=threads discard=unmap detect-zeroes=unmap)
# (one after the other: each takes the image's write lock)
start_server "$tmp/s1" "$tmp/p1" -t -T snapnbd_image_open "${cli_opts[@]}" \
    "$tmp/d.qcow2" 2>"$tmp/cli.log"
export_info "$(uri "$tmp/s1")" >"$tmp/cli.info" || fail "nbdinfo (cli)"
nbdcopy "$(uri "$tmp/s1")" "$tmp/cli.data" || fail "nbdcopy (cli)"
_stop_server "$tmp/p1"
start_nbdkit "$tmp/s2" "$tmp/p2" -v "$SNAPNBD_PLUGIN" file="$tmp/d.qcow2" \
    "${kit_opts[@]}" 2>"$tmp/kit.log"
export_info "$(uri "$tmp/s2")" >"$tmp/kit.info" || fail "nbdinfo (plugin)"
nbdcopy "$(uri "$tmp/s2")" "$tmp/kit.data" || fail "nbdcopy (plugin)"
_stop_nbdkit "$tmp/p2" "$(cat "$tmp/p2")"
graph "$tmp/cli.log" >"$tmp/cli.graph"
graph "$tmp/kit.log" >"$tmp/kit.graph"
grep -q '^raw -> qcow2 .* -> file .*aio=threads' "$tmp/cli.graph" ||
    fail "the command line's graph: $(cat "$tmp/cli.graph")"
diff -u "$tmp/cli.graph" "$tmp/kit.graph" ||
    fail "the plugin's graph differs from the command line's"
diff -u "$tmp/cli.info" "$tmp/kit.info" ||
    fail "the plugin's export differs from the command line's"
grep -qx "export-size $((size - 512))" "$tmp/cli.info" ||
    fail "offset: $(cat "$tmp/cli.info")"
grep -qx "can_trim True" "$tmp/cli.info" || fail "discard=unmap not applied"
cmp "$tmp/cli.data" "$tmp/kit.data" || fail "the plugin serves other bytes"
qemu-io -f qcow2 -r -c 'read -P 0x61 0 1M' "$tmp/d.qcow2" >/dev/null
$PYTHON -c '
import sys
d = open(sys.argv[1], "rb").read()
assert d[:1048576 - 512] == b"\x61" * (1048576 - 512), "offset: data"
assert d[1048576 - 512:1048576 + 1024] == b"\x62" * 1536, "offset: data"
' "$tmp/cli.data" || fail "the offset window is wrong"

# A probed raw image: the plugin warns (once) and protects block 0.
start_nbdkit "$tmp/s3" "$tmp/p3" "$SNAPNBD_PLUGIN" file="$tmp/d.raw" \
    2>"$tmp/kit-raw.log"
$PYTHON - "$(uri "$tmp/s3")" "$tmp/d.qcow2" <<'EOP' || fail "plugin: block 0"
import sys, errno, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
header = open(sys.argv[2], "rb").read(4096)
try:
    h.pwrite(header, 0)
    raise SystemExit("a qcow2 header was written to block 0")
except nbd.Error as e:
    assert e.errnum == errno.EPERM, e
h.pwrite(header, 4096)      # block 1 may hold anything
h.pwrite(b"\x42" * 4096, 0)  # data is data
h.shutdown()
EOP
if [ ${#_nbdkit_env[@]} -gt 0 ]; then
    # The sanitized plugin runs in an nbdkit that is not instrumented, with
    # libasan preloaded.  After the plugin reports an error, glibc's locale
    # lock is left with a reader count below zero (caught with a watchpoint
    # in __dcigettext, under __interceptor_strerror), and nbdkit then hangs
    # at exit in p11-kit's freelocale.  The same steps without libasan exit
    # cleanly, which the normal build's run of this test checks.
    kit=$(cat "$tmp/p3")
    kill -9 "$kit"
    wait "$kit" 2>/dev/null || :
    rm -f "$tmp/p3"
else
    _stop_nbdkit "$tmp/p3" "$(cat "$tmp/p3")"
fi
[ "$(grep -c 'probing guessed raw' "$tmp/kit-raw.log")" = 1 ] ||
    fail "plugin: the warning, once: $(cat "$tmp/kit-raw.log")"
qemu-img info "$tmp/d.raw" | grep -q "file format: raw" ||
    fail "the raw image is no longer raw"

# --- command line and QMP ----------------------------------------------------

# The image node of FILE (or the node NAME) on the QMP socket SOCK: what
# query-named-block-nodes says of it, but its name.
node_info() {
    jobs_py '
q = QMP(sys.argv[1])
path, name = sys.argv[2], sys.argv[3]
nodes = [n for n in q.cmd("query-named-block-nodes")
         if (n["node-name"] == name if name else
             n["file"] == path and n["drv"] != "file")]
assert len(nodes) == 1, nodes
n = nodes[0]
for k in ("drv", "ro", "cache", "detect_zeroes", "encrypted",
          "backing_file_depth", "file"):
    print(k, n[k])
for k in ("format", "virtual-size", "filename", "cluster-size"):
    print("image." + k, n["image"].get(k))' "$@"
}

truncate -s $size "$tmp/src.raw"
for f in d.qcow2 d.raw; do
    start_server "$tmp/s4" "$tmp/p4" --qmp "unix:$tmp/q4,server,wait=off" \
        "$tmp/$f" 2>/dev/null
    node_info "$tmp/q4" "$tmp/$f" "" >"$tmp/cli-$f.node" ||
        fail "$f: query (cli)"
    _stop_server "$tmp/p4"
    start_daemon \
        --blockdev "driver=raw,node-name=src,file.driver=file,file.filename=$tmp/src.raw" \
        2>"$tmp/qmp-$f.log"
    jobs_py '
q = QMP(sys.argv[1])
q.cmd("drive-mirror", {"job-id": "m", "device": "src", "sync": "full",
      "target": sys.argv[2], "mode": "existing", "node-name": "tgt"})
q.wait_event("BLOCK_JOB_READY", device="m")' "$qmp" "$tmp/$f" ||
        fail "$f: drive-mirror"
    node_info "$qmp" "" tgt >"$tmp/qmp-$f.node" || fail "$f: query (qmp)"
    _stop_server "$tmp/daemon.pid"
    grep -qx "image.format ${f#d.}" "$tmp/cli-$f.node" ||
        fail "$f: probed as $(cat "$tmp/cli-$f.node")"
    diff -u "$tmp/cli-$f.node" "$tmp/qmp-$f.node" ||
        fail "$f: the drive-mirror target differs from the command line's"
done
grep -q 'probing guessed raw' "$tmp/qmp-d.raw.log" ||
    fail "QMP: a probed raw target without the warning"

# A probed raw target keeps block 0 from becoming a qcow2 header.
cp "$tmp/d.qcow2" "$tmp/hdr.raw"
truncate -s $size "$tmp/hdr.raw" "$tmp/target.raw"
start_daemon \
    --blockdev "driver=raw,node-name=src,file.driver=file,file.filename=$tmp/hdr.raw" \
    2>/dev/null
jobs_py '
q = QMP(sys.argv[1])
q.cmd("drive-mirror", {"job-id": "m", "device": "src", "sync": "full",
      "target": sys.argv[2], "mode": "existing"})
ev = q.wait_event("BLOCK_JOB_COMPLETED", device="m")
assert "Operation not permitted" in ev["data"].get("error", ""), ev
# a target name is read as the command line reads it, before anything is
# created: an unknown protocol is refused, and no file is left
for cmd in ("drive-backup", "drive-mirror"):
    _, e = q.error(cmd, {"job-id": "j", "device": "src", "sync": "full",
                         "target": "nosuch:" + sys.argv[3] + "/new.raw"})
    assert "Unknown protocol \x27nosuch\x27" in e, e' \
    "$qmp" "$tmp/target.raw" "$tmp" ||
    fail "QMP: a probed raw target took a header, or a bad target name"
[ -z "$(ls -d nosuch:* 2>/dev/null)" ] || fail "a target of a bad name was created"
_stop_server "$tmp/daemon.pid"
qemu-img info "$tmp/target.raw" | grep -q "file format: raw" ||
    fail "the mirror made the raw target a qcow2 image"
true
