#!/usr/bin/python3
"""qcow2 images whose refcounts lie, served writable
(tests/test-qcow2-refcount-lies.sh).

  qcow2_refcount_lies.py DIR SEED [COUNT] [--server qemu-nbd] [--commit]
  qcow2_refcount_lies.py DIR --growth

For each seed from SEED to SEED + COUNT - 1: qemu-img and qemu-io make an
image (random cluster size, random writes, discards that leave free
clusters below the end of the file, sometimes an internal snapshot taken
and written over), and the image is damaged the ways a crash, a bug or a
hostile file leave it:

  refcount0       a data cluster the active table maps gets refcount 0
  zero-free       an unallocated entry becomes COPIED + zero flag + a
                  cluster with refcount 0 (what fuzz-qcow2 found)
  copied-shared   a cluster shared with the snapshot gets the COPIED flag
  duplicate       an entry names, with COPIED, another entry's cluster
  past-eof        an entry names a cluster past the end of the file
  past-eof-twice  two entries name one cluster past the end of the file,
                  whose refcount block says 1 (fuzz-qcow2 again)

What the damaged image reads as (qemu-img convert) is the model.  The
server (snapnbd, or qemu-nbd to compare) then takes random writes,
write-zeroes and discards over NBD, which must all succeed; the disk must
read like the model after every tenth request and at the end, the image
must read like the model in qemu-img, the snapshot must read as it did,
and qemu-img check must find no corruption that the damage did not leave
(the past-eof references stay where no write replaced them).  Each seed
that fails is printed with what failed, and the exit status is 1.

With --commit the damaged image is the backing file of an overlay that
the daemon (snapnbd $SNAPNBD) exports; the requests go to the overlay,
and block-commit of the active layer, completed, writes them into the
damaged image, which only then becomes writable (its references are
counted at that reopen, not at an open).

With --growth, one fixed case: references past the end of the file name
the clusters where a new refcount block, and the refcount table's growth,
would put their metadata (see growth()).
"""
import os
import re
import random
import signal
import socket
import struct
import subprocess
import sys
import time

import nbd

import qcow2_uncopied

COPIED = 1 << 63
COMPRESSED = 1 << 62
ZERO = 1
OFFSET_MASK = 0x00fffffffffffe00
DAMAGES = ["refcount0", "zero-free", "copied-shared", "duplicate",
           "past-eof", "past-eof-twice"]


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True).stdout


class Image(qcow2_uncopied.Image):
    """qcow2_uncopied's image in memory, plus the 16-bit refcounts and the
    active L2 entries that the damage changes."""

    def __init__(self, path):
        super().__init__(path)
        self.bits = self.cluster_bits
        assert self.refcount_order == 4

    def end_cluster(self):
        return (len(self.data) + self.cs - 1) // self.cs

    def refcount_slot(self, cluster):
        per = self.cs // 2
        block = self.u64(self.rt_offset + 8 * (cluster // per)) & OFFSET_MASK
        return block + 2 * (cluster % per) if block else None

    def refcount(self, cluster):
        slot = self.refcount_slot(cluster)
        if slot is None or slot + 2 > len(self.data):
            return 0
        return struct.unpack(">H", self.data[slot:slot + 2])[0]

    def set_refcount(self, cluster, value):
        slot = self.refcount_slot(cluster)
        self.data[slot:slot + 2] = struct.pack(">H", value)

    def entries(self):
        """(slot, guest offset, entry) of every active L2 entry."""
        for slot, guest in self.l2_slots():
            yield slot, guest, self.u64(slot)


def normal(e):
    return not (e & COMPRESSED) and (e & OFFSET_MASK) and not (e & ZERO)


def damage(img, kind, rng):
    """Applies one damage; False when the image offers no place for it."""
    entries = list(img.entries())
    data = [x for x in entries if normal(x[2])]
    if kind == "refcount0":
        owned = [x for x in data if x[2] & COPIED]
        if not owned:
            return False
        img.set_refcount((rng.choice(owned)[2] & OFFSET_MASK) >> img.bits, 0)
    elif kind == "zero-free":
        empty = [x for x in entries if x[2] == 0]
        holes = [c for c in range(1, img.end_cluster())
                 if img.refcount(c) == 0 and img.refcount_slot(c)]
        if not empty or not holes:
            return False
        img.put(rng.choice(empty)[0],
                COPIED | ZERO | (rng.choice(holes) << img.bits))
    elif kind == "copied-shared":
        shared = [x for x in data if not (x[2] & COPIED) and
                  img.refcount((x[2] & OFFSET_MASK) >> img.bits) > 1]
        if not shared:
            return False
        slot, _, e = rng.choice(shared)
        img.put(slot, e | COPIED)
    elif kind == "duplicate":
        if not data:
            return False
        src = rng.choice(data)[2] & OFFSET_MASK
        img.put(rng.choice(entries)[0], src | COPIED)
    elif kind == "past-eof":
        host = (img.end_cluster() + rng.randrange(4)) << img.bits
        img.put(rng.choice(entries)[0],
                host | (COPIED if rng.random() < 0.7 else 0))
    else:
        cluster = img.end_cluster() + rng.randrange(4)
        slot = img.refcount_slot(cluster)
        if slot is None or slot + 2 > len(img.data) or len(entries) < 2:
            return False
        img.set_refcount(cluster, 1)
        for e in rng.sample(entries, 2):
            img.put(e[0], (cluster << img.bits) | COPIED)
    return True


def make_image(path, rng):
    cs = rng.choice([512, 4096, 65536])
    size = rng.choice([2, 4, 8]) << 20
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o",
        "cluster_size=%d,refcount_bits=16" % cs, path, str(size))
    cmds = []
    for _ in range(rng.randint(4, 16)):
        off = rng.randrange(size // cs) * cs
        n = min(rng.randint(cs // 2, 24 * cs), size - off)
        cmds += ["-c", "write -P %d %d %d" % (rng.randint(1, 255), off, n)]
    for _ in range(rng.randint(0, 4)):
        off = rng.randrange(size // cs) * cs
        cmds += ["-c", "discard %d %d" % (off, min(4 * cs, size - off))]
    run("qemu-io", "-f", "qcow2", *cmds, path)
    snapshot = rng.random() < 0.5
    if snapshot:
        run("qemu-img", "snapshot", "-c", "s1", path)
        off = rng.randrange(size // cs) * cs
        run("qemu-io", "-f", "qcow2", "-c",
            "write -P 7 %d %d" % (off, min(16 * cs, size - off)), path)
    return cs, size, snapshot


def corruptions(path):
    """qemu-img check's errors, but a missing COPIED flag on a cluster with
    refcount 1: what is left of a shared cluster once one user rewrote its
    entry (QEMU leaves it so too); a write copies such a cluster."""
    out = subprocess.run(["qemu-img", "check", path], capture_output=True,
                         text=True)
    errors = 0
    for line in (out.stdout + out.stderr).splitlines():
        m = re.match(r"ERROR OFLAG_COPIED .*_entry=([0-9a-f]+) refcount=1$",
                     line)
        if m and not int(m.group(1), 16) & COPIED:
            continue
        errors += line.startswith("ERROR")
    return errors


def accepts(path):
    """Does the unix socket at @path take a connection?"""
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Server:
    def __init__(self, kind, sock, image, log):
        cmd = {"snapnbd": [os.environ.get("SNAPNBD", "snapnbd"),
                           "--discard=unmap"],
               "qemu-nbd": ["qemu-nbd", "--discard=unmap"]}[kind]
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd + ["-t", "-f", "qcow2", "-k", sock,
                                            image], stderr=self.log)
        # Listening, not only bound: a connection is accepted.
        for _ in range(500):
            if self.proc.poll() is not None or accepts(sock):
                break
            time.sleep(0.02)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.log.close()


def trimmed(h, model, off, n):
    """A trim is advisory (both snapnbd and qemu-nbd keep the data of some,
    over a backing file): each byte must read as before or as zero; the
    model takes what it reads.  The first byte that does not, or None."""
    got = h.pread(n, off)
    for k in range(n):
        if got[k] and got[k] != model[off + k]:
            return "trim %d+%d: byte %#x reads %#x, not %#x or 0" % (
                off, n, off + k, got[k], model[off + k])
    model[off:off + n] = got
    return None


def requests(h, model, cs, size, rng):
    """Random requests over NBD, the model updated; the first difference
    between the disk and the model, or None."""
    for i in range(80):
        kind = rng.choice(["write"] * 6 + ["zero", "discard"])
        if kind == "discard":
            off = rng.randrange(size // cs) * cs
            n = min(rng.randint(1, 4) * cs, size - off)
            h.trim(n, off)
            problem = trimmed(h, model, off, n)
            if problem:
                return problem
        else:
            off = rng.randrange(size)
            n = min(rng.randint(1, 3 * cs), size - off)
            if kind == "zero":
                h.zero(n, off)
            else:
                h.pwrite(bytes([1 + i]) * n, off)
            model[off:off + n] = bytes([1 + i] if kind == "write"
                                       else [0]) * n
        if i % 10 == 9:
            diff = compare(h, model)
            if diff:
                return "after request %d (%s %d+%d): %s" % (i, kind, off, n,
                                                            diff)
    h.flush()
    return compare(h, model)


def compare(h, model):
    step = 1 << 20
    for off in range(0, len(model), step):
        got = h.pread(min(step, len(model) - off), off)
        want = bytes(model[off:off + step])
        if got != want:
            k = next(k for k in range(len(got)) if got[k] != want[k])
            return "byte %#x reads %#x, the model says %#x" % (
                off + k, got[k], want[k])
    return None


def damaged(work, seed, what):
    """A damaged image for @seed in an emptied @work: the random source,
    the image's path, cluster and disk size, whether it has a snapshot,
    the damage done, the model's path and the model, and @what with the
    seed described."""
    rng = random.Random(seed)
    img = os.path.join(work, "img.qcow2")
    for f in os.listdir(work):
        os.unlink(os.path.join(work, f))
    cs, size, snapshot = make_image(img, rng)
    image = Image(img)
    done = [k for k in rng.sample(DAMAGES, rng.randint(1, 3))
            if damage(image, k, rng)]
    image.save()
    model_path = os.path.join(work, "model.raw")
    run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", img, model_path)
    with open(model_path, "rb") as f:
        model = bytearray(f.read())
    what = "%s %d (cluster %d, %d MiB%s, damage %s)" % (
        what, seed, cs, size >> 20, ", snapshot" if snapshot else "",
        ",".join(done) or "none")
    return rng, img, cs, size, snapshot, done, model_path, model, what


def reads_unlike(model, model_path, img):
    """Does qemu-img read @img unlike @model (saved to @model_path)?"""
    with open(model_path, "wb") as f:
        f.write(model)
    return subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F",
                           "qcow2", model_path, img]).returncode != 0


def one_seed(work, seed, server):
    rng, img, cs, size, snapshot, done, model_path, model, what = damaged(
        work, seed, "seed")
    before = corruptions(img)
    if snapshot:
        run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", "-l",
            "snapshot.name=s1", img, os.path.join(work, "snap.raw"))
    sock = os.path.join(work, "sock")
    log = os.path.join(work, "server.log")
    srv = Server(server, sock, img, log)
    problem = None
    try:
        h = nbd.NBD()
        h.connect_unix(sock)
        problem = requests(h, model, cs, size, rng)
        h.shutdown()
    except nbd.Error as e:
        problem = "request failed: %s" % e
    finally:
        srv.stop()
    if not problem and reads_unlike(model, model_path, img):
        problem = "qemu-img reads the image unlike the model"
    if not problem and snapshot:
        run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", "-l",
            "snapshot.name=s1", img, os.path.join(work, "snap.after"))
        with open(os.path.join(work, "snap.raw"), "rb") as a, \
                open(os.path.join(work, "snap.after"), "rb") as b:
            if a.read() != b.read():
                problem = "the snapshot changed"
    after = corruptions(img)
    if not problem and after and not any(d.startswith("past-eof")
                                         for d in done):
        problem = "qemu-img check: %d errors (before: %d)" % (after, before)
    with open(log) as f:
        said = f.read().strip().replace("\n", " | ")
    return what, problem, said


def commit_seed(work, seed):
    """The damaged image under an overlay, then an active commit into it."""
    from jobs_qmp import QMP
    rng, img, cs, size, _, _, model_path, model, what = damaged(
        work, seed, "commit seed")
    top = os.path.join(work, "top.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", img, "-F", "qcow2",
        top)
    sock, qsock = os.path.join(work, "sock"), os.path.join(work, "qmp")
    log = open(os.path.join(work, "server.log"), "w")
    proc = subprocess.Popen(
        [os.environ.get("SNAPNBD", "snapnbd"),
         "--chardev", "socket,id=c,path=%s,server=on,wait=off" % qsock,
         "--monitor", "chardev=c", "--blockdev",
         "driver=qcow2,node-name=top,discard=unmap,file.driver=file,"
         "file.filename=" + top,
         "--nbd-server", "addr.type=unix,addr.path=" + sock,
         "--export", "type=nbd,id=e,node-name=top,writable=on"], stderr=log)
    problem = None
    try:
        for _ in range(500):
            if proc.poll() is not None or (accepts(sock) and
                                           os.path.exists(qsock)):
                break
            time.sleep(0.02)
        q = QMP(qsock)
        h = nbd.NBD()
        h.set_export_name("top")
        h.connect_unix(sock)
        problem = requests(h, model, cs, size, rng)
        if not problem:
            q.cmd("block-commit", {"job-id": "c", "device": "top"})
            # Ready, or failed before (a refused reopen, corruption).
            deadline = time.monotonic() + 60
            while not q.find_event("BLOCK_JOB_COMPLETED", device="c") and \
                    not q.find_event("BLOCK_JOB_READY", device="c"):
                if time.monotonic() > deadline:
                    raise TimeoutError("the commit is neither ready nor "
                                       "done after 60 s")
                q.execute("query-jobs")
                time.sleep(0.02)
            if not q.find_event("BLOCK_JOB_COMPLETED", device="c"):
                q.cmd("job-complete", {"id": "c"})
            ev = q.wait_event("BLOCK_JOB_COMPLETED", device="c", timeout=60)
            if "error" in ev["data"]:
                problem = "the commit failed: %s" % ev["data"]["error"]
        if not problem:
            problem = requests(h, model, cs, size, rng)
        h.shutdown()
    except Exception as e:
        problem = "%s: %s" % (type(e).__name__, e)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    if not problem and reads_unlike(model, model_path, img):
        problem = "qemu-img reads the committed image unlike the model"
    with open(os.path.join(work, "server.log")) as f:
        said = f.read().strip().replace("\n", " | ")
    return what, problem, said


def growth(work):
    """References past the end of the file that name the clusters where
    new refcount metadata would go: the first cluster of the next refcount
    block's range, and the first cluster the refcount table cannot
    describe, where its growth puts the new blocks and table.  Writes
    that need both must put them elsewhere: the entries read as zeros
    before and after.  The first problem, or None."""
    for f in os.listdir(work):
        os.unlink(os.path.join(work, f))
    img = os.path.join(work, "img.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o",
        "cluster_size=512,refcount_bits=16", img, "16M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 1 0 7900K", img)
    image = Image(img)
    per_block = image.cs // 2
    area = image.rt_clusters * image.cs // 8 * per_block
    block = -(-image.end_cluster() // per_block) * per_block
    assert block < area, "the image does not leave a refcount block to make"
    for guest, host in ((7900 << 10, block), ((7900 << 10) + 512, area)):
        image.put(image.l2_slot(guest), COPIED | (host << image.bits))
    image.save()
    model_path = os.path.join(work, "model.raw")
    run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", img, model_path)
    with open(model_path, "rb") as f:
        model = bytearray(f.read())
    srv = Server("snapnbd", os.path.join(work, "sock"), img,
                 os.path.join(work, "server.log"))
    try:
        h = nbd.NBD()
        h.connect_unix(os.path.join(work, "sock"))
        h.pwrite(b"\2" * (256 << 10), 8 << 20)
        model[8 << 20:(8 << 20) + (256 << 10)] = b"\2" * (256 << 10)
        h.flush()
        problem = compare(h, model)
        h.shutdown()
    finally:
        srv.stop()
    grown = Image(img)
    if problem:
        return "over NBD: " + problem
    if grown.rt_offset == image.rt_offset or grown.end_cluster() <= area:
        return "the refcount table did not grow: the case was not met"
    if reads_unlike(model, model_path, img):
        return "qemu-img reads the image unlike the model"
    return None


def main():
    if "--growth" in sys.argv[1:]:
        problem = growth(sys.argv[1])
        print("refcount metadata placed past reserved clusters: %s" % (
            problem or "ok"))
        sys.exit(1 if problem else 0)
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    server = "qemu-nbd" if "--server" in sys.argv[1:] and \
        sys.argv[sys.argv.index("--server") + 1] == "qemu-nbd" else "snapnbd"
    args = [a for a in args if a not in ("qemu-nbd", "snapnbd")]
    work, seed = args[0], int(args[1])
    count = int(args[2]) if len(args) > 2 else 1
    commit = "--commit" in sys.argv[1:]
    failed = 0
    for s in range(seed, seed + count):
        what, problem, said = (commit_seed(work, s) if commit
                               else one_seed(work, s, server))
        if problem:
            failed += 1
            print("%s %s: %s [server: %s]" % (server, what, problem, said))
    print("%s%s: %d seeds from %d, %d failed" % (
        server, " (commit)" if commit else "", count, seed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
