"""copy-mode write-blocking under two NBD clients writing at QD16 (see
test-mirror-active.sh).  After BLOCK_JOB_READY the writers are stopped
at random instants (every request answered); each time the source, read
through its export, and the target, read through a read-only export of
its own, are identical and equal the writers' model.  Then the job
completes under writes and the export writes into the target.
Usage: mirror_active.py QMP NBDSOCK DIR SEED"""
import random
import subprocess
import sys
import time

import nbd
from jobs_qmp import QMP
from live_writers import read_all, start, stop, uri

MiB = 1 << 20


def read_export(sock, name, size):
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///{name}?socket={sock}")
    data = b"".join(h.pread(min(4 * MiB, size - o), o)
                    for o in range(0, size, 4 * MiB))
    h.shutdown()
    return data


def first_difference(a, b):
    for i in range(0, len(a), 512):
        if a[i:i + 512] != b[i:i + 512]:
            return i
    return None


def main(qmp, sock, d, seed):
    rnd = random.Random(seed)
    q = QMP(qmp)
    h = nbd.NBD()
    h.connect_uri(uri(sock))
    size = h.get_size()
    h.shutdown()
    model = read_all(sock, size)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                    f"{d}/tgt.qcow2", str(size)], check=True)
    q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "tgt",
                           "file": {"driver": "file",
                                    "filename": f"{d}/tgt.qcow2"}})
    ws, ts = start(sock, size, seed, model)
    q.cmd("blockdev-mirror", {"job-id": "m", "device": "disk",
                              "target": "tgt", "sync": "full",
                              "copy-mode": "write-blocking",
                              "filter-node-name": "mtop",
                              "granularity": 65536})
    nodes = {n["node-name"]: n for n in q.cmd("query-named-block-nodes")}
    assert nodes["mtop"]["drv"] == "mirror_top", nodes["mtop"]
    q.wait_event("BLOCK_JOB_READY", device="m")
    j = q.job("m")
    assert j["x-copy-mode"] == "write-blocking" and j["actively-synced"], j
    # The background copy all but stops: only the write-blocking path can
    # keep the target in sync now.
    q.cmd("block-job-set-speed", {"device": "m", "speed": 1})
    q.cmd("block-export-add", {"type": "nbd", "id": "et", "name": "tgt",
                               "node-name": "tgt", "writable": False})
    for i in range(6):
        time.sleep(rnd.uniform(0.05, 0.6))
        model = stop(ws, ts)
        src = read_export(sock, "live", size)
        tgt = read_export(sock, "tgt", size)
        assert src == model, f"round {i}: the source lost writes"
        off = first_difference(src, tgt)
        assert off is None, \
            f"round {i}: target differs from the source at {off}"
        ws, ts = start(sock, size, seed + 100 * (i + 1), model)
    q.cmd("block-export-del", {"id": "et"})
    q.wait_event("BLOCK_EXPORT_DELETED", id="et")
    q.cmd("block-job-set-speed", {"device": "m", "speed": 0})
    q.cmd("job-complete", {"id": "m"})
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device="m")
    assert "error" not in ev["data"], ev
    model = stop(ws, ts)
    assert read_all(sock, size) == model, "the export lost writes"
    # The filter leaves the graph at the switch (its node goes when the
    # last request that entered it is done).
    for _ in range(50):
        nodes = [n["node-name"] for n in q.cmd("query-named-block-nodes")]
        if "mtop" not in nodes:
            break
        time.sleep(0.1)
    assert "mtop" not in nodes, "the mirror's filter stayed"
    with open(f"{d}/final.raw", "wb") as f:
        f.write(model)
    print("write-blocking mirror in sync at every pause")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
