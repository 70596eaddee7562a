#!/usr/bin/env bash
# The server survives misbehaving clients and keeps serving the others: a
# bad request magic (or option magic) costs only that connection; clients
# that vanish mid-handshake, mid-payload or with replies pending leave no
# thread behind; and a bounded, seeded fuzz (random bytes at every stage
# of the protocol) never kills the server.  FUZZ_SEED=N repeats a run,
# FUZZ_COUNT=N makes it longer.
source "${srcdir:-$(dirname "$0")}/functions.sh"

truncate -s 4M "$tmp/disk.img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 "$tmp/disk.img"

export PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 SOCK=$tmp/sock PIDFILE=$tmp/pid
$PYTHON - <<'PY' || fail "robustness rules"
import os, random, socket, struct, time
import nbd_raw as N
sock = os.environ["SOCK"]
pid = N.server_pid(os.environ["PIDFILE"])
SIZE = 4 << 20
MARK = b"\x66" * 4096


def threads():
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])


# The baseline after one client has come and gone (a runtime may start a
# helper thread of its own on first use).
N.connect(sock).disconnect()
time.sleep(0.3)
THREADS0 = threads()


def server_fine():
    """The server lives, serves a new client, and has no threads left
    over from the clients that are gone."""
    os.kill(pid, 0)
    c = N.connect(sock, structured=True)
    assert c.write(0, MARK) == 0
    assert c.read(0, 4096) == MARK
    c.disconnect()
    for i in range(50):
        if threads() <= THREADS0:
            return
        time.sleep(0.1)
    raise AssertionError("%d threads, %d at the start" % (threads(), THREADS0))


def bad_request_magic():
    for magic in (0, 0x25609514, 0x67446698, 0xffffffff):
        c = N.connect(sock)
        good = [c.request(N.CMD_READ, offset=i * 4096, length=4096)
                for i in range(8)]
        c.send(struct.pack(">IHHQQI", magic, 0, N.CMD_READ, 7, 0, 512))
        # Replies to the requests before it may come (this server sends
        # them); then the connection ends, with nothing for the bad one.
        seen = set()
        try:
            while True:
                r = c.reply()
                assert r.cookie in good and r.cookie not in seen, r
                seen.add(r.cookie)
        except N.Closed:
            pass
        server_fine()


def bad_option_magic():
    c = N.Client(sock)
    c.handshake()
    c.send(struct.pack(">QII", 0x49484156454F5055, N.OPT_LIST, 0))
    assert c.is_closed(), c.unexpected
    server_fine()


def vanishing_clients():
    def gone(steps):
        c = N.Client(sock)
        try:
            steps(c)
        finally:
            c.close()

    for i in range(10):
        gone(lambda c: None)                                  # says nothing
        gone(lambda c: c.send(b"\0\0"))                       # half the flags
        gone(lambda c: (c.greeting(), c.send(b"\0\0")))
        gone(lambda c: (c.handshake(), c.send(b"IHAVE")))     # half a header
        gone(lambda c: (c.handshake(), c.send_option(N.OPT_GO, b"\0\0\0\x10",
                                                     length=100)))
        gone(lambda c: (c.handshake(), c.send_option(N.OPT_LIST)))
    server_fine()
    for structured in (False, True):
        for i in range(10):
            # A WRITE header and half its payload.
            c = N.connect(sock, structured=structured)
            c.request(N.CMD_WRITE, offset=0, length=65536, send_payload=False)
            c.send(b"\x99" * 32768)
            c.close()
            # Half a request header.
            c = N.connect(sock, structured=structured)
            c.send(struct.pack(">IHH", N.REQUEST_MAGIC, 0, N.CMD_READ))
            c.close()
            # Replies the client never reads.
            c = N.connect(sock, structured=structured)
            for j in range(16):
                c.request(N.CMD_READ, offset=0, length=1 << 20)
            c.close()
    server_fine()
    c = N.connect(sock)
    assert c.read(0, 4096) == MARK, "a half-sent WRITE was written"


def fuzz():
    seed = int(os.environ.get("FUZZ_SEED") or random.randrange(1 << 32))
    print("fuzz seed %d (FUZZ_SEED=%d repeats this run)" % (seed, seed))
    rng = random.Random(seed)
    count = int(os.environ.get("FUZZ_COUNT") or 300)
    try:
        deadline = time.monotonic() + (8 if count <= 300 else 1e9)
        for i in range(count):
            if time.monotonic() > deadline:
                print("fuzz: time is up after %d connections" % i)
                break
            fuzz_one(rng)
            if i % 25 == 0:
                os.kill(pid, 0)
        server_fine()
    except BaseException:
        print("fuzz failed with seed %d (FUZZ_SEED=%d)" % (seed, seed))
        raise


def junk(rng, n):
    return bytes(rng.randrange(256) for _ in range(n))


def rand_len(rng):
    return rng.choice((0, 1, 4, 17, 512, 4096, 65536, 1 << 20, 32 << 20,
                       0x7fffffff, 0xffffffff, rng.randrange(1 << 32)))


def fuzz_options(rng, c):
    for _ in range(rng.randrange(1, 8)):
        opt = rng.choice((rng.randrange(13), rng.randrange(1 << 32)))
        payload = junk(rng, rng.choice((0, 1, 4, 6, 20, 100)))
        if rng.random() < 0.5 and opt in (N.OPT_GO, N.OPT_INFO):
            payload = N.Client.info_payload("", [rng.randrange(5)])
        if rng.random() < 0.3 and opt in (9, 10):
            payload = N.Client.meta_payload("", ["base:allocation",
                                                 junk(rng, 5).hex()])
        length = len(payload) if rng.random() < 0.7 else rand_len(rng)
        c.send_option(opt, payload, length)


def fuzz_requests(rng, c):
    for _ in range(rng.randrange(1, 20)):
        type = rng.choice((rng.randrange(9), rng.randrange(1 << 16)))
        flags = rng.choice((0, 1 << rng.randrange(16), rng.randrange(1 << 16)))
        off = rng.choice((0, 512, SIZE - 512, SIZE, rng.randrange(1 << 64)))
        length = rng.choice((0, 512, 4096, 65536, rand_len(rng)))
        magic = N.REQUEST_MAGIC if rng.random() < 0.97 else rng.randrange(1 << 32)
        msg = struct.pack(">IHHQQI", magic, flags, type, rng.randrange(1 << 64),
                          off, length)
        if type == N.CMD_WRITE:
            msg += junk(rng, min(length, rng.choice((0, 100, 4096))))
        c.send(msg)


def fuzz_one(rng):
    mode = rng.randrange(6)
    c = N.Client(sock, timeout=2)
    try:
        if mode == 0:                     # junk instead of client flags
            c.send(junk(rng, rng.randrange(1, 200)))
        elif mode == 1:                   # junk options
            c.handshake()
            c.send(junk(rng, rng.randrange(1, 300)))
        elif mode == 2:                   # plausible but random options
            c.handshake(rng.choice((1, 3, 3, 3, rng.randrange(1 << 32))))
            fuzz_options(rng, c)
        else:                             # random requests, or junk
            c.handshake()
            if mode >= 4:
                c.structured_reply()
                c.option(N.OPT_SET_META_CONTEXT,
                         N.Client.meta_payload("", ["base:allocation"]))
            c.go("")
            if mode == 5:
                c.send(junk(rng, rng.randrange(1, 500)))
            else:
                fuzz_requests(rng, c)
        c.sock.shutdown(socket.SHUT_WR)
        end = time.monotonic() + 1
        while time.monotonic() < end and c.sock.recv(1 << 20):
            pass
    except (OSError, N.Closed, AssertionError):
        pass   # the server may hang up on us at any point
    finally:
        c.close()


N.run_checks(bad_request_magic, bad_option_magic, vanishing_clients, fuzz)
PY
