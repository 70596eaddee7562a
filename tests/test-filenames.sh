#!/usr/bin/env bash
# QEMU's protocol-prefixed file names, as qemu-nbd takes them: null-co://
# (1 GiB of zeroes), file:PATH, json:{...} naming a format or a protocol
# node; unknown protocols are refused in one line naming them, never taken
# for a file name; NBD URIs name an NBD client node (a server that is not
# there is one line too; test-nbd-client-chain serves through one).
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img nbdinfo nbdsh

sock=$tmp/sock n=0
size_of() { # size_of FILENAME ARGS...: $size is the size snapnbd exports
    local fn=$1; shift
    n=$((n + 1))
    start_server "$sock$n" "$tmp/pid$n" "$@" "$fn" 2>"$tmp/err$n"
    size=$(nbdinfo --size "$(uri "$sock$n")")
    _stop_server "$tmp/pid$n"
}

qemu-img create -q -f qcow2 "$tmp/a.qcow2" 3M
qemu-io -f qcow2 -c 'write -P 0x5a 0 64k' "$tmp/a.qcow2" >/dev/null
qemu-img create -q -f raw "$tmp/b.img" 2M

size_of null-co:// -f raw; [ "$size" = 1073741824 ] || fail "null-co://"
size_of null-co://; [ "$size" = 1073741824 ] || fail "null-co:// probed"
grep -q "probing guessed raw" "$tmp/err$n" || fail "null-co:// probed without the warning"
size_of "file:$tmp/b.img" -f raw; [ "$size" = 2097152 ] || fail "file:"
size_of "file:$tmp/a.qcow2"; [ "$size" = 3145728 ] || fail "file: probed qcow2"
size_of 'json:{"driver": "qcow2", "file": {"driver": "file", "filename": "'"$tmp/a.qcow2"'"}}'; [ "$size" = 3145728 ] ||
    fail "json: with a format node"
size_of 'json:{"driver": "file", "filename": "'"$tmp/a.qcow2"'"}' -f qcow2; [ "$size" = 3145728 ] ||
    fail "json: with a protocol node and -f"
size_of 'json:{"driver": "null-co", "size": 4096, "read-zeroes": true}' -f raw; [ "$size" = 4096 ] ||
    fail "json: with null-co and its options"

# The data comes through a json: qcow2 node.
start_server "$sock.d" "$tmp/pid.d" -r \
    'json:{"driver": "qcow2", "file.driver": "file", "file.filename": "'"$tmp/a.qcow2"'"}'
nbdsh -u "$(uri "$sock.d")" -c 'assert h.pread(65536, 0) == b"\x5a" * 65536'

# Refusals: one line, naming the name; no file of that name is made.
for fn in "nbd://localhost:1/x" "nbd+unix:///x?socket=$tmp/s" "nbd:unix:$tmp/s" \
          "foo:bar" "null-co://x" 'json:{"driver": '; do
    (cd "$tmp" && "$SNAPNBD" -k "$sock.r" -f raw "$fn") >"$tmp/out" 2>&1 &&
        fail "'$fn' was served"
    [ "$(wc -l <"$tmp/out")" = 1 ] || fail "'$fn': not one line: $(cat "$tmp/out")"
done
(cd "$tmp" && "$SNAPNBD" -k "$sock.r" -f raw "nbd+unix:///x?socket=$tmp/s") >"$tmp/out" 2>&1
grep -q "Failed to connect to '$tmp/s'" "$tmp/out" ||
    fail "nbd+unix:// to no server: $(cat "$tmp/out")"
(cd "$tmp" && "$SNAPNBD" -k "$sock.r" -f raw "foo:bar") >"$tmp/out" 2>&1
grep -q "Unknown protocol 'foo'" "$tmp/out" || fail "unknown protocol"
[ ! -e "$tmp/foo:bar" ] || fail "foo:bar was taken for a file"

# QEMU's iotest 162 starts "--fork null-co://" on a TCP port until one is
# free: it must start, serve one client and exit (no endless loop).
for i in $(seq 20); do
    port=$((RANDOM + 32768))
    timeout 10 "$SNAPNBD" -p $port -b 127.0.0.1 -f raw --fork null-co:// 2>/dev/null && break
done
timeout 10 nbdinfo --size "nbd://127.0.0.1:$port" | grep -qx 1073741824 || fail "162: --fork null-co://"
