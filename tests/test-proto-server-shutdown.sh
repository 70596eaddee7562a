#!/usr/bin/env bash
# Server shutdown (SIGTERM) with clients connected: requests already sent
# are each answered once, with success or ESHUTDOWN, before the server
# closes; a client still negotiating gets NBD_REP_ERR_SHUTDOWN for its next
# option or is disconnected, never a normal answer; nobody is left hanging
# and the server exits promptly.
source "${srcdir:-$(dirname "$0")}/functions.sh"

truncate -s 16M "$tmp/disk.img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 "$tmp/disk.img"

export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 SOCK=$tmp/sock PIDFILE=$tmp/pid
$PYTHON - <<'PY' || fail "server shutdown rules"
import os, signal, struct, time
import nbd_raw as N
sock = os.environ["SOCK"]
pid = N.server_pid(os.environ["PIDFILE"])
N_READS, LEN = 48, 256 * 1024


def drain(c, cookies):
    """Replies until the server closes: {cookie: final error}."""
    done, chunks = {}, {}
    try:
        while True:
            r = c.reply()
            assert r.cookie in cookies and r.cookie not in done, \
                "unexpected or repeated reply %r" % r
            chunks.setdefault(r.cookie, []).append(r)
            if r.done:
                got = chunks.pop(r.cookie)
                err = [x.error for x in got if x.error]
                done[r.cookie] = err[0] if err else 0
                if not err:
                    i = cookies[r.cookie]
                    data = N.assemble_read(got, i * LEN, LEN)
                    assert data == bytes([i + 1]) * LEN, "read %d" % i
    except N.Closed:
        pass
    return done


def shutdown_with_clients():
    w = N.connect(sock)
    for i in range(N_READS):
        assert w.write(i * LEN, bytes([i + 1]) * LEN) == 0
    w.disconnect()

    negotiating = N.Client(sock)
    negotiating.handshake()
    assert negotiating.option(N.OPT_LIST)[-1][0] == N.REP_ACK
    # 12 MiB of replies outstanding: workers block on a full socket.
    busy = []
    for structured in (False, True):
        c = N.connect(sock, structured=structured)
        c.cookies = {c.request(N.CMD_READ, offset=i * LEN, length=LEN): i
                     for i in range(N_READS)}
        busy.append(c)
    time.sleep(0.3)
    os.kill(pid, signal.SIGTERM)

    # Options after the shutdown began: ERR_SHUTDOWN (the SHOULD), or a
    # disconnect (what this server does: it stops reading options).  A
    # server that keeps the connection gets 2 s to see the signal first.
    closed = negotiating.is_closed(2)
    msg = struct.pack(">QII", N.IHAVEOPT, N.OPT_LIST, 0)
    if not closed and negotiating.try_send(msg):
        try:
            opt, rtype, data = negotiating.option_reply()
            assert rtype == N.REP_ERR_SHUTDOWN, \
                "option during shutdown answered %#x" % rtype
        except N.Closed:
            pass

    for c in busy:
        done = drain(c, c.cookies)
        missing = set(c.cookies) - set(done)
        assert not missing, "%d requests never answered" % len(missing)
        bad = {e for e in done.values() if e not in (0, N.ESHUTDOWN)}
        assert not bad, "errors %r during shutdown" % bad

    for i in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("server still running 5 s after SIGTERM")


N.run_checks(shutdown_with_clients)
PY
