"""Hole punching racing every mirror transition (see test-mirror-stress.sh).

Two NBD clients write the live export at QD16: data, write-zeroes without
NO_HOLE (the server may punch holes) and trims.  Meanwhile each cycle does
one of: a mirror force-cancelled at a random instant (before or after
ready, background or write-blocking), a mirror cancelled once ready (the
target a copy, checked equal to the source then), a mirror completed (the
export moves to the target), or a blockdev-snapshot-sync of the export's
node.  After every loop of cycles the writers stop, and the export must
hold exactly what they wrote (a trimmed byte may read as anything, once
read it must stay), and every image qemu-img check clean.
Usage: mirror_stress.py QMP NBDSOCK DIR SEED LOOPS CYCLES"""
import os
import random
import subprocess
import sys
import threading
import time

import nbd
from jobs_qmp import QMP, Writer
from live_writers import read_all, uri


class HoleWriter(Writer):
    """Writes, hole-punching write-zeroes and trims; a trimmed byte is
    unknown until it is read."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.unknown = bytearray(len(self.model))

    def step(self):
        ln = self.rnd.choice((512, 4096, 65536, 777, 131072,
                              self.rnd.randrange(1, self.max_len)))
        off = self.rnd.randrange(self.lo, self.hi - ln)
        self._wait_room(off, ln)
        kind = self.rnd.randrange(10)
        rel = off - self.lo
        if kind < 6:
            data = bytes([self.rnd.randrange(1, 256)]) * ln
            c = self.h.aio_pwrite(data, off)
            self.model[rel:rel + ln] = data
            self.unknown[rel:rel + ln] = bytes(ln)
        elif kind < 9:
            c = self.h.aio_zero(ln, off)  # no NO_HOLE: may punch a hole
            self.model[rel:rel + ln] = bytes(ln)
            self.unknown[rel:rel + ln] = bytes(ln)
        else:
            c = self.h.aio_trim(ln, off)
            self.unknown[rel:rel + ln] = b"\1" * ln
        self.busy[c] = (off, off + ln)
        self.writes += 1


def start(sock, size, seed, model, unknown):
    ws = []
    for i in range(2):
        lo, hi = i * size // 2, (i + 1) * size // 2
        w = HoleWriter(nbd, uri(sock), lo, hi, seed + i, model[lo:hi])
        w.unknown[:] = unknown[lo:hi]
        ws.append(w)
    ts = [threading.Thread(target=w.run) for w in ws]
    for t in ts:
        t.start()
    return ws, ts


def stop(ws, ts):
    for w in ws:
        w.stopped = True
    for t in ts:
        t.join()
    for w in ws:
        w.h.flush()
        w.h.shutdown()
    return (bytearray(b"".join(bytes(w.model) for w in ws)),
            bytearray(b"".join(bytes(w.unknown) for w in ws)))


def check_data(sock, size, model, unknown, where):
    got = read_all(sock, size)
    for o in range(0, size, 512):
        if got[o:o + 512] == model[o:o + 512]:
            continue
        for i in range(o, min(o + 512, size)):
            if got[i] != model[i] and not unknown[i]:
                raise AssertionError(f"{where}: byte {i} reads "
                                     f"{got[i]:#x}, written {model[i]:#x}")
    model[:] = got  # what a trim left is known from now on
    unknown[:] = bytes(size)


def qemu_img_check(path, live):
    """Clean; an image in use may show leaks (clusters whose refcount
    the server has not written back yet), never corruption."""
    args = ["qemu-img", "check", "-q"] + (["-U"] if live else []) + [path]
    r = subprocess.run(args, capture_output=True, text=True)
    ok = (0, 3) if live else (0,)
    assert r.returncode in ok, f"qemu-img check {path}: {r.returncode} " \
                               f"{r.stdout}{r.stderr}"


class Stress:
    def __init__(self, q, sock, d, rnd, size):
        self.q, self.sock, self.d, self.rnd, self.size = q, sock, d, rnd, size
        self.cur = "disk"          # the export's node
        self.live = [f"{d}/disk.qcow2"]   # images of the export's chain
        self.closed = []           # images no longer open
        self.n = 0

    def new_target(self):
        self.n += 1
        name = f"t{self.n}"
        fmt = self.rnd.choice(("qcow2", "raw"))
        path = f"{self.d}/{name}.{fmt}"
        if fmt == "qcow2":
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path,
                            str(self.size)], check=True)
        else:
            with open(path, "wb") as f:
                f.truncate(self.size)
        self.q.cmd("blockdev-add", {"driver": fmt, "node-name": name,
                                    "file": {"driver": "file",
                                             "filename": path}})
        return name, path

    def wait_gone(self, job):
        self.q.wait_event("JOB_STATUS_CHANGE", id=job, status="null",
                          timeout=60)

    def drop(self, name, path):
        self.q.cmd("blockdev-del", {"node-name": name})
        self.closed.append(path)
        if path.endswith(".qcow2"):
            qemu_img_check(path, False)

    def mirror(self, name, mode):
        job = f"j{self.n}"
        args = {"job-id": job, "device": self.cur, "target": name,
                "sync": "full", "copy-mode": mode,
                "granularity": self.rnd.choice((4096, 65536))}
        if self.rnd.randrange(3) == 0:
            args["filter-node-name"] = f"f{self.n}"
        self.q.cmd("blockdev-mirror", args)
        return job

    def cycle(self):
        what = self.rnd.choice(("force", "force", "cancel", "complete",
                                "snapshot"))
        mode = self.rnd.choice(("background", "write-blocking"))
        if what == "snapshot":
            self.n += 1
            path = f"{self.d}/s{self.n}.qcow2"
            self.q.cmd("blockdev-snapshot-sync", {
                "node-name": self.cur, "snapshot-file": path,
                "snapshot-node-name": f"s{self.n}"})
            self.cur = f"s{self.n}"
            self.live.append(path)
            return
        name, path = self.new_target()
        job = self.mirror(name, mode)
        if what == "force":
            time.sleep(self.rnd.uniform(0, 0.15))
            self.q.cmd("job-cancel", {"id": job})
            self.wait_gone(job)
            self.drop(name, path)
            return
        self.q.wait_event("BLOCK_JOB_READY", device=job, timeout=60)
        time.sleep(self.rnd.uniform(0, 0.05))
        if what == "cancel":
            self.q.cmd("block-job-cancel", {"device": job})
            ev = self.q.wait_event("BLOCK_JOB_COMPLETED", device=job)
            assert "error" not in ev["data"], ev
            self.wait_gone(job)
            self.drop(name, path)
            return
        self.q.cmd("job-complete", {"id": job})
        ev = self.q.wait_event("BLOCK_JOB_COMPLETED", device=job)
        assert "error" not in ev["data"], ev
        self.wait_gone(job)
        # The old chain is out of the export's path; it stays open.
        self.cur = name
        self.closed.extend(self.live)
        self.live = [path]

    def check_images(self):
        for p in self.live + self.closed:
            if p.endswith(".qcow2"):
                qemu_img_check(p, True)


def main(qmp, sock, d, seed, loops, cycles):
    rnd = random.Random(seed)
    q = QMP(qmp)
    h = nbd.NBD()
    h.connect_uri(uri(sock))
    size = h.get_size()
    h.shutdown()
    model, unknown = bytearray(read_all(sock, size)), bytearray(size)
    s = Stress(q, sock, d, rnd, size)
    t0 = time.monotonic()
    for loop in range(loops):
        ws, ts = start(sock, size, seed + 7 * loop, model, unknown)
        for _ in range(cycles):
            s.cycle()
            q.events.clear()
        model, unknown = stop(ws, ts)
        check_data(sock, size, model, unknown, f"loop {loop}")
        s.check_images()
        print(f"loop {loop}: ok, export on {s.cur}, "
              f"{time.monotonic() - t0:.1f} s", flush=True)
    with open(f"{d}/final.raw", "wb") as f:
        f.write(model)
    with open(f"{d}/final.node", "w") as f:
        f.write(s.live[-1])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]),
         int(sys.argv[5]), int(sys.argv[6]))
