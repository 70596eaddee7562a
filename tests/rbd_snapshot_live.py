"""RBD snapshots of an rbd disk that two NBD clients keep writing, taken
with blockdev-snapshot-internal-sync and exported read-only through
blockdev-add driver=rbd snapshot=NAME (see test-rbd-snapshot.sh).
Usage: rbd_snapshot_live.py QMP NBDSOCK DIR SEED CONF"""
import os
import sys
import traceback
import time

import nbd
from jobs_qmp import QMP
from live_writers import read_all, settle, start, stop


def snap(q, name):
    q.cmd("blockdev-snapshot-internal-sync", {"device": "disk", "name": name})


def export_snapshot(q, name, conf):
    """Node "NAME" (raw over rbd, read-only at snapshot NAME), exported
    read-only as NAME on the server's NBD socket."""
    q.cmd("blockdev-add", {"driver": "raw", "node-name": name,
                           "read-only": True,
                           "file": {"driver": "rbd", "pool": "rbd",
                                    "image": "src", "snapshot": name,
                                    "conf": conf, "read-only": True}})
    q.cmd("block-export-add", {"type": "nbd", "id": name, "name": name,
                               "node-name": name})


def unexport(q, name):
    q.cmd("block-export-del", {"id": name})
    for _ in range(100):
        if name not in [e["id"] for e in q.cmd("query-block-exports")]:
            break
        time.sleep(0.05)
    q.cmd("blockdev-del", {"node-name": name})


def read_export(sock, name, size):
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///{name}?socket={sock}")
    assert h.is_read_only(), f"the export of {name} is writable"
    assert h.get_size() == size, f"{name}: size {h.get_size()}"
    data = h.pread(size, 0)
    h.shutdown()
    return data


def snapshot_names(q):
    for n in q.cmd("query-named-block-nodes"):
        if n["node-name"] == "disk":
            return [(s["id"], s["name"], s["vm-state-size"])
                    for s in n["image"].get("snapshots", [])]
    raise AssertionError("no node disk")


def main(qmp, sock, d, seed, conf):
    q = QMP(qmp)
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///live?socket={sock}")
    size = h.get_size()
    h.shutdown()
    model = read_all(sock, size)

    # s1 with the writers quiet: exactly the disk then.
    ws, ts = start(sock, size, seed, model)
    settle(ws)
    model = stop(ws, ts)
    at_s1 = model
    with open(f"{d}/at-s1.raw", "wb") as f:
        f.write(model)
    snap(q, "s1")
    # The writers go on; s1's export keeps the data of its instant.
    ws, ts = start(sock, size, seed + 10, model)
    export_snapshot(q, "s1", conf)
    settle(ws)
    assert read_export(sock, "s1", size) == at_s1, \
        "the export of s1 is not the disk at the snapshot"
    # s2 while they write: its export does not move while they go on.
    snap(q, "s2")
    export_snapshot(q, "s2", conf)
    first = read_export(sock, "s2", size)
    settle(ws, 300)
    assert read_export(sock, "s2", size) == first, \
        "the export of s2 changed with the head"
    assert first != at_s1, "s2 holds nothing the writers wrote after s1"
    with open(f"{d}/at-s2.raw", "wb") as f:
        f.write(first)
    # A failing transaction takes s3 and deletes it again.
    r = q.execute("transaction", {"actions": [
        {"type": "blockdev-snapshot-internal-sync",
         "data": {"device": "disk", "name": "s3"}},
        {"type": "abort", "data": {}}]})
    assert "error" in r, "the aborted transaction succeeded"
    q.cmd("transaction", {"actions": [
        {"type": "blockdev-snapshot-internal-sync",
         "data": {"device": "disk", "name": "s4"}}]})
    settle(ws)
    assert [s[:2] for s in snapshot_names(q)] == \
        [("s1", "s1"), ("s2", "s2"), ("s4", "s4")], snapshot_names(q)
    assert all(s[2] == size for s in snapshot_names(q)), snapshot_names(q)
    # s4 deleted while the writers write; s2 after its export is gone.
    info = q.cmd("blockdev-snapshot-delete-internal-sync",
                 {"device": "disk", "name": "s4"})
    assert info["id"] == "s4" and info["name"] == "s4", info
    unexport(q, "s2")
    info = q.cmd("blockdev-snapshot-delete-internal-sync",
                 {"device": "disk", "id": "s2", "name": "s2"})
    assert info["name"] == "s2" and info["vm-state-size"] == size, info
    settle(ws)
    model = stop(ws, ts)
    assert read_all(sock, size) == model, "the live disk lost writes"
    assert read_export(sock, "s1", size) == at_s1, \
        "the export of s1 changed with the head"
    unexport(q, "s1")
    assert snapshot_names(q) == [("s1", "s1", size)], snapshot_names(q)
    with open(f"{d}/final.raw", "wb") as f:
        f.write(model)
    print("rbd snapshots taken, exported and deleted; writes: ok")


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]),
             sys.argv[5])
    except BaseException:
        # The writers' threads would keep the process alive.
        traceback.print_exc()
        os._exit(1)
