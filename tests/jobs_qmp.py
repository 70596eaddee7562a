"""jobs_qmp - a small QMP client and helpers for the backup job tests.

Standard library only (libnbd is imported by the tests that need it).

    q = QMP(path)                       # greeting + qmp_capabilities
    q.cmd("drive-backup", {"device": "disk", ...})   # the "return" value
    cls, desc = q.error("job-pause", {"id": "nope"})  # must fail
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device="b0")
    q.statuses("b0")                    # JOB_STATUS_CHANGE statuses so far
"""
import json
import random
import socket
import time


class QMPError(Exception):
    def __init__(self, cls, desc):
        super().__init__(f"{cls}: {desc}")
        self.cls = cls
        self.desc = desc


class QMP:
    def __init__(self, path, timeout=60):
        deadline = time.monotonic() + 10
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.events = []
        greeting = self._recv()
        assert "QMP" in greeting, f"no QMP greeting: {greeting}"
        self.cmd("qmp_capabilities")

    def _recv(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("QMP socket closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, name, args=None):
        """The whole response ({"return": ...} or {"error": ...})."""
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\r\n")
        while True:
            r = self._recv()
            if "event" in r:
                self.events.append(r)
            else:
                return r

    def cmd(self, name, args=None):
        r = self.execute(name, args)
        if "error" in r:
            raise QMPError(r["error"]["class"], r["error"]["desc"])
        return r["return"]

    def error(self, name, args=None):
        r = self.execute(name, args)
        assert "error" in r, f"{name} {args} should fail, returned {r}"
        return r["error"]["class"], r["error"]["desc"]

    def _match(self, ev, name, data):
        return ev["event"] == name and all(
            ev.get("data", {}).get(k) == v for k, v in data.items())

    def find_event(self, name, **data):
        for ev in self.events:
            if self._match(ev, name, data):
                return ev
        return None

    def wait_event(self, name, timeout=120, **data):
        """The first event @name whose data has @data, received or to come."""
        deadline = time.monotonic() + timeout
        while True:
            ev = self.find_event(name, **data)
            if ev:
                return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {name} {data} in {timeout} s; "
                                   f"events: {self.events}")
            self.sock.settimeout(left)
            try:
                r = self._recv()
            except socket.timeout:
                continue
            assert "event" in r, f"unexpected reply {r}"
            self.events.append(r)

    def statuses(self, job_id):
        return [e["data"]["status"] for e in self.events
                if e["event"] == "JOB_STATUS_CHANGE"
                and e["data"]["id"] == job_id]

    def job(self, job_id):
        """The query-block-jobs entry of @job_id, or None."""
        for j in self.cmd("query-block-jobs"):
            if j["device"] == job_id:
                return j
        return None

    def wait_status(self, job_id, status, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            j = self.job(job_id)
            if j and j["status"] == status:
                return j
            time.sleep(0.02)
        raise TimeoutError(f"job {job_id} never reached {status}: "
                           f"{self.job(job_id)}")


CHUNK = 64 * 1024


def make_disk(path, size, seed, hole_ratio=4):
    """A sparse image: one chunk in @hole_ratio is a hole, the rest random
    data, from @seed."""
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, CHUNK):
            if rnd.randrange(hole_ratio) == 0:
                continue
            f.seek(off)
            f.write(rnd.randbytes(min(CHUNK, size - off)))


class Writer:
    """A libnbd client writing random ranges of [lo, hi) with up to @depth
    requests in flight until stop() (or @count writes), keeping a model of
    the region to check that the export lost nothing.  Its write-zeroes
    requests carry @zero_flags (e.g. nbd.CMD_FLAG_NO_HOLE: the server must
    not unmap)."""

    def __init__(self, nbd, uri, lo, hi, seed, initial, depth=16,
                 max_len=256 * 1024, zero_flags=0):
        self.h = nbd.NBD()
        self.h.connect_uri(uri)
        self.nbd = nbd
        self.lo, self.hi = lo, hi
        self.rnd = random.Random(seed)
        self.model = bytearray(initial)
        self.depth = depth
        self.max_len = max_len
        self.busy = {}
        self.writes = 0
        self.stopped = False
        self.zero_flags = zero_flags

    def _reap(self):
        for c in list(self.busy):
            if self.h.aio_command_completed(c):
                del self.busy[c]

    def _wait_room(self, off, ln):
        while len(self.busy) >= self.depth or any(
                a < off + ln and off < b for a, b in self.busy.values()):
            self.h.poll(-1)
            self._reap()

    def step(self):
        ln = self.rnd.choice((512, 4096, 4096, 65536, 777, 131072,
                              self.rnd.randrange(1, self.max_len)))
        off = self.rnd.randrange(self.lo, self.hi - ln)
        self._wait_room(off, ln)
        kind = self.rnd.randrange(10)
        rel = off - self.lo
        if kind < 8:
            data = bytes([self.rnd.randrange(1, 256)]) * ln
            c = self.h.aio_pwrite(data, off)
            self.model[rel:rel + ln] = data
        else:
            c = self.h.aio_zero(ln, off, flags=self.zero_flags)
            self.model[rel:rel + ln] = bytes(ln)
        self.busy[c] = (off, off + ln)
        self.writes += 1

    def drain(self):
        while self.busy:
            self.h.poll(-1)
            self._reap()

    def run(self):
        while not self.stopped:
            self.step()
        self.drain()

    def check(self):
        """The export holds what this writer wrote, and nothing else."""
        self.drain()
        self.h.flush()
        got = self.h.pread(self.hi - self.lo, self.lo)
        assert got == bytes(self.model), \
            f"region {self.lo}..{self.hi} lost writes"
        self.h.shutdown()
