"""An incremental backup of an rbd disk from the RBD diff between two
snapshots (see test-rbd-incremental.sh): the disk is written by two NBD
clients between snapshots s1 and s2 (taken with
blockdev-snapshot-internal-sync); s2 is opened read-only with
x-dirty-since=s1 and exported with bitmap s1; the backup of s1 plus the
ranges qemu:dirty-bitmap:s1 marks, read from that export, is s2.
Usage: rbd_incremental.py QMP NBDSOCK DIR SEED CONF"""
import os
import sys
import traceback

import nbd
from jobs_qmp import QMP
from live_writers import read_all, settle, start, stop

GRANULE = 64 * 1024
OBJECT = 64 * 1024  # the image's object size (test-rbd-incremental.sh)
# Between s1 and s2: (offset, length, byte; 0: write zeroes).
WRITES = [(1 << 20, 4096, 0x41), (5 << 20, 100000, 0x42),
          (9 << 20, 65536, 0), (15 << 20, 512, 0x43)]


def dirty_extents(h, size, ctx):
    out = []
    pos = 0

    def cb(meta, off, entries, err):
        nonlocal pos
        if meta != ctx:
            return 0
        for length, flags in zip(entries[::2], entries[1::2]):
            if flags & 1:
                out.append((pos, length))
            pos += length
        return 0

    while pos < size:
        h.block_status(size - pos, pos, cb)
    return out


def main(qmp, sock, d, seed, conf):
    q = QMP(qmp)
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///live?socket={sock}")
    size = h.get_size()
    h.shutdown()
    model = read_all(sock, size)

    ws, ts = start(sock, size, seed, model)
    settle(ws)
    at_s1 = stop(ws, ts)
    q.cmd("blockdev-snapshot-internal-sync", {"device": "disk", "name": "s1"})
    with open(f"{d}/at-s1.raw", "wb") as f:
        f.write(at_s1)
    # A few writes, in objects of their own: the diff is not everything.
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///live?socket={sock}")
    at_s2 = bytearray(at_s1)
    for off, ln, byte in WRITES:
        data = bytes([byte]) * ln
        if byte:
            h.pwrite(data, off)
        else:
            h.zero(ln, off)
        at_s2[off:off + ln] = data
    h.flush()
    h.shutdown()
    at_s2 = bytes(at_s2)
    q.cmd("blockdev-snapshot-internal-sync", {"device": "disk", "name": "s2"})
    # The head goes on: s2's export must not follow it.
    ws, ts = start(sock, size, seed + 20, at_s2)
    settle(ws)

    q.cmd("blockdev-add", {"driver": "raw", "node-name": "inc",
                           "read-only": True,
                           "file": {"driver": "rbd", "pool": "rbd",
                                    "image": "src", "snapshot": "s2",
                                    "x-dirty-since": "s1", "conf": conf,
                                    "read-only": True}})
    q.cmd("block-export-add", {"type": "nbd", "id": "inc", "name": "inc",
                               "node-name": "inc", "bitmaps": ["s1"]})
    ctx = "qemu:dirty-bitmap:s1"
    h = nbd.NBD()
    h.add_meta_context(ctx)
    h.connect_uri(f"nbd+unix:///inc?socket={sock}")
    assert h.can_meta_context(ctx), f"no {ctx}"
    extents = dirty_extents(h, size, ctx)
    backup = bytearray(at_s1)
    for off, ln in extents:
        backup[off:off + ln] = h.pread(ln, off)
    h.shutdown()
    dirty = sum(ln for _, ln in extents)
    print(f"incremental: {dirty} of {size} bytes dirty in {len(extents)} "
          f"extents")
    assert bytes(backup) == at_s2, \
        "the backup of s1 plus the dirty ranges of s2 is not s2"
    # Complete within what the writes touched: their objects at most.
    objects = set()
    for off, ln, _ in WRITES:
        objects.update(range(off // OBJECT, (off + ln - 1) // OBJECT + 1))
    for off, ln in extents:
        for o in range(off // OBJECT, (off + ln - 1) // OBJECT + 1):
            assert o in objects, f"object {o} dirty but not written"
    # Sound: every granule that differs between s1 and s2 is dirty.
    marked = set()
    for off, ln in extents:
        marked.update(range(off // GRANULE, (off + ln - 1) // GRANULE + 1))
    for g in range(size // GRANULE):
        sl = slice(g * GRANULE, (g + 1) * GRANULE)
        assert at_s1[sl] == at_s2[sl] or g in marked, \
            f"granule {g} changed but is not dirty"
    model = stop(ws, ts)
    assert read_all(sock, size) == model, "the live disk lost writes"

    # Errors: an unknown snapshot, a bitmap name taken.
    r = q.execute("blockdev-add", {"driver": "rbd", "node-name": "bad",
                                   "pool": "rbd", "image": "src",
                                   "snapshot": "s2", "read-only": True,
                                   "x-dirty-since": "nope", "conf": conf})
    assert "error" in r and "since snapshot nope" in r["error"]["desc"], r
    print("rbd incremental backup: ok")


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]),
             sys.argv[5])
    except BaseException:
        # The writers' threads would keep the process alive.
        traceback.print_exc()
        os._exit(1)
