#!/usr/bin/env bash
# SIGTERM ends the server even when a client has stopped reading replies
# (its workers are blocked sending): after a grace period the connection is
# cut.  qemu-nbd 7.2 waits for such a client forever.
source "${srcdir:-$(dirname "$0")}/functions.sh"

img=$tmp/disk.img
truncate -s 64M "$img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 "$img"
pid=$(cat "$tmp/pid")

$PYTHON - "$tmp/sock" "$srcdir" >"$tmp/client.out" 2>&1 <<'EOP' &
import sys, time
sys.path.insert(0, sys.argv[2])
import nbd_raw
c = nbd_raw.connect(sys.argv[1])
for i in range(40):          # 160 MiB of replies that are never read
    c.request(nbd_raw.CMD_READ, offset=0, length=4 << 20, cookie=i)
print("sent", flush=True)
time.sleep(60)
EOP
client=$!
cleanup_fn "kill $client 2>/dev/null"
for i in $(seq 100); do
    grep -q sent "$tmp/client.out" && break
    sleep 0.1
done
grep -q sent "$tmp/client.out" || fail "client did not send: $(cat "$tmp/client.out")"

kill "$pid"
for i in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$pid" 2>/dev/null && fail "server still runs 15 s after SIGTERM"
[ ! -e "$tmp/sock" ] || fail "socket left behind"
