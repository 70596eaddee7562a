"""A pull-mode incremental backup driven as libvirt drives it (see
test-libvirt-pull-backup.sh).

    libvirt_pull_backup.py QMP NBDSOCK DIR SEED

DIR/disk.qcow2 is the guest's disk.  The QMP sequence is libvirt's
(qemu_backup.c, docs/kbase/incrementalbackupinternals.rst): probe the
schema, blockdev-add the disk, a checkpoint bitmap; later, blockdev-create
and blockdev-add a scratch qcow2 whose backing is the live disk, one
transaction that adds the backup's bitmap to the scratch node, merges the
checkpoint into it, starts the next checkpoint and starts blockdev-backup
sync=none into the scratch node; then block-export-add of the scratch node
with the bitmap and allocation-depth; at the end block-export-del,
job-cancel, blockdev-del.  Guest writes run all along, from several
threads through an export of the disk.
"""
import random
import sys
import threading
import time

import nbd

sys.path.insert(0, __import__("os").path.dirname(__file__))
from jobs_qmp import QMP  # noqa: E402

KiB, MiB = 1024, 1024 * 1024
SIZE = 32 * MiB
GRANULARITY = 64 * KiB
DISK = "libvirt-1-format"


def schema_path(schema, path):
    """libvirt's virQEMUQAPISchemaPathGet, for the queries it makes: a
    command, then members by name, "+case" for a union branch, "^value"
    for an enum value; lists are stepped through.  True when it exists."""
    by_name = {i["name"]: i for i in schema}
    parts = path.split("/")
    info = by_name.get(parts[0])
    for part in parts[1:]:
        if info is None:
            return False
        while info["meta-type"] == "array":
            info = by_name[info["element-type"]]
        if part in ("arg-type", "ret-type"):
            info = by_name[info[part]]
        elif part.startswith("+"):
            cases = [v for v in info.get("variants", ())
                     if v["case"] == part[1:]]
            info = by_name[cases[0]["type"]] if cases else None
        elif part.startswith("^"):
            return part[1:] in info.get("values", ())
        else:
            members = [m for m in info.get("members", ())
                       if m.get("name") == part]
            info = by_name[members[0]["type"]] if members else None
    return info is not None


def probe(q):
    schema = q.cmd("query-qmp-schema")
    for path in ("blockdev-backup/arg-type/sync/^none",
                 "blockdev-backup/arg-type/target",
                 "blockdev-add/arg-type/+qcow2/backing",
                 "blockdev-add/arg-type/+file/filename",
                 "blockdev-create/arg-type/options/+qcow2/backing-file",
                 "blockdev-create/arg-type/options/+file/filename",
                 "block-dirty-bitmap-add/arg-type/disabled",
                 "block-dirty-bitmap-merge/arg-type/bitmaps",
                 "transaction/arg-type/actions/type/^blockdev-backup",
                 "transaction/arg-type/actions/type/^block-dirty-bitmap-merge",
                 "block-export-add/arg-type/+nbd/bitmaps",
                 "block-export-add/arg-type/+nbd/allocation-depth",
                 "query-named-block-nodes/arg-type/flat",
                 "nbd-server-start/arg-type/addr"):
        assert schema_path(schema, path), f"capability missing: {path}"
    # what snapnbd does not have is not advertised
    for path in ("blockdev-add/arg-type/+vmdk",
                 "block-export-add/arg-type/+fuse",
                 "blockdev-add/arg-type/+qcow2/no-such-member"):
        assert not schema_path(schema, path), f"advertised: {path}"


class Guest:
    """Threads writing their own part of the disk with synchronous writes:
    each write is logged with the time it was sent and the time its reply
    came, so that its place relative to the backup's instant is known."""

    def __init__(self, sock, model, seed, threads=4):
        self.model = bytearray(model)
        self.log = []            # (sent, done, offset, data)
        self.lock = threading.Lock()
        self.stopped = False
        self.wide = False
        part = SIZE // threads
        self.ts = [threading.Thread(target=self.run,
                                    args=(sock, i * part, part, seed + i))
                   for i in range(threads)]
        for t in self.ts:
            t.start()

    def run(self, sock, lo, n, seed):
        h = nbd.NBD()
        h.connect_uri(f"nbd+unix:///live?socket={sock}")
        rnd = random.Random(seed)
        while not self.stopped:
            ln = rnd.choice((512, 4096, 65536, 777, 200 * KiB))
            # a quarter of each part before the backup (so that the bitmap
            # has clean parts), three quarters after (the last quarter is
            # never written: the scratch image must leave it to the disk)
            reach = n * 3 // 4 if self.wide else n // 4
            off = lo + rnd.randrange(reach - ln)
            data = bytes([rnd.randrange(1, 256)]) * ln
            sent = time.monotonic()
            h.pwrite(data, off)
            done = time.monotonic()
            with self.lock:
                self.log.append((sent, done, off, data))
        h.shutdown()

    def stop(self):
        self.stopped = True
        for t in self.ts:
            t.join()


def state_at(initial, log, t0, t1):
    """The disk at an instant between t0 and t1: writes done before t0
    are in it, writes sent after t1 are not; each write in between (one
    per thread at most) may or may not be.  Returns the image without them
    and the list of the undecided writes."""
    img = bytearray(initial)
    undecided = []
    for sent, done, off, data in sorted(log, key=lambda w: w[1]):
        if done < t0:
            img[off:off + len(data)] = data
        elif sent <= t1:
            undecided.append((off, data))
    return img, undecided


def check_point_in_time(got, img, undecided):
    """Where writes were in flight, a byte is as before or as one of
    them wrote it (each write is one repeated byte); elsewhere exact."""
    allowed = {}
    for off, data in undecided:
        for i in range(off, off + len(data)):
            allowed.setdefault(i, {img[i]}).add(data[0])
    for i, values in allowed.items():
        assert got[i] in values, f"byte {i} is no value it had then"
        img[i] = got[i]
    if got != bytes(img):
        bad = next(i for i in range(SIZE) if got[i] != img[i])
        raise AssertionError(f"the export is not the point in time "
                             f"(first difference at {bad})")


def extents(h, ctx):
    """[(offset, length, flags)] of meta context @ctx over the export."""
    out = []
    off = 0
    while off < SIZE:
        got = []

        def cb(metacontext, offset, entries, err):
            if metacontext == ctx:
                got.append(entries)
            return 0
        h.block_status(SIZE - off, off, cb)
        pos = off
        for i in range(0, len(got[0]), 2):
            out.append((pos, got[0][i], got[0][i + 1]))
            pos += got[0][i]
        off = pos
    return out


def job_wait(q, job_id, status):
    for _ in range(600):
        jobs = [j for j in q.cmd("query-jobs") if j["id"] == job_id]
        if jobs and jobs[0]["status"] == status:
            return jobs[0]
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never {status}")


def create_scratch(q, path):
    """libvirt's scratch image: blockdev-create of the file, then of a
    qcow2 in it (the disk's size), then blockdev-add with the live disk as
    backing."""
    q.cmd("blockdev-create", {"job-id": "create-storage", "options": {
        "driver": "file", "filename": path, "size": 0}})
    job_wait(q, "create-storage", "concluded")
    q.cmd("job-dismiss", {"id": "create-storage"})
    q.cmd("blockdev-add", {"driver": "file", "node-name":
                           "backup-vda-storage", "filename": path,
                           "auto-read-only": True, "discard": "unmap"})
    q.cmd("blockdev-create", {"job-id": "create-format", "options": {
        "driver": "qcow2", "file": "backup-vda-storage", "size": SIZE}})
    job_wait(q, "create-format", "concluded")
    q.cmd("job-dismiss", {"id": "create-format"})
    q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "backup-vda-format",
                           "file": "backup-vda-storage", "backing": DISK,
                           "read-only": False})


def main():
    qsock, nbdsock, d, seed = sys.argv[1:5]
    seed = int(seed)
    q = QMP(qsock)
    probe(q)
    q.cmd("blockdev-add", {"driver": "file", "node-name": "libvirt-1-storage",
                           "filename": f"{d}/disk.qcow2",
                           "auto-read-only": True, "discard": "unmap"})
    q.cmd("blockdev-add", {"driver": "qcow2", "node-name": DISK,
                           "file": "libvirt-1-storage", "read-only": False,
                           "discard": "unmap"})
    q.cmd("nbd-server-start", {"addr": {"type": "unix",
                                        "data": {"path": nbdsock}}})
    # the guest's view of its disk
    q.cmd("block-export-add", {"type": "nbd", "id": "guest", "node-name": DISK,
                               "name": "live", "writable": True})
    # checkpoint 1 (virDomainCheckpointCreateXML): a persistent bitmap
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///live?socket={nbdsock}")
    initial = h.pread(SIZE, 0)
    h.shutdown()
    q.cmd("transaction", {"actions": [
        {"type": "block-dirty-bitmap-add",
         "data": {"node": DISK, "name": "checkpoint-1", "persistent": True,
                  "granularity": GRANULARITY}}]})
    since_cp1 = time.monotonic()
    guest = Guest(nbdsock, initial, seed)
    time.sleep(0.5)
    create_scratch(q, f"{d}/scratch.qcow2")
    # virDomainBackupBegin, incremental from checkpoint-1, with checkpoint-2
    t0 = time.monotonic()
    q.cmd("transaction", {"actions": [
        {"type": "block-dirty-bitmap-add",
         "data": {"node": "backup-vda-format", "name": "backup-vda",
                  "persistent": False, "disabled": True,
                  "granularity": GRANULARITY}},
        {"type": "block-dirty-bitmap-merge",
         "data": {"node": "backup-vda-format", "target": "backup-vda",
                  "bitmaps": [{"node": DISK, "name": "checkpoint-1"}]}},
        {"type": "block-dirty-bitmap-add",
         "data": {"node": DISK, "name": "checkpoint-2", "persistent": True,
                  "granularity": GRANULARITY}},
        {"type": "blockdev-backup",
         "data": {"device": DISK, "job-id": "backup-vda-libvirt-1-format",
                  "target": "backup-vda-format", "sync": "none",
                  "auto-finalize": True, "auto-dismiss": False}}]})
    t1 = time.monotonic()
    guest.wide = True
    q.cmd("block-export-add", {"type": "nbd", "id": "libvirt-nbd-backup",
                               "node-name": "backup-vda-format",
                               "name": "vda", "writable": False,
                               "bitmaps": ["backup-vda"],
                               "allocation-depth": True})
    # the backup application pulls while the guest keeps writing
    h = nbd.NBD()
    h.add_meta_context("base:allocation")
    h.add_meta_context("qemu:dirty-bitmap:backup-vda")
    h.add_meta_context("qemu:allocation-depth")
    h.connect_uri(f"nbd+unix:///vda?socket={nbdsock}")
    for ctx in ("qemu:dirty-bitmap:backup-vda", "qemu:allocation-depth"):
        assert h.can_meta_context(ctx), f"{ctx} not offered"
    got = b"".join(h.pread(4 * MiB, off) for off in range(0, SIZE, 4 * MiB))
    dirty = extents(h, "qemu:dirty-bitmap:backup-vda")
    depth = extents(h, "qemu:allocation-depth")
    guest.stop()
    h.shutdown()
    img, undecided = state_at(initial, guest.log, t0, t1)
    check_point_in_time(got, img, undecided)
    # The bitmap: every write done between the checkpoint and the backup
    # is dirty; nothing is dirty that no write touched by then.
    def grains(off, ln):
        return set(range(off // GRANULARITY,
                         (off + ln - 1) // GRANULARITY + 1))
    must, may = set(), set()
    for sent, done, off, data in guest.log:
        if sent > since_cp1 and done < t0:
            must |= grains(off, len(data))
        if sent <= t1:
            may |= grains(off, len(data))
    marked = set()
    for off, ln, flags in dirty:
        if flags & 1:
            marked |= grains(off, ln)
    assert must <= marked, f"{len(must - marked)} written grains not dirty"
    assert marked <= may, f"{len(marked - may)} unwritten grains dirty"
    assert must, "the guest wrote nothing before the backup"
    assert len(marked) <= 512 // 4 + 8, f"{len(marked)} grains dirty"
    # Allocation depth: the scratch node holds (depth 1) only what guest
    # writes after the instant pushed out; the rest is read from the disk.
    copied = [(o, ln) for o, ln, flags in depth if flags == 1]
    for o, ln in copied:
        assert any(w[0] >= t0 and w[2] < o + ln and o < w[2] + len(w[3])
                   for w in guest.log), f"scratch holds {o}+{ln}, unwritten"
    part = SIZE // len(guest.ts)
    for i in range(len(guest.ts)):
        lo, hi = i * part + part * 3 // 4, (i + 1) * part
        # 2: the disk's data; 0: a hole of the disk (make_disk leaves some)
        assert all(flags in (0, 2) for o, ln, flags in depth
                   if o < hi and lo < o + ln), \
            f"{lo}..{hi} is never written, yet in the scratch image"
    assert any(flags == 2 for _, _, flags in depth), "nothing from the disk"
    # virDomainBackupEnd / the job's end
    q.cmd("block-export-del", {"id": "libvirt-nbd-backup"})
    q.cmd("job-cancel", {"id": "backup-vda-libvirt-1-format"})
    job_wait(q, "backup-vda-libvirt-1-format", "concluded")
    q.cmd("job-dismiss", {"id": "backup-vda-libvirt-1-format"})
    for _ in range(100):
        if not any(e["id"] == "libvirt-nbd-backup"
                   for e in q.cmd("query-block-exports")):
            break
        time.sleep(0.05)
    q.cmd("blockdev-del", {"node-name": "backup-vda-format"})
    q.cmd("blockdev-del", {"node-name": "backup-vda-storage"})
    node = [n for n in q.cmd("query-named-block-nodes", {"flat": True})
            if n["node-name"] == DISK][0]
    names = {b["name"] for b in node.get("dirty-bitmaps", [])}
    assert {"checkpoint-1", "checkpoint-2"} <= names, names
    print(f"pulled the point in time under {len(guest.log)} guest writes "
          f"({len(undecided)} in flight at the instant); "
          f"{len(marked)} dirty grains, {len(copied)} copied extents")


if __name__ == "__main__":
    main()
