#!/usr/bin/env bash
# -v is as quiet as qemu-nbd 7.2's (nothing is printed while serving, which
# QEMU's iotests compare); snapnbd's own event lines come only with
# -T/--trace PATTERN, QEMU's option: globs, "-PATTERN", events=FILE,
# file=FILE, and "help" listing the events.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires nbdsh qemu-img

img=$tmp/disk.img sock=$tmp/sock
qemu-img create -q -f raw "$img" 1M

connect_once() { nbdsh -u "$(uri "$1")" -c 'assert h.get_size() == 1048576'; }

# -v: a client comes and goes, and stderr stays empty.
start_server "$sock" "$tmp/pid1" -f raw -v -t "$img" 2>"$tmp/err1"
connect_once "$sock"
_stop_server "$tmp/pid1"
[ ! -s "$tmp/err1" ] || fail "-v printed while serving: $(cat "$tmp/err1")"

# --trace with a glob: exactly the client events, not the image's.
start_server "$sock" "$tmp/pid2" -f raw -t --trace 'nbd_client_*' "$img" 2>"$tmp/err2"
connect_once "$sock"
_stop_server "$tmp/pid2"
for line in "client connected" "client chose export ''" "client disconnected"; do
    grep -qxF "snapnbd: $line" "$tmp/err2" || fail "--trace nbd_client_*: no '$line': $(cat "$tmp/err2")"
done
grep -q "opened" "$tmp/err2" && fail "--trace nbd_client_* traced the image open"

# -T enable=*, minus one event, into a file; and events=FILE.
printf 'snapnbd_image_open\n# a comment\n' >"$tmp/events"
start_server "$sock" "$tmp/pid3" -f raw -t -T 'enable=*' -T -nbd_client_connect \
    -T "events=$tmp/events,file=$tmp/trace.log" "$img" 2>"$tmp/err3"
connect_once "$sock"
_stop_server "$tmp/pid3"
grep -q "^snapnbd: opened raw" "$tmp/trace.log" || fail "no open line in file=: $(cat "$tmp/trace.log")"
grep -q "client disconnected" "$tmp/trace.log" || fail "enable=* missed an event"
grep -q "client connected" "$tmp/trace.log" && fail "-PATTERN did not disable"
[ ! -s "$tmp/err3" ] || fail "file= still printed on stderr: $(cat "$tmp/err3")"

# help lists the events; an unknown event is refused, naming it.
"$SNAPNBD" --trace help | grep -q '^nbd_request_failed ' || fail "--trace help"
if "$SNAPNBD" -T no_such_event -k "$sock" "$img" 2>"$tmp/err4"; then
    fail "an unknown trace event was accepted"
fi
grep -q "no_such_event" "$tmp/err4" || fail "unknown event not named: $(cat "$tmp/err4")"
