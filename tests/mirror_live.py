"""Mirror jobs under concurrent writes (see test-mirror.sh).
Usage: mirror_live.py QMP NBDSOCK DIR SEED"""
import subprocess
import sys

import nbd
from jobs_qmp import QMP
from live_writers import read_all, settle, start, stop, uri

MiB = 1 << 20


def add_target(q, d, name, size):
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                    f"{d}/{name}.qcow2", str(size)], check=True)
    q.cmd("blockdev-add", {"driver": "qcow2", "node-name": name,
                           "file": {"driver": "file",
                                    "filename": f"{d}/{name}.qcow2"}})


def save(path, data):
    with open(path, "wb") as f:
        f.write(data)


def main(qmp, sock, d, seed):
    q = QMP(qmp)
    h = nbd.NBD()
    h.connect_uri(uri(sock))
    size = h.get_size()
    h.shutdown()
    model = read_all(sock, size)

    # 1. Force-cancel before ready: cancelled, nothing switched.
    add_target(q, d, "t0", size)
    q.cmd("blockdev-mirror", {"job-id": "m0", "device": "disk",
                              "target": "t0", "sync": "full",
                              "speed": MiB})
    q.cmd("block-job-cancel", {"device": "m0"})
    q.wait_event("BLOCK_JOB_CANCELLED", device="m0")
    q.wait_event("JOB_STATUS_CHANGE", id="m0", status="null")

    # 2. Cancel once ready, writers quiet at the cancel: completed without
    # the switch, the target a copy of the disk then.
    add_target(q, d, "t1", size)
    ws, ts = start(sock, size, seed, model)
    q.cmd("blockdev-mirror", {"job-id": "m1", "device": "disk",
                              "target": "t1", "sync": "full"})
    q.wait_event("BLOCK_JOB_READY", device="m1")
    settle(ws)
    model = stop(ws, ts)
    q.cmd("block-job-cancel", {"device": "m1"})
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device="m1")
    assert "error" not in ev["data"], ev
    assert q.find_event("BLOCK_JOB_CANCELLED", device="m1") is None
    save(f"{d}/at-cancel.raw", model)

    # 3. Complete under writes: the export switches to the target.
    add_target(q, d, "t2", size)
    ws, ts = start(sock, size, seed + 10, model)
    q.cmd("blockdev-mirror", {"job-id": "m2", "device": "disk",
                              "target": "t2", "sync": "full",
                              "granularity": 65536, "buf-size": 262144})
    q.wait_event("BLOCK_JOB_READY", device="m2")
    settle(ws)
    q.cmd("job-complete", {"id": "m2"})
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device="m2")
    assert "error" not in ev["data"], ev
    settle(ws)
    model = stop(ws, ts)
    h = nbd.NBD()
    h.connect_uri(uri(sock))
    h.pwrite(b"\xee" * 65536, 0)
    h.flush()
    h.shutdown()
    model = b"\xee" * 65536 + model[65536:]
    assert read_all(sock, size) == model, "the live disk lost writes"
    save(f"{d}/final.raw", model)
    r = q.execute("blockdev-mirror", {"job-id": "m3", "device": "disk",
                                      "target": "disk", "sync": "full"})
    assert "error" in r, "a mirror into itself was accepted"
    print("mirrors done")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
