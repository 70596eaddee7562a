"""A background mirror under two NBD clients writing at QD16 (see
test-mirror-converge.sh).  The copy is held to 4 MiB/s, far below what the
writers dirty, so the dirty set cannot shrink:
  - with x-auto-write-blocking: false (QEMU's behaviour) the job is still
    not ready after 8 s;
  - without writers, a copy held to 1/32 of the disk a second converges
    slowly and stays in background mode;
  - by default the job switches itself to write-blocking and is ready
    within 30 s; query-block-jobs says so; job-complete then switches the
    export to a target holding every write.
Usage: mirror_converge.py QMP NBDSOCK DIR SEED"""
import subprocess
import sys
import time

import nbd
from jobs_qmp import QMP
from live_writers import read_all, start, stop, uri

MiB = 1 << 20
SPEED = 4 * MiB


def add_target(q, d, name, size):
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                    f"{d}/{name}.qcow2", str(size)], check=True)
    q.cmd("blockdev-add", {"driver": "qcow2", "node-name": name,
                           "file": {"driver": "file",
                                    "filename": f"{d}/{name}.qcow2"}})


def main(qmp, sock, d, seed):
    q = QMP(qmp)
    h = nbd.NBD()
    h.connect_uri(uri(sock))
    size = h.get_size()
    h.shutdown()
    model = read_all(sock, size)

    # No writers, a copy held to 1/32 of the disk a second: the dirty set
    # shrinks by less than an eighth a second, but by all that is copied;
    # the job converges and stays in background mode.
    add_target(q, d, "slow", size)
    q.cmd("blockdev-mirror", {"job-id": "ms", "device": "disk",
                              "target": "slow", "sync": "full",
                              "speed": size // 32})
    time.sleep(5.5)
    j = q.job("ms")
    assert j["x-copy-mode"] == "background", j
    assert not j["x-auto-write-blocking"], j
    assert 0 < j["offset"] < size, j
    q.cmd("job-cancel", {"id": "ms"})
    q.wait_event("BLOCK_JOB_CANCELLED", device="ms")
    q.cmd("blockdev-del", {"node-name": "slow"})

    ws, ts = start(sock, size, seed, model)

    add_target(q, d, "t0", size)
    q.cmd("blockdev-mirror", {"job-id": "m0", "device": "disk",
                              "target": "t0", "sync": "full",
                              "speed": SPEED,
                              "x-auto-write-blocking": False})
    time.sleep(8)
    j = q.job("m0")
    assert j["status"] == "running" and not j["ready"], j
    assert j["x-copy-mode"] == "background", j
    q.cmd("job-cancel", {"id": "m0"})
    q.wait_event("BLOCK_JOB_CANCELLED", device="m0")

    add_target(q, d, "t1", size)
    t0 = time.monotonic()
    q.cmd("blockdev-mirror", {"job-id": "m1", "device": "disk",
                              "target": "t1", "sync": "full",
                              "speed": SPEED})
    q.wait_event("BLOCK_JOB_READY", timeout=30, device="m1")
    took = time.monotonic() - t0
    j = q.job("m1")
    assert j["x-copy-mode"] == "write-blocking", j
    assert j["x-auto-write-blocking"] and j["actively-synced"], j
    writes = sum(w.writes for w in ws)
    time.sleep(0.5)
    assert sum(w.writes for w in ws) > writes, "the writers stalled"
    q.cmd("job-complete", {"id": "m1"})
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device="m1")
    assert "error" not in ev["data"], ev
    model = stop(ws, ts)
    got = read_all(sock, size)
    bad = [o for o in range(0, size, 512)
           if got[o:o + 512] != model[o:o + 512]]
    assert not bad, f"the export lost writes: {len(bad)} sectors from " \
                    f"{bad[:1]}"
    with open(f"{d}/final.raw", "wb") as f:
        f.write(model)
    print(f"ready under load after {took:.1f} s (switched to "
          f"write-blocking)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
