#!/usr/bin/env bash
# --fork: the command returns (status 0, and without holding on to the
# caller's stdout/stderr) only once the socket listens; --pid-file holds
# the pid of the live daemon; SIGTERM stops it and removes the socket
# (the pid file stays, as qemu-nbd's).
# A --fork that cannot open its image fails with the error on stderr.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires nbdinfo timeout

img=$tmp/disk.img
truncate -s 2M "$img"
sock=$tmp/sock
pidf=$tmp/pid
cleanup_fn "_stop_server '$pidf'"

# The daemon is not our child: once it exits it stays a zombie until its
# new parent reaps it, and kill -0 still succeeds on a zombie.
running() {
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# $(...) would hang if the daemon kept our stdout pipe open.
out=$(timeout 10 "$SNAPNBD" --fork -f raw -t -k "$sock" --pid-file="$pidf" \
      "$img" 2>&1) || fail "--fork failed ($?): $out"
# Right after it returned: the socket listens and the pid is live.
[ -S "$sock" ] || fail "--fork returned before the socket exists"
[ -s "$pidf" ] || fail "--fork returned before the pid file exists"
pid=$(cat "$pidf")
[[ "$pid" =~ ^[0-9]+$ ]] || fail "pid file holds '$pid'"
running "$pid" || fail "pid $pid from the pid file is not running"
[ "$(readlink "/proc/$pid/exe")" = "$(readlink -f "$SNAPNBD")" ] ||
    [ "$(readlink "/proc/$pid/exe")" = "$(readlink -f "$(command -v "$SNAPNBD")")" ] ||
    fail "pid $pid is not the server: $(readlink "/proc/$pid/exe")"

# It serves, several clients in a row (-t).
for i in 1 2; do
    size=$(nbdinfo --size "$(uri "$sock")") || fail "client $i not served"
    [ "$size" -eq $((2 * 1024 * 1024)) ] || fail "wrong size $size"
done
running "$pid" || fail "daemon died"

kill -TERM "$pid"
for i in $(seq 100); do
    running "$pid" || break
    sleep 0.05
done
running "$pid" && fail "daemon ignored SIGTERM"
[ ! -e "$sock" ] || fail "socket left behind after SIGTERM"
# As qemu-nbd 7.2, the pid file stays (QEMU's iotests remove it themselves
# after the SIGTERM, and fail if it is gone).
[ "$(cat "$pidf" 2>/dev/null)" = "$pid" ] || fail "the pid file did not stay, as qemu-nbd's does"

# Without -t the daemon leaves after its client.
timeout 10 "$SNAPNBD" --fork -f raw -k "$sock" --pid-file="$pidf" "$img" ||
    fail "second --fork failed"
pid=$(cat "$pidf")
nbdinfo --size "$(uri "$sock")" >/dev/null || fail "not served"
for i in $(seq 100); do
    running "$pid" || break
    sleep 0.05
done
running "$pid" && fail "daemon without -t outlived its client"

# Failing --fork: non-zero status, the error on stderr, nothing listening.
rm -f "$pidf"
if timeout 10 "$SNAPNBD" --fork -f raw -k "$tmp/sock2" --pid-file="$pidf" \
    "$tmp/missing.img" 2>"$tmp/err"; then
    fail "--fork succeeded with a missing image"
fi
grep -qF "$tmp/missing.img" "$tmp/err" ||
    fail "--fork error does not name the image: $(cat "$tmp/err")"
if [ -S "$tmp/sock2" ] && nbdinfo --size "$(uri "$tmp/sock2")" >/dev/null 2>&1
then
    fail "a failed --fork still serves"
fi
if [ -s "$pidf" ] && running "$(cat "$pidf")"; then
    fail "a failed --fork left a daemon running"
fi
true
