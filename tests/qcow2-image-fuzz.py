#!/usr/bin/python3
"""qcow2 image fuzzing in the spirit of QEMU's tests/image-fuzzer.

Makes sound qcow2 images with qemu-img (cluster sizes, versions, refcount
widths, data, zero and compressed clusters, internal snapshots, bitmaps,
a dirty lazy-refcounts image), then, one image at a time, mutates one to
three metadata fields chosen from all of them (header fields, header
extensions, L1 and L2 entries, the refcount table and blocks, the snapshot
table, the bitmap directory) to values that damaged images have (zero, all
ones, off by one, unaligned, past the end of the file, the offset of other
metadata, flipped flag bits, random), serves it writable with
"SERVER -f qcow2", writes 4 KiB with FUA, reads it back, stops the server,
and classifies what happened:

  refused    the server would not serve it, with a one-line message
  refused-multiline   refused, but not with exactly one line (a failure)
  served     served; the write was acknowledged and reads back, or was
             failed (EIO/EPERM...) without harm
  crash      the server died (signal, sanitizer report, unexpected exit)
  hang       start, a request or the shutdown took more than --timeout s
  data-lost  an acknowledged write reads back wrong (through the server or
             afterwards through qemu-io), or the file lost its qcow2 magic

Exit status 1 when anything but refused/served happened.  Usage:
  tests/qcow2-image-fuzz.py [--count N] [--seed S] [--server PATH]
                            [--qemu-nbd] [--keep DIR] [--timeout S]
The SNAPNBD environment variable names the server by default; --qemu-nbd
runs qemu-nbd instead (for comparison).
"""
import argparse
import errno
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

import nbd

QCOW2_MAGIC = b"QFI\xfb"
COPIED, COMPRESSED, ZERO = 1 << 63, 1 << 62, 1
OFFSET_MASK = 0x00fffffffffffe00

# Header fields: (name, offset, size, kind).
HEADER_FIELDS = [
    ("magic", 0, 4, "magic"), ("version", 4, 4, "count"),
    ("backing_file_offset", 8, 8, "offset"), ("backing_file_size", 16, 4,
                                              "count"),
    ("cluster_bits", 20, 4, "count"), ("size", 24, 8, "count"),
    ("crypt_method", 32, 4, "count"), ("l1_size", 36, 4, "count"),
    ("l1_table_offset", 40, 8, "offset"),
    ("refcount_table_offset", 48, 8, "offset"),
    ("refcount_table_clusters", 56, 4, "count"),
    ("nb_snapshots", 60, 4, "count"), ("snapshots_offset", 64, 8, "offset"),
]
HEADER_V3_FIELDS = [
    ("incompatible_features", 72, 8, "flags"),
    ("compatible_features", 80, 8, "flags"),
    ("autoclear_features", 88, 8, "flags"),
    ("refcount_order", 96, 4, "count"), ("header_length", 100, 4, "count"),
]


def be(data, off, size):
    return int.from_bytes(data[off:off + size], "big")


class Image:
    """The metadata fields of one qcow2 file, as (name, offset, size, kind)."""

    def __init__(self, data):
        self.data = data
        self.fields = []
        self.cluster_bits = be(data, 20, 4)
        self.cs = 1 << self.cluster_bits
        self.version = be(data, 4, 4)
        self.fields += HEADER_FIELDS
        if self.version >= 3:
            self.fields += HEADER_V3_FIELDS
        self.l1 = be(data, 40, 8)
        self.rt = be(data, 48, 8)
        self.anchors = [0, self.l1, self.rt, len(data)]
        self._extensions()
        self._l1_l2(self.l1, be(data, 36, 4), "L1", "L2")
        self._refcounts()
        self._snapshots()

    def add(self, name, off, size, kind):
        if 0 <= off and off + size <= len(self.data):
            self.fields.append((name, off, size, kind))

    def _extensions(self):
        off = be(self.data, 100, 4) if self.version >= 3 else 72
        while off + 8 <= min(len(self.data), self.cs):
            typ, ln = be(self.data, off, 4), be(self.data, off + 4, 4)
            self.add("ext %#x type" % typ, off, 4, "flags")
            self.add("ext %#x length" % typ, off + 4, 4, "count")
            if typ == 0:
                break
            for i in range(0, min(ln, 64), 8 if ln >= 8 else 4):
                self.add("ext %#x data+%d" % (typ, i), off + 8 + i,
                         8 if ln - i >= 8 else 4, "offset" if
                         typ == 0x23852875 and i == 16 else "count")
            if typ == 0x23852875 and ln >= 24:
                self._bitmaps(be(self.data, off + 8, 4),
                              be(self.data, off + 24, 8))
            off += 8 + (ln + 7) // 8 * 8

    def _l1_l2(self, l1, n, l1name, l2name):
        for i in range(min(n, 64)):
            e = be(self.data, l1 + 8 * i, 8)
            self.add("%s[%d]" % (l1name, i), l1 + 8 * i, 8, "entry")
            l2 = e & OFFSET_MASK
            if l2 and l2 + self.cs <= len(self.data):
                self.anchors.append(l2)
                for j in range(self.cs // 8):
                    if be(self.data, l2 + 8 * j, 8) or j < 4:
                        self.add("%s[%d][%d]" % (l2name, i, j), l2 + 8 * j, 8,
                                 "entry")

    def _refcounts(self):
        width = 1 << be(self.data, 96, 4) if self.version >= 3 else 16
        n = be(self.data, 56, 4) * self.cs // 8
        for i in range(min(n, 64)):
            e = be(self.data, self.rt + 8 * i, 8)
            if e or i < 2:
                self.add("reftable[%d]" % i, self.rt + 8 * i, 8, "offset")
            rb = e & OFFSET_MASK
            if rb and rb + self.cs <= len(self.data) and width >= 8:
                self.anchors.append(rb)
                step = width // 8
                for k in range(0, min(self.cs, len(self.data) // self.cs *
                                      step), step):
                    self.add("refblock[%d][%d]" % (i, k // step), rb + k, step,
                             "refcount")

    def _snapshots(self):
        n, off = be(self.data, 60, 4), be(self.data, 64, 8)
        for i in range(min(n, 8)):
            if off + 40 > len(self.data):
                return
            self.add("snapshot[%d] l1_offset" % i, off, 8, "offset")
            self.add("snapshot[%d] l1_size" % i, off + 8, 4, "count")
            self.add("snapshot[%d] id_size" % i, off + 12, 2, "count")
            self.add("snapshot[%d] name_size" % i, off + 14, 2, "count")
            self.add("snapshot[%d] extra_size" % i, off + 36, 4, "count")
            self._l1_l2(be(self.data, off, 8), be(self.data, off + 8, 4),
                        "snapshot[%d] L1" % i, "snapshot[%d] L2" % i)
            ln = (40 + be(self.data, off + 36, 4) + be(self.data, off + 12, 2)
                  + be(self.data, off + 14, 2))
            off += (ln + 7) // 8 * 8

    def _bitmaps(self, n, off):
        for i in range(min(n, 4)):
            if off + 24 > len(self.data):
                return
            self.add("bitmap[%d] table_offset" % i, off, 8, "offset")
            self.add("bitmap[%d] table_size" % i, off + 8, 4, "count")
            self.add("bitmap[%d] flags" % i, off + 12, 4, "flags")
            self.add("bitmap[%d] type" % i, off + 16, 1, "count")
            self.add("bitmap[%d] granularity" % i, off + 17, 1, "count")
            self.add("bitmap[%d] name_size" % i, off + 18, 2, "count")
            self.add("bitmap[%d] extra_size" % i, off + 20, 4, "count")
            t = be(self.data, off, 8)
            if t and t + 8 <= len(self.data):
                self.add("bitmap[%d] table[0]" % i, t, 8, "entry")
            ln = 24 + be(self.data, off + 20, 4) + be(self.data, off + 18, 2)
            off += (ln + 7) // 8 * 8


def new_value(rng, img, old, size, kind):
    top = (1 << (8 * size)) - 1
    cs, end = img.cs, len(img.data)
    common = [0, top, old + 1, (old - 1) & top, old ^ (1 << rng.randrange(
        8 * size)), rng.getrandbits(8 * size)]
    if kind in ("offset", "entry"):
        flags = old & (COPIED | COMPRESSED | ZERO) if kind == "entry" else 0
        places = [rng.choice(img.anchors), cs // 2, 0x1000 if cs > 0x1000
                  else cs + 0x200, end, end + cs, 1 << 40,
                  (1 << 55) - cs, (old & OFFSET_MASK) + cs,
                  (old & OFFSET_MASK) + 0x200]
        vals = [(p | flags) & top for p in places]
        if kind == "entry":
            vals += [old ^ COPIED, old ^ COMPRESSED, old ^ ZERO,
                     old | COMPRESSED | (rng.getrandbits(20) << 40)]
        return rng.choice(vals + common)
    if kind == "count":
        return rng.choice(common + [1, 2, old * 2 & top, old // 2, 0x7fffffff
                                    & top, 9, 21, 22, 65536 & top])
    if kind == "refcount":
        return rng.choice([0, 0, 1, 2, top, (old - 1) & top])
    if kind == "magic":
        return rng.choice(common)
    return rng.choice(common)  # flags


def mutate(rng, data):
    img = Image(data)
    out = bytearray(data)
    what = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        name, off, size, kind = rng.choice(img.fields)
        old = be(out, off, size)
        v = new_value(rng, img, old, size, kind) & ((1 << (8 * size)) - 1)
        out[off:off + size] = v.to_bytes(size, "big")
        what.append("%s %#x -> %#x" % (name, old, v))
    return bytes(out), "; ".join(what)


# --- the sound images --------------------------------------------------------
def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def base_images(d):
    made = []

    def img(name, opts, size, *io, after=None):
        p = os.path.join(d, name + ".qcow2")
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, p, size)
        for c in io:
            run("qemu-io", "-f", "qcow2", "-c", c, p)
        if after:
            after(p)
        made.append(p)

    img("c64k", "cluster_size=65536", "4M", "write -P 1 0 128k",
        "write -P 2 1M 64k", "write -z 2M 64k")
    img("c4k", "cluster_size=4096", "8M", "write -P 3 0 64k",
        "write -P 4 4M 8k")
    img("c512", "cluster_size=512", "1M", "write -P 5 0 8k",
        "write -P 6 600k 4k")
    img("v2", "compat=0.10,cluster_size=4096", "4M", "write -P 7 64k 16k")
    img("rc1", "refcount_bits=1,cluster_size=4096", "4M", "write -P 8 0 16k")
    img("rc64", "refcount_bits=64,cluster_size=4096", "4M",
        "write -P 9 0 16k")
    img("snap", "cluster_size=4096", "4M", "write -P 10 0 16k",
        after=lambda p: (run("qemu-img", "snapshot", "-c", "s1", p),
                         run("qemu-io", "-f", "qcow2", "-c",
                             "write -P 11 4k 4k", p)))
    img("bitmap", "cluster_size=4096", "4M", "write -P 12 0 16k",
        after=lambda p: run("qemu-img", "bitmap", "--add", p, "b0"))

    def crash(p):
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 13 8k 8k",
                        "-c", "abort", p], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    img("dirty", "lazy_refcounts=on,cluster_size=4096", "4M",
        "write -P 14 0 8k", after=crash)
    raw = os.path.join(d, "src.raw")
    with open(raw, "wb") as f:
        f.write(b"\x2a" * 65536 + os.urandom(16384))
    p = os.path.join(d, "compressed.qcow2")
    run("qemu-img", "convert", "-c", "-O", "qcow2", "-o", "cluster_size=4096",
        raw, p)
    made.append(p)
    return made


# --- one trial ------------------------------------------------------------------
class Trial:
    def __init__(self, args, work):
        self.args, self.work = args, work
        self.sock = os.path.join(work, "s.sock")

    def start(self, img):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        if self.args.qemu_nbd:
            cmd = ["qemu-nbd", "-t", "-f", "qcow2", "-k", self.sock, img]
        else:
            cmd = [self.args.server, "-t", "-f", "qcow2", "-k", self.sock,
                   img]
        self.err = open(os.path.join(self.work, "err"), "w+")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=self.err)
        deadline = time.time() + self.args.timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return "exited"
            if os.path.exists(self.sock):
                return "up"
            time.sleep(0.01)
        return "hang"

    def stderr(self):
        self.err.flush()
        self.err.seek(0)
        return self.err.read()

    def stop(self):
        """None when it stopped cleanly, else "crash" or "hang"."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(self.args.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "hang"
        if rc < 0 or "Sanitizer" in self.stderr() or "runtime error" in \
                self.stderr():
            return "crash"
        return None

    def io(self):
        """(verdict, offset, data): data is what an acknowledged write put."""
        h = nbd.NBD()
        try:
            h.connect_unix(self.sock)
        except nbd.Error as e:
            return ("crash" if self.proc.poll() is not None and
                    self.proc.returncode < 0 else "refused-connect"), 0, None
        size = h.get_size()
        n = min(4096, size)
        if n == 0:
            return "served", 0, None
        rng = random.Random(self.args.seed)
        off = rng.randrange(0, max(1, min(size, 64 << 20) - n + 1)) & ~511
        off = min(off, size - n)
        data = bytes(rng.getrandbits(8) for _ in range(16)) * (n // 16) + \
            b"\x5a" * (n % 16)
        acked = False
        try:
            flags = nbd.CMD_FLAG_FUA if h.can_fua() else 0
            h.pwrite(data, off, flags)
            acked = True
            back = h.pread(n, off)
            if back != data:
                return "data-lost", off, data
        except nbd.Error as e:
            if e.errnum is None and self.proc.poll() is not None:
                return "crash", off, None
        try:
            h.shutdown()
        except nbd.Error:
            pass
        return "served", off, data if acked else None


def check_after(img, off, data, had_magic):
    """An acknowledged write still reads back through qemu-img (when QEMU
    opens the image at all), and the header kept its magic (if the
    mutation left it one)."""
    with open(img, "rb") as f:
        if had_magic and f.read(4) != QCOW2_MAGIC:
            return "data-lost"
    if data is None:
        return None
    p = os.path.join(os.path.dirname(img), "back.raw")
    r = subprocess.run(["qemu-img", "dd", "-U", "-f", "qcow2", "-O", "raw",
                        "bs=%d" % len(data), "skip=%d" % (off // len(data)),
                        "count=1", "if=" + img, "of=" + p],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if r.returncode != 0 or off % len(data):
        return None  # QEMU will not read it: nothing to compare
    with open(p, "rb") as f:
        back = f.read()
    if len(back) != len(data):
        return None  # QEMU sees a smaller disk (sizes count in sectors)
    return None if back == data else "data-lost"


def trial(args, work, base, rng, counts, keep):
    img = os.path.join(work, "img.qcow2")
    with open(base, "rb") as f:
        data, what = mutate(rng, f.read())
    with open(img, "wb") as f:
        f.write(data)
    t = Trial(args, work)
    state = t.start(img)
    verdict = None
    if state == "hang":
        t.proc.kill()
        t.proc.wait()
        verdict = "hang"
    elif state == "exited":
        err = t.stderr().strip().splitlines()
        rc = t.proc.returncode
        if rc < 0 or "Sanitizer" in t.stderr():
            verdict = "crash"
        elif args.qemu_nbd:
            verdict = "refused"
        else:
            verdict = "refused" if rc == 1 and len(err) == 1 else \
                "refused-multiline"
    else:
        verdict, off, written = t.io()
        stopped = t.stop()
        if verdict == "refused-connect":
            verdict = "served"
        if stopped and verdict != "data-lost":
            verdict = stopped
        if verdict == "served":
            verdict = check_after(img, off, written,
                                  data[:4] == QCOW2_MAGIC) or "served"
    counts[verdict] = counts.get(verdict, 0) + 1
    if verdict not in ("served", "refused"):
        print("%s: %s: %s\n    %s" % (verdict, os.path.basename(base), what,
                                      t.stderr().strip()[:600].replace(
                                          "\n", "\n    ")))
        if keep:
            n = sum(counts.values())
            shutil.copy(os.path.join(work, "img.qcow2"),
                        os.path.join(keep, "%s-%04d.qcow2" % (verdict, n)))
            with open(os.path.join(keep, "%s-%04d.txt" % (verdict, n)),
                      "w") as f:
                f.write("%s\n%s\n" % (what, t.stderr()))
    t.err.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--server", default=os.environ.get("SNAPNBD", "snapnbd"))
    ap.add_argument("--qemu-nbd", action="store_true")
    ap.add_argument("--keep", help="copy bad images and their logs here")
    ap.add_argument("--timeout", type=float, default=20)
    args = ap.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    print("qcow2-image-fuzz: seed %d (--seed %d replays it), %d images, %s"
          % (args.seed, args.seed, args.count,
             "qemu-nbd" if args.qemu_nbd else args.server))
    sys.stdout.flush()
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    rng = random.Random(args.seed)
    counts = {}
    with tempfile.TemporaryDirectory(prefix="qcow2-image-fuzz.") as d:
        bases = base_images(d)
        work = os.path.join(d, "work")
        os.mkdir(work)
        for i in range(args.count):
            args.seed = rng.randrange(1 << 30)  # the write's place and data
            trial(args, work, rng.choice(bases), rng, counts, args.keep)
            sys.stdout.flush()
    order = ["refused", "served", "refused-multiline", "crash", "hang",
             "data-lost"]
    print("qcow2-image-fuzz: " + ", ".join("%s %d" % (k, counts.get(k, 0))
                                         for k in order))
    bad = sum(counts.get(k, 0) for k in order[2:])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
