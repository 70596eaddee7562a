#!/usr/bin/env bash
# Connection lifetime options, as in qemu-nbd:
#  - without -t the server exits (status 0, socket removed) once its last
#    client disconnects; while another client is still connected it stays;
#  - with -t it keeps serving new clients after a disconnect;
#  - -e N serves N clients at once (a further client waits until one
#    leaves), -e 1 is the default; multi-conn is advertised only if N != 1.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires nbdinfo

img=$tmp/disk.img
truncate -s 1M "$img"

gone() {
    # gone PID: the server must exit by itself within 5s, with status 0.
    local pid=$1 i
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$pid" 2>/dev/null && fail "server $pid still runs ($2)"
    wait "$pid" || fail "server exited with status $? ($2)"
}
alive() {
    kill -0 "$1" 2>/dev/null || fail "server died ($2)"
}

cat >"$tmp/clients.py" <<'EOP'
import sys, time, nbd
uri, shared, persistent = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "t"

def connect():
    h = nbd.NBD()
    h.connect_uri(uri)
    return h

def waits(h, secs):
    """True if the handshake of aio-connecting h does not finish in secs."""
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if not h.aio_is_connecting():
            break
        h.poll(50)
    if h.aio_is_dead():
        raise AssertionError("connection died while waiting for a slot")
    return h.aio_is_connecting()

held = [connect() for _ in range(max(shared, 1))]
for i, h in enumerate(held):
    h.pwrite(bytes([i + 1]) * 512, i * 512)
if shared > 1 or shared == 0:
    assert held[0].can_multi_conn(), f"-e {shared}: multi-conn not advertised"
else:
    assert not held[0].can_multi_conn(), "-e 1: multi-conn advertised"
for i, h in enumerate(held):
    assert h.pread(512, ((i + 1) % len(held)) * 512) == \
        bytes([(i + 1) % len(held) + 1]) * 512

if shared != 0:
    # One more than -e allows must wait for a free slot...
    extra = nbd.NBD()
    extra.aio_connect_uri(uri)
    assert waits(extra, 0.5), f"-e {shared}: client {shared + 1} was served"
    if persistent or shared > 1:
        # ...and gets it as soon as a held client leaves.
        held.pop().shutdown()
        assert not waits(extra, 5.0), f"-e {shared}: waiting client not served"
        assert extra.pread(512, 0) == b"\x01" * 512
        held.append(extra)
    else:
        # (-e 1 without -t: the server exits when the held one leaves.)
        del extra
else:
    more = [connect() for _ in range(6)]
    for h in more:
        assert h.pread(512, 0) == b"\x01" * 512
        h.shutdown()

# Leave one by one; the server must not go away while one is connected.
while len(held) > 1:
    held.pop().shutdown()
    time.sleep(0.1)
    assert held[0].pread(512, 0) == b"\x01" * 512, "server gone too early"
held.pop().shutdown()
EOP

n=0
for t in t ""; do
    for e in 1 2 0; do
        n=$((n + 1))
        start_server "$tmp/s$n" "$tmp/p$n" -f raw ${t:+-t} -e $e "$img"
        pid=$(cat "$tmp/p$n")
        $PYTHON "$tmp/clients.py" "$(uri "$tmp/s$n")" $e "$t" ||
            fail "-e $e ${t:+-t}: client checks failed"
        if [ -n "$t" ]; then
            sleep 0.3
            alive $pid "-t -e $e after all clients left"
            nbdinfo --size "$(uri "$tmp/s$n")" >/dev/null ||
                fail "-t -e $e: no new client accepted"
            alive $pid "-t -e $e after nbdinfo"
        else
            gone $pid "-e $e after the last client left"
            [ ! -e "$tmp/s$n" ] || fail "-e $e: socket left after exit"
        fi
    done
done

# The defaults (-e 1, no -t): one nbdinfo and the server is gone.
n=$((n + 1))
start_server "$tmp/s$n" "$tmp/p$n" -f raw "$img"
pid=$(cat "$tmp/p$n")
nbdinfo --size "$(uri "$tmp/s$n")" >/dev/null || fail "nbdinfo failed"
gone $pid "default options after one nbdinfo"
