"""kill -9 of snapnbd during a mirror (see test-mirror-kill9.sh).  Each
round starts the daemon on the disk, adds a target (qcow2 or raw), starts
two QD16 writers and a mirror (background or write-blocking), writes a
flushed marker, and kills the daemon with SIGKILL at a random point: while
copying, once ready, or right after job-complete.  Then every image must
be qemu-img check clean (leaks allowed) and readable, and the marker,
flushed before the kill, must be in the disk or (after the switch) in the
target.
Usage: mirror_kill9.py SNAPNBD DIR SEED ROUNDS"""
import os
import random
import signal
import subprocess
import sys
import threading
import time

import nbd
from jobs_qmp import QMP
from mirror_stress import HoleWriter

MiB = 1 << 20
SIZE = 16 * MiB


def start_daemon(snapnbd, d):
    for f in ("qmp", "nbd", "pid"):
        if os.path.exists(f"{d}/{f}"):
            os.unlink(f"{d}/{f}")
    p = subprocess.Popen([
        snapnbd, f"--pid-file={d}/pid", "--qmp", f"unix:{d}/qmp,server,wait=off",
        "--blockdev", "driver=qcow2,node-name=disk,discard=unmap,"
        f"file.driver=file,file.filename={d}/disk.qcow2",
        "--nbd-server", f"addr.type=unix,addr.path={d}/nbd",
        "--export", "type=nbd,id=e0,node-name=disk,name=live,writable=on"])
    for _ in range(200):
        if os.path.exists(f"{d}/pid") and os.path.exists(f"{d}/nbd"):
            break
        time.sleep(0.05)
    return p


def check(path, fmt):
    r = subprocess.run(["qemu-img", "check", "-f", fmt, path],
                       capture_output=True, text=True)
    assert fmt == "raw" or r.returncode in (0, 3), \
        f"{path} corrupt after kill -9: {r.stdout}{r.stderr}"
    r = subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", path,
                        path + ".read"], capture_output=True, text=True)
    assert r.returncode == 0, f"{path} unreadable: {r.stderr}"
    with open(path + ".read", "rb") as f:
        data = f.read()
    os.unlink(path + ".read")
    return data


def writers(d, rnd):
    uri = f"nbd+unix:///live?socket={d}/nbd"
    half = (SIZE - MiB) // 2  # the last MiB holds the marker
    ws = [HoleWriter(nbd, uri, i * half, (i + 1) * half,
                     rnd.randrange(1 << 30), bytes(half))
          for i in range(2)]
    for w in ws:
        w.run = lambda w=w: _run(w)
    ts = [threading.Thread(target=w.run) for w in ws]
    for t in ts:
        t.start()
    return ws, ts


def _run(w):
    try:
        while not w.stopped:
            w.step()
    except nbd.Error:
        pass  # the server died


def marker(d, byte):
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///live?socket={d}/nbd")
    h.pwrite(bytes([byte]) * 65536, SIZE - 65536)
    h.flush()
    h.shutdown()


def round_(snapnbd, d, rnd, i):
    fmt = rnd.choice(("qcow2", "raw"))
    tgt = f"{d}/t{i}.{fmt}"
    if fmt == "qcow2":
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", tgt,
                        str(SIZE)], check=True)
    else:
        with open(tgt, "wb") as f:
            f.truncate(SIZE)
    p = start_daemon(snapnbd, d)
    q = QMP(f"{d}/qmp")
    q.cmd("blockdev-add", {"driver": fmt, "node-name": "tgt",
                           "file": {"driver": "file", "filename": tgt}})
    ws, ts = writers(d, rnd)
    when = rnd.choice(("copying", "ready", "complete"))
    q.cmd("blockdev-mirror", {
        "job-id": "m", "device": "disk", "target": "tgt", "sync": "full",
        "copy-mode": rnd.choice(("background", "write-blocking")),
        "speed": 8 * MiB if when == "copying" else 0})
    byte = rnd.randrange(1, 256)
    marker(d, byte)
    switched = False
    if when == "copying":
        time.sleep(rnd.uniform(0.1, 0.8))
    else:
        q.wait_event("BLOCK_JOB_READY", device="m", timeout=60)
        time.sleep(rnd.uniform(0, 0.3))
        if when == "complete":
            q.cmd("job-complete", {"id": "m"})
            q.wait_event("BLOCK_JOB_COMPLETED", device="m")
            switched = True
            marker(d, byte)  # now into the target
            time.sleep(rnd.uniform(0, 0.2))
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    for w in ws:
        w.stopped = True
    for t in ts:
        t.join()
    disk = check(f"{d}/disk.qcow2", "qcow2")
    target = check(tgt, fmt)
    where = target if switched else disk
    assert where[SIZE - 65536:] == bytes([byte]) * 65536, \
        f"round {i} ({when}): the flushed marker is lost"
    print(f"round {i}: killed while {when}, {fmt} target: images sound",
          flush=True)


def main(snapnbd, d, seed, rounds):
    rnd = random.Random(seed)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                    f"{d}/disk.qcow2", str(SIZE)], check=True)
    for i in range(rounds):
        round_(snapnbd, d, rnd, i)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
