#!/usr/bin/env bash
# `./run demo` fails loudly when snapnbd cannot start (its port is in use)
# instead of printing "serving"; with the port free it serves both exports.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img qemu-io nbdinfo /usr/bin/python3
top=$(cd "$srcdir/.." && pwd)

port=$((20000 + RANDOM % 20000))
# something else holds the port
/usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1)
open(sys.argv[2], "w").write("ready")
time.sleep(60)' "$port" "$tmp/holder.ready" &
holder=$!
cleanup_fn "kill $holder 2>/dev/null"
for i in $(seq 50); do [ -s "$tmp/holder.ready" ] && break; sleep 0.1; done

export SNAPNBD_DEMO_BIN=$SNAPNBD SNAPNBD_DEMO_DIR=$tmp/demo SNAPNBD_DEMO_PORT=$port
bash "$top/run" demo >"$tmp/out" 2>"$tmp/err" && fail "./run demo succeeded with its port in use"
grep -q "serving" "$tmp/out" && fail "./run demo printed 'serving': $(cat "$tmp/out")"
grep -q "could not start" "$tmp/err" || fail "no clear message: $(cat "$tmp/err")"

# The port free: it serves, until SIGTERM.
kill $holder; wait $holder 2>/dev/null
bash "$top/run" demo >"$tmp/out2" 2>"$tmp/err2" &
run_pid=$!
cleanup_fn "kill $run_pid 2>/dev/null"
for i in $(seq 300); do
    grep -q "serving" "$tmp/out2" && break
    kill -0 $run_pid 2>/dev/null || fail "./run demo exited: $(cat "$tmp/err2")"
    sleep 0.1
done
grep -q "serving" "$tmp/out2" || fail "./run demo did not start"
nbdinfo --size "nbd://127.0.0.1:$port/point-in-time" | grep -qx 1073741824 ||
    fail "no point-in-time export"
kill $run_pid
wait $run_pid || fail "./run demo did not stop cleanly on SIGTERM"
