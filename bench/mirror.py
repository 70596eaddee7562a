#!/usr/bin/env python3
"""bench/mirror.py - mirror and active commit of a live export, snapnbd
beside qemu-storage-daemon, in one interleaved run.

For each round and each server (the order rotated by round), on a raw
image in tmpfs exported writable over a unix socket, fio's nbd engine
doing 4k random writes at QD32 where a row says "load":

  mirror     blockdev-mirror sync=full into a fresh raw file: MiB/s to
             READY (idle, and under load), the guest's IOPS during the
             copy beside the second before it, and the time from
             job-complete to BLOCK_JOB_COMPLETED (the pivot);
  commit     the same for an active commit (block-commit of a qcow2
             overlay, a quarter of it written beforehand, into the raw
             image below it).

A job that is not READY after READY_TIMEOUT seconds (60) under load is
reported as such.  Prints medians and ratios.

    bench/mirror.py                 3 rounds, 1 GiB
    QUICK=1 bench/mirror.py         1 round, 256 MiB
Environment: ROUNDS, IMAGE_MIB, SERVERS ("snapnbd qsd"), READY_TIMEOUT,
SNAPNBD (build/snapnbd), BENCH_DIR (/dev/shm/snapnbd-bench).
"""
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
import backup  # noqa: E402
from backup import fio, fio_stop, log_iops, make_disk  # noqa: E402
from jobs_qmp import QMP  # noqa: E402

QUICK = os.environ.get("QUICK") == "1"
ROUNDS = int(os.environ.get("ROUNDS", 1 if QUICK else 3))
IMAGE_MIB = int(os.environ.get("IMAGE_MIB", 256 if QUICK else 1024))
SERVERS = os.environ.get("SERVERS", "snapnbd qsd").split()
READY_TIMEOUT = float(os.environ.get("READY_TIMEOUT", 60))
MiB = 1 << 20
backup.IMAGE_MIB = IMAGE_MIB


class Server:
    """A server exporting "disk": the raw image, or (overlay=True) a qcow2
    overlay over it, as management layers set up an active commit."""

    def __init__(self, kind, d, overlay=False):
        self.d = d
        self.qmp_path = f"{d}/qmp.sock"
        self.sock = f"{d}/nbd.sock"
        for p in (self.qmp_path, self.sock):
            if os.path.exists(p):
                os.unlink(p)
        prog = backup.SNAPNBD if kind == "snapnbd" else "qemu-storage-daemon"
        top = "base"
        args = [prog, "--blockdev",
                f"driver=file,node-name=file0,filename={d}/disk.raw",
                "--blockdev", "driver=raw,node-name=base,file=file0"]
        if overlay:
            args += ["--blockdev",
                     f"driver=file,node-name=file1,filename={d}/ov.qcow2",
                     "--blockdev",
                     "driver=qcow2,node-name=ov,file=file1,backing=base"]
            top = "ov"
        args += ["--nbd-server", f"addr.type=unix,addr.path={self.sock}",
                 "--export",
                 f"type=nbd,id=e0,node-name={top},name=disk,writable=on",
                 "--chardev",
                 f"socket,id=qmp0,path={self.qmp_path},server=on,wait=off",
                 "--monitor", "chardev=qmp0"]
        self.top = top
        self.proc = subprocess.Popen(args)
        self.q = QMP(self.qmp_path, timeout=600)

    def uri(self):
        return f"nbd+unix:///disk?socket={self.sock}"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)


def fresh_overlay(d):
    ov = f"{d}/ov.qcow2"
    subprocess.check_call(["qemu-img", "create", "-q", "-f", "qcow2", "-F",
                           "raw", "-b", f"{d}/disk.raw", ov,
                           f"{IMAGE_MIB}M"])
    subprocess.check_call(["qemu-io", "-f", "qcow2", "-c",
                           f"write -P 0x3c 0 {IMAGE_MIB // 4}M", ov],
                          stdout=subprocess.DEVNULL)


def wait_ready(s, job):
    """Seconds to BLOCK_JOB_READY, or None after READY_TIMEOUT."""
    t0 = time.time()
    try:
        s.q.wait_event("BLOCK_JOB_READY", timeout=READY_TIMEOUT, device=job)
    except TimeoutError:
        return None
    return time.time() - t0


def start_job(s, kind, job):
    if kind == "mirror":
        tgt = f"{s.d}/tgt.raw"
        with open(tgt, "wb") as f:
            f.truncate(IMAGE_MIB * MiB)
        s.q.cmd("blockdev-add", {"driver": "raw", "node-name": "tgt",
                                 "file": {"driver": "file",
                                          "filename": tgt}})
        s.q.cmd("blockdev-mirror", {"job-id": job, "device": "base",
                                    "target": "tgt", "sync": "full"})
    else:
        s.q.cmd("block-commit", {"job-id": job, "device": "ov"})


def one(kind_srv, d, job_kind, load, r):
    """One job on a fresh server: fills @r with this row's figures."""
    tag = f"{job_kind} {'load' if load else 'idle'}"
    if job_kind == "commit":
        fresh_overlay(d)
    s = Server(kind_srv, d, overlay=job_kind == "commit")
    try:
        log = f"{d}/fio-{job_kind}-{load}"
        p = None
        if load:
            p = fio(s.uri(), 32, 3600, log)
            time.sleep(1.5)
        t0 = time.time()
        start_job(s, job_kind, "j")
        ready = wait_ready(s, "j")
        t1 = time.time()
        r[f"{tag} s to READY"] = ready if ready is not None else float("inf")
        r[f"{tag} MiB/s"] = (IMAGE_MIB / ready) if ready else 0.0
        tc = time.time()
        if ready is not None:
            s.q.cmd("job-complete", {"id": "j"})
        else:
            s.q.cmd("job-cancel", {"id": "j"})  # it forces, as in QEMU
        s.q.wait_event("JOB_STATUS_CHANGE", timeout=600, id="j",
                       status="concluded")
        if ready is not None:
            r[f"{tag} ms complete->pivot"] = (time.time() - tc) * 1000
        if p:
            fio_stop(p)
            r[f"{tag} guest IOPS before"] = log_iops(log, t0 - 1.0, t0)
            r[f"{tag} guest IOPS during"] = log_iops(log, t0, t1)
    finally:
        s.stop()
        for f in ("tgt.raw", "ov.qcow2"):
            if os.path.exists(f"{d}/{f}"):
                os.unlink(f"{d}/{f}")


def measure(kind, d):
    r = {}
    for job_kind in ("mirror", "commit"):
        for load in (False, True):
            one(kind, d, job_kind, load, r)
    return r


def fmt(v):
    if v == float("inf"):
        return "not ready"
    return f"{v:.2f}" if v < 10 else f"{v:.0f}"


def report(all_results, load0):
    rows = []
    for rs in all_results.values():
        for r in rs:
            rows += [k for k in r if k not in rows]
    print(f"\n{IMAGE_MIB} MiB raw image on tmpfs, 4k randwrite QD32 load "
          f"with fio's nbd engine, medians of {ROUNDS} round(s); READY "
          f"timeout {READY_TIMEOUT:.0f} s; load {load0:.2f} -> "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| measure | " + " | ".join(all_results) + " |")
    print("| --- |" + " --- |" * len(all_results))
    for row in rows:
        cells = []
        for k, rs in all_results.items():
            vals = [r[row] for r in rs if row in r]
            if not vals:
                cells.append("-")
                continue
            v = statistics.median(vals)
            cell = fmt(v)
            if row.endswith("IOPS during"):
                before = statistics.median(
                    r[row.replace("during", "before")] for r in rs
                    if row.replace("during", "before") in r)
                if before:
                    cell += f" ({v / before:.2f}x)"
            cells.append(cell)
        print(f"| {row} | " + " | ".join(cells) + " |")


def main():
    os.makedirs(backup.BENCH_DIR, exist_ok=True)
    d = tempfile.mkdtemp(prefix="mirror.", dir=backup.BENCH_DIR)
    load0 = os.getloadavg()[0]
    all_results = {k: [] for k in SERVERS}
    try:
        make_disk(f"{d}/disk.raw")
        for rnd in range(ROUNDS):
            order = SERVERS[rnd % len(SERVERS):] + SERVERS[:rnd % len(SERVERS)]
            for kind in order:
                r = measure(kind, d)
                print(f"round {rnd + 1} {kind}: " +
                      ", ".join(f"{k} {fmt(v)}" for k, v in r.items()),
                      flush=True)
                all_results[kind].append(r)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    report(all_results, load0)


if __name__ == "__main__":
    main()
