"""Internal snapshots of a qcow2 disk that two NBD clients keep writing
(see test-qmp-snapshot-internal.sh).
Usage: snapshot_internal_live.py QMP NBDSOCK DIR SEED"""
import sys

from jobs_qmp import QMP
from live_writers import read_all, settle, start, stop


def snap(q, name):
    q.cmd("blockdev-snapshot-internal-sync", {"device": "disk", "name": name})


def main(qmp, sock, d, seed):
    q = QMP(qmp)
    import nbd
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///live?socket={sock}")
    size = h.get_size()
    h.shutdown()
    model = read_all(sock, size)

    # s1 with the writers quiet: exactly the disk then.
    ws, ts = start(sock, size, seed, model)
    settle(ws)
    model = stop(ws, ts)
    with open(f"{d}/at-s1.raw", "wb") as f:
        f.write(model)
    snap(q, "s1")
    # s2 while they write, s3 as a transaction action, s2 deleted again,
    # a failing transaction that takes s4 and undoes it: the live disk
    # loses nothing meanwhile.
    ws, ts = start(sock, size, seed + 10, model)
    settle(ws)
    snap(q, "s2")
    settle(ws)
    q.cmd("transaction", {"actions": [
        {"type": "blockdev-snapshot-internal-sync",
         "data": {"device": "disk", "name": "s3"}}]})
    settle(ws)
    info = q.cmd("blockdev-snapshot-delete-internal-sync",
                 {"device": "disk", "name": "s2"})
    assert info["name"] == "s2" and info["id"] == "2", info
    r = q.execute("transaction", {"actions": [
        {"type": "blockdev-snapshot-internal-sync",
         "data": {"device": "disk", "name": "s4"}},
        {"type": "abort", "data": {}}]})
    assert "error" in r, "the aborted transaction succeeded"
    settle(ws)
    model = stop(ws, ts)
    assert read_all(sock, size) == model, "the live disk lost writes"
    # s5 quiet again, then the head is written all over: s5 keeps its data.
    with open(f"{d}/at-s5.raw", "wb") as f:
        f.write(model)
    snap(q, "s5")
    ws, ts = start(sock, size, seed + 20, model)
    settle(ws, 300)
    model = stop(ws, ts)
    assert read_all(sock, size) == model, "the live disk lost writes"
    with open(f"{d}/final.raw", "wb") as f:
        f.write(model)
    print("internal snapshots taken; writes: ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
