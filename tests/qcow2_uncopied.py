#!/usr/bin/python3
"""L2 and L1 entries without the COPIED flag whose cluster has refcount 1
(tests/test-qcow2-uncopied.sh).

  qcow2_uncopied.py clear IMG SEED
      clears COPIED on a random part of the L2 entries of normal clusters
      and of the L1 entries of IMG; prints how many of each.
  qcow2_uncopied.py ops SEED SIZE CLUSTER OPS.json QEMUIO.cmds
      a random list of writes, write-zeroes (may unmap) and cluster-aligned
      discards, as JSON and as qemu-io commands.
  qcow2_uncopied.py apply URI OPS.json MODEL
      does the requests over NBD (each must succeed), then reads the whole
      disk back and compares it with MODEL (raw, updated by the requests).
  qcow2_uncopied.py point IMG GUEST TARGET
      points the L2 entry of guest offset GUEST at host cluster TARGET
      (l1, l2, reftable, refblock, or end: the first cluster past
      the end of the file), without COPIED; prints the host offset.
  qcow2_uncopied.py writes URI GOOD BAD CLUSTER
      writes GOOD and flushes, then 4 KiB at BAD; each must succeed and
      read back, and GOOD must still read back after BAD.
"""
import errno
import json
import random
import struct
import sys

import nbd

COPIED = 1 << 63
COMPRESSED = 1 << 62
ZERO = 1
OFFSET_MASK = 0x00fffffffffffe00


class Image:
    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.data = bytearray(f.read())
        (_, self.version, _, _, self.cluster_bits, self.size, _, self.l1_size,
         self.l1_offset, self.rt_offset, self.rt_clusters) = struct.unpack(
             ">IIQIIQIIQQI", self.data[:60])
        self.cs = 1 << self.cluster_bits
        self.refcount_order = (struct.unpack(">I", self.data[96:100])[0]
                               if self.version >= 3 else 4)

    def u64(self, off):
        return struct.unpack(">Q", self.data[off:off + 8])[0]

    def put(self, off, value):
        self.data[off:off + 8] = struct.pack(">Q", value)

    def save(self):
        with open(self.path, "wb") as f:
            f.write(self.data)

    def l1_slots(self):
        return [self.l1_offset + 8 * i for i in range(self.l1_size)]

    def l2_slots(self):
        """(slot offset, guest offset) of every L2 entry."""
        per = self.cs // 8
        for i, l1 in enumerate(self.l1_slots()):
            t = self.u64(l1) & OFFSET_MASK
            if t:
                for j in range(per):
                    yield t + 8 * j, (i * per + j) * self.cs

    def l2_slot(self, guest):
        per = self.cs // 8
        t = self.u64(self.l1_slots()[guest // self.cs // per]) & OFFSET_MASK
        assert t, "no L2 table for guest offset %d" % guest
        return t + 8 * (guest // self.cs % per)


def clear(path, seed):
    rng = random.Random(seed)
    img = Image(path)
    n_l2 = n_l1 = 0
    for slot, _ in img.l2_slots():
        e = img.u64(slot)
        if (e & COPIED) and not (e & COMPRESSED) and (e & OFFSET_MASK) \
                and rng.random() < 0.5:
            img.put(slot, e & ~COPIED)
            n_l2 += 1
    for slot in img.l1_slots():
        e = img.u64(slot)
        if (e & COPIED) and rng.random() < 0.3:
            img.put(slot, e & ~COPIED)
            n_l1 += 1
    img.save()
    print("cleared COPIED on %d L2 and %d L1 entries" % (n_l2, n_l1))
    assert n_l2 > 0


def ops(seed, size, cluster, ops_path, cmds_path):
    rng = random.Random(seed)
    out = []
    for i in range(120):
        kind = rng.choice(["write"] * 6 + ["zero", "discard"])
        if kind == "discard":
            off = rng.randrange(size // cluster) * cluster
            n = min(rng.randint(1, 4) * cluster, size - off)
        else:
            off = rng.randrange(size)
            n = min(rng.randint(1, 3 * cluster), size - off)
        out.append([kind, off, n, 1 + i % 255])
    with open(ops_path, "w") as f:
        json.dump(out, f)
    with open(cmds_path, "w") as f:
        for kind, off, n, pattern in out:
            f.write({"write": "write -P %d %d %d\n" % (pattern, off, n),
                     "zero": "write -z -u %d %d\n" % (off, n),
                     "discard": "discard %d %d\n" % (off, n)}[kind])


def apply(uri, ops_path, model_path):
    with open(ops_path) as f:
        todo = json.load(f)
    with open(model_path, "rb") as f:
        model = bytearray(f.read())
    h = nbd.NBD()
    h.connect_uri(uri)
    for kind, off, n, pattern in todo:
        if kind == "write":
            h.pwrite(bytes([pattern]) * n, off)
            model[off:off + n] = bytes([pattern]) * n
        elif kind == "zero":
            h.zero(n, off)
            model[off:off + n] = bytes(n)
        else:
            h.trim(n, off)
            model[off:off + n] = bytes(n)
    h.flush()
    step = 1 << 20
    for off in range(0, len(model), step):
        got = h.pread(min(step, len(model) - off), off)
        want = bytes(model[off:off + step])
        if got != want:
            i = next(k for k in range(len(got)) if got[k] != want[k])
            sys.exit("byte %d reads %#x, the model says %#x"
                     % (off + i, got[i], want[i]))
    h.shutdown()
    with open(model_path, "wb") as f:
        f.write(model)


def point(path, guest, target):
    img = Image(path)
    if target == "l1":
        host = img.l1_offset & ~(img.cs - 1)
    elif target == "l2":
        host = img.l2_slot(guest) & ~(img.cs - 1)
    elif target == "reftable":
        host = img.rt_offset
    elif target == "refblock":
        host = img.u64(img.rt_offset) & ~(img.cs - 1)
    elif target == "end":
        host = (len(img.data) + img.cs - 1) // img.cs * img.cs
    else:
        sys.exit("unknown target " + target)
    img.put(img.l2_slot(guest), host)
    img.save()
    print(host)


def writes(uri, good, bad, cluster):
    h = nbd.NBD()
    h.connect_uri(uri)
    h.pwrite(b"\x11" * cluster, good)
    h.flush()
    assert h.pread(cluster, good) == b"\x11" * cluster, "good write lost"
    h.pwrite(b"\x22" * 4096, bad)
    assert h.pread(4096, bad) == b"\x22" * 4096, "second write lost"
    assert h.pread(cluster, good) == b"\x11" * cluster, "good write lost"
    h.shutdown()


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "clear":
        clear(args[0], int(args[1]))
    elif cmd == "ops":
        ops(int(args[0]), int(args[1]), int(args[2]), args[3], args[4])
    elif cmd == "apply":
        apply(args[0], args[1], args[2])
    elif cmd == "point":
        point(args[0], int(args[1]), args[2])
    elif cmd == "writes":
        writes(args[0], int(args[1]), int(args[2]), int(args[3]))
    else:
        sys.exit("unknown command " + cmd)
