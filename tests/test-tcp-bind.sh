#!/usr/bin/env bash
# -b 127.0.0.1 -p PORT: the server listens on TCP on that address and port
# only (not on all interfaces) and serves data over it.  Uses a random
# high port on the loopback interface.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires nbdinfo qemu-io ss

img=$tmp/disk.img
truncate -s 4M "$img"
pidf=$tmp/pid
cleanup_fn "_stop_server '$pidf'"

started=
for attempt in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    rm -f "$pidf"
    "$SNAPNBD" -f raw -t -b 127.0.0.1 -p $port --pid-file="$pidf" "$img" \
        2>"$tmp/err" &
    pid=$!
    for i in $(seq 100); do
        kill -0 $pid 2>/dev/null || break
        [ -s "$pidf" ] && { started=yes; break; }
        sleep 0.05
    done
    [ -n "$started" ] && break
    kill -0 $pid 2>/dev/null && fail "server did not start on port $port"
    grep -qi 'in use' "$tmp/err" || fail "server failed: $(cat "$tmp/err")"
done
[ -n "$started" ] || fail "no free port found"

ss -Hltn "sport = :$port" >"$tmp/ss"
grep -q "127.0.0.1:$port" "$tmp/ss" ||
    fail "not listening on 127.0.0.1:$port: $(cat "$tmp/ss")"
grep -Eq "(0\.0\.0\.0|\*|\[::\]):$port" "$tmp/ss" &&
    fail "listening on all interfaces: $(cat "$tmp/ss")"

u="nbd://127.0.0.1:$port"
size=$(nbdinfo --size "$u") || fail "nbdinfo over TCP failed"
[ "$size" -eq $((4 * 1024 * 1024)) ] || fail "wrong size $size"
qemu-io -f raw -c 'write -P 0x6b 12345 70000' -c 'read -P 0x6b 12345 70000' \
    "$u" >"$tmp/out" 2>&1 || fail "qemu-io over TCP failed: $(cat "$tmp/out")"
grep -q 'failed' "$tmp/out" && fail "TCP I/O: $(cat "$tmp/out")"
cmp -s <(head -c 70000 /dev/zero | tr '\0' '\153') \
    <(dd if="$img" bs=1 skip=12345 count=70000 status=none) ||
    fail "TCP write did not land in the file"

true
