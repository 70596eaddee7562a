"""QEMU's filter-based fleecing recipe, run against a daemon (snapnbd or
qemu-storage-daemon) whose QMP socket and NBD server are given:

  blockdev-add qcow2 "tmp" (the fleecing store, no backing)
  blockdev-add copy-before-write "cbw" (file: the live disk, target: tmp)
  blockdev-add snapshot-access "acc" (file: cbw)
  block-export-add "live" (cbw, writable) and "pit" (acc, read-only)

Then clients write the live disk through "live" while a reader pulls "pit";
the pulled image must be the disk as it was when cbw was added (the caller
gives a copy made then).  Usage:

  fleecing_filters.py recipe QMP NBDSOCK TMP REF SEED [extra-export-node]
  fleecing_filters.py cbw-error QMP NBDSOCK TMP MODE SEED
  fleecing_filters.py discard QMP NBDSOCK TMP
"""
import subprocess
import sys
import threading
import time

import nbd
from jobs_qmp import QMP, Writer

MiB = 1 << 20


def uri(sock, name):
    return f"nbd+unix:///{name}?socket={sock}"


def add_fleecing(q, tmp_img, node="disk", on_error=None):
    q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "tmp",
                           "file": {"driver": "file", "filename": tmp_img}})
    cbw = {"driver": "copy-before-write", "node-name": "cbw", "file": node,
           "target": "tmp"}
    if on_error:
        cbw["on-cbw-error"] = on_error
    q.cmd("blockdev-add", cbw)
    q.cmd("blockdev-add", {"driver": "snapshot-access", "node-name": "acc",
                           "file": "cbw"})
    q.cmd("block-export-add", {"type": "nbd", "id": "live", "name": "live",
                               "node-name": "cbw", "writable": True})
    q.cmd("block-export-add", {"type": "nbd", "id": "pit", "name": "pit",
                               "node-name": "acc"})


def writers(sock, names, size, seed, initial):
    ws = [Writer(nbd, uri(sock, name), i * size // len(names),
                 (i + 1) * size // len(names), seed + i,
                 initial[i * size // len(names):(i + 1) * size // len(names)])
          for i, name in enumerate(names)]
    ts = [threading.Thread(target=w.run) for w in ws]
    for t in ts:
        t.start()
    return ws, ts


def stop(ws, ts):
    for w in ws:
        w.stopped = True
    for t in ts:
        t.join()


def recipe(qmp, sock, tmp_img, ref, seed, extra, qemu_72=False):
    q = QMP(qmp)
    add_fleecing(q, tmp_img)
    size = nbd_size(uri(sock, "pit"))
    initial = read_all(uri(sock, "live"), size)
    names = ["live", "live"] + ([extra] if extra else [])
    ws, ts = writers(sock, names, size, seed, initial)
    while sum(w.writes for w in ws) < 200:
        time.sleep(0.01)
    # The pulls run while the writers go on: qemu-img convert (guided by
    # block status, as backup tools are), then plain reads of everything.
    out = tmp_img + ".pulled"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw",
                    uri(sock, "pit"), out], check=True)
    plain = read_all(uri(sock, "pit"), size)
    stop(ws, ts)
    assert sum(w.writes for w in ws) > 200, "the writers did not write"
    r = subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F",
                        "raw", ref, out])
    if r.returncode != 0 and qemu_72:
        # qemu-storage-daemon 7.2's snapshot-access reports chunks that the
        # guest zeroed after the point in time as zero (its block status
        # looks at the live source): the convert skips their old data.
        print("qemu-storage-daemon: the block-status guided pull is not "
              "the point in time (QEMU 7.2's snapshot-access block status)")
    else:
        assert r.returncode == 0, "the pulled image is not the point in time"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O",
                              "raw", ref, out + ".ref"], check=True)
    with open(out + ".ref", "rb") as f:
        same = plain == f.read()
    if not same and qemu_72:
        # Nor are its reads: a read of a range not yet copied reads the
        # live source, which a copy-before-write that ends meanwhile lets
        # the guest overwrite.
        print("qemu-storage-daemon: plain reads of the snapshot are not the "
              "point in time either (QEMU 7.2's snapshot-access reads race "
              "its copy-before-write)")
    else:
        assert same, "the snapshot's reads are not the point in time"
    # And the live disk has every write.
    live = read_all(uri(sock, "live"), size)
    for i, w in enumerate(ws):
        lo = i * size // len(ws)
        assert live[lo:lo + len(w.model)] == w.model, \
            f"the live disk lost writes of client {i}"
    # The fleecing store holds only what was overwritten.
    q.cmd("block-export-del", {"id": "pit"})
    print(f"{sum(w.writes for w in ws)} writes during the pull")


def nbd_size(u):
    h = nbd.NBD()
    h.connect_uri(u)
    size = h.get_size()
    h.shutdown()
    return size


def read_all(u, size):
    h = nbd.NBD()
    h.connect_uri(u)
    data = bytearray()
    for off in range(0, size, 4 * MiB):
        data += h.pread(min(4 * MiB, size - off), off)
    h.shutdown()
    return bytes(data)


def allocated(path):
    import os
    return os.stat(path).st_blocks * 512


def discard(qmp, sock, tmp_img):
    """snapshot-access discard: the fleecing store shrinks as a backup tool
    says it has read ranges, and those ranges are gone from the snapshot
    (and are no longer copied before writes)."""
    q = QMP(qmp)
    q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "tmp",
                           "discard": "unmap",
                           "file": {"driver": "file", "filename": tmp_img}})
    q.cmd("blockdev-add", {"driver": "copy-before-write", "node-name": "cbw",
                           "file": "disk", "target": "tmp"})
    q.cmd("blockdev-add", {"driver": "snapshot-access", "node-name": "acc",
                           "discard": "unmap", "file": "cbw"})
    q.cmd("block-export-add", {"type": "nbd", "id": "live", "name": "live",
                               "node-name": "cbw", "writable": True})
    q.cmd("block-export-add", {"type": "nbd", "id": "pit", "name": "pit",
                               "node-name": "acc", "writable": True})
    size = nbd_size(uri(sock, "pit"))
    before = read_all(uri(sock, "pit"), size)
    live = nbd.NBD()
    live.connect_uri(uri(sock, "live"))
    for off in range(0, size // 2, MiB):   # the first half is copied
        live.pwrite(bytes([0x6b]) * MiB, off)
    live.flush()
    full = allocated(tmp_img)
    pit = nbd.NBD()
    pit.connect_uri(uri(sock, "pit"))
    assert pit.pread(MiB, 0) == before[:MiB], "snapshot changed"
    pit.trim(size // 2, 0)               # the tool has read the first half
    pit.flush()
    shrunk = allocated(tmp_img)
    print(f"fleecing store: {full} bytes allocated, {shrunk} after discard")
    assert shrunk < full - size // 4, "the fleecing store did not shrink"
    try:
        pit.pread(4096, 0)
    except nbd.Error:
        pass
    else:
        raise AssertionError("a discarded range of the snapshot was read")
    # The second half still is the point in time, and writes to the
    # discarded half are no longer copied.
    assert pit.pread(MiB, size // 2) == before[size // 2:size // 2 + MiB]
    for off in range(0, size // 2, MiB):
        live.pwrite(bytes([0x6c]) * MiB, off)
    live.flush()
    assert allocated(tmp_img) <= shrunk + MiB, \
        "discarded ranges are still copied before writes"
    pit.shutdown()
    live.shutdown()


def cbw_error(qmp, sock, tmp_img, mode, seed):
    """The fleecing store cannot hold the old data: with break-guest-write
    the guest's writes fail and the point in time holds; with
    break-snapshot the writes succeed and reading the snapshot fails."""
    q = QMP(qmp)
    add_fleecing(q, tmp_img, on_error=mode)
    size = nbd_size(uri(sock, "pit"))
    before = read_all(uri(sock, "pit"), size)
    h = nbd.NBD()
    h.connect_uri(uri(sock, "live"))
    failed = ok = 0
    for off in range(0, size, MiB):
        try:
            h.pwrite(bytes([0x5a]) * MiB, off)
            ok += 1
        except nbd.Error:
            failed += 1
    h.shutdown()
    print(f"{mode}: {ok} writes succeeded, {failed} failed")
    if mode == "break-guest-write":
        assert failed > 0, "no guest write failed though the store is full"
        assert read_all(uri(sock, "pit"), size) == before, \
            "the snapshot changed under break-guest-write"
    else:
        assert failed == 0, "guest writes failed under break-snapshot"
        try:
            read_all(uri(sock, "pit"), size)
        except nbd.Error:
            pass
        else:
            raise AssertionError("the broken snapshot can still be read")
    assert q.cmd("query-block-exports") is not None  # still answering


if __name__ == "__main__":
    if sys.argv[1] == "discard":
        discard(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "recipe":
        extra = sys.argv[7] if len(sys.argv) > 7 else ""
        recipe(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5],
               int(sys.argv[6]), extra if extra != "qsd" else None,
               qemu_72=extra == "qsd")
    else:
        cbw_error(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5],
                  int(sys.argv[6]))
