#!/usr/bin/env python3
"""bench/backup.py - guest writes on a live export while a backup runs,
snapnbd beside qemu-storage-daemon, in one interleaved run.

For each round and each server (the order rotated by round), on a fully
allocated raw image in tmpfs, exported writable over a unix socket, with
fio's nbd engine doing 4k random writes:

  idle      4k randwrite IOPS at QD32 and QD1, no job;
  full      IOPS while blockdev-backup sync=full copies the disk into a
            fresh raw file, beside the IOPS of the same fio run in the
            second before the job (both from fio's 100 ms IOPS log), and
            the job's throughput;
  full-idle the backup throughput with no guest I/O;
  fleece    the same during a sync=none backup into a qcow2 overlay backed by
            the live node, exported read-only ("pit");
  pull      QD32 IOPS while nbdcopy reads the whole pit export, and the pull
            throughput.

Prints a table of medians and the ratios to the idle IOPS.

    bench/backup.py                 3 rounds, 2 GiB, 5 s per fio run
    QUICK=1 bench/backup.py         1 round, 512 MiB, 2 s
Environment: ROUNDS, IMAGE_MIB, RUNTIME, SERVERS ("snapnbd qsd"),
SNAPNBD (build/snapnbd), BENCH_DIR (/dev/shm/snapnbd-bench), SHARES
(x-background-share values for extra snapnbd sync=full runs at QD32, e.g.
"50 100": the trade between the guest's rate and the backup's).
"""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TOP, "tests"))
from jobs_qmp import QMP  # noqa: E402

QUICK = os.environ.get("QUICK") == "1"
ROUNDS = int(os.environ.get("ROUNDS", 1 if QUICK else 3))
IMAGE_MIB = int(os.environ.get("IMAGE_MIB", 512 if QUICK else 2048))
RUNTIME = int(os.environ.get("RUNTIME", 2 if QUICK else 5))
SERVERS = os.environ.get("SERVERS", "snapnbd qsd").split()
SHARES = [int(x) for x in os.environ.get("SHARES", "").split()]
SNAPNBD = os.environ.get("SNAPNBD", os.path.join(TOP, "build", "snapnbd"))
BENCH_DIR = os.environ.get("BENCH_DIR", "/dev/shm/snapnbd-bench")
MiB = 1 << 20


class Server:
    def __init__(self, kind, d, disk):
        self.d = d
        self.qmp_path = f"{d}/qmp.sock"
        self.sock = f"{d}/nbd.sock"
        for p in (self.qmp_path, self.sock):
            if os.path.exists(p):
                os.unlink(p)
        prog = SNAPNBD if kind == "snapnbd" else "qemu-storage-daemon"
        args = [prog,
                "--blockdev", f"driver=file,node-name=file0,filename={disk}",
                "--blockdev", "driver=raw,node-name=disk,file=file0",
                "--nbd-server", f"addr.type=unix,addr.path={self.sock}",
                "--export",
                "type=nbd,id=e0,node-name=disk,name=disk,writable=on",
                "--chardev",
                f"socket,id=qmp0,path={self.qmp_path},server=on,wait=off",
                "--monitor", "chardev=qmp0"]
        self.proc = subprocess.Popen(args)
        self.q = QMP(self.qmp_path)

    def uri(self, name):
        return f"nbd+unix:///{name}?socket={self.sock}"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def fio(uri, qd, seconds, log=None):
    """Runs 4k randwrite; with @log, fio also logs IOPS every 100 ms with
    Unix-epoch timestamps, to be cut to a window with log_iops."""
    args = ["fio", "--name=w", "--ioengine=nbd", f"--uri={uri}",
            "--rw=randwrite", "--bs=4k", f"--iodepth={qd}", "--time_based",
            f"--runtime={seconds}", f"--size={IMAGE_MIB}M",
            "--output-format=json", "--randrepeat=0"]
    if log:
        args += [f"--write_iops_log={log}", "--log_avg_msec=100",
                 "--log_unix_epoch=1"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def fio_iops(p):
    out, _ = p.communicate()
    out = out[out.index("{"):]  # after "fio: connected to NBD server"
    return json.loads(out)["jobs"][0]["write"]["iops"]


def fio_stop(p):
    p.send_signal(signal.SIGINT)
    p.communicate()


def log_iops(log, t0, t1):
    """Mean IOPS of fio's 100 ms log entries between the times t0 and t1."""
    vals = []
    with open(f"{log}_iops.1.log") as f:
        for line in f:
            t, v = line.split(",")[:2]
            if t0 * 1000 + 100 <= int(t) <= t1 * 1000:
                vals.append(int(v))
    return statistics.mean(vals) if vals else float("nan")


def fio_warm(s, qd, log):
    """fio started and past its first second: (process, warm-up start)."""
    p = fio(s.uri("disk"), qd, 3600, log)
    time.sleep(0.5)
    t = time.time()
    time.sleep(1.0)
    return p, t


def fresh_target(d, name):
    path = f"{d}/{name}"
    with open(path, "wb") as f:
        f.truncate(IMAGE_MIB * MiB)
    return path


def backup_full(s, qd, tag, results, share=None):
    """Guest IOPS at @qd in the second before the job and while it runs,
    and the job's MiB/s; qd 0: no guest I/O.  @share: snapnbd's
    x-background-share, named in the results' keys."""
    tgt = fresh_target(s.d, f"tgt-{tag}.raw")
    s.q.cmd("blockdev-add", {"driver": "raw", "node-name": f"t{tag}",
                             "file": {"driver": "file", "filename": tgt}})
    log = f"{s.d}/fio-{tag}"
    p, tw = fio_warm(s, qd, log) if qd else (None, None)
    args = {"job-id": f"j{tag}", "device": "disk", "target": f"t{tag}",
            "sync": "full"}
    sfx = ""
    if share is not None:
        args["x-perf"] = {"x-background-share": share}
        sfx = f" share {share}"
    t0 = time.time()
    s.q.cmd("blockdev-backup", args)
    s.q.wait_event("BLOCK_JOB_COMPLETED", timeout=600, device=f"j{tag}")
    t1 = time.time()
    if p:
        fio_stop(p)
        results[f"before full QD{qd}{sfx}"] = log_iops(log, tw, t0)
        results[f"full QD{qd}{sfx}"] = log_iops(log, t0, t1)
        results[f"full MiB/s (QD{qd} load){sfx}"] = IMAGE_MIB / (t1 - t0)
    else:
        results["full MiB/s (idle)"] = IMAGE_MIB / (t1 - t0)
    s.q.cmd("blockdev-del", {"node-name": f"t{tag}"})
    os.unlink(tgt)


def fleece(s, tag, results):
    ov = f"{s.d}/fleece-{tag}.qcow2"
    subprocess.check_call(["qemu-img", "create", "-q", "-f", "qcow2", "-F",
                           "raw", "-b", f"{s.d}/disk.raw", ov,
                           f"{IMAGE_MIB}M"])
    s.q.cmd("blockdev-add", {"driver": "qcow2", "node-name": f"f{tag}",
                             "backing": "disk",
                             "file": {"driver": "file", "filename": ov}})
    s.q.cmd("blockdev-backup", {"job-id": f"fl{tag}", "device": "disk",
                                "target": f"f{tag}", "sync": "none"})
    s.q.cmd("block-export-add", {"type": "nbd", "id": "pit", "name": "pit",
                                 "node-name": f"f{tag}"})
    results["fleece QD32"] = fio_iops(fio(s.uri("disk"), 32, RUNTIME))
    results["fleece QD1"] = fio_iops(fio(s.uri("disk"), 1, RUNTIME))
    log = f"{s.d}/fio-pull-{tag}"
    p, _ = fio_warm(s, 32, log)
    t0 = time.time()
    subprocess.check_call(["nbdcopy", s.uri("pit"), "null:"])
    t1 = time.time()
    fio_stop(p)
    results["pull QD32"] = log_iops(log, t0, t1)
    results["pull MiB/s"] = IMAGE_MIB / (t1 - t0)
    s.q.cmd("block-export-del", {"id": "pit", "mode": "hard"})
    s.q.cmd("job-cancel", {"id": f"fl{tag}"})
    s.q.wait_event("BLOCK_JOB_CANCELLED", device=f"fl{tag}")
    for _ in range(100):
        if "error" not in s.q.execute("blockdev-del",
                                      {"node-name": f"f{tag}"}):
            break
        time.sleep(0.05)
    os.unlink(ov)


def measure(kind, d, rnd):
    r = {}
    s = Server(kind, d, f"{d}/disk.raw")
    try:
        r["idle QD32"] = fio_iops(fio(s.uri("disk"), 32, RUNTIME))
        r["idle QD1"] = fio_iops(fio(s.uri("disk"), 1, RUNTIME))
        backup_full(s, 32, f"{rnd}a", r)
        backup_full(s, 1, f"{rnd}b", r)
        backup_full(s, 0, f"{rnd}c", r)
        for share in SHARES if kind == "snapnbd" else []:
            backup_full(s, 32, f"{rnd}s{share}", r, share)
        fleece(s, rnd, r)
    finally:
        s.stop()
    return r


def make_disk(path):
    with open("/dev/urandom", "rb") as src, open(path, "wb") as dst:
        for _ in range(IMAGE_MIB):
            dst.write(src.read(MiB))


def main():
    os.makedirs(BENCH_DIR, exist_ok=True)
    d = tempfile.mkdtemp(prefix="backup.", dir=BENCH_DIR)
    load0 = os.getloadavg()[0]
    all_results = {k: [] for k in SERVERS}
    try:
        make_disk(f"{d}/disk.raw")
        for rnd in range(ROUNDS):
            order = SERVERS[rnd % len(SERVERS):] + SERVERS[:rnd % len(SERVERS)]
            for kind in order:
                r = measure(kind, d, rnd)
                print(f"round {rnd + 1} {kind}: " +
                      ", ".join(f"{k} {v:.0f}" for k, v in r.items()),
                      flush=True)
                all_results[kind].append(r)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    report(all_results, load0)


def report(all_results, load0):
    rows = list(dict.fromkeys(row for rs in all_results.values()
                              for row in rs[0]))
    med = {k: {row: statistics.median(r[row] for r in rs)
               for row in rows if all(row in r for r in rs)}
           for k, rs in all_results.items()}
    print(f"\n{IMAGE_MIB} MiB raw image on tmpfs, 4k randwrite with fio's "
          f"nbd engine, medians of {ROUNDS} round(s); load "
          f"{load0:.2f} -> {os.getloadavg()[0]:.2f}\n")
    print("| measure | " + " | ".join(all_results) + " |")
    print("| --- |" + " --- |" * len(all_results))
    for row in rows:
        cells = []
        for k in all_results:
            if row not in med[k]:
                cells.append("—")
                continue
            v = med[k][row]
            qd = row.split()[-1]
            base = None
            if row.startswith("full QD"):
                base = med[k].get("before " + row)
            elif row.startswith(("fleece", "pull")) and "MiB" not in row:
                base = med[k].get("idle " + qd)
            cells.append(f"{v:.0f}" + (f" ({v / base:.2f}x)" if base else ""))
        print(f"| {row} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
