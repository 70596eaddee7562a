"""backup_load - a backup through QMP while NBD clients write to the source.

    backup_load.py run QMP_SOCK NBD_SOCK JOB_JSON REF SEED WRITERS [PIT]
        Sends the job command (JSON: {"execute": ..., "arguments": ...},
        whose arguments carry "job-id"), then starts WRITERS client
        processes, each writing random ranges of its own slice of the export
        "disk" (the initial contents of the slice come from REF, the copy of
        the disk taken before the job).  Without PIT it waits for
        BLOCK_JOB_COMPLETED; with PIT (sync=none) it reads the whole export
        "pit" into the file PIT while the writers go on, then cancels the
        job.  Each writer then checks that the export holds exactly what it
        wrote.  Exits non-zero with a message naming the seed on failure.

    backup_load.py writer NBD_SOCK LO HI SEED REF STOPFILE
        One writer (run by "run" as a separate process).
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jobs_qmp import CHUNK, QMP, Writer  # noqa: E402

MIN_SECONDS = 1.0


def uri(sock, name):
    return f"nbd+unix:///{name}?socket={sock}"


def writer_main(sock, lo, hi, seed, ref, stopfile):
    import nbd
    lo, hi = int(lo), int(hi)
    with open(ref, "rb") as f:
        f.seek(lo)
        initial = f.read(hi - lo)
    w = Writer(nbd, uri(sock, "disk"), lo, hi, int(seed), initial)
    # Connected and ready: the first write waits for the job to start, so
    # that a slow start of this process (a loaded machine) does not eat
    # into the time the test measures.
    open(f"{stopfile}.ready-{lo}", "w").close()
    while not os.path.exists(f"{stopfile}.go"):
        time.sleep(0.005)
    while not os.path.exists(stopfile):
        for _ in range(32):
            w.step()
    w.check()
    print(w.writes)


def start_writers(sock, size, n, seed, ref, stopfile):
    """Writer processes, connected and waiting for go_writers."""
    slice_ = size // n
    procs = [subprocess.Popen(
        [sys.executable, __file__, "writer", sock, str(i * slice_),
         str((i + 1) * slice_), str(seed * 100 + i), ref, stopfile],
        stdout=subprocess.PIPE, text=True) for i in range(n)]
    deadline = time.monotonic() + 120
    while not all(os.path.exists(f"{stopfile}.ready-{i * slice_}")
                  for i in range(n)):
        if time.monotonic() > deadline or \
                any(p.poll() is not None for p in procs):
            sys.exit(f"the writers did not start (seed {seed})")
        time.sleep(0.01)
    return procs


def go_writers(stopfile):
    open(f"{stopfile}.go", "w").close()


def stop_writers(procs, stopfile, seed):
    open(stopfile, "w").close()
    total = 0
    for i, p in enumerate(procs):
        out, _ = p.communicate(timeout=120)
        if p.returncode != 0:
            sys.exit(f"writer {i} failed (seed {seed})")
        total += int(out.strip())
    return total


def read_export(sock, name, path):
    import nbd
    h = nbd.NBD()
    h.connect_uri(uri(sock, name))
    size = h.get_size()
    with open(path, "wb") as f:
        for off in range(0, size, 1 << 20):
            f.write(h.pread(min(1 << 20, size - off), off))
    h.shutdown()


def zero_chunks(sock, name, size):
    """The 64 KiB chunks that block status of the export reports as zero."""
    import nbd
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(uri(sock, name))
    zero = set()
    pos = 0

    def cb(meta, offset, entries, err):
        nonlocal pos
        for length, flags in zip(entries[::2], entries[1::2]):
            if flags & nbd.STATE_ZERO:
                first = -(-pos // CHUNK)
                zero.update(range(first, (pos + length) // CHUNK))
            pos += length
        return 0

    while pos < size:
        h.block_status(min(size - pos, 1 << 30), pos, cb)
    h.shutdown()
    return zero


def check_zero_map(sock, ref, seed):
    """Block status of the point-in-time export is the point in time's: a
    chunk it reports as zero was zero.  With BACKUP_LOAD_EXACT_MAP=1 (the
    disk's zero chunks were all holes, its data chunks random), it reports
    zero exactly where the disk was zero: the view stays sparse."""
    exact = os.environ.get("BACKUP_LOAD_EXACT_MAP") == "1"
    size = os.path.getsize(ref)
    zero = zero_chunks(sock, "pit", size)
    with open(ref, "rb") as f:
        for c in range(size // CHUNK):
            ref_zero = f.read(CHUNK) == bytes(CHUNK)
            if (c in zero and not ref_zero) or \
                    (exact and ref_zero and c not in zero):
                state = "is" if c in zero else "is not"
                sys.exit(f"pit block status: chunk {c} {state} reported "
                         f"zero (seed {seed})")


def run_main(qsock, sock, job_json, ref, seed, nwriters, pit=None):
    seed, nwriters = int(seed), int(nwriters)
    job = json.loads(job_json)
    job_id = job["arguments"]["job-id"]
    q = QMP(qsock)
    size = os.path.getsize(ref)
    stopfile = f"{ref}.stop-{job_id}"
    procs = start_writers(sock, size, nwriters, seed, ref, stopfile)
    q.cmd(job["execute"], job["arguments"])
    if pit:
        q.cmd("block-export-add", {"type": "nbd", "id": "pit", "name": "pit",
                                   "node-name": job["arguments"]["target"]})
    t0 = time.monotonic()
    go_writers(stopfile)
    if pit:
        time.sleep(MIN_SECONDS)
        read_export(sock, "pit", pit)
        check_zero_map(sock, ref, seed)
        assert q.job(job_id)["status"] == "running", q.job(job_id)
    else:
        ev = q.wait_event("BLOCK_JOB_COMPLETED", device=job_id)
        assert "error" not in ev["data"], f"job failed: {ev} (seed {seed})"
        time.sleep(max(0, MIN_SECONDS - (time.monotonic() - t0)))
    writes = stop_writers(procs, stopfile, seed)
    secs = time.monotonic() - t0
    if pit:
        q.cmd("block-export-del", {"id": "pit"})
        q.cmd("job-cancel", {"id": job_id})
        q.wait_event("BLOCK_JOB_CANCELLED", device=job_id)
    else:
        q.wait_event("JOB_STATUS_CHANGE", id=job_id, status="null")
        want = ["created", "running", "waiting", "pending", "concluded",
                "null"]
        assert q.statuses(job_id) == want, q.statuses(job_id)
    print(f"{writes} guest writes in {secs:.1f} s during the job")
    if writes < 100:
        sys.exit(f"only {writes} guest writes during the job (seed {seed})")


if __name__ == "__main__":
    if sys.argv[1] == "writer":
        writer_main(*sys.argv[2:])
    else:
        run_main(*sys.argv[2:])
