#!/usr/bin/python3
"""backup_model - a randomized, seeded model-based test of backup jobs.

    backup_model.py [--seeds N] [--first S] [--seed S] [--timeout SECS]
                    [--budget SECS] [--keep] [--verbose]

Each seed picks a shape: a source (raw, or qcow2 over a raw or qcow2 backing
chain whose top layer has data, preallocated and plain zero clusters,
discarded, compressed and unallocated clusters), a sync mode (full, top,
none, incremental, bitmap with each bitmap-mode), a target (created by
drive-backup with mode absolute-paths or existing, or pre-created and added
with blockdev-add with or without "backing": null, raw or qcow2, the
fleecing overlay for sync=none, a target on a small tmpfs that fills up),
2-4 NBD clients and the job's actions (pause/resume, speed changes,
cancel); some seeds run a second full backup of the same source at the same
time (in the same transaction, or started while the first runs), whose
target must be its own point in time.  snapnbd ($SNAPNBD; or
qemu-storage-daemon with --daemon qsd) serves the source in daemon mode;
the clients send writes (aligned and not), write-zeroes (with and without
NO_HOLE, i.e. with and without MAY_UNMAP), trims, at queue depth 16, each
in its own slice of the disk, while the job is created and runs.

The model is a copy of the disk (a bytearray) that every write updates.  A
trimmed byte may read as before or as zero.  The point in time is the model
when the job-creating command was sent, minus the requests in flight then;
writes in flight when the command was sent or sent before its reply are
"ambiguous": each of their bytes may hold the point in time's value or the
value of any of them (a correct drain makes each write wholly before or
wholly after the point in time; that is not checked beyond the byte).  Half
of the seeds ("quiesce") stop issuing and drain the clients before the
command and resume after the reply: then nothing is ambiguous.

Checked after the job: the target (with its backing chain, for top, bitmap,
incremental; read offline with qemu-img after the daemon stopped) or, for
sync=none, the fleecing export read through NBD while the clients write,
equals the point in time (a Python check that allows exactly the ambiguous
and trimmed bytes, then qemu-img compare of the resolved expected image);
every qcow2 image passes qemu-img check; the live disk holds every write;
for bitmap modes the bitmap, read through a qemu:dirty-bitmap export, is the
model's dirty set at its granularity, as the bitmap-mode says; the daemon
answers query-jobs and stops on SIGTERM within 5 s.

Every failure prints the seed and the shape; --seed S replays it.  The exit
status is 0 when every seed passed.
"""
import argparse
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

import nbd

MiB = 1 << 20
KiB = 1 << 10
SECTOR = 512
SYNCS = ["full", "top", "none", "incremental", "bitmap:on-success",
         "bitmap:always", "bitmap:never"]
KNOWN_BUGS = {
    "top-backing-null": "issue 17 known bug: a target added with "
                        "\"backing\": null is taken to read as zero, so "
                        "zero chunks are skipped and its backing file shows "
                        "through (sync=top, and bitmap/incremental too)",
    "fleece-detect-zeroes": "issue 17 known bug: a fleecing target with "
                            "detect-zeroes loses BDRV_REQ_SERIALISING on "
                            "the zero path",
}


class Failure(Exception):
    """A check failed: the message says what; .kind classifies it."""

    def __init__(self, kind, msg, first_bad=None):
        super().__init__(msg)
        self.kind = kind
        self.first_bad = first_bad


class Timeout(Exception):
    pass


# --- QMP ------------------------------------------------------------------

class QMP:
    """QMP over a unix socket; commands may be sent without waiting so
    that the event loop keeps the NBD clients going meanwhile."""

    def __init__(self, path):
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
        self.buf = b""
        self.events = []
        self.replies = {}
        self.next_id = 0
        self._line(30)
        self.cmd("qmp_capabilities")

    def _take_lines(self):
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if not line.strip():
                continue
            msg = json.loads(line)
            if "event" in msg:
                self.events.append(msg)
            elif "id" in msg:
                self.replies[msg["id"]] = msg

    def _line(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure("qmp-timeout", "QMP: no answer in %d s" %
                              timeout)
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise Failure("daemon-died", "QMP socket closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def readable(self):
        """Read what is there (the socket selected readable)."""
        self.sock.settimeout(0)
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, socket.timeout):
            return
        if not data:
            raise Failure("daemon-died", "QMP socket closed")
        self.buf += data
        self._take_lines()

    def send(self, name, args=None):
        self.next_id += 1
        msg = {"execute": name, "id": self.next_id}
        if args is not None:
            msg["arguments"] = args
        self.sock.settimeout(30)
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        return self.next_id

    def reply(self, rid, timeout=30):
        deadline = time.monotonic() + timeout
        self._take_lines()
        while rid not in self.replies:
            msg = self._line(max(0.01, deadline - time.monotonic()))
            if "event" in msg:
                self.events.append(msg)
            elif "id" in msg:
                self.replies[msg["id"]] = msg
        self._take_lines()      # events that came with the reply
        return self.replies.pop(rid)

    def execute(self, name, args=None, timeout=30):
        return self.reply(self.send(name, args), timeout)

    def cmd(self, name, args=None, timeout=30):
        r = self.execute(name, args, timeout)
        if "error" in r:
            raise Failure("qmp-error", "%s %s: %s: %s" % (
                name, json.dumps(args), r["error"]["class"],
                r["error"]["desc"]))
        return r["return"]

    def find_event(self, names, job):
        for ev in self.events:
            if ev["event"] in names and (
                    ev.get("data", {}).get("device") == job or
                    ev.get("data", {}).get("id") == job):
                return ev
        return None


# --- the model ------------------------------------------------------------

class Model:
    """The disk: cur holds each byte's value; wild[i] = 1 when byte i may
    read as zero instead (trimmed)."""

    def __init__(self, data):
        self.cur = bytearray(data)
        self.wild = bytearray(len(data))

    def snapshot(self):
        m = Model(b"")
        m.cur = bytearray(self.cur)
        m.wild = bytearray(self.wild)
        return m


def allowed_byte(i, got, pit, amb):
    """Byte i of the image is @got: is that a value it may hold?"""
    if got == pit.cur[i] or (got == 0 and pit.wild[i]):
        return True
    for op in amb:
        if op.off <= i < op.off + op.len:
            j = i - op.off
            if got == op.post_cur[j] or (got == 0 and op.post_wild[j]):
                return True
    return False


def check_image(got, pit, amb, what, lo=0, hi=None, initial=None):
    """Compare @got (bytes of [lo, hi)) with the model @pit, allowing the
    ambiguous ops @amb.  Returns the resolved expected bytes (equal to
    @got where allowed); raises Failure naming the first bad ranges."""
    hi = len(pit.cur) if hi is None else hi
    exp = bytearray(pit.cur[lo:hi])
    if got == exp:
        return exp
    amb = [op for op in amb if op.off < hi and lo < op.off + op.len]
    bad, bad_chunks = [], []
    step = 64 * KiB
    for c in range(lo, hi, step):
        ce = min(c + step, hi)
        if got[c - lo:ce - lo] == exp[c - lo:ce - lo]:
            continue
        for s in range(c, ce, SECTOR):
            se = min(s + SECTOR, ce)
            g = got[s - lo:se - lo]
            if g == exp[s - lo:se - lo]:
                continue
            if pit.wild.find(0, s, se) == -1 and g == bytes(se - s):
                exp[s - lo:se - lo] = g
                continue
            for i in range(s, se):
                b = g[i - s]
                if allowed_byte(i, b, pit, amb):
                    exp[i - lo] = b
                elif not bad or bad[-1][1] != i:
                    bad.append([i, i + 1, pit.cur[i], b])
                else:
                    bad[-1][1] = i + 1
            if len(bad) > 8 and bad_chunks:
                break
        if bad and bad[-1][0] >= c:
            bad_chunks.append(c)
        if len(bad_chunks) > 64:
            break
    if bad:
        def origin(a, b):
            if initial is not None and \
                    got[a - lo:b - lo] == initial[a:b]:
                return " (the disk's initial data)"
            if got[a - lo:b - lo] == bytes(b - a):
                return " (zeroes)"
            return ""
        desc = "; ".join("[%d, %d) expected 0x%02x%s got 0x%02x%s" % (
            a, b, e, " (or zero)" if pit.wild[a] else "", g, origin(a, b))
            for a, b, e, g in bad[:6])
        chunks = []
        for c in bad_chunks[:12]:
            ce = min(c + step, hi)
            e = bytes(pit.cur[c:ce])
            kind = "zero" if e == bytes(ce - c) else "data"
            chunks.append("%d%s" % (c // step, "" if kind == "data"
                                    else "(0)") + origin(c, ce))
        raise Failure(what, "%s differs from the model in %s64 KiB chunks "
                      "[chunk(0 = expected zero) (what is there)]: %s; "
                      "first bytes: %s" % (
                          what, "> 64 " if len(bad_chunks) > 64 else
                          "%d " % len(bad_chunks), ", ".join(chunks), desc),
                      first_bad=bad[0][0])
    return exp


class Op:
    __slots__ = ("off", "len", "kind", "phase", "keep", "pre_cur",
                 "pre_wild", "post_cur", "post_wild")


class Client:
    """One libnbd handle writing its own slice [lo, hi) of the disk with
    up to 16 requests in flight, none overlapping another in flight."""

    def __init__(self, uri, lo, hi, rnd, model, log, can_trim, depth=16):
        self.h = nbd.NBD()
        self.h.connect_uri(uri)
        self.lo, self.hi = lo, hi
        self.rnd = rnd
        self.model = model
        self.log = log
        self.depth = depth
        self.busy = {}
        self.phase = "old"
        self.keep = False       # keep what ops wrote (a job's window)
        self.can_trim = can_trim and self.h.can_trim()
        self.issued = 0

    def pick(self):
        r = self.rnd
        ln = r.choice((512, 4096, 4096, 65536, 65536, 131072, 777, 1,
                       r.randrange(1, 256 * KiB)))
        ln = min(ln, self.hi - self.lo)
        if r.randrange(3) == 0:
            off = r.randrange(self.lo, self.hi - ln + 1)
        else:
            align = r.choice((512, 4096, 65536))
            off = self.lo + r.randrange(0, (self.hi - self.lo - ln) //
                                        align + 1) * align
            ln = max(1, min(ln, self.hi - off))
        k = r.randrange(20)
        if k < 12:
            kind = "write"
        elif k < 14:
            kind = "zero"          # MAY_UNMAP (no NO_HOLE flag)
        elif k < 16:
            kind = "zero-nohole"
        elif k < 17:
            kind = "zero-fua"
        else:
            kind = "trim" if self.can_trim else "write"
        return off, ln, kind

    def overlaps(self, off, ln):
        return any(o.off < off + ln and off < o.off + o.len
                   for o in self.busy.values())

    def fill(self):
        while len(self.busy) < self.depth:
            off, ln, kind = self.pick()
            if self.overlaps(off, ln):
                return
            self.issue(off, ln, kind)

    def issue(self, off, ln, kind):
        m = self.model
        op = Op()
        op.off, op.len, op.kind, op.phase = off, ln, kind, self.phase
        op.keep = self.keep
        op.pre_cur = bytes(m.cur[off:off + ln])
        op.pre_wild = bytes(m.wild[off:off + ln])
        if kind == "write":
            data = self.rnd.randbytes(ln)
            cookie = self.h.aio_pwrite(data, off)
            m.cur[off:off + ln] = data
            m.wild[off:off + ln] = bytes(ln)
        elif kind.startswith("zero"):
            flags = {"zero": 0, "zero-nohole": nbd.CMD_FLAG_NO_HOLE,
                     "zero-fua": nbd.CMD_FLAG_FUA}[kind]
            cookie = self.h.aio_zero(ln, off, flags=flags)
            m.cur[off:off + ln] = bytes(ln)
            m.wild[off:off + ln] = bytes(ln)
        else:
            cookie = self.h.aio_trim(ln, off)
            m.wild[off:off + ln] = b"\1" * ln
        op.post_cur = bytes(m.cur[off:off + ln])
        op.post_wild = bytes(m.wild[off:off + ln])
        self.busy[cookie] = op
        self.log.append(op)
        self.issued += 1

    def reap(self):
        for c in list(self.busy):
            try:
                done = self.h.aio_command_completed(c)
            except nbd.Error as e:
                op = self.busy[c]
                raise Failure("guest-write-failed",
                              "guest %s [%d, +%d) failed: %s" %
                              (op.kind, op.off, op.len, e))
            if done:
                op = self.busy.pop(c)
                op.pre_cur = op.pre_wild = None
                if op.phase != "amb" and not op.keep:
                    op.post_cur = op.post_wild = None


class Reader:
    """Reads a whole export with aio reads of 64 KiB to 1 MiB, 8 in
    flight (many reads in flight while copy-before-writes land in the
    export's node: the race that serialising requests close)."""

    def __init__(self, uri, rnd):
        self.h = nbd.NBD()
        self.h.connect_uri(uri)
        self.rnd = rnd
        self.size = self.h.get_size()
        self.data = bytearray(self.size)
        self.next = 0
        self.busy = {}

    def fill(self):
        while len(self.busy) < 8 and self.next < self.size:
            ln = min(self.rnd.choice((64 * KiB, 256 * KiB, MiB)),
                     self.size - self.next)
            buf = nbd.Buffer(ln)
            c = self.h.aio_pread(buf, self.next)
            self.busy[c] = (self.next, buf)
            self.next += ln

    def reap(self):
        for c in list(self.busy):
            if self.h.aio_command_completed(c):
                off, buf = self.busy.pop(c)
                d = buf.to_bytearray()
                self.data[off:off + len(d)] = d

    def done(self):
        return self.next >= self.size and not self.busy


# --- images ---------------------------------------------------------------

def sh(*args, **kw):
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, **kw)
    if r.returncode != 0:
        out = r.stdout.strip().splitlines()
        raise Failure("setup", "%s: %s" % (" ".join(args)[:200],
                                            " / ".join(out[-3:])))
    return r.stdout


def random_disk(path, size, rnd, hole_ratio=3):
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, 64 * KiB):
            if rnd.randrange(hole_ratio) == 0:
                continue
            f.seek(off)
            f.write(rnd.randbytes(min(64 * KiB, size - off)))


def qemu_io(fmt, path, cmds):
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    sh(*args, path)


# --- one seed -------------------------------------------------------------

class Run:
    def __init__(self, seed, opts):
        self.seed = seed
        self.opts = opts
        self.r = random.Random(seed)
        self.shape = {}
        self.daemon = None
        self.mounted = None
        self.tmp = tempfile.mkdtemp(prefix="snapnbd-model-%d-" % seed)

    # The shape -----------------------------------------------------------
    def choose(self):
        r, s = self.r, self.shape
        s["sync"] = SYNCS[self.seed % len(SYNCS)]
        s["size"] = r.choice((8, 16, 16, 24)) * MiB
        s["source"] = r.choice(("raw", "qcow2", "qcow2", "qcow2"))
        if s["source"] == "qcow2":
            s["base"] = r.choice(("raw", "qcow2", "qcow2-compressed"))
            s["mid"] = r.random() < 0.4
        sync = s["sync"]
        if sync == "full":
            kinds = ["drive-abs-raw", "drive-abs-qcow2", "drive-existing-raw",
                     "drive-existing-qcow2", "add-raw", "add-qcow2",
                     "add-qcow2-null"]
            if self.opts.can_mount:
                kinds.append("enospc")
        elif sync == "top":
            kinds = ["drive-abs-qcow2", "drive-existing-qcow2", "add-qcow2",
                     "add-qcow2-null"]
            if s["source"] == "raw":
                kinds += ["drive-abs-raw", "add-raw"]
        elif sync == "none":
            kinds = ["fleece", "fleece", "fleece-detect-zeroes"]
        else:
            kinds = ["drive-existing-qcow2", "add-qcow2", "add-qcow2-null"]
        s["target"] = r.choice(kinds)
        if s["target"] == "enospc":
            s["on-target-error"] = r.choice(("report", "stop"))
        if sync.startswith("bitmap") or sync == "incremental":
            s["granularity"] = r.choice((64 * KiB, 128 * KiB))
        s["clients"] = r.randint(2, 4)
        s["quiesce"] = r.random() < 0.5
        s["transaction"] = r.random() < 0.3
        s["speed"] = r.choice((2, 4, 8)) * MiB
        acts = []
        if sync != "none":
            if r.random() < 0.35:
                acts.append("pause-resume")
            if r.random() < 0.4:
                acts.append("set-speed")
            if r.random() < 0.2 and s["target"] != "enospc":
                acts.append("cancel")
        s["actions"] = acts
        # A second backup of the same source, run at the same time (QEMU
        # runs both, each with its own copy-before-write).  Its own random
        # stream, so that the other choices of a seed do not depend on it.
        if sync != "none" and s["target"] != "enospc" and \
                random.Random(self.seed * 7 + 3).random() < 0.15:
            s["second-job"] = True

    def shape_str(self):
        return " ".join("%s=%s" % (k, v) for k, v in self.shape.items())

    # Images --------------------------------------------------------------
    def make_source(self):
        s, r, t = self.shape, self.r, self.tmp
        size = s["size"]
        if s["source"] == "raw":
            self.src_file = f"{t}/disk.raw"
            random_disk(self.src_file, size, r)
            self.src_fmt = "raw"
            self.backing = None
            return
        random_disk(f"{t}/base.raw", size, r, hole_ratio=2)
        if s["base"] == "raw":
            base, bfmt = f"{t}/base.raw", "raw"
        else:
            base, bfmt = f"{t}/base.qcow2", "qcow2"
            sh("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2",
               *(["-c"] if s["base"] == "qcow2-compressed" else []),
               f"{t}/base.raw", base)
        self.qcow2_files = [base] if bfmt == "qcow2" else []
        if s["mid"]:
            mid = f"{t}/mid.qcow2"
            sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", bfmt, "-b",
               base, mid, str(size))
            qemu_io("qcow2", mid, self.layer_cmds(size, 8))
            base, bfmt = mid, "qcow2"
            self.qcow2_files.append(mid)
        self.backing, self.backing_fmt = base, bfmt
        self.src_file = f"{t}/top.qcow2"
        sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", bfmt, "-b", base,
           self.src_file, str(size))
        qemu_io("qcow2", self.src_file, self.layer_cmds(size, 40))
        self.src_fmt = "qcow2"
        self.qcow2_files.append(self.src_file)
        for f in self.qcow2_files:
            self.check_made(f)

    def layer_cmds(self, size, n):
        """qemu-io commands giving a qcow2 layer data, preallocated zero,
        plain zero, discarded and compressed clusters (64 KiB).  The
        compressed clusters are written last, where nothing else wrote:
        QEMU 7.2's qemu-io corrupts the image (a data cluster with refcount
        2, "ERROR OFLAG_COPIED") when compressed clusters are discarded or
        zeroed and more clusters are allocated after that."""
        r, cmds, compressed = self.r, [], []
        nclusters = size // (64 * KiB)
        used = set()
        for _ in range(n):
            ci = r.randrange(nclusters - 4)
            c = ci * 64 * KiB
            k = r.randrange(6)
            ln = r.randint(1, 3) * 64 * KiB
            pat = r.randrange(1, 256)
            if k == 4:                 # compressed
                compressed.append((ci, pat))
                continue
            used.update(range(ci, ci + 3))
            if k == 0:
                cmds.append(f"write -P {pat} {c} {ln}")
            elif k == 1:               # preallocated zero clusters
                cmds += [f"write -P {pat} {c} {ln}", f"write -z {c} {ln}"]
            elif k == 2:               # plain zero clusters
                cmds.append(f"write -z -u {c} {ln}")
            elif k == 3:               # discarded
                cmds += [f"write -P {pat} {c} {ln}", f"discard {c} {ln}"]
            else:                      # unaligned data in a cluster
                off = c + r.randrange(64 * KiB - 4096)
                cmds.append(f"write -P {pat} {off} {r.randint(1, 4096)}")
        for ci, pat in compressed:
            if ci not in used:
                used.add(ci)
                cmds.append(f"write -c -P {pat} {ci * 64 * KiB} 64k")
        return cmds

    def check_made(self, path):
        """An image the setup made must be sound before the test."""
        r = subprocess.run(["qemu-img", "check", "-q", path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        if r.returncode != 0:
            raise Failure("setup", "qemu-img/qemu-io made an unsound "
                          "image %s: %s" % (path, r.stdout.strip()))

    def raw_contents(self, path, fmt):
        out = f"{self.tmp}/conv-{os.path.basename(path)}.raw"
        sh("qemu-img", "convert", "-q", "-f", fmt, "-O", "raw", path, out)
        with open(out, "rb") as f:
            data = f.read()
        os.unlink(out)
        return data

    # The daemon ----------------------------------------------------------
    def start_daemon(self):
        t = self.tmp
        self.qmp_path, self.nbd_path = f"{t}/qmp.sock", f"{t}/nbd.sock"
        src = {"driver": self.src_fmt, "node-name": "src",
               "discard": "unmap",
               "file": {"driver": "file", "filename": self.src_file}}
        if self.opts.daemon == "qsd":
            qmp = ["qemu-storage-daemon", "--chardev",
                   f"socket,path={self.qmp_path},server=on,wait=off,id=m",
                   "--monitor", "chardev=m"]
        else:
            qmp = [os.environ["SNAPNBD"],
                   f"--qmp=unix:{self.qmp_path},server,wait=off"]
        args = qmp + [
                "--blockdev", json.dumps(src),
                "--nbd-server", f"addr.type=unix,addr.path={self.nbd_path}",
                "--export",
                "type=nbd,id=e0,node-name=src,name=disk,writable=on"]
        self.log_path = f"{t}/daemon.log"
        self.daemon = subprocess.Popen(args, stdout=open(self.log_path, "w"),
                                       stderr=subprocess.STDOUT)
        for _ in range(200):
            if os.path.exists(self.qmp_path) and \
                    os.path.exists(self.nbd_path):
                break
            if self.daemon.poll() is not None:
                raise Failure("setup", "snapnbd exited at start: " +
                              open(self.log_path).read())
            time.sleep(0.05)
        self.q = QMP(self.qmp_path)

    def stop_daemon(self):
        if not self.daemon or self.daemon.poll() is not None:
            return
        self.daemon.send_signal(signal.SIGTERM)
        try:
            self.daemon.wait(5)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()
            raise Failure("sigterm", "snapnbd did not stop within 5 s of "
                          "SIGTERM")

    def uri(self, name):
        return f"nbd+unix:///{name}?socket={self.nbd_path}"

    # The event loop ------------------------------------------------------
    def pump(self, until=None, secs=None, issue=True, reader=None):
        end = None if secs is None else time.monotonic() + secs
        while True:
            self.q._take_lines()
            if until is not None and until():
                return
            if end is not None and time.monotonic() >= end:
                return
            handles = list(self.clients)
            if issue:
                for c in self.clients:
                    c.fill()
            if reader:
                reader.fill()
                handles.append(reader)
            rl, wl = [self.q.sock], []
            fds = {}
            for c in handles:
                fd = c.h.aio_get_fd()
                d = c.h.aio_get_direction()
                fds[fd] = c
                if d & nbd.AIO_DIRECTION_READ:
                    rl.append(fd)
                if d & nbd.AIO_DIRECTION_WRITE:
                    wl.append(fd)
            rr, ww, _ = select.select(rl, wl, [], 0.02)
            for fd in rr:
                if fd is self.q.sock:
                    self.q.readable()
                else:
                    fds[fd].h.aio_notify_read()
            for fd in ww:
                fds[fd].h.aio_notify_write()
            for c in handles:
                c.reap()
            if self.daemon.poll() is not None:
                raise Failure("daemon-died", "snapnbd exited with status %d" %
                              self.daemon.returncode)

    def drain_clients(self):
        self.pump(until=lambda: all(not c.busy for c in self.clients),
                  issue=False)

    # The job -------------------------------------------------------------
    def job_command(self):
        s = self.shape
        sync = s["sync"]
        args = {"job-id": "j0", "device": "src", "speed": s["speed"]}
        if sync.startswith("bitmap"):
            args.update(sync="bitmap", bitmap="b0",
                        **{"bitmap-mode": sync.split(":")[1]})
        elif sync == "incremental":
            args.update(sync="incremental", bitmap="b0")
        else:
            args["sync"] = sync
        kind = s["target"]
        if kind.startswith("drive") or kind == "enospc":
            args["target"] = self.target_file
            args["format"] = self.target_fmt
            args["mode"] = "existing" if "existing" in kind else \
                "absolute-paths"
            if kind == "enospc":
                args["on-target-error"] = s["on-target-error"]
            return "drive-backup", args
        args["target"] = "tgt"
        return "blockdev-backup", args

    def prepare_target(self):
        """Files for the targets that exist before the job; blockdev-add
        of the ones added that way."""
        s, t, size = self.shape, self.tmp, self.shape["size"]
        kind, sync = s["target"], s["sync"]
        self.target_fmt = "raw" if kind.endswith("raw") or \
            kind == "enospc" else "qcow2"
        self.target_file = f"{t}/target.{self.target_fmt}"
        if kind == "enospc":
            small = f"{t}/small"
            os.mkdir(small)
            sh("mount", "-t", "tmpfs", "-o", "size=%d" % (size + 2 * MiB),
               "tmpfs", small)
            self.mounted = small
            self.target_file = f"{small}/target.raw"
            self.filler = f"{small}/filler"
            with open(self.filler, "wb") as f:
                f.write(b"\1" * (size * 3 // 4))
            return
        if kind.startswith("drive-abs"):
            return
        if kind.startswith("fleece"):
            sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", self.src_fmt,
               "-b", self.src_file, self.target_file, str(size))
            node = {"driver": "qcow2", "node-name": "tgt", "backing": "src",
                    "file": {"driver": "file", "filename": self.target_file}}
            if kind == "fleece-detect-zeroes":
                node["detect-zeroes"] = "on"
            self.q.cmd("blockdev-add", node)
            return
        if self.target_fmt == "raw":
            with open(self.target_file, "wb") as f:
                f.truncate(size)
        else:
            backing = []
            if sync == "top" and self.backing:
                backing = ["-F", self.backing_fmt, "-b", self.backing]
            elif sync.startswith("bitmap") or sync == "incremental":
                backing = ["-F", "qcow2", "-b", self.prev]
            sh("qemu-img", "create", "-q", "-f", "qcow2", *backing,
               self.target_file, str(size))
        if kind.startswith("add"):
            node = {"driver": self.target_fmt, "node-name": "tgt",
                    "file": {"driver": "file", "filename": self.target_file}}
            if kind == "add-qcow2-null":
                node["backing"] = None
            self.q.cmd("blockdev-add", node)

    def start_job(self):
        """Sends the job command with the clients writing (or drained, for
        quiesce); records the point in time and the ambiguous ops."""
        s = self.shape
        name, args = self.job_command()
        if s["quiesce"]:
            self.drain_clients()
        if s["transaction"]:
            actions = [{"type": name, "data": args}]
            if s.get("second-job"):
                actions.append({"type": "drive-backup",
                                "data": self.second_job_args()})
            send = ("transaction", {"actions": actions})
        else:
            send = (name, args)
        # The point in time, as of now: the model without the ops in flight
        # (they touch disjoint ranges: undo them in any order).
        inflight = [op for c in self.clients for op in c.busy.values()]
        pit = self.model.snapshot()
        for op in inflight:
            pit.cur[op.off:op.off + op.len] = op.pre_cur
            pit.wild[op.off:op.off + op.len] = op.pre_wild
            op.phase = "amb"
        for c in self.clients:
            c.phase = "amb"
        rid = self.q.send(*send)
        self.pump(until=lambda: rid in self.q.replies,
                  issue=not s["quiesce"])
        r = self.q.replies.pop(rid)
        for c in self.clients:
            c.phase = "new"
        if "error" in r:
            if s.get("second-job") and s["transaction"]:
                raise Failure("second-job-refused", "a transaction with two "
                              "backups of one source refused: %s: %s "
                              "[issue 17 known bug: a second backup on a "
                              "source that has one refused]" % (
                                  r["error"]["class"], r["error"]["desc"]))
            raise Failure("job-refused", "%s refused: %s: %s" % (
                send[0], r["error"]["class"], r["error"]["desc"]))
        self.pit = pit
        self.amb = [op for op in self.log if op.phase == "amb"]
        self.job_t0 = time.monotonic()
        if s.get("second-job"):
            if s["transaction"]:
                self.pit2, self.amb2 = self.pit, self.amb
            else:
                self.start_second_job()

    def second_job_args(self):
        self.second_file = f"{self.tmp}/second.raw"
        return {"job-id": "j1", "device": "src", "sync": "full",
                "target": self.second_file, "format": "raw",
                "mode": "absolute-paths", "speed": self.shape["speed"]}

    def start_second_job(self):
        """drive-backup j1 while j0 runs: its own point in time."""
        quiesce = self.shape["quiesce"]
        if quiesce:
            self.drain_clients()
        inflight = [op for c in self.clients for op in c.busy.values()]
        pit = self.model.snapshot()
        for op in inflight:
            pit.cur[op.off:op.off + op.len] = op.pre_cur
            pit.wild[op.off:op.off + op.len] = op.pre_wild
            op.keep = True
        n0 = len(self.log)
        for c in self.clients:
            c.keep = True
        rid = self.q.send("drive-backup", self.second_job_args())
        self.pump(until=lambda: rid in self.q.replies, issue=not quiesce)
        r = self.q.replies.pop(rid)
        for c in self.clients:
            c.keep = False
        if "error" in r:
            raise Failure("second-job-refused", "a second backup of the "
                          "source while one runs: drive-backup refused: "
                          "%s: %s [issue 17 known bug: a second backup on a "
                          "source that has one refused]" % (
                              r["error"]["class"], r["error"]["desc"]))
        self.pit2, self.amb2 = pit, inflight + self.log[n0:]

    def job_verb(self, name, args):
        """A job command that may come too late: the job may have finished
        meanwhile (QEMU refuses pause/cancel/set-speed then, too)."""
        r = self.q.execute(name, args)
        if "error" not in r:
            return True
        job = args.get("id", args.get("device"))
        j = [x for x in self.q.execute("query-jobs").get("return", [])
             if x["id"] == job]
        if not j or j[0]["status"] in ("waiting", "pending", "concluded",
                                       "aborting", "null"):
            return False
        raise Failure("qmp-error", "%s %s: %s: %s (job %s)" % (
            name, json.dumps(args), r["error"]["class"], r["error"]["desc"],
            j[0]))

    def run_job(self):
        """Actions while the clients write; returns the final event."""
        s, q = self.shape, self.q
        acts = list(s["actions"])
        done = lambda: q.find_event(("BLOCK_JOB_COMPLETED",
                                     "BLOCK_JOB_CANCELLED"), "j0")
        if s["target"] == "enospc":
            return self.run_enospc()
        self.pump(until=done, secs=self.r.uniform(0.1, 0.5))
        if "pause-resume" in acts and not done() and \
                self.job_verb("job-pause", {"id": "j0"}):
            self.pump(until=done, secs=0.3)
            if not done():
                j = [x for x in q.cmd("query-block-jobs")
                     if x["device"] == "j0"]
                if j and not j[0]["paused"]:
                    raise Failure("pause", "job-pause: the job is not "
                                  "paused: %s" % j[0])
                self.job_verb("job-resume", {"id": "j0"})
        if "set-speed" in acts and not done():
            self.job_verb("block-job-set-speed",
                          {"device": "j0",
                           "speed": self.r.choice((1, 3, 6)) * MiB})
            self.pump(until=done, secs=0.3)
        if "cancel" in acts and not done():
            self.cancelled = self.job_verb("job-cancel", {"id": "j0"})
        else:
            self.pump(until=done, secs=self.r.uniform(0.2, 0.8))
            if not done():
                self.job_verb("block-job-set-speed",
                              {"device": "j0", "speed": 0})
        self.pump(until=done, secs=max(20, self.opts.timeout - 15))
        ev = done()
        if not ev:
            raise Failure("job-hang", "the job did not end: %s" %
                          q.cmd("query-jobs"))
        return ev

    def finish_second_job(self):
        """j1 runs to its end, unthrottled, while the clients write."""
        q = self.q
        done = lambda: q.find_event(("BLOCK_JOB_COMPLETED",
                                     "BLOCK_JOB_CANCELLED"), "j1")
        if not done():
            self.job_verb("block-job-set-speed", {"device": "j1", "speed": 0})
        self.pump(until=done, secs=max(20, self.opts.timeout - 15))
        ev = done()
        if not ev:
            raise Failure("job-hang", "the second job did not end: %s" %
                          q.cmd("query-jobs"))
        if ev["event"] != "BLOCK_JOB_COMPLETED" or "error" in ev["data"]:
            raise Failure("job-failed", "the second job failed: %s" % ev)
        return ev

    def run_enospc(self):
        s, q = self.shape, self.q
        done = lambda: q.find_event(("BLOCK_JOB_COMPLETED",
                                     "BLOCK_JOB_CANCELLED"), "j0")
        self.job_verb("block-job-set-speed", {"device": "j0", "speed": 0})
        err = lambda: q.find_event(("BLOCK_JOB_ERROR",), "j0")
        self.pump(until=lambda: err() or done(), secs=20)
        # A guest write whose copy-before-write finds the target full ends
        # the job at once ("the point in time is lost"), without
        # BLOCK_JOB_ERROR: the guest write goes through.
        if not err() and not done():
            raise Failure("enospc", "the target on a full tmpfs gave no "
                          "BLOCK_JOB_ERROR and no end in 20 s")
        if s["on-target-error"] == "stop" and not done():
            os.unlink(self.filler)
            self.pump(secs=0.2, until=done)
            if not done():
                j = [x for x in q.cmd("query-jobs") if x["id"] == "j0"]
                if j and j[0]["status"] == "paused":
                    q.cmd("job-resume", {"id": "j0"})
        self.pump(until=done, secs=30)
        ev = done()
        if not ev:
            raise Failure("job-hang", "the job did not end after ENOSPC: %s"
                          % q.cmd("query-jobs"))
        return ev

    def run_fleece(self):
        """sync=none: read the target's export while the clients write."""
        q = self.q
        q.cmd("block-export-add", {"type": "nbd", "id": "pit",
                                   "node-name": "tgt", "name": "pit"})
        self.pump(secs=self.r.uniform(0.1, 0.6))
        passes = []
        for i in range(2):
            self.stage = "reading the fleecing export, pass %d" % (i + 1)
            reader = Reader(self.uri("pit"), self.r)
            self.pump(until=reader.done, reader=reader, secs=60)
            if not reader.done():
                raise Failure("fleece-read", "reading the fleecing export "
                              "took more than 60 s")
            reader.h.shutdown()
            passes.append(bytes(reader.data))
        self.pump(secs=0.1)
        q.cmd("block-export-del", {"id": "pit"})
        j = [x for x in q.cmd("query-jobs") if x["id"] == "j0"]
        if not j or j[0]["status"] != "running":
            raise Failure("fleece-job", "the sync=none job is not running "
                          "while its export is read: %s" % j)
        self.stage = "job-cancel of the sync=none job"
        q.cmd("job-cancel", {"id": "j0"})
        end = lambda: q.find_event(("BLOCK_JOB_CANCELLED",
                                    "BLOCK_JOB_COMPLETED"), "j0")
        self.pump(until=end, secs=20)
        if not end():
            raise Failure("job-hang", "the sync=none job did not end 20 s "
                          "after job-cancel: query-jobs %s; its events: %s"
                          % (q.cmd("query-jobs"), self.job_events()))
        if end()["event"] != "BLOCK_JOB_CANCELLED":
            raise Failure("fleece-job", "the cancelled sync=none job ended "
                          "with %s" % end())
        return passes

    def later_ops(self, off):
        """The requests after the point in time on the chunk at @off."""
        if off is None:
            return ""
        c = off // (64 * KiB) * 64 * KiB
        ops = ["%s [%d, +%d)" % (o.kind, o.off, o.len) for o in self.log
               if o.phase == "new" and o.off < c + 64 * KiB and
               c < o.off + o.len]
        return "; requests after the point in time on chunk %d: %s" % (
            c // (64 * KiB), ", ".join(ops[:8]) or "none")

    def job_events(self):
        return ["%s%s" % (e["event"], "(%s)" % e["data"]["status"]
                          if "status" in e.get("data", {}) else "")
                for e in self.q.events
                if "j0" in (e.get("data", {}).get("id"),
                            e.get("data", {}).get("device"))]

    # Checks --------------------------------------------------------------
    def bug_note(self):
        s = self.shape
        if s["target"] == "add-qcow2-null" and (
                s["sync"] == "top" and s["source"] == "qcow2" or
                s["sync"].startswith("bitmap") or s["sync"] == "incremental"):
            return " [" + KNOWN_BUGS["top-backing-null"] + "]"
        if s["target"] == "fleece-detect-zeroes":
            return " [" + KNOWN_BUGS["fleece-detect-zeroes"] + "]"
        return ""

    def check_live(self):
        """The live disk holds every write (read through NBD)."""
        for c in self.clients:
            got = c.h.pread(c.hi - c.lo, c.lo)
            check_image(got, self.model, [], "the live disk", c.lo, c.hi)

    def granules(self, ops, g):
        out = set()
        for op in ops:
            out.update(range(op.off // g, (op.off + op.len - 1) // g + 1))
        return out

    def read_bitmap(self):
        q, g = self.q, self.shape["granularity"]
        q.cmd("block-dirty-bitmap-disable", {"node": "src", "name": "b0"})
        q.cmd("block-export-add", {"type": "nbd", "id": "bm", "name": "bm",
                                   "node-name": "src", "bitmaps": ["b0"]})
        h = nbd.NBD()
        ctx = "qemu:dirty-bitmap:b0"
        h.add_meta_context(ctx)
        h.connect_uri(self.uri("bm"))
        size, pos, dirty = h.get_size(), 0, set()

        def cb(meta, offset, entries, err):
            nonlocal pos
            if meta != ctx:
                return 0
            for length, flags in zip(entries[::2], entries[1::2]):
                if flags & 1:
                    dirty.update(range(pos // g, (pos + length - 1) // g + 1))
                pos += length
            return 0

        while pos < size:
            h.block_status(size - pos, pos, cb)
        h.shutdown()
        return dirty

    def check_bitmap(self, success):
        sync, g = self.shape["sync"], self.shape["granularity"]
        mode = "on-success" if sync == "incremental" else sync.split(":")[1]
        old = self.granules([o for o in self.log if o.phase == "old"], g)
        amb = self.granules(self.amb, g)
        new = self.granules([o for o in self.log if o.phase == "new"], g)
        got = self.read_bitmap()
        if mode == "never" or (not success and mode == "on-success"):
            must, may = old | amb | new, old | amb | new
        elif success:
            must, may = new, new | amb
        else:                                   # always, failed/cancelled
            must, may = new, old | amb | new
        missing, extra = sorted(must - got), sorted(got - may)
        if missing or extra:
            why = []
            for gr in missing[:3]:
                ops = ["%s %s [%d, +%d)" % (o.phase, o.kind, o.off, o.len)
                       for o in self.log if o.phase in ("new", "amb") and
                       o.off < (gr + 1) * g and gr * g < o.off + o.len]
                why.append("granule %d: %s" % (gr, ", ".join(ops[:4])))
            trim_only = missing and all(
                o.kind == "trim" for o in self.log
                if o.phase == "new" and any(
                    o.off < (gr + 1) * g and gr * g < o.off + o.len
                    for gr in missing))
            missing = "%s (%s)" % (missing[:10], "; ".join(why))
            if trim_only and not extra:
                raise Failure("bitmap-trim", "bitmap b0 misses granules "
                              "only trims touched, where QEMU marks every "
                              "discard dirty (mode %s): %s" % (mode, missing))
            raise Failure("bitmap", "bitmap b0 (mode %s, job %s) is not the "
                          "model's dirty set at %d KiB: granules missing %s, "
                          "granules extra %s" % (
                              mode, "succeeded" if success else "failed",
                              g // KiB, missing, extra[:10]))

    def compare_target(self, got_bytes, label, image=None, fmt=None):
        """got_bytes vs the point in time; then qemu-img compare of the
        resolved expected image with @image when given."""
        try:
            exp = check_image(got_bytes, self.pit, self.amb, label,
                              initial=self.initial)
        except Failure as e:
            raise Failure(e.kind, str(e) + self.bug_note() +
                          self.later_ops(e.first_bad))
        if image:
            ref = f"{self.tmp}/expected.raw"
            with open(ref, "wb") as f:
                f.write(exp)
            r = subprocess.run(["qemu-img", "compare", "-q", "-f", "raw",
                                "-F", fmt, ref, image])
            if r.returncode != 0:
                raise Failure(label, "qemu-img compare: %s is not the "
                              "point in time%s" % (image, self.bug_note()))

    def qcow2_check(self, path):
        r = subprocess.run(["qemu-img", "check", "-q", path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        if r.returncode != 0:
            raise Failure("qemu-img-check", "qemu-img check %s: %s" %
                          (path, r.stdout.strip()))

    # The whole seed ------------------------------------------------------
    def run(self):
        s = self.shape
        self.choose()
        self.make_source()
        size = s["size"]
        bitmap = s["sync"].startswith("bitmap") or s["sync"] == "incremental"
        if bitmap:
            self.prev = f"{self.tmp}/prev.qcow2"
            sh("qemu-img", "convert", "-q", "-f", self.src_fmt, "-O", "qcow2",
               self.src_file, self.prev)
        initial = self.raw_contents(self.src_file, self.src_fmt)
        self.model = Model(initial)
        self.initial = initial
        self.log = []
        self.cancelled = False
        self.start_daemon()
        if bitmap:
            self.q.cmd("block-dirty-bitmap-add",
                       {"node": "src", "name": "b0",
                        "granularity": s["granularity"]})
        self.prepare_target()
        n = s["clients"]
        slice_ = size // n // 4096 * 4096
        self.clients = [
            Client(self.uri("disk"), i * slice_,
                   size if i == n - 1 else (i + 1) * slice_,
                   random.Random(self.seed * 10 + i), self.model, self.log,
                   True)
            for i in range(n)]
        self.stage = "writes before the job"
        self.pump(secs=self.r.uniform(0.1, 0.4))
        self.stage = "creating the job"
        self.start_job()
        self.stage = "the job runs"
        fleece = None
        if s["sync"] == "none":
            fleece = self.run_fleece()
            ev = self.q.find_event(("BLOCK_JOB_CANCELLED",), "j0")
            self.cancelled = True
        else:
            ev = self.run_job()
        ev2 = self.finish_second_job() if s.get("second-job") else None
        self.stage = "draining the clients after the job"
        self.pump(secs=0.2)
        self.drain_clients()
        self.stage = "checks with the daemon up"
        success = ev["event"] == "BLOCK_JOB_COMPLETED" and \
            "error" not in ev["data"]
        if s["sync"] != "none" and not success and not self.cancelled:
            if s["target"] != "enospc":
                raise Failure("job-failed", "the job failed: %s" % ev)
            msg = ev["data"].get("error", "")
            if "point in time" not in msg and "space" not in msg:
                raise Failure("job-failed", "the job on a full target "
                              "failed for another reason: %s" % ev)
        if self.cancelled and ev["event"] != "BLOCK_JOB_CANCELLED" and \
                not success:
            raise Failure("job-failed", "cancelled job: %s" % ev)
        for c in self.clients:
            c.h.flush()
        self.check_live()
        if bitmap:
            self.check_bitmap(success)
        self.q.cmd("query-jobs")
        for c in self.clients:
            c.h.shutdown()
        if fleece is not None:
            for i, data in enumerate(fleece):
                self.compare_target(data, "the fleecing export (pass %d)" %
                                    (i + 1))
            self.q.cmd("blockdev-del", {"node-name": "tgt"})
        elif s["target"].startswith("add"):
            self.q.cmd("blockdev-del", {"node-name": "tgt"})
        self.q.cmd("query-jobs")
        self.stage = "stopping the daemon"
        self.stop_daemon()
        self.stage = "offline checks"
        for f in getattr(self, "qcow2_files", []):
            self.qcow2_check(f)
        if self.target_fmt == "qcow2" and os.path.exists(self.target_file):
            self.qcow2_check(self.target_file)
        if success and s["sync"] != "none":
            got = self.raw_contents(self.target_file, self.target_fmt)
            self.compare_target(got, "the target", self.target_file,
                                self.target_fmt)
        if ev2 is not None:
            got = self.raw_contents(self.second_file, "raw")
            self.pit, self.amb = self.pit2, self.amb2
            self.compare_target(got, "the second job's target",
                                self.second_file, "raw")
        # The live disk once more, offline, as qemu-img reads it.
        got = self.raw_contents(self.src_file, self.src_fmt)
        check_image(got, self.model, [], "the source image after stop")

    def probe(self):
        """After a timeout: does the daemon still answer QMP?"""
        try:
            self.q.buf = b""
            r = self.q.execute("query-jobs", timeout=5)
            return "the daemon answers query-jobs: %s" % r.get("return", r)
        except Exception as e:      # noqa: BLE001
            return "the daemon does not answer QMP (%s)" % e

    def cleanup(self, keep):
        if self.daemon and self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait()
        if self.mounted:
            subprocess.run(["umount", "-l", self.mounted])
        if keep:
            print("  kept %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def can_mount():
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    d = tempfile.mkdtemp(prefix="snapnbd-model-mnt-")
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", d],
                        stderr=subprocess.DEVNULL).returncode == 0
    if ok:
        subprocess.run(["umount", d])
    os.rmdir(d)
    return ok


def run_seed(seed, opts):
    run = Run(seed, opts)

    def on_alarm(*_):
        raise Timeout()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(opts.timeout))
    kind = None
    try:
        run.run()
    except Timeout:
        kind, msg = "timeout", "seed took more than %d s, at: %s; %s" % (
            opts.timeout, getattr(run, "stage", "?"), run.probe())
    except Failure as e:
        kind, msg = e.kind, str(e)
    except Exception as e:          # noqa: BLE001 - report and go on
        kind, msg = "exception", "%s: %s" % (type(e).__name__, e)
        if opts.verbose:
            traceback.print_exc()
    finally:
        signal.alarm(0)
    if kind:
        print("FAIL seed %d [%s]: %s\n  shape: %s\n  replay: SNAPNBD=%s "
              "%s%s --seed %d" % (seed, kind, msg, run.shape_str(),
                                  os.environ.get("SNAPNBD", ""), sys.argv[0],
                                  " --daemon qsd" if opts.daemon == "qsd"
                                  else "", seed), flush=True)
        try:
            log = open(run.log_path).read().strip()
            if log:
                print("  daemon log: " + log[-600:].replace("\n", "\n    "))
        except (OSError, AttributeError):
            pass
    elif opts.verbose:
        print("ok seed %d: %s" % (seed, run.shape_str()), flush=True)
    try:
        run.cleanup(opts.keep and kind is not None)
    except Exception:               # noqa: BLE001
        pass
    return kind, run.shape


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=7)
    p.add_argument("--first", type=int, default=1)
    p.add_argument("--seed", type=int, action="append")
    p.add_argument("--timeout", type=float, default=60,
                   help="seconds per seed")
    p.add_argument("--budget", type=float, default=0,
                   help="stop starting seeds after this many seconds")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary directory of a failed seed")
    p.add_argument("--verbose", "-v", action="store_true")
    p.add_argument("--daemon", choices=("snapnbd", "qsd"), default="snapnbd",
                   help="qsd: run the model against qemu-storage-daemon "
                   "(checks the model against the reference)")
    opts = p.parse_args()
    if opts.daemon == "snapnbd" and "SNAPNBD" not in os.environ:
        sys.exit("backup_model: set SNAPNBD to the snapnbd binary")
    opts.can_mount = can_mount()
    if not opts.can_mount:
        print("backup_model: cannot mount a tmpfs: the target-error "
              "(ENOSPC) variant is skipped", flush=True)
    seeds = opts.seed or range(opts.first, opts.first + opts.seeds)
    t0 = time.monotonic()
    fails, ran, classes = [], 0, {}
    for seed in seeds:
        if opts.budget and time.monotonic() - t0 > opts.budget:
            break
        kind, shape = run_seed(seed, opts)
        ran += 1
        if ran % 50 == 0:
            print("backup_model: %d seeds so far, %d failed, %.0f s" % (
                ran, len(fails) + bool(kind), time.monotonic() - t0),
                flush=True)
        if kind:
            fails.append(seed)
            key = "%s sync=%s target=%s" % (kind, shape.get("sync"),
                                            shape.get("target"))
            classes.setdefault(key, []).append(seed)
    print("backup_model: %d seeds, %d passed, %d failed in %.0f s" % (
        ran, ran - len(fails), len(fails), time.monotonic() - t0))
    for key, ss in sorted(classes.items(), key=lambda kv: -len(kv[1])):
        print("  %4d  %s  (seeds %s)" % (len(ss), key,
                                         " ".join(map(str, ss[:8]))))
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
