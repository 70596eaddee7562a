"""Live external snapshots under concurrent writes (see
test-snapshot-live.sh).  Usage: snapshot_live.py QMP NBDSOCK DIR SEED"""
import subprocess
import sys

import nbd
from jobs_qmp import QMP
from live_writers import read_all, settle, start, stop, uri

MiB = 1 << 20


def main(qmp, sock, d, seed):
    q = QMP(qmp)
    h = nbd.NBD()
    h.connect_uri(uri(sock))
    size = h.get_size()
    h.shutdown()
    model = read_all(sock, size)

    # 1. blockdev-snapshot-sync with the writers quiet at the instant: the
    # old image is exactly the disk then.
    ws, ts = start(sock, size, seed, model)
    settle(ws)
    model = stop(ws, ts)
    with open(f"{d}/at-snap1.raw", "wb") as f:
        f.write(model)
    q.cmd("blockdev-snapshot-sync", {"node-name": "disk",
                                     "snapshot-file": f"{d}/ov1.qcow2",
                                     "snapshot-node-name": "ov1"})
    # 2. blockdev-snapshot of an overlay added with blockdev-add, taken
    # while the writers keep writing.
    ws, ts = start(sock, size, seed + 10, model)
    settle(ws)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F",
                    "qcow2", "-b", f"{d}/ov1.qcow2", f"{d}/ov2.qcow2",
                    str(size)], check=True)
    q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "ov2",
                           "backing": None,
                           "file": {"driver": "file",
                                    "filename": f"{d}/ov2.qcow2"}})
    q.cmd("blockdev-snapshot", {"node": "ov1", "overlay": "ov2"})
    settle(ws)
    model = stop(ws, ts)
    # A marker after the snapshots goes to the top overlay only.
    h = nbd.NBD()
    h.connect_uri(uri(sock))
    h.pwrite(b"\xee" * 65536, 0)
    h.flush()
    h.shutdown()
    model = b"\xee" * 65536 + model[65536:]
    assert read_all(sock, size) == model, "the live disk lost writes"
    with open(f"{d}/at-snap3.raw", "wb") as f:
        f.write(model)
    # 3. As transaction actions: a failing transaction undoes its snapshot
    # (the export stays on ov2), a good one takes it.
    r = q.execute("transaction", {"actions": [
        {"type": "blockdev-snapshot-sync",
         "data": {"node-name": "ov2", "snapshot-file": f"{d}/ov3.qcow2",
                  "snapshot-node-name": "ov3"}},
        {"type": "abort", "data": {}}]})
    assert "error" in r, "the aborted transaction succeeded"
    names = [n["node-name"] for n in q.cmd("query-named-block-nodes")]
    assert "ov3" not in names, "the aborted snapshot left its overlay"
    q.cmd("transaction", {"actions": [
        {"type": "blockdev-snapshot-sync",
         "data": {"node-name": "ov2", "snapshot-file": f"{d}/ov4.qcow2",
                  "snapshot-node-name": "ov4"}},
        {"type": "block-dirty-bitmap-add",
         "data": {"node": "ov2", "name": "b-at-snap"}}]})
    h = nbd.NBD()
    h.connect_uri(uri(sock))
    h.pwrite(b"\xdd" * 65536, 65536)
    h.flush()
    h.shutdown()
    model = model[:65536] + b"\xdd" * 65536 + model[131072:]
    assert read_all(sock, size) == model, "the live disk lost writes"
    with open(f"{d}/final.raw", "wb") as f:
        f.write(model)
    # Refusals, with the disk still served.
    r = q.execute("blockdev-snapshot", {"node": "ov4", "overlay": "ov1"})
    assert "error" in r, "an overlay in use was accepted"
    r = q.execute("blockdev-del", {"node-name": "ov2"})
    assert "error" in r, "the node the export now uses was deleted"
    print("snapshots taken; writes:", "ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
