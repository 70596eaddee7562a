#!/usr/bin/env python3
"""bench/all.py - every row of issue 15's performance table in one
interleaved run: snapnbd against qemu-nbd, nbdkit and qemu-storage-daemon
(qsd) where each applies.  Start it through bench/all.sh (or ./run bench);
bench/README.md describes the method and the output.

Each round runs, in this order, with the servers of each section restarted
for the section and their order rotated by one every round:

  socket   the unix-socket stream limit (no server): one process writes
           1 MiB buffers, another reads them, for RUNTIME s
  raw      fully allocated raw image: fio's nbd engine, 4k randread and
           randwrite at QD1 and QD32, 1 MiB sequential read QD4, then
           nbdcopy of the whole export to null:  (snapnbd, qemu-nbd,
           nbdkit file, qsd)
  qcow2    the same on a fully allocated qcow2 image (snapnbd, qemu-nbd,
           qsd; nbdkit has no qcow2 driver)
  backup   qcow2 image exported writable, guest = fio 4k randwrite QD32:
           no job; during blockdev-backup sync=full into a raw file; during
           a sync=none fleecing job before and while nbdcopy pulls the
           point-in-time export (snapnbd, qsd)
  mirror   raw image exported writable: blockdev-mirror sync=full into a
           fresh raw file, idle and under the same guest load (snapnbd, qsd)

Around every measurement the server's utime+stime (all threads, from
/proc/PID/stat) is read, so every row also has the server's CPU time per
I/O (per MiB for the throughput rows).  The 4k rows also record the
client's (fio's) CPU µs per I/O and how busy its one thread was
(`*_client_us`, `*_client_busy`): fio near 1.0 is the client's limit.

    bench/all.sh                 about 17 minutes (3 rounds)
    QUICK=1 bench/all.sh         about 5 minutes (1 round)
    bench/all.sh --replot DIR    redraws DIR/plot.png from DIR/results.json
    bench/all.sh --estimate      prints the expected duration only
"""
import csv
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TOP, "tests"))
from jobs_qmp import QMP  # noqa: E402

MiB = 1 << 20


def env_int(name, default, quick):
    v = os.environ.get(name)
    if v is None:
        return quick if QUICK else default
    if not v.isdigit() or int(v) <= 0:
        sys.exit(f"all.py: {name} must be a positive integer (got {v!r})")
    return int(v)


QUICK = os.environ.get("QUICK", "0") == "1"
ROUNDS = env_int("ROUNDS", 3, 1)
RUNTIME = env_int("RUNTIME", 5, 4)
IMAGE_MIB = env_int("IMAGE_MIB", 1024, 1024)
READY_TIMEOUT = env_int("READY_TIMEOUT", 20, 10)
MAX_SECONDS = env_int("MAX_SECONDS", 1500, 600)
SECTIONS = os.environ.get("SECTIONS",
                          "socket raw qcow2 backup mirror").split()
SERVERS = os.environ.get("SERVERS", "snapnbd qemu-nbd nbdkit qsd").split()
SNAPNBD = os.environ.get("SNAPNBD", os.path.join(TOP, "build", "snapnbd"))
SNAPNBD_ARGS = os.environ.get("SNAPNBD_ARGS", "").split()
BENCH_DIR = os.environ.get("BENCH_DIR", "/dev/shm/snapnbd-bench")
RESULTS_DIR = os.environ.get("RESULTS_DIR", os.path.join(HERE, "results"))
CLK_TCK = os.sysconf("SC_CLK_TCK")

# which servers each section compares (nbdkit has neither qcow2 nor QMP
# jobs; qemu-nbd has no QMP)
SECTION_SERVERS = {
    "raw": ["snapnbd", "qemu-nbd", "nbdkit", "qsd"],
    "qcow2": ["snapnbd", "qemu-nbd", "qsd"],
    "backup": ["snapnbd", "qsd"],
    "mirror": ["snapnbd", "qsd"],
}
FIO_WORKLOADS = [  # metric, rw, bs, iodepth
    ("randread4k_qd1", "randread", "4k", 1),
    ("randread4k_qd32", "randread", "4k", 32),
    ("randwrite4k_qd1", "randwrite", "4k", 1),
    ("randwrite4k_qd32", "randwrite", "4k", 32),
    ("seqread1m_qd4", "read", "1M", 4),
]

out_dir = raw_dir = work = None
notes = []
samples = []   # dicts: round, position, section, server, metric, value, cpu


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def note(msg):
    log("note: " + msg)
    notes.append(msg)


def record(rnd, pos, section, server, metric, value, cpu=None):
    samples.append(dict(round=rnd, position=pos, section=section,
                        server=server, metric=f"{section}.{metric}",
                        value=value, cpu=cpu))


def nan():
    return float("nan")


# ------------------------------------------------------------------ servers
def cpu_ticks(pid):
    """utime + stime of all threads of @pid, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def cpu_us(pid, t0):
    t1 = cpu_ticks(pid)
    if t0 is None or t1 is None:
        return None
    return (t1 - t0) * 1e6 / CLK_TCK


class Server:
    """One server on a unix socket exporting @image (format @fmt).  With
    @qmp (snapnbd and qsd only) it is started the qemu-storage-daemon way,
    with a QMP monitor, and the export is called "disk"."""

    def __init__(self, kind, image, fmt, tag, qmp=False, extra_blockdevs=(),
                 top_node="disk"):
        self.kind = kind
        self.sock = f"{work}/nbd.sock"
        self.qmp_path = f"{work}/qmp.sock"
        for p in (self.sock, self.qmp_path):
            if os.path.exists(p):
                os.unlink(p)
        name = ""
        if kind in ("qsd", "snapnbd") and (qmp or kind == "qsd"):
            prog = "qemu-storage-daemon" if kind == "qsd" else SNAPNBD
            args = [prog,
                    "--blockdev",
                    f"driver=file,node-name=file0,filename={image}",
                    "--blockdev", f"driver={fmt},node-name=disk,file=file0"]
            for b in extra_blockdevs:
                args += ["--blockdev", b]
            args += ["--nbd-server", f"addr.type=unix,addr.path={self.sock}",
                     "--export", f"type=nbd,id=e0,node-name={top_node},"
                     "name=disk,writable=on"]
            if qmp:
                args += ["--chardev", f"socket,id=qmp0,path={self.qmp_path},"
                         "server=on,wait=off", "--monitor", "chardev=qmp0"]
            if kind == "snapnbd":
                args[1:1] = SNAPNBD_ARGS
            name = "disk"
        elif kind == "snapnbd":
            args = [SNAPNBD, "-f", fmt, "-k", self.sock, "-t", "-e", "0",
                    *SNAPNBD_ARGS, image]
        elif kind == "qemu-nbd":
            args = ["qemu-nbd", "-f", fmt, "-k", self.sock, "-t", "-e", "0",
                    image]
        elif kind == "nbdkit":
            args = ["nbdkit", "-U", self.sock, "-f", "file", f"file={image}"]
        else:
            raise ValueError(kind)
        self.uri = f"nbd+unix:///{name}?socket={self.sock}"
        self.errlog = open(f"{raw_dir}/server-{tag}.log", "w")
        self.proc = subprocess.Popen(args, stdout=self.errlog,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 15
        while subprocess.call(["nbdinfo", "--size", self.uri],
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{kind} did not start (see "
                                   f"raw/server-{tag}.log)")
            time.sleep(0.1)
        self.q = QMP(self.qmp_path, timeout=600) if qmp else None

    def uri_of(self, name):
        return f"nbd+unix:///{name}?socket={self.sock}"

    def ticks(self):
        return cpu_ticks(self.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.errlog.close()


# ------------------------------------------------------------------ clients
def fio_args(uri, rw, bs, qd, runtime, out):
    return ["fio", f"--name={rw}{bs}", "--ioengine=nbd", f"--uri={uri}",
            f"--rw={rw}", f"--bs={bs}", f"--iodepth={qd}", "--numjobs=1",
            "--time_based", f"--runtime={runtime}", "--norandommap",
            "--randrepeat=0", "--output-format=json", f"--output={out}"]


def fio_result(out):
    """(IOPS, MiB/s, total I/Os) of fio's JSON output file."""
    with open(out) as f:
        text = f.read()
    job = json.loads(text[text.index("{"):])["jobs"][0]
    if job.get("error"):
        raise RuntimeError(f"fio error {job['error']}")
    r = job["read"] if job["read"]["total_ios"] else job["write"]
    if r["total_ios"] <= 0:
        raise RuntimeError("fio did no I/O")
    return r["iops"], r["bw_bytes"] / MiB, r["total_ios"]


def fio_client_cpu(out):
    """The client's (fio's) CPU: (µs per I/O, share of one core busy).
    On two cores the client and the server share the CPU: the client's
    part shows how close a row is to what the machine can do at all."""
    with open(out) as f:
        text = f.read()
    job = json.loads(text[text.index("{"):])["jobs"][0]
    r = job["read"] if job["read"]["total_ios"] else job["write"]
    busy = (job["usr_cpu"] + job["sys_cpu"]) / 100
    return busy * job["job_runtime"] * 1000 / r["total_ios"], busy


def run_fio(srv, tag, rw, bs, qd):
    """Runs one fio workload: (value, server CPU µs per I/O)."""
    out = f"{raw_dir}/fio-{tag}.json"
    t0 = srv.ticks()
    rc = subprocess.call(fio_args(srv.uri, rw, bs, qd, RUNTIME, out),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         timeout=RUNTIME + 60)
    cpu = cpu_us(srv.pid, t0)
    if rc != 0:
        raise RuntimeError(f"fio exited with {rc}")
    iops, mibs, ios = fio_result(out)
    return (mibs if bs == "1M" else iops), (cpu / ios if cpu is not None
                                            else None)


def run_nbdcopy(srv, uri, tag):
    """nbdcopy of the whole export to null: (MiB/s, CPU µs per MiB)."""
    t0c = srv.ticks()
    t0 = time.monotonic()
    with open(f"{raw_dir}/nbdcopy-{tag}.log", "w") as f:
        rc = subprocess.call(["nbdcopy", uri, "null:"], stdout=f, stderr=f,
                             timeout=max(120, IMAGE_MIB / 10))
    dt = time.monotonic() - t0
    cpu = cpu_us(srv.pid, t0c)
    if rc != 0:
        raise RuntimeError(f"nbdcopy exited with {rc}")
    return IMAGE_MIB / dt, (cpu / IMAGE_MIB if cpu is not None else None)


class GuestLoad:
    """fio 4k randwrite at @qd on @uri until stopped, logging IOPS every
    100 ms with Unix-epoch timestamps, so windows can be cut out of it."""

    def __init__(self, uri, qd, tag):
        self.log = f"{raw_dir}/guest-{tag}"
        self.logfile = f"{self.log}_iops.1.log"
        self.proc = subprocess.Popen(
            ["fio", "--name=guest", "--ioengine=nbd", f"--uri={uri}",
             "--rw=randwrite", "--bs=4k", f"--iodepth={qd}", "--time_based",
             "--runtime=3600", "--norandommap", "--randrepeat=0",
             f"--write_iops_log={self.log}", "--log_avg_msec=100",
             "--log_unix_epoch=1", "--output-format=json",
             f"--output={self.log}.json"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def warm(self):
        """Lets fio connect and settle; returns the start of a 1 s window
        of undisturbed load (the "before" baseline) that ends on return
        (iops() moves a window's start to fio's first log entry, should
        fio have been slower to start)."""
        time.sleep(0.5)
        t = time.time()
        time.sleep(1.0)
        return t

    def stop(self):
        """Stops fio a little after the last window ends, so that fio has
        logged the 100 ms entry that covers its end."""
        if self.proc.poll() is None:
            time.sleep(0.25)
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def iops(self, t0, t1):
        """Mean IOPS over [t0, t1] (epoch s).  Each entry of fio's log is
        the rate since the entry before it (about 100 ms); time that no
        entry covers had no completions (fio logs only when I/O completes,
        so a guest stalled by a job leaves a gap), and a window shorter
        than one entry still gets a figure.  fio writes the log when it
        exits: call this after stop()."""
        ios, prev = 0.0, None
        try:
            with open(self.logfile) as f:
                for line in f:
                    t, v = line.split(",")[:2]
                    end = int(t) / 1000.0
                    start = end - 0.1 if prev is None else prev
                    if prev is None:   # fio was not running before this
                        t0 = min(max(t0, start), t1)
                    overlap = min(end, t1) - max(start, t0)
                    if overlap > 0:
                        ios += int(v) * overlap
                    prev = end
        except OSError:
            return nan()
        return ios / (t1 - t0) if t1 > t0 else nan()


# ------------------------------------------------------------------ sections
def socket_limit():
    """MiB/s of a unix stream socket pair, 1 MiB writes, reader in another
    process: the ceiling for 1 MiB sequential reads over NBD."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        a.close()
        buf = b"\xa5" * MiB
        end = time.monotonic() + RUNTIME
        try:
            while time.monotonic() < end:
                b.sendall(buf)
        finally:
            os._exit(0)
    b.close()
    buf = bytearray(MiB)
    view = memoryview(buf)
    total = 0
    t0 = time.monotonic()
    while True:
        n = a.recv_into(view)
        if n == 0:
            break
        total += n
    dt = time.monotonic() - t0
    os.waitpid(pid, 0)
    a.close()
    return total / MiB / dt


def section_fio(rnd, pos, section, kind, image, fmt):
    tag = f"r{rnd}-{section}-{kind}"
    try:
        srv = Server(kind, image, fmt, tag)
    except RuntimeError as e:
        note(f"round {rnd} {section}: {e}")
        for m, *_ in FIO_WORKLOADS:
            record(rnd, pos, section, kind, m, nan())
        record(rnd, pos, section, kind, "nbdcopy", nan())
        return
    try:
        for m, rw, bs, qd in FIO_WORKLOADS:
            try:
                v, c = run_fio(srv, f"{tag}-{m}", rw, bs, qd)
            except (RuntimeError, ValueError, OSError,
                    subprocess.TimeoutExpired) as e:
                note(f"round {rnd} {section} {kind} {m}: {e}")
                v, c = nan(), None
            record(rnd, pos, section, kind, m, v, c)
            if bs != "1M" and v == v:
                us, busy = fio_client_cpu(f"{raw_dir}/fio-{tag}-{m}.json")
                record(rnd, pos, section, kind, f"{m}_client_us", us)
                record(rnd, pos, section, kind, f"{m}_client_busy", busy)
        try:
            v, c = run_nbdcopy(srv, srv.uri, tag)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            note(f"round {rnd} {section} {kind} nbdcopy: {e}")
            v, c = nan(), None
        record(rnd, pos, section, kind, "nbdcopy", v, c)
    finally:
        srv.stop()


def fresh_raw(path):
    with open(path, "wb") as f:
        f.truncate(IMAGE_MIB * MiB)
    return path


def section_backup(rnd, pos, kind, image):
    """Guest 4k writes QD32 on a qcow2 export: no job, sync=full backup,
    fleecing before and while a client pulls the point in time."""
    tag = f"r{rnd}-backup-{kind}"
    res = {}
    srv = Server(kind, image, "qcow2", tag, qmp=True)
    try:
        # no job
        v, c = run_fio(srv, f"{tag}-idle", "randwrite", "4k", 32)
        res["idle_qd32"] = (v, c)
        # sync=full into a raw file, under the guest load
        tgt = fresh_raw(f"{work}/backup-target.raw")
        srv.q.cmd("blockdev-add", {"driver": "raw", "node-name": "tgt",
                                   "file": {"driver": "file",
                                            "filename": tgt}})
        g = GuestLoad(srv.uri, 32, f"{tag}-full")
        tw = g.warm()
        c0 = srv.ticks()
        t0 = time.time()
        srv.q.cmd("blockdev-backup", {"job-id": "full", "device": "disk",
                                      "target": "tgt", "sync": "full"})
        srv.q.wait_event("BLOCK_JOB_COMPLETED", timeout=600, device="full")
        t1 = time.time()
        cpu = cpu_us(srv.pid, c0)
        g.stop()
        before, during = g.iops(tw, t0), g.iops(t0, t1)
        ios = during * (t1 - t0)
        res["before_full_qd32"] = (before, None)
        res["full_qd32"] = (during, cpu / ios if cpu and ios else None)
        res["full_vs_nojob"] = (during / before if before else nan(), None)
        res["full_mibs_under_load"] = (IMAGE_MIB / (t1 - t0),
                                       cpu / IMAGE_MIB if cpu else None)
        srv.q.cmd("blockdev-del", {"node-name": "tgt"})
        os.unlink(tgt)
        # fleecing: sync=none into a qcow2 overlay over the live node,
        # exported read-only as "pit"
        ov = f"{work}/fleece.qcow2"
        subprocess.check_call(["qemu-img", "create", "-q", "-f", "qcow2",
                               "-F", "qcow2", "-b", image, ov,
                               f"{IMAGE_MIB}M"])
        srv.q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "fl",
                                   "backing": "disk",
                                   "file": {"driver": "file",
                                            "filename": ov}})
        srv.q.cmd("blockdev-backup", {"job-id": "fleece", "device": "disk",
                                      "target": "fl", "sync": "none"})
        srv.q.cmd("block-export-add", {"type": "nbd", "id": "pit",
                                       "name": "pit", "node-name": "fl"})
        v, c = run_fio(srv, f"{tag}-fleece", "randwrite", "4k", 32)
        res["fleece_qd32"] = (v, c)
        g = GuestLoad(srv.uri, 32, f"{tag}-pull")
        g.warm()
        t0 = time.time()
        mibs, cpu_mib = run_nbdcopy(srv, srv.uri_of("pit"), f"{tag}-pull")
        t1 = time.time()
        g.stop()
        res["pull_qd32"] = (g.iops(t0, t1), None)
        res["pull_mibs"] = (mibs, cpu_mib)
        srv.q.cmd("block-export-del", {"id": "pit", "mode": "hard"})
        srv.q.cmd("job-cancel", {"id": "fleece"})
        srv.q.wait_event("BLOCK_JOB_CANCELLED", timeout=60, device="fleece")
        idle = res["idle_qd32"][0]
        res["fleece_vs_nojob"] = (res["fleece_qd32"][0] / idle, None)
        res["pull_vs_nojob"] = (res["pull_qd32"][0] / idle, None)
    finally:
        srv.stop()
        for p in (f"{work}/backup-target.raw", f"{work}/fleece.qcow2"):
            if os.path.exists(p):
                os.unlink(p)
    return res


def section_mirror(rnd, pos, kind, image):
    """blockdev-mirror sync=full of the exported raw image into a fresh raw
    file, idle and under guest 4k randwrite QD32."""
    res = {}
    for load in (False, True):
        lt = "load" if load else "idle"
        tag = f"r{rnd}-mirror-{lt}-{kind}"
        srv = Server(kind, image, "raw", tag, qmp=True)
        tgt = fresh_raw(f"{work}/mirror-target.raw")
        g = None
        try:
            srv.q.cmd("blockdev-add", {"driver": "raw", "node-name": "tgt",
                                       "file": {"driver": "file",
                                                "filename": tgt}})
            if load:
                g = GuestLoad(srv.uri, 32, tag)
                g.warm()
            c0 = srv.ticks()
            t0 = time.time()
            srv.q.cmd("blockdev-mirror", {"job-id": "m", "device": "disk",
                                          "target": "tgt", "sync": "full"})
            try:
                srv.q.wait_event("BLOCK_JOB_READY", timeout=READY_TIMEOUT,
                                 device="m")
                ready = True
            except TimeoutError:
                ready = False
            t1 = time.time()
            cpu = cpu_us(srv.pid, c0)
            # bytes copied so far: above the image size when guest writes
            # dirtied copied areas again
            done = [j.get("current-progress", 0)
                    for j in srv.q.cmd("query-jobs") if j["id"] == "m"]
            copied = (done[0] if done else 0) / MiB
            res[f"{lt}_copy_mibs"] = (copied / (t1 - t0),
                                      cpu / copied if cpu and copied
                                      else None)
            if ready:
                res[f"{lt}_mibs"] = (IMAGE_MIB / (t1 - t0),
                                     cpu / IMAGE_MIB if cpu else None)
                srv.q.cmd("job-complete", {"id": "m"})
            else:
                note(f"round {rnd} mirror {lt} {kind}: not READY after "
                     f"{READY_TIMEOUT} s, having copied {copied:.0f} MiB "
                     f"of {IMAGE_MIB}; recorded as 0 MiB/s to READY")
                res[f"{lt}_mibs"] = (0.0, None)
                srv.q.cmd("job-cancel", {"id": "m"})  # forces, as in QEMU
            # the guest stops first: qemu-storage-daemon 7.2 took minutes
            # to conclude a cancelled mirror while it wrote (2026-12-07)
            if g:
                g.stop()
            try:
                srv.q.wait_event("JOB_STATUS_CHANGE", timeout=60, id="m",
                                 status="concluded")
            except TimeoutError:
                note(f"round {rnd} mirror {lt} {kind}: the job did not "
                     "conclude within 60 s of its end; server stopped")
            if g:
                before, during = g.iops(t0 - 1.0, t0), g.iops(t0, t1)
                ios = during * (t1 - t0)
                res["guest_qd32_during"] = (during,
                                            cpu / ios if cpu and ios
                                            else None)
                res["guest_vs_before"] = (during / before if before
                                          else nan(), None)
        finally:
            if g:
                g.stop()
            srv.stop()
            os.unlink(tgt)
    return res


# ------------------------------------------------------------------ setup
def make_images():
    """disk.raw: IMAGE_MIB of random data, every MiB distinct;
    disk.qcow2: the same data, every cluster allocated."""
    raw = f"{work}/disk.raw"
    block = bytearray(os.urandom(MiB))
    with open(raw, "wb") as f:
        for i in range(IMAGE_MIB):
            block[0:8] = i.to_bytes(8, "little")
            f.write(block)
    q = f"{work}/disk.qcow2"
    subprocess.check_call(["qemu-img", "convert", "-f", "raw", "-O",
                           "qcow2", raw, q])
    # copies for the job sections, so the fio rows and the jobs never
    # share an image (writes would otherwise change what the next reads)
    shutil.copyfile(q, f"{work}/jobs.qcow2")
    shutil.copyfile(raw, f"{work}/mirror.raw")
    return raw, q


def have(cmd, *probe):
    try:
        return subprocess.call([cmd, *probe], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL) == 0
    except OSError:
        return False


def available_servers():
    avail = []
    for s in SERVERS:
        ok = {"snapnbd": lambda: os.access(SNAPNBD, os.X_OK),
              "qemu-nbd": lambda: have("qemu-nbd", "--version"),
              "nbdkit": lambda: have("nbdkit", "file", "--dump-plugin"),
              "qsd": lambda: have("qemu-storage-daemon", "--version")}.get(s)
        if ok is None:
            note(f"unknown server {s!r} ignored")
        elif ok():
            avail.append(s)
        else:
            note(f"{s} is not available: its column is empty")
    return avail


def expected_seconds(avail):
    """A model of the run's length, fitted on this 2-core machine."""
    def n(sec):
        return len([s for s in SECTION_SERVERS[sec] if s in avail])
    fio_srv = len(FIO_WORKLOADS) * (RUNTIME + 0.4) + 1.0
    per_round = 0.0
    if "socket" in SECTIONS:
        per_round += RUNTIME + 0.5
    if "raw" in SECTIONS:
        per_round += n("raw") * (fio_srv + IMAGE_MIB / 700)
    if "qcow2" in SECTIONS:
        per_round += n("qcow2") * (fio_srv + IMAGE_MIB / 500)
    if "backup" in SECTIONS:
        per_round += n("backup") * (2 * (RUNTIME + 0.4) + 2 * 1.5 + 3
                                    + IMAGE_MIB / 300 + IMAGE_MIB / 300)
    if "mirror" in SECTIONS:
        one = 2 * 1.5 + 1.5 + IMAGE_MIB / 700
        per_round += n("mirror") * one
        if "snapnbd" in avail:
            per_round += min(READY_TIMEOUT, IMAGE_MIB / 300)
        if "qsd" in avail:   # qsd 7.2's mirror does not converge under load
            per_round += READY_TIMEOUT
    return IMAGE_MIB / 100 + ROUNDS * per_round


# ------------------------------------------------------------------ main
def main():
    global out_dir, raw_dir, work
    for c in ("fio", "nbdinfo", "nbdcopy", "qemu-img"):
        if not shutil.which(c):
            sys.exit(f"all.py: {c} is required")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = os.path.join(RESULTS_DIR, stamp)
    raw_dir = os.path.join(out_dir, "raw")
    os.makedirs(raw_dir)
    avail = available_servers()
    if not avail:
        sys.exit("all.py: no server to benchmark")
    need = 7 * IMAGE_MIB + 512   # 4 images, 2 job targets, an overlay
    os.makedirs(BENCH_DIR, exist_ok=True)
    st = os.statvfs(BENCH_DIR)
    if st.f_bavail * st.f_frsize < need * MiB:
        sys.exit(f"all.py: {BENCH_DIR} needs {need} MiB free")
    est = expected_seconds(avail)
    log(f"expected duration: about {est / 60:.0f} min ({est:.0f} s): "
        f"{ROUNDS} round(s), {RUNTIME} s per fio run, {IMAGE_MIB} MiB "
        f"images, sections {' '.join(SECTIONS)}, servers {' '.join(avail)}")
    load0 = os.getloadavg()
    if load0[0] > 1.0:
        note(f"load average {load0[0]:.2f} at the start: numbers follow "
             "other users' load (start full runs below 0.5)")
    work = tempfile.mkdtemp(prefix="all.", dir=BENCH_DIR)
    own_snapnbd = f"{work}/snapnbd"
    t_start = time.monotonic()
    rounds_done = 0
    global SNAPNBD
    try:
        if "snapnbd" in avail:
            # a private copy, so a rebuild during the run changes nothing
            shutil.copy2(SNAPNBD, own_snapnbd)
            SNAPNBD = own_snapnbd
        log(f"making {IMAGE_MIB} MiB raw and qcow2 images in {work}")
        raw, qcow2 = make_images()
        for rnd in range(1, ROUNDS + 1):
            if time.monotonic() - t_start > MAX_SECONDS:
                note(f"MAX_SECONDS={MAX_SECONDS} used up after "
                     f"{rounds_done} round(s); stopping early")
                break
            run_round(rnd, avail, raw, qcow2)
            rounds_done = rnd
    except KeyboardInterrupt:
        # the sections' finally blocks have stopped their servers
        note(f"interrupted in round {rounds_done + 1}: the tables hold "
             "what was measured until then")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - t_start
    config = dict(quick=QUICK, rounds_requested=ROUNDS,
                  rounds_done=rounds_done, runtime_s=RUNTIME,
                  image_mib=IMAGE_MIB, ready_timeout_s=READY_TIMEOUT,
                  sections=SECTIONS, servers=avail,
                  snapnbd_args=" ".join(SNAPNBD_ARGS), bench_dir=BENCH_DIR,
                  bench_fs=fs_type(BENCH_DIR),
                  load_start=list(load0), load_end=list(os.getloadavg()),
                  expected_s=round(est), elapsed_s=round(elapsed),
                  versions=versions())
    write_results(config)
    latest = os.path.join(RESULTS_DIR, "latest")
    if os.path.islink(latest) or not os.path.exists(latest):
        if os.path.islink(latest):
            os.unlink(latest)
        os.symlink(stamp, latest)
    log(f"{elapsed:.0f} s (expected {est:.0f} s); results in {out_dir}/")


def rotated(servers, rnd):
    k = (rnd - 1) % len(servers) if servers else 0
    return servers[k:] + servers[:k]


def run_round(rnd, avail, raw, qcow2):
    for section in SECTIONS:
        if section == "socket":
            log(f"round {rnd}/{ROUNDS}: unix-socket limit")
            record(rnd, 0, "socket", "socket", "limit_mibs", socket_limit())
            continue
        if section not in SECTION_SERVERS:
            note(f"unknown section {section!r} ignored")
            continue
        servers = [s for s in SECTION_SERVERS[section] if s in avail]
        for pos, kind in enumerate(rotated(servers, rnd)):
            log(f"round {rnd}/{ROUNDS}: {section} {kind}")
            if section in ("raw", "qcow2"):
                section_fio(rnd, pos, section, kind,
                            raw if section == "raw" else qcow2, section)
                continue
            fn, img = ((section_backup, f"{work}/jobs.qcow2")
                       if section == "backup"
                       else (section_mirror, f"{work}/mirror.raw"))
            try:
                res = fn(rnd, pos, kind, img)
            except Exception as e:   # one server's failure is a data point
                note(f"round {rnd} {section} {kind} failed: "
                     f"{type(e).__name__}: {e}")
                res = {}
            for m in JOB_METRICS[section]:
                v, c = res.get(m, (nan(), None))
                record(rnd, pos, section, kind, m, v, c)


JOB_METRICS = {
    "backup": ["idle_qd32", "before_full_qd32", "full_qd32", "full_vs_nojob",
               "full_mibs_under_load", "fleece_qd32", "fleece_vs_nojob",
               "pull_qd32", "pull_vs_nojob", "pull_mibs"],
    "mirror": ["idle_mibs", "load_mibs", "idle_copy_mibs", "load_copy_mibs",
               "guest_qd32_during", "guest_vs_before"],
}


def fs_type(path):
    try:
        return subprocess.check_output(["stat", "-f", "-c", "%T", path],
                                       text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def versions():
    def first(*cmd):
        try:
            return subprocess.check_output(
                cmd, stderr=subprocess.STDOUT, text=True).splitlines()[0]
        except (OSError, subprocess.CalledProcessError, IndexError):
            return "not available"
    return {"fio": first("fio", "--version"),
            "qemu-nbd": first("qemu-nbd", "--version"),
            "qsd": first("qemu-storage-daemon", "--version"),
            "nbdkit": first("nbdkit", "--version"),
            "nbdcopy": first("nbdcopy", "--version"),
            "snapnbd_tree": first("git", "-C", TOP, "describe", "--always",
                                  "--dirty"),
            "kernel": os.uname().release, "cpus": str(os.cpu_count())}


# ------------------------------------------------------------------ report
PEER_GOAL = ("peer", 1.2)
# key, label, unit, higher is better, goal: (kind, threshold) or None.
# Kinds: "peer" snapnbd / best peer >= t (<= 1/t when lower is better);
# "min"/"max" snapnbd's own value >= t / <= t.  "cpu:" keys are the CPU
# per I/O of the fio row named after the colon.
GOAL_ROWS = []
for _fmt in ("raw", "qcow2"):
    GOAL_ROWS += [
        (f"{_fmt}.randread4k_qd1", f"{_fmt} 4k randread QD1", "IOPS", True,
         PEER_GOAL),
        (f"{_fmt}.randread4k_qd32", f"{_fmt} 4k randread QD32", "IOPS", True,
         PEER_GOAL),
        (f"{_fmt}.randwrite4k_qd1", f"{_fmt} 4k randwrite QD1", "IOPS", True,
         PEER_GOAL),
        (f"{_fmt}.randwrite4k_qd32", f"{_fmt} 4k randwrite QD32", "IOPS",
         True, PEER_GOAL),
        (f"{_fmt}.seqread1m_qd4", f"{_fmt} 1 MiB seq read QD4", "MiB/s",
         True, PEER_GOAL),
        (f"{_fmt}.seqread1m_qd4_socket", f"{_fmt} 1 MiB seq read QD4, "
         "share of the unix-socket limit", "fraction", True, ("min", 0.8)),
        (f"{_fmt}.nbdcopy", f"{_fmt} nbdcopy whole export", "MiB/s", True,
         PEER_GOAL),
        (f"cpu:{_fmt}.randread4k_qd32", f"{_fmt} server CPU per 4k read QD32",
         "µs", False, ("max", 6.0)),
        (f"cpu:{_fmt}.randwrite4k_qd32", f"{_fmt} server CPU per 4k write "
         "QD32", "µs", False, ("max", 6.0)),
    ]
GOAL_ROWS += [
    ("backup.full_vs_nojob", "guest 4k writes QD32 during sync=full / "
     "the second before it (qcow2)", "ratio", True, ("min", 0.5)),
    ("backup.fleece_vs_nojob", "guest 4k writes QD32 during fleecing / no "
     "job", "ratio", True, ("min", 0.8)),
    ("backup.pull_vs_nojob", "guest 4k writes QD32 while a client pulls "
     "the fleece / no job", "ratio", True, ("min", 0.8)),
    ("backup.full_mibs_under_load", "backup sync=full throughput under "
     "guest load", "MiB/s", True, ("peer", 1.0)),
    ("mirror.load_mibs", "mirror sync=full to READY under guest load",
     "MiB/s", True, None),
    ("mirror.load_copy_mibs", "mirror copy rate under guest load (may "
     "copy areas twice)", "MiB/s", True, None),
    ("mirror.guest_vs_before", "guest 4k writes QD32 during mirror / "
     "before", "ratio", True, None),
]


def fmt_value(v, unit):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "FAIL"
    if unit == "IOPS":
        return f"{v / 1000:.1f}k"
    if unit == "fraction":
        return f"{v * 100:.0f} %"
    if unit == "ratio":
        return f"{v:.2f}"
    if unit == "µs" or v < 10:
        return f"{v:.1f}"
    return f"{v:.0f}"


def median(vals):
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    return statistics.median(vals) if vals else None


def derive_socket_fractions():
    """seqread1m_qd4 / the same round's unix-socket limit, per sample."""
    limit = {s["round"]: s["value"] for s in samples
             if s["metric"] == "socket.limit_mibs"}
    for s in list(samples):
        for fmt in ("raw", "qcow2"):
            if s["metric"] == f"{fmt}.seqread1m_qd4" and s["round"] in limit:
                samples.append(dict(s, metric=f"{fmt}.seqread1m_qd4_socket",
                                    value=s["value"] / limit[s["round"]],
                                    cpu=None))


def summarise(servers):
    """Per metric: medians of value and CPU per server."""
    by = {}
    for s in samples:
        e = by.setdefault(s["metric"], {}).setdefault(
            s["server"], {"values": [], "cpu": []})
        e["values"].append(s["value"])
        e["cpu"].append(s["cpu"])
    med = {}
    for metric, per in by.items():
        med[metric] = {srv: dict(value=median(e["values"]),
                                 cpu=median(e["cpu"]),
                                 n=len([v for v in e["values"]
                                        if not math.isnan(v)]))
                       for srv, e in per.items()}
    # CPU rows as metrics of their own
    for metric in list(med):
        if metric.split(".")[0] in ("raw", "qcow2"):
            med["cpu:" + metric] = {srv: dict(value=e["cpu"], cpu=None,
                                              n=e["n"])
                                    for srv, e in med[metric].items()}
    return med


def evaluate(med, servers):
    rows = []
    for key, label, unit, hib, goal in GOAL_ROWS:
        if key.split(":")[-1].split(".")[0] not in SECTIONS:
            continue   # a section left out of this run (SECTIONS)
        per = med.get(key, {})
        vals = {s: per.get(s, {}).get("value") for s in servers}
        cpus = {s: per.get(s, {}).get("cpu") for s in servers}
        peers = [(vals[s], s) for s in servers
                 if s != "snapnbd" and vals[s] is not None]
        best = best_who = ratio = None
        if peers:
            best, best_who = (max if hib else min)(peers)
            if vals.get("snapnbd") is not None and best:
                ratio = vals["snapnbd"] / best
        met = None
        v = vals.get("snapnbd")
        if goal and v is not None:
            kind, t = goal
            if kind == "peer":
                met = None if ratio is None else (
                    ratio >= t if hib else ratio <= 1 / t)
            elif kind == "min":
                met = v >= t
            else:
                met = v <= t
        rows.append(dict(key=key, label=label, unit=unit,
                         higher_is_better=hib, goal=goal, values=vals,
                         cpu=cpus, best_peer=best_who, best_peer_value=best,
                         ratio=ratio, met=met))
    return rows


def goal_text(goal, hib, unit):
    if goal is None:
        return "— (no goal)"
    kind, t = goal
    if unit == "fraction":
        return f"≥ {t * 100:.0f} %"
    if kind == "peer":
        return f"≥ {t:g}× best peer" if hib else f"≤ {1 / t:.2f}× best peer"
    return f"≥ {t:g}" if kind == "min" else f"≤ {t:g} µs"


def cpu_unit(key):
    if key.startswith("cpu:") or "_vs_" in key or key.endswith("_socket"):
        return ""
    if key.endswith(("mibs", "nbdcopy", "seqread1m_qd4", "under_load")):
        return "µs/MiB"
    return "µs/IO"


def markdown(rows, med, servers, config):
    out = ["# snapnbd against its peers: issue 15's rows", ""]
    out.append(f"{config['rounds_done']} round(s), {config['runtime_s']} s "
               f"per fio run, {config['image_mib']} MiB images on "
               f"{config['bench_fs']} ({config['bench_dir']}), load "
               f"{config['load_start'][0]:.2f} → {config['load_end'][0]:.2f},"
               f" {config['elapsed_s']} s (expected {config['expected_s']} s)."
               f" snapnbd tree {config['versions']['snapnbd_tree']}"
               + (f", SNAPNBD_ARGS `{config['snapnbd_args']}`"
                  if config["snapnbd_args"] else "") + ".")
    out.append("")
    out.append("Cells: median (server CPU per I/O in µs, or per MiB for "
               "MiB/s rows). Ratio: snapnbd / best peer (for CPU rows "
               "lower is better).")
    out.append("")
    head = ["row", "goal"] + servers + ["snapnbd / best peer", "met"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for r in rows:
        unit = "%" if r["unit"] == "fraction" else r["unit"]
        cells = [f"{r['label']} ({unit})",
                 goal_text(r["goal"], r["higher_is_better"], r["unit"])]
        cu = cpu_unit(r["key"])
        for s in servers:
            v = r["values"].get(s)
            if r["key"] not in med or s not in med[r["key"]]:
                cells.append("—")
                continue
            cell = fmt_value(v, r["unit"])
            c = r["cpu"].get(s)
            if cu and c is not None:
                cell += f" ({c:.1f})"
            cells.append(cell)
        cells.append(f"{r['ratio']:.2f}× ({r['best_peer']})"
                     if r["ratio"] is not None else
                     (f"best peer {r['best_peer']}: 0"
                      if r["best_peer_value"] == 0 else "n/a"))
        cells.append({True: "met", False: "**not met**",
                      None: "n/a" if r["goal"] is None else "no data"}
                     [r["met"]])
        out.append("| " + " | ".join(cells) + " |")
    n_goal = [r for r in rows if r["goal"]]
    out.append("")
    out.append(f"{sum(1 for r in n_goal if r['met'])} of {len(n_goal)} "
               "goals met.")
    lim = med.get("socket.limit_mibs", {}).get("socket", {}).get("value")
    if lim:
        out.append(f"Unix-socket stream limit (1 MiB writes, two "
                   f"processes): {lim:.0f} MiB/s.")
    out.append("")
    out.append("## Every measurement (medians; CPU µs per I/O or per MiB)")
    out.append("")
    out.append("| metric | " + " | ".join(servers) + " |")
    out.append("|---|" + "---|" * len(servers))
    for metric in sorted(m for m in med
                         if not m.startswith(("cpu:", "socket."))):
        cells = [metric]
        for s in servers:
            e = med[metric].get(s)
            if e is None:
                cells.append("—")
                continue
            v = e["value"]
            cell = "FAIL" if v is None else (f"{v:.3g}" if v < 10
                                             else f"{v:.0f}")
            if e["cpu"] is not None:
                cell += f" ({e['cpu']:.1f})"
            cells.append(cell)
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("Versions: " + ", ".join(f"{k} {v}" for k, v in
                                        config["versions"].items()))
    for n in notes:
        out.append(f"- note: {n}")
    return "\n".join(out) + "\n"


def write_results(config):
    derive_socket_fractions()
    servers = [s for s in ("snapnbd", "qemu-nbd", "nbdkit", "qsd")
               if s in config["servers"]]
    med = summarise(servers)
    rows = evaluate(med, servers)
    with open(f"{out_dir}/samples.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["round", "position", "section", "server", "metric",
                    "value", "cpu_us_per_unit"])
        for s in samples:
            w.writerow([s["round"], s["position"], s["section"], s["server"],
                        s["metric"], s["value"],
                        "" if s["cpu"] is None else s["cpu"]])

    def clean(o):
        if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o
    with open(f"{out_dir}/results.json", "w") as f:
        json.dump(clean(dict(config=config, notes=notes, rows=rows,
                             medians=med, samples=samples)), f, indent=1)
    text = markdown(rows, med, servers, config)
    with open(f"{out_dir}/summary.md", "w") as f:
        f.write(text)
    print(text, end="")
    plot(out_dir)


# ------------------------------------------------------------------ plot
COLORS = {"snapnbd": "#d62728", "qemu-nbd": "#1f77b4", "nbdkit": "#2ca02c",
          "qsd": "#9467bd"}


def plot(d):
    """plot.png beside summary.md; left out (with a note in summary.md)
    when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        msg = ("no plot: python3-matplotlib is not installed for "
               f"{sys.executable} (apt-get install python3-matplotlib; "
               "then bench/all.sh --replot " + d + ")")
        log(msg)
        with open(f"{d}/summary.md", "a") as f:
            f.write(f"- note: {msg}\n")
        return
    with open(f"{d}/results.json") as f:
        res = json.load(f)
    rows = res["rows"]
    servers = [s for s in ("snapnbd", "qemu-nbd", "nbdkit", "qsd")
               if s in res["config"]["servers"]]
    peer_rows = [r for r in rows if r["goal"] and r["goal"][0] == "peer"
                 or (r["goal"] is None and r["unit"] == "MiB/s")]
    cpu_rows = [r for r in rows if r["key"].startswith("cpu:")]
    abs_rows = [r for r in rows if r["goal"] and r["goal"][0] == "min"
                or (r["goal"] is None and r["unit"] == "ratio")]
    fig, axes = plt.subplots(
        3, 1, figsize=(12, 0.5 * (len(peer_rows) + len(cpu_rows)
                                  + len(abs_rows)) + 4),
        gridspec_kw=dict(height_ratios=[len(peer_rows) + 1,
                                        len(cpu_rows) + 1,
                                        len(abs_rows) + 1]))

    def bars(ax, rs, value_of, title, xlabel, goal_of):
        h = 0.8 / len(servers)
        for i, s in enumerate(servers):
            ys, xs = [], []
            for j, r in enumerate(rs):
                v = value_of(r, s)
                if v is not None:
                    ys.append(j + (i - (len(servers) - 1) / 2) * h)
                    xs.append(v)
            ax.barh(ys, xs, height=h, color=COLORS[s], label=s)
        for j, r in enumerate(rs):
            g = goal_of(r)
            if g is not None:
                ax.plot([g, g], [j - 0.45, j + 0.45], color="black", lw=2)
            mark = {True: "met", False: "not met"}.get(r["met"], "")
            ax.text(1.0, j, " " + mark, transform=ax.get_yaxis_transform(),
                    va="center", fontsize=8,
                    color="green" if r["met"] else "red")
        ax.set_yticks(range(len(rs)))
        ax.set_yticklabels([r["label"] for r in rs], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(axis="x", alpha=0.3)

    def norm(r, s):
        v, b = r["values"].get(s), r["best_peer_value"]
        return v / b if v is not None and b else None

    bars(axes[0], peer_rows, norm,
         "throughput / best peer (black: goal)", "× best peer",
         lambda r: r["goal"][1] if r["goal"] else None)
    axes[0].axvline(1.0, color="grey", lw=0.8)
    axes[0].legend(fontsize=8, loc="lower right")
    bars(axes[1], cpu_rows, lambda r, s: r["values"].get(s),
         "server CPU per 4k I/O at QD32 (lower is better)", "µs per I/O",
         lambda r: r["goal"][1])
    bars(axes[2], abs_rows, lambda r, s: r["values"].get(s),
         "guest writes during jobs / without, seq read / socket limit",
         "fraction",
         lambda r: r["goal"][1] if r["goal"] else None)
    c = res["config"]
    fig.suptitle(f"snapnbd vs peers: {c['rounds_done']} round(s), "
                 f"{c['runtime_s']} s runs, {c['image_mib']} MiB images, "
                 f"load {c['load_start'][0]:.2f}, tree "
                 f"{c['versions']['snapnbd_tree']}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(f"{d}/plot.png", dpi=90)
    plt.close(fig)
    with open(f"{d}/summary.md") as f:
        lines = [ln for ln in f if not ln.startswith("- note: no plot:")]
    if not any(ln.startswith("![plot]") for ln in lines):
        lines += ["\n", "![plot](plot.png)\n"]
    with open(f"{d}/summary.md", "w") as f:
        f.writelines(lines)
    log(f"plot: {d}/plot.png")


def interrupted(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--replot":
        plot(sys.argv[2])
    elif sys.argv[1:] == ["--estimate"]:
        est = expected_seconds(SERVERS)
        print(f"about {est / 60:.1f} min ({est:.0f} s): {ROUNDS} round(s),"
              f" {RUNTIME} s per fio run, {IMAGE_MIB} MiB images")
    elif len(sys.argv) > 1:
        sys.exit(__doc__)
    else:
        signal.signal(signal.SIGTERM, interrupted)
        main()
