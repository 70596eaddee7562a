#!/usr/bin/env bash
# How a file node opens, against qemu-storage-daemon 7.2:
# - force-share=on: a read-only node whose image another process writes
#   (qemu-nbd holds it writable here) is opened and exported: edges into
#   the node share every permission, so no lock byte says "nobody else may
#   write".  Its file child inherits the option; a file node added apart
#   without it still conflicts.  A writable node with force-share=on is
#   refused in QEMU's words (--blockdev, --image-opts, blockdev-add).
# - auto-read-only=on: the file is opened read-only until a writer comes;
#   a file that cannot be written (immutable here) is exported read-only,
#   and a writable export of it fails with QEMU's "Could not open".
# - only regular files (and block devices, qemu-nbd's host_device): a
#   directory or /dev/null is refused in QEMU's words, not with a size
#   error ("Could not get the size of '/tmp': Success" before).
# Each step's outcome goes into a transcript, diffed with
# qemu-storage-daemon 7.2's where it is installed; the transcript's
# contents are asserted too.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img qemu-io qemu-nbd

img=$tmp/disk.qcow2
qemu-img create -q -f qcow2 "$img" 1M
qemu-io -f qcow2 -c 'write -P 0x33 0 64K' "$img" >/dev/null
# Images of the same content for auto-read-only: a qcow2 copy, and a raw
# one nobody may write, not even root: the immutable attribute, where the
# filesystem has it (tmpfs does not: those steps are skipped).
cp "$img" "$tmp/aro.qcow2"
qemu-io -f qcow2 -c 'write -P 0x44 64K 64K' "$tmp/aro.qcow2" >/dev/null
qemu-img convert -f qcow2 -O raw "$tmp/aro.qcow2" "$tmp/imm.raw"
immutable=
if chattr +i "$tmp/imm.raw" 2>/dev/null; then
    immutable=$tmp/imm.raw
    cleanup_fn "chattr -i '$tmp/imm.raw'"
fi
# The writer: holds the image's write lock and unshares nothing else.
qemu-nbd -k "$tmp/w.sock" -f qcow2 -t --pid-file="$tmp/w.pid" "$img" &
cleanup_fn "_stop_server '$tmp/w.pid'"
for i in $(seq 100); do [ -S "$tmp/w.sock" ] && break; sleep 0.05; done
qemu-io -f raw -c 'write -P 0x44 64K 64K' "$(uri "$tmp/w.sock")" >/dev/null

qcow=driver=qcow2,node-name=r,read-only=on
file=file.driver=file,file.filename=$img

# step NAME DAEMON ARGS...: start DAEMON with ARGS and an export of node
# r (and first a writable one, with $writable_export); "served" and what
# the export reads at 0 and 64K, or the first line it said.
step() {
    local name=$1 bin=$2 sock=$tmp/s.sock out
    shift 2
    rm -f "$sock"
    "$bin" "$@" --nbd-server "addr.type=unix,addr.path=$sock" \
        ${writable_export:+--export type=nbd,id=w,node-name=r,writable=on} \
        --export type=nbd,id=e,node-name=r >/dev/null 2>"$tmp/err" &
    local pid=$!
    # Ready when export r answers (qsd listens before it adds the exports,
    # and may still fail), failed when the daemon is gone.
    local ready=
    for i in $(seq 200); do
        kill -0 $pid 2>/dev/null || break
        nbdinfo --size "$(uri "$sock" r)" >/dev/null 2>&1 && { ready=1; break; }
        sleep 0.05
    done
    if [ -n "$ready" ]; then
        if out=$(qemu-io -r -f raw -c 'read -P 0x33 0 64K' \
                     -c 'read -P 0x44 64K 64K' "$(uri "$sock" r)" 2>&1) &&
           [ "$(grep -c '^read 65536/65536' <<<"$out")" = 2 ] &&
           ! grep -q verification <<<"$out"; then
            out="served, reads 0x33 0x44"
        else
            out="reads wrong: $out"
        fi
        kill $pid; wait $pid 2>/dev/null
    else
        wait $pid 2>/dev/null
        # Both name the lock or the rule after the option string; qsd asks
        # about another process on a second line, snapnbd on the same one.
        out=$(head -1 "$tmp/err" | grep -o -e 'Failed to get shared "[a-z]*" lock' \
                  -e 'force-share=on can only be used with read-only images' \
                  -e "Could not open .*" -e "'file' driver requires .*" ||
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
    step "directory" "$bin" --blockdev "driver=file,node-name=r,filename=$tmp"
    step "directory read-only" "$bin" \
        --blockdev "driver=file,node-name=r,read-only=on,filename=$tmp"
    step "directory auto-read-only" "$bin" \
        --blockdev "driver=file,node-name=r,auto-read-only=on,filename=$tmp"
    step "/dev/null" "$bin" \
        --blockdev "driver=file,node-name=r,read-only=on,filename=/dev/null"
    qmp_step "qmp directory auto-read-only" "$bin" \
        "{\"driver\": \"file\", \"node-name\": \"r\", \"auto-read-only\": true, \"filename\": \"$tmp\"}"
    if [ -n "$immutable" ]; then
        step "immutable" "$bin" \
            --blockdev "driver=file,node-name=r,filename=$immutable"
        step "immutable auto-read-only" "$bin" \
            --blockdev "driver=file,node-name=r,auto-read-only=on,filename=$immutable"
        writable_export=1 step "immutable auto-read-only, writable export" \
            "$bin" --blockdev "driver=file,node-name=r,auto-read-only=on,filename=$immutable"
        step "qcow2 auto-read-only writable" "$bin" \
            --blockdev "driver=qcow2,node-name=r,auto-read-only=on,file.driver=file,file.filename=$tmp/aro.qcow2"
    fi
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
directory: Could not open 'DIR': Is a directory
directory read-only: 'file' driver requires 'DIR' to be a regular file
directory auto-read-only: 'file' driver requires 'DIR' to be a regular file
/dev/null: 'file' driver requires '/dev/null' to be a regular file
qmp directory auto-read-only: error: 'file' driver requires 'DIR' to be a regular file
EOF
[ -n "$immutable" ] && cat >>"$tmp/expect" <<'EOF'
immutable: Could not open 'DIR/imm.raw': Operation not permitted
immutable auto-read-only: served, reads 0x33 0x44
immutable auto-read-only, writable export: Could not open 'DIR/imm.raw': Operation not permitted
qcow2 auto-read-only writable: served, reads 0x33 0x44
EOF
diff -u "$tmp/expect" <(sed "s|$tmp|DIR|g" "$tmp/snapnbd.out") ||
    fail "snapnbd's transcript is not the expected one"

if command -v qemu-storage-daemon >/dev/null 2>&1 &&
   qemu-storage-daemon --version | grep -q 'version 7\.2\.'; then
    transcript qemu-storage-daemon >"$tmp/qsd.out"
    diff -u "$tmp/expect" <(sed "s|$tmp|DIR|g" "$tmp/qsd.out") ||
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
