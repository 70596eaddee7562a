"""Mirror jobs into rbd nodes under concurrent writes (see
test-rbd-mirror.sh).  Usage: rbd_mirror_live.py QMP NBDSOCK DIR SEED CONF"""
import os
import sys
import traceback

import nbd
from jobs_qmp import QMP
from live_writers import read_all, settle, start, stop, uri


def save(path, data):
    with open(path, "wb") as f:
        f.write(data)


def mark(sock, size, model, byte, off):
    """A 64 KiB marker written through the export after a switch."""
    h = nbd.NBD()
    h.connect_uri(uri(sock))
    h.pwrite(bytes([byte]) * 65536, off)
    h.flush()
    h.shutdown()
    model = model[:off] + bytes([byte]) * 65536 + model[off + 65536:]
    assert read_all(sock, size) == model, "the live disk lost writes"
    return model


def mirror(q, job, device, target, **args):
    q.cmd("blockdev-mirror", dict({"job-id": job, "device": device,
                                   "target": target, "sync": "full"},
                                  **args))
    q.wait_event("BLOCK_JOB_READY", device=job)


def complete(q, job):
    q.cmd("job-complete", {"id": job})
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device=job)
    assert "error" not in ev["data"], ev


def main(qmp, sock, d, seed, conf):
    q = QMP(qmp)
    h = nbd.NBD()
    h.connect_uri(uri(sock))
    size = h.get_size()
    h.shutdown()
    model = read_all(sock, size)

    # 1. The local qcow2 disk into a raw node over rbd image "tgt" full of
    # old data, completed while the writers write: the export writes into
    # rbd from then on.
    q.cmd("blockdev-add", {"driver": "raw", "node-name": "t",
                           "file": {"driver": "rbd", "pool": "rbd",
                                    "image": "tgt", "conf": conf}})
    ws, ts = start(sock, size, seed, model)
    mirror(q, "m1", "disk", "t", granularity=65536, **{"buf-size": 1 << 20})
    settle(ws)
    complete(q, "m1")
    settle(ws)
    model = stop(ws, ts)
    model = mark(sock, size, model, 0xee, 0)
    save(f"{d}/final1.raw", model)

    # 2. On from rbd into a bare rbd node (image "tgt2", empty), written
    # while ready, the writers quiet at the switch: "tgt" keeps the disk as it was then,
    # a marker after it goes to "tgt2" only.
    q.cmd("blockdev-add", {"driver": "rbd", "node-name": "u", "pool": "rbd",
                           "image": "tgt2", "conf": conf})
    # The clients write from before the job: with an rbd source the
    # background copy alone does not catch up with two clients at queue
    # depth 16; the job must switch itself to write-blocking to be ready.
    ws, ts = start(sock, size, seed + 10, model)
    mirror(q, "m2", "t", "u")
    settle(ws)
    model = stop(ws, ts)
    save(f"{d}/at-switch2.raw", model)
    complete(q, "m2")
    model = mark(sock, size, model, 0xdd, 65536)
    save(f"{d}/final2.raw", model)
    print("mirrors into rbd done")


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]),
             sys.argv[5])
    except BaseException:
        # The writers' threads would keep the process alive.
        traceback.print_exc()
        os._exit(1)
