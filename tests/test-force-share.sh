#!/usr/bin/env bash
# force-share=on: a read-only node whose image another process writes
# (qemu-nbd holds it writable here) is opened and exported, as
# qemu-storage-daemon does: edges into the node share every permission,
# so no lock byte says "nobody else may write".  Its file child inherits
# the option; a file node added apart without it still conflicts.  A
# writable node with force-share=on is refused in QEMU's words, from the
# command line (--blockdev, --image-opts) and from blockdev-add.  Each
# step's outcome goes into a transcript, diffed with qemu-storage-daemon
# 7.2's where it is installed; the transcript's contents are asserted too.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img qemu-io qemu-nbd

img=$tmp/disk.qcow2
qemu-img create -q -f qcow2 "$img" 1M
qemu-io -f qcow2 -c 'write -P 0x33 0 64K' "$img" >/dev/null
# The writer: holds the image's write lock and unshares nothing else.
qemu-nbd -k "$tmp/w.sock" -f qcow2 -t --pid-file="$tmp/w.pid" "$img" &
cleanup_fn "_stop_server '$tmp/w.pid'"
for i in $(seq 100); do [ -S "$tmp/w.sock" ] && break; sleep 0.05; done
qemu-io -f raw -c 'write -P 0x44 64K 64K' "$(uri "$tmp/w.sock")" >/dev/null

qcow=driver=qcow2,node-name=r,read-only=on
file=file.driver=file,file.filename=$img

# step NAME DAEMON ARGS...: start DAEMON with ARGS and an export of node
# r; "served" and what the export reads at 0 and 64K, or the first line
# it said.
step() {
    local name=$1 bin=$2 sock=$tmp/s.sock out
    shift 2
    rm -f "$sock"
    "$bin" "$@" --nbd-server "addr.type=unix,addr.path=$sock" \
        --export type=nbd,id=e,node-name=r >/dev/null 2>"$tmp/err" &
    local pid=$!
    for i in $(seq 100); do
        [ -S "$sock" ] && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.05
    done
    if [ -S "$sock" ]; then
        out=$(qemu-io -r -f raw -c 'read -P 0x33 0 64K' \
                  -c 'read -P 0x44 64K 64K' "$(uri "$sock" r)" 2>&1)
        grep -q -e verification -e failed <<<"$out" &&
            out="reads wrong: $out" || out="served, reads 0x33 0x44"
        kill $pid; wait $pid 2>/dev/null
    else
        wait $pid 2>/dev/null
        # Both name the lock or the rule after the option string; qsd asks
        # about another process on a second line, snapnbd on the same one.
        out=$(head -1 "$tmp/err" | grep -o -e 'Failed to get shared "[a-z]*" lock' \
                  -e 'force-share=on can only be used with read-only images' ||
              head -1 "$tmp/err")
    fi
    echo "$name: $out"
}

# qmp_step NAME DAEMON ARGS: blockdev-add ARGS (JSON) over QMP.
qmp_step() {
    local name=$1 bin=$2 args=$3 sock=$tmp/q.sock
    rm -f "$sock"
    "$bin" --chardev "socket,id=c,path=$sock,server=on,wait=off" \
        --monitor chardev=c >/dev/null 2>&1 &
    local pid=$!
    for i in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
    echo "$name: $("$PYTHON" - "$sock" "$args" <<'EOP'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
f.readline()
for cmd in ({"execute": "qmp_capabilities"},
            {"execute": "blockdev-add", "arguments": json.loads(sys.argv[2])}):
    f.write(json.dumps(cmd) + "\n")
    f.flush()
    while True:
        r = json.loads(f.readline())
        if "event" not in r:
            break
print("error: " + r["error"]["desc"] if "error" in r else "added")
EOP
)"
    kill $pid; wait $pid 2>/dev/null
}

transcript() {
    local bin=$1
    step "force-share=on" "$bin" --blockdev "$qcow,force-share=on,$file"
    step "force-share=off" "$bin" --blockdev "$qcow,force-share=off,$file"
    step "on qcow2, file apart" "$bin" \
        --blockdev "driver=file,node-name=f,read-only=on,filename=$img" \
        --blockdev "$qcow,force-share=on,file=f"
    step "on both, file apart" "$bin" \
        --blockdev "driver=file,node-name=f,read-only=on,force-share=on,filename=$img" \
        --blockdev "$qcow,force-share=on,file=f"
    step "file only" "$bin" \
        --blockdev "driver=file,node-name=f,read-only=on,force-share=on,filename=$img" \
        --blockdev "$qcow,file=f"
    step "writable" "$bin" \
        --blockdev "driver=qcow2,node-name=r,force-share=on,$file"
    qmp_step "qmp read-only" "$bin" \
        "{\"driver\": \"qcow2\", \"node-name\": \"r\", \"read-only\": true, \"force-share\": true, \"file\": {\"driver\": \"file\", \"filename\": \"$img\"}}"
    qmp_step "qmp writable" "$bin" \
        "{\"driver\": \"qcow2\", \"node-name\": \"r\", \"force-share\": true, \"file\": {\"driver\": \"file\", \"filename\": \"$img\"}}"
}

transcript "$SNAPNBD" >"$tmp/snapnbd.out"
cat "$tmp/snapnbd.out"
cat >"$tmp/expect" <<'EOF'
force-share=on: served, reads 0x33 0x44
force-share=off: Failed to get shared "write" lock
on qcow2, file apart: Failed to get shared "write" lock
on both, file apart: served, reads 0x33 0x44
file only: served, reads 0x33 0x44
writable: force-share=on can only be used with read-only images
qmp read-only: added
qmp writable: error: force-share=on can only be used with read-only images
EOF
diff -u "$tmp/expect" "$tmp/snapnbd.out" ||
    fail "snapnbd's transcript is not the expected one"

if command -v qemu-storage-daemon >/dev/null 2>&1 &&
   qemu-storage-daemon --version | grep -q 'version 7\.2\.'; then
    transcript qemu-storage-daemon >"$tmp/qsd.out"
    diff -u "$tmp/expect" "$tmp/qsd.out" ||
        fail "qemu-storage-daemon 7.2 does not do what the test expects"
fi

# --image-opts (snapnbd's qemu-nbd side): the same option, the same rule.
"$SNAPNBD" -k "$tmp/io.sock" --image-opts \
    "driver=qcow2,force-share=on,$file" 2>"$tmp/err" &&
    fail "--image-opts: a writable force-share=on node was opened"
grep -q "force-share=on can only be used with read-only images" "$tmp/err" ||
    fail "--image-opts: $(cat "$tmp/err")"
start_server "$tmp/io.sock" "$tmp/io.pid" -r --image-opts \
    "driver=qcow2,force-share=on,$file"
qemu-io -r -f raw -c 'read -P 0x44 64K 64K' "$(uri "$tmp/io.sock")" |
    grep -q verification && fail "--image-opts -r: reads wrong"
_stop_server "$tmp/io.pid"
echo "--image-opts: refused writable, served read-only"
