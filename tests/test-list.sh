#!/usr/bin/env bash
# -L/--list: qemu-nbd's client mode.  Its output must be qemu-nbd 7.2's,
# byte for byte, against the same servers: snapnbd (one export with a
# description, bitmaps and allocation depth; several exports from the
# control socket), qemu-nbd, and nbdkit without structured replies.  A
# refused connection and the incompatible options get qemu-nbd's words.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-nbd qemu-img

same_listing() { # same_listing WHAT ARGS...
    local what=$1; shift
    qemu-nbd -L "$@" >"$tmp/want" 2>&1 || fail "$what: qemu-nbd -L failed: $(cat "$tmp/want")"
    "$SNAPNBD" -L "$@" >"$tmp/got" 2>&1 || fail "$what: snapnbd -L failed: $(cat "$tmp/got")"
    cmp -s "$tmp/want" "$tmp/got" ||
        fail "$what: listing differs: $(diff -u "$tmp/want" "$tmp/got")"
}

qemu-img create -q -f qcow2 "$tmp/a.qcow2" 1M
qemu-img bitmap --add "$tmp/a.qcow2" b0
qemu-img create -q -f raw "$tmp/b.img" 2M

start_server "$tmp/s1" "$tmp/pid1" -f qcow2 -x exp -D "a description" -A -B b0 \
    -t -r -e 3 "$tmp/a.qcow2"
same_listing "snapnbd, one export" -k "$tmp/s1"
grep -q "qemu:dirty-bitmap:b0" "$tmp/got" || fail "no bitmap context: $(cat "$tmp/got")"

"$SNAPNBD" --pid-file="$tmp/pid2" --blockdev \
    "driver=raw,node-name=b,file.driver=file,file.filename=$tmp/b.img" \
    --nbd-server "addr.type=unix,addr.path=$tmp/s2" \
    --export type=nbd,id=e1,node-name=b,name=one,writable=on \
    --export type=nbd,id=e2,node-name=b,name=two,description=second &
cleanup_fn "_stop_server '$tmp/pid2'"
for i in $(seq 50); do [ -S "$tmp/s2" ] && [ -s "$tmp/pid2" ] && break; sleep 0.1; done
same_listing "snapnbd, two exports" -k "$tmp/s2"
grep -q "exports available: 2" "$tmp/got" || fail "two exports: $(cat "$tmp/got")"

qemu-nbd -k "$tmp/s3" -f raw -x q -t "$tmp/b.img" &
q=$!
cleanup_fn "kill $q 2>/dev/null"
for i in $(seq 50); do [ -S "$tmp/s3" ] && break; sleep 0.1; done
same_listing "qemu-nbd" -k "$tmp/s3"

if command -v nbdkit >/dev/null; then
    start_nbdkit "$tmp/s4" "$tmp/pid4" --no-sr memory 1M
    same_listing "nbdkit --no-sr" -k "$tmp/s4"
fi

# Errors, in qemu-nbd's words (its program name aside).
qemu-nbd -L -k "$tmp/missing" 2>&1 | sed 's/^qemu-nbd:/snapnbd:/' >"$tmp/want"
"$SNAPNBD" -L -k "$tmp/missing" >"$tmp/got" 2>&1 && fail "listed a missing socket"
cmp -s "$tmp/want" "$tmp/got" || fail "connect error: $(diff "$tmp/want" "$tmp/got")"
"$SNAPNBD" -L -k "$tmp/s1" "$tmp/b.img" >"$tmp/err" 2>&1 && fail "-L took a file name"
grep -q "List mode is incompatible with a file name" "$tmp/err" || fail "-L with a file name: $(cat "$tmp/err")"
"$SNAPNBD" -L -k "$tmp/s1" -x foo >"$tmp/err" 2>&1 && fail "-L took -x"
grep -q "List mode is incompatible with per-device settings" "$tmp/err" || fail "-L with -x: $(cat "$tmp/err")"
exit 0
