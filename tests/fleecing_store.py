"""A bounded fleecing store (snapnbd's x-max-store-bytes), checked against a
reference model.  The daemon serves qcow2 node "disk"; this adds

  blockdev-add "tmp" (the store: raw or qcow2 with 4 KiB clusters)
  blockdev-add copy-before-write "cbw" (file: disk, target: tmp,
               x-max-store-bytes, x-on-store-full, cbw-timeout)
  blockdev-add snapshot-access "acc" (file: cbw)
  block-export-add "live" (cbw, writable) and "pit" (acc, writable: a
               pull client's discards free the store)

and writes seeded random ranges through "live", one at a time, while the
model predicts, chunk by chunk, what the copy-before-write copies, what the
store keeps, when it is full, and the counters query-named-block-nodes
shows (x-cbw).  Modes:

  break   x-on-store-full=break-snapshot: the point in time is exact up to
          the write that finds the store full; that write and all later
          ones succeed, and the snapshot cannot be read any more.
  wait    x-on-store-full=wait: a write that finds the store full waits
          (its copies so far are kept) until the pull client discards
          enough of the snapshot; then it completes, and the point in time
          stays exact throughout.  At the end the pull client goes while a
          write waits: the write goes on, the point in time is lost.
  timeout wait with cbw-timeout=1 and on-cbw-error=break-guest-write: the
          write that finds the store full fails after a second, the
          snapshot holds, and after a discard the same write goes through.
  slow    cbw-timeout=1 (QEMU's) with a store whose writes a blkdebug
          breakpoint holds: with on-cbw-error=break-guest-write the write
          fails after a second and the snapshot holds (the copy ends once
          resumed); with break-snapshot the write goes on after a second
          and the snapshot is lost.
  backup  blockdev-backup sync=none x-max-store-bytes into a qcow2 whose
          backing is the disk (the older fleecing): the job fails when the
          store is full, saying so, with its counters in the event.

Usage: fleecing_store.py MODE QMP NBDSOCK STORE FORMAT SEED
"""
import random
import sys
import time

import nbd
from jobs_qmp import QMP

SIZE = 8 << 20
WRITES = 400


def uri(sock, name):
    return f"nbd+unix:///{name}?socket={sock}"


def connect(sock, name):
    h = nbd.NBD()
    h.connect_uri(uri(sock, name))
    return h


class Model:
    """What the point in time, the live disk and the store hold, and what
    block-copy counts, chunk by chunk."""

    def __init__(self, disk, gran, limit):
        self.pit = bytes(disk)
        self.live = bytearray(disk)
        self.gran = gran
        self.limit = limit
        self.done = set()     # copied or forgotten
        self.gone = set()     # forgotten (discarded through "pit")
        self.stored = set()   # copied and kept
        self.kept = self.peak = 0
        self.copies = self.copied = self.waits = self.full = 0
        self.broken = False

    def chunks(self, off, ln):
        return range(off // self.gran, (off + ln - 1) // self.gran + 1)

    def before_write(self, off, ln):
        """Copies what fits of the chunks [off, off + ln) overwrites, in
        order, one run per stretch of chunks copied together.  Returns the
        chunks left when the store is full (empty: the write goes on)."""
        todo = [c for c in self.chunks(off, ln) if c not in self.done]
        if self.broken or not todo:
            return []
        self.waits += 1
        return self.copy(todo, new_call=True)

    def copy(self, todo, new_call=False):
        prev = None
        for k, c in enumerate(todo):
            if c in self.done:
                prev = None
                continue
            if self.kept + self.gran > self.limit:
                if new_call:
                    self.full += 1
                return todo[k:]
            if prev is None or c != prev + 1:
                self.copies += 1
            self.done.add(c)
            self.stored.add(c)
            self.kept += self.gran
            self.peak = max(self.peak, self.kept)
            self.copied += self.gran
            prev = c
        return []

    def write(self, off, data):
        self.live[off:off + len(data)] = data

    def forget(self, first, n):
        for c in range(first, first + n):
            self.done.add(c)
            self.gone.add(c)
            if c in self.stored:
                self.stored.discard(c)
                self.kept -= self.gran


def x_cbw(q, node="cbw"):
    for n in q.cmd("query-named-block-nodes", {"flat": True}):
        if n["node-name"] == node:
            return n["x-cbw"]
    raise AssertionError(f"no node {node}")


def check_counters(st, m, where, waiting=0):
    """@waiting: writes still waiting (counted in guest-waits when they
    end)."""
    want = {"granularity": m.gran, "store-bytes": m.kept,
            "store-peak-bytes": m.peak, "max-store-bytes": m.limit,
            "copies": m.copies, "copied-bytes": m.copied,
            "guest-waits": m.waits - waiting, "store-full": m.full,
            "snapshot-broken": m.broken}
    got = {k: st.get(k) for k in want}
    assert got == want, f"{where}: counters {got}, the model says {want}"
    assert st["guest-wait-ns"] >= st["guest-wait-max-ns"] >= 0, st


def check_pit(pit, m):
    """Every chunk of the snapshot not forgotten reads as the point in
    time; forgotten ones fail."""
    c, n = 0, SIZE // m.gran
    while c < n:
        if c in m.gone:
            c += 1
            continue
        e = c
        while e < n and e not in m.gone and e - c < 256:
            e += 1
        got = pit.pread((e - c) * m.gran, c * m.gran)
        assert got == m.pit[c * m.gran:e * m.gran], \
            f"the snapshot differs from the point in time in chunks {c}..{e}"
        c = e
    if m.gone:
        c = min(m.gone)
        try:
            pit.pread(m.gran, c * m.gran)
        except nbd.Error:
            pass
        else:
            raise AssertionError(f"forgotten chunk {c} was read")


def snapshot_fails(pit):
    try:
        pit.pread(4096, 0)
    except nbd.Error:
        return True
    return False


def random_write(rnd):
    ln = rnd.choice((512, 4096, 4096, 4096, 8192, 12288,
                     rnd.randrange(1, 40) * 512))
    off = rnd.randrange(0, (SIZE - ln) // 512) * 512
    return off, bytes([rnd.randrange(1, 256)]) * ln


def issue(live, off, data, zero):
    if zero:
        return live.aio_zero(len(data), off)
    return live.aio_pwrite(data, off)


def wait_done(live, cookie, timeout):
    deadline = time.monotonic() + timeout
    while not live.aio_command_completed(cookie):
        if time.monotonic() > deadline:
            return False
        live.poll(100)
    return True


def add_nodes(q, store, fmt, extra):
    tmp = {"driver": fmt, "node-name": "tmp", "discard": "unmap",
           "file": {"driver": "file", "filename": store}}
    q.cmd("blockdev-add", tmp)
    cbw = {"driver": "copy-before-write", "node-name": "cbw", "file": "disk",
           "target": "tmp"}
    cbw.update(extra)
    q.cmd("blockdev-add", cbw)
    q.cmd("blockdev-add", {"driver": "snapshot-access", "node-name": "acc",
                           "discard": "unmap", "file": "cbw"})
    q.cmd("block-export-add", {"type": "nbd", "id": "live", "name": "live",
                               "node-name": "cbw", "writable": True})
    q.cmd("block-export-add", {"type": "nbd", "id": "pit", "name": "pit",
                               "node-name": "acc", "writable": True})


def free_room(pit, m, need, avoid):
    """The pull client discards one range of whole chunks, clear of
    @avoid, that holds at least @need stored chunks (one request: the
    store's room frees at once)."""
    n = SIZE // m.gran
    for lo, hi in ((0, min(avoid)), (max(avoid) + 1, n)):
        have = 0
        for e in range(lo, hi):
            have += e in m.stored
            if have >= need:
                pit.trim((e + 1 - lo) * m.gran, lo * m.gran)
                m.forget(lo, e + 1 - lo)
                return
    raise AssertionError("no room to free")


def run_cbw(mode, qmp, sock, store, fmt, seed):
    rnd = random.Random(seed)
    q = QMP(qmp)
    gran = 4096
    limit = rnd.randrange(60, 120) * gran + gran // 2
    extra = {"x-max-store-bytes": limit}
    if mode == "break":
        extra["x-on-store-full"] = "break-snapshot"
    else:
        extra["x-on-store-full"] = "wait"
    if mode == "timeout":
        extra["cbw-timeout"] = 1
        extra["on-cbw-error"] = "break-guest-write"
    add_nodes(q, store, fmt, extra)
    live, pit = connect(sock, "live"), connect(sock, "pit")
    m = Model(live.pread(SIZE, 0), gran, limit)
    assert pit.pread(SIZE, 0) == m.pit, "the snapshot is not the disk"
    check_counters(x_cbw(q), m, "at the start")
    broke_at = blocked = failed = 0
    enough = {"break": WRITES, "wait": 12, "timeout": 4}[mode]
    for i in range(WRITES):
        if blocked >= enough:
            break
        off, data = random_write(rnd)
        zero = rnd.randrange(8) == 0
        if zero:
            data = bytes(len(data))
        if i % 50 == 0 and not m.broken:
            check_pit(pit, m)
            check_counters(x_cbw(q), m, f"before write {i}")
            a = rnd.randrange(SIZE // gran - 4)
            pit.trim(3 * gran, a * gran)       # the client has read these
            m.forget(a, 3)
        todo = [c for c in m.chunks(off, len(data)) if c not in m.done]
        if mode == "break" and not m.broken and \
                m.kept + len(todo) * gran > limit:
            check_pit(pit, m)                  # exact up to the limit
        left = m.before_write(off, len(data))
        cookie = issue(live, off, data, zero)
        if left and mode == "break":
            m.broken, broke_at = True, i
            assert wait_done(live, cookie, 30), "a write hung"
            assert snapshot_fails(pit), "the broken snapshot was read"
            st = x_cbw(q)
            assert "store is full" in st.get("snapshot-error", ""), st
        elif left:
            # The write waits for room, its first copies kept.
            assert not wait_done(live, cookie, 0.2), \
                f"write {i} did not wait for room in the store"
            blocked += 1
            check_counters(x_cbw(q), m, f"while write {i} waits", 1)
            check_pit(pit, m)
            if mode == "timeout":
                try:
                    assert wait_done(live, cookie, 10), "no timeout"
                except nbd.Error:
                    failed += 1
                else:
                    raise AssertionError("a timed out write succeeded")
                free_room(pit, m, len(left), m.chunks(off, len(data)))
                m.waits += 1                   # the write, again
                assert not m.copy(left)
                cookie = issue(live, off, data, zero)
            else:
                free_room(pit, m, len(left), m.chunks(off, len(data)))
                assert not m.copy(left)
            assert wait_done(live, cookie, 30), "the write did not resume"
        else:
            assert wait_done(live, cookie, 30), "a write hung"
        m.write(off, data)
    if mode == "break":
        assert m.broken, "the store never filled up"
        assert snapshot_fails(pit)
    else:
        assert blocked >= 3, f"only {blocked} writes waited for room"
        check_pit(pit, m)
    st = x_cbw(q)
    check_counters(st, m, "at the end")
    if mode == "wait":
        assert st["guest-wait-max-ns"] >= 150_000_000, st
    if mode == "timeout":
        assert failed == blocked, (failed, blocked)
        assert st["guest-wait-max-ns"] >= 900_000_000, st
    assert live.pread(SIZE, 0) == bytes(m.live), "the live disk lost writes"
    live.flush()
    print(f"{mode}: {i} writes, limit {limit}, kept {m.kept} "
          f"(peak {m.peak}), {m.copies} copies, {m.waits} writes copied, "
          f"{m.full} found the store full"
          + (f" (the first at write {broke_at})" if mode == "break" else
             f", {blocked} waited for room")
          + f", guest wait max {st['guest-wait-max-ns'] / 1e6:.1f} ms")
    if mode == "wait":
        reader_leaves(q, live, pit, m, rnd)
    else:
        pit.shutdown()
        q.cmd("block-export-del", {"id": "pit"})
    live.shutdown()
    q.cmd("block-export-del", {"id": "live"})


def reader_leaves(q, live, pit, m, rnd):
    """A write waits for room; the pull client goes and its
    snapshot-access node is deleted: nothing can free room any more, so
    the write goes on and the point in time is lost."""
    while True:
        off, data = random_write(rnd)
        if m.before_write(off, len(data)):
            break
        live.pwrite(data, off)
        m.write(off, data)
    cookie = issue(live, off, data, False)
    assert not wait_done(live, cookie, 0.2), "the last write did not wait"
    pit.shutdown()
    q.cmd("block-export-del", {"id": "pit"})
    q.cmd("blockdev-del", {"node-name": "acc"})
    assert wait_done(live, cookie, 10), "the write waits for a reader gone"
    m.write(off, data)
    st = x_cbw(q)
    assert st["snapshot-broken"] and \
        "store is full" in st.get("snapshot-error", ""), st
    assert live.pread(SIZE, 0) == bytes(m.live), "the live disk lost writes"


def run_backup(qmp, sock, store, seed):
    """blockdev-backup sync=none with x-max-store-bytes: the store fills
    and the job fails saying so; its counters come with the event."""
    rnd = random.Random(seed)
    q = QMP(qmp)
    q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "tmp",
                           "backing": "disk",
                           "file": {"driver": "file", "filename": store}})
    err = q.error("blockdev-backup", {"job-id": "b0", "device": "disk",
                                      "target": "tmp", "sync": "full",
                                      "x-max-store-bytes": 65536})
    assert "sync mode 'none'" in err[1], err
    limit = 40 * 4096
    q.cmd("blockdev-backup", {"job-id": "b0", "device": "disk",
                              "target": "tmp", "sync": "none",
                              "x-max-store-bytes": limit})
    live = connect(sock, "disk")
    st = [j for j in q.cmd("query-jobs") if j["id"] == "b0"][0]["x-cbw"]
    assert st["max-store-bytes"] == limit and st["store-bytes"] == 0, st
    assert st["granularity"] == 4096, st
    gran = 4096
    m = Model(live.pread(SIZE, 0), gran, limit)
    for i in range(WRITES):
        off, data = random_write(rnd)
        left = m.before_write(off, len(data))
        live.pwrite(data, off)
        m.write(off, data)
        if left:
            m.broken = True
            break
        if i % 20 == 0:
            bj = [j for j in q.cmd("query-block-jobs")
                  if j["device"] == "b0"][0]["x-cbw"]
            assert bj["store-bytes"] == m.kept, (bj, m.kept)
    assert m.broken, "the store never filled up"
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device="b0")
    assert "fleecing store full" in ev["data"].get("error", ""), ev
    st = ev["data"]["x-cbw"]
    check_counters(st, m, "in the event")
    assert live.pread(SIZE, 0) == bytes(m.live), "the live disk lost writes"
    live.shutdown()
    print(f"backup: failed as the store filled ({m.kept} of {limit} bytes, "
          f"{m.copies} copies): {ev['data']['error']}")


def run_slow(qmp, sock, store, seed):
    rnd = random.Random(seed)
    for on_error in ("break-guest-write", "break-snapshot"):
        q = QMP(qmp)
        q.cmd("blockdev-add", {"driver": "blkdebug", "node-name": "tmp",
                               "image": {"driver": "file",
                                         "filename": store}})
        q.cmd("blockdev-add", {"driver": "copy-before-write",
                               "node-name": "cbw", "file": "disk",
                               "target": "tmp", "cbw-timeout": 1,
                               "on-cbw-error": on_error})
        q.cmd("blockdev-add", {"driver": "snapshot-access",
                               "node-name": "acc", "file": "cbw"})
        for e, node in (("live", "cbw"), ("pit", "acc")):
            q.cmd("block-export-add", {"type": "nbd", "id": e, "name": e,
                                       "node-name": node, "writable": True})
        live, pit = connect(sock, "live"), connect(sock, "pit")
        before = live.pread(SIZE, 0)
        off = rnd.randrange(SIZE // 4096) * 4096
        while not any(before[off:off + 4096]):   # zeroes are not written
            off = rnd.randrange(SIZE // 4096) * 4096
        data = bytes([rnd.randrange(1, 256)]) * 4096
        q.cmd("x-blkdebug-break", {"node": "tmp", "event": "pwritev",
                                   "tag": "t"})
        t0 = time.monotonic()
        cookie = live.aio_pwrite(data, off)
        q.cmd("x-blkdebug-wait-break", {"node": "tmp", "tag": "t"})
        try:
            ok = wait_done(live, cookie, 10)
        except nbd.Error:
            ok = False
        took = time.monotonic() - t0
        assert 0.9 < took < 5, f"{on_error}: the write took {took:.2f} s"
        st = x_cbw(q)
        if on_error == "break-guest-write":
            assert not ok, "the write went on without its copy"
            q.cmd("x-blkdebug-resume", {"node": "tmp", "tag": "t"})
            assert pit.pread(SIZE, 0) == before, "the snapshot changed"
            assert live.pread(SIZE, 0) == before, "the failed write landed"
            live.pwrite(data, off)              # copied already: goes on
            assert pit.pread(SIZE, 0) == before, "the snapshot changed"
            assert not st["snapshot-broken"], st
        else:
            assert ok, "break-snapshot failed the guest's write"
            assert snapshot_fails(pit), "the broken snapshot was read"
            assert "timed out" in st.get("snapshot-error", ""), st
            q.cmd("x-blkdebug-resume", {"node": "tmp", "tag": "t"})
        assert st["guest-wait-max-ns"] >= 900_000_000, st
        want = bytearray(before)
        want[off:off + 4096] = data
        assert live.pread(SIZE, 0) == bytes(want), "the live disk lost a write"
        print(f"slow store, {on_error}: the write gave up its copy after "
              f"{took:.2f} s")
        live.shutdown()
        pit.shutdown()
        for e in ("live", "pit"):
            q.cmd("block-export-del", {"id": e})
        for n in ("acc", "cbw", "tmp"):
            q.cmd("blockdev-del", {"node-name": n})


def main():
    mode, qmp, sock, store, fmt, seed = sys.argv[1:7]
    if mode == "slow":
        run_slow(qmp, sock, store, int(seed))
    elif mode == "backup":
        run_backup(qmp, sock, store, int(seed))
    else:
        run_cbw(mode, qmp, sock, store, fmt, int(seed))


if __name__ == "__main__":
    main()
