#!/usr/bin/env bash
# --image-opts: FILENAME is the image's options in QEMU's syntax.  raw and
# qcow2 images given that way are served like qemu-nbd serves the same
# string (a file node given only a filename, a format probed when no driver
# is given, ",," for a comma in a file name, raw's own offset stacked under
# -o, -l, and the options snapnbd implements); the command line's options
# (-r, --cache, ...) apply on top unless the string sets them.  Unknown
# keys and drivers get the block layer's error, an empty string qemu-nbd's.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qcow2-functions.sh"
requires qemu-io

raw=$tmp/a,b.raw     # a comma in the name: written ",," in the options
truncate -s 4M "$raw"
qemu-io -f raw -c 'write -P 1 0 1M' -c 'write -P 2 2M 512K' "$raw" >/dev/null
q2=$tmp/disk.qcow2
qemu-img create -q -f qcow2 "$q2" 6M
qemu-io -f qcow2 -c 'write -P 3 1M 2M' "$q2" >/dev/null
qemu-img snapshot -c first "$q2"
qemu-io -f qcow2 -c 'write -P 4 0 6M' "$q2" >/dev/null
rawopt=${raw//,/,,}

# same OPTS [ARGS...]: snapnbd and qemu-nbd with --image-opts OPTS ARGS
# export the same size and bytes, with the same map and read-only flag.
same() {
    local opts=$1 s=$tmp/s.sock q=$tmp/q.sock
    shift
    start_server "$s" "$s.pid" -t "$@" --image-opts "$opts"
    rm -f "$q.pid"
    qemu-nbd -t -k "$q" --pid-file="$q.pid" "$@" --image-opts "$opts" \
        2>"$tmp/qemu.err" &
    cleanup_fn "_stop_server '$q.pid'"
    for i in $(seq 100); do
        [ -S "$q" ] && [ -s "$q.pid" ] && break
        sleep 0.05
    done
    [ -s "$q.pid" ] || fail "qemu-nbd $* --image-opts $opts: $(cat "$tmp/qemu.err")"
    nbdinfo "$(uri "$q")" | grep -E 'export-size|is_read_only' >"$tmp/info.qemu"
    nbdinfo "$(uri "$s")" | grep -E 'export-size|is_read_only' >"$tmp/info.snap"
    diff -u "$tmp/info.qemu" "$tmp/info.snap" ||
        fail "--image-opts $opts $*: size or read-only flag differs"
    qemu-img compare -f raw -F raw "$(uri "$q")" "$(uri "$s")" >"$tmp/cmp" ||
        fail "--image-opts $opts $*: bytes differ: $(cat "$tmp/cmp")"
    nbdinfo --map "$(uri "$q")" >"$tmp/map.qemu"
    nbdinfo --map "$(uri "$s")" >"$tmp/map.snap"
    diff -u "$tmp/map.qemu" "$tmp/map.snap" ||
        fail "--image-opts $opts $*: map differs"
    _stop_server "$s.pid"
    _stop_server "$q.pid"
}

same "driver=raw,file.driver=file,file.filename=$rawopt"
same "driver=raw,file.driver=file,file.filename=$rawopt" -r
same "driver=raw,file.filename=$rawopt,offset=65536" -r
same "driver=raw,file.filename=$rawopt,offset=65536" -r -o 1048576
same "driver=qcow2,file.driver=file,file.filename=$q2" -r
same "driver=qcow2,file.filename=$q2,node-name=img0,l2-cache-size=1048576,cache.direct=on,file.aio=io_uring" -r
same "driver=qcow2,file.filename=$q2,cache-size=262144,l2-cache-entry-size=4096,cache-clean-interval=5,lazy-refcounts=on,pass-discard-request=on,pass-discard-other=off" -r
same "file.filename=$q2" -r                 # the format is probed
same "driver=qcow2,file.filename=$q2" -l first
same "driver=raw,file.filename=$rawopt,read-only=off" -r

# The raw image is writable through --image-opts and the write lands.
start_server "$tmp/s.sock" "$tmp/s.pid" --image-opts \
    "driver=raw,file.driver=file,file.filename=$rawopt,offset=1048576"
nbdsh -u "$(uri "$tmp/s.sock")" -c 'h.pwrite(b"\x55" * 4096, 8192)' ||
    fail "write through --image-opts"
_stop_server "$tmp/s.pid"
qemu-io -f raw -c 'read -P 0x55 1056768 4096' "$raw" | grep -q '^read' ||
    fail "the write did not land at offset + 8192"

# qcow2's smallest caches (2 L2 tables, 4 refcount blocks: cache-size
# gives them what QEMU would) under writes all over a 1 GiB image with
# 4 KiB clusters: every write evicts; the image stays consistent and holds
# what was written.
qemu-img create -q -f qcow2 -o cluster_size=4096 "$tmp/small.qcow2" 1G
truncate -s 1G "$tmp/small.want"
start_server "$tmp/s.sock" "$tmp/s.pid" --image-opts \
    "driver=qcow2,file.filename=$tmp/small.qcow2,cache-size=1,lazy-refcounts=on"
cmds=()
for i in $(seq 0 97); do
    off=$(( (i * 7919 % 1000) * 1048576 + i * 4096 ))
    cmds+=(-c "write -P $((i % 250 + 1)) $off 4096")
done
qemu-io -f raw "${cmds[@]}" "$(uri "$tmp/s.sock")" >/dev/null ||
    fail "writes with the smallest caches"
_stop_server "$tmp/s.pid"
qemu-io -f raw "${cmds[@]}" "$tmp/small.want" >/dev/null
qemu-img check -q "$tmp/small.qcow2" || fail "qemu-img check after writes with the smallest caches"
qemu-img compare -q -f qcow2 -F raw "$tmp/small.qcow2" "$tmp/small.want" ||
    fail "the image lacks what was written with the smallest caches"

# Command line settings apply unless the options set them: -r makes the
# export read-only; read-only=on in the options needs -r.
start_server "$tmp/s.sock" "$tmp/s.pid" -r --image-opts \
    "driver=raw,file.filename=$rawopt"
nbdinfo "$(uri "$tmp/s.sock")" | grep -q 'is_read_only: true' ||
    fail "-r with --image-opts: the export is writable"
_stop_server "$tmp/s.pid"

# refused PATTERN ARGS...: one line on stderr matching PATTERN, status 1.
refused() {
    local pattern=$1 rc=0
    shift
    timeout 10 "$SNAPNBD" -k "$tmp/nosock" "$@" >"$tmp/out" 2>"$tmp/err" ||
        rc=$?
    [ $rc -eq 1 ] || fail "$*: exit status $rc: $(cat "$tmp/err")"
    [ "$(wc -l <"$tmp/err")" -eq 1 ] ||
        fail "$*: not a one-line error: $(cat "$tmp/err")"
    grep -Eq -- "$pattern" "$tmp/err" ||
        fail "$*: error does not match '$pattern': $(cat "$tmp/err")"
    [ ! -e "$tmp/nosock" ] || fail "$*: left a socket"
}
refused "^snapnbd: Block format 'qcow2' does not support the option 'foo'$" \
    -r --image-opts "driver=qcow2,file.filename=$q2,foo=bar"
refused "does not support the option 'foo'" \
    --image-opts "driver=raw,file.driver=file,file.filename=$rawopt,file.foo=1"
refused "^snapnbd: Unknown driver 'nosuch'$" \
    --image-opts "driver=nosuch,file.filename=$rawopt"
refused "^snapnbd: Must specify either driver or file$" --image-opts ""
refused "$(basename "$tmp")/nosuch.img" \
    --image-opts "driver=raw,file.filename=$tmp/nosuch.img"
refused "read-only" --image-opts "driver=raw,file.filename=$rawopt,read-only=on"
refused "Failed to load snapshot: Block format 'raw'" -l first \
    --image-opts "driver=raw,file.filename=$q2"
