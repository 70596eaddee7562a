#!/usr/bin/python3
"""bitmap_sha256 - x-debug-block-dirty-bitmap-sha256 against a model.

    bitmap_sha256.py snapnbd|qsd|both [SEED [ROUNDS]]

Each round makes a raw disk of a random size (not always a multiple of
the granularity) and dirty bitmaps of random granularities on it, sends
seeded random writes, write-zeroes and discards over NBD, and now and
then clears or disables a bitmap.  A model computes which granules each
bitmap holds; the daemon's x-debug-block-dirty-bitmap-sha256 must be the
SHA-256 of the model's bits laid out as QEMU's hbitmap holds them (little
endian 64-bit words, at least one), and its count the model's.  With
"both", qemu-storage-daemon runs the same operations and its hashes must
be the same too.  Bitmaps are listed newest first, as QEMU lists them.
Then the command's errors.  A failure names the seed,
the round and the bitmap.
"""
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import nbd

from jobs_qmp import QMP

KiB, MiB = 1 << 10, 1 << 20


class Daemon:
    def __init__(self, which, tmp):
        self.which = which
        self.qmp_path = f"{tmp}/{which}.qmp"
        self.sock = f"{tmp}/{which}.sock"
        argv = ([os.environ["SNAPNBD"]] if which == "snapnbd"
                else ["qemu-storage-daemon"])
        argv += ["--chardev",
                 f"socket,id=m0,path={self.qmp_path},server=on,wait=off",
                 "--monitor", "m0",
                 "--nbd-server", f"addr.type=unix,addr.path={self.sock}"]
        self.proc = subprocess.Popen(argv)
        self.qmp = QMP(self.qmp_path)

    def command(self, cmd, /, **args):
        return self.qmp.execute(cmd, args or None)

    def must(self, cmd, /, **args):
        return self.qmp.cmd(cmd, args or None)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def model_hash(bits, nbits):
    words = max((nbits + 63) // 64, 1)
    data = bytearray(words * 8)
    for g in bits:
        data[g // 8] |= 1 << (g % 8)
    return hashlib.sha256(bytes(data)).hexdigest()


def one_round(daemons, tmp, rng, label):
    size = rng.choice([64 * KiB, MiB, 3 * MiB + 512, 16 * MiB - 4096,
                       rng.randrange(1, 64) * 512 * 1024 + rng.choice([0, 512])])
    grans = rng.sample([512, 4 * KiB, 64 * KiB, 128 * KiB, MiB], 3)
    handles = {}
    for d in daemons:
        image = f"{tmp}/{d.which}-{label}.raw"
        with open(image, "wb") as f:
            f.truncate(size)
        d.must("blockdev-add", **{"driver": "raw", "node-name": "d" + label,
                                  "discard": "unmap",
                                  "file": {"driver": "file",
                                           "filename": image}})
        for i, g in enumerate(grans):
            d.must("block-dirty-bitmap-add", node="d" + label,
                   name=f"b{i}", granularity=g)
        d.must("block-export-add", type="nbd", id="e" + label,
               **{"node-name": "d" + label}, name="x" + label,
               writable=True)
        h = nbd.NBD()
        h.set_export_name("x" + label)
        h.connect_unix(d.sock)
        handles[d.which] = h
    model = [set() for _ in grans]
    enabled = [True] * len(grans)
    for _ in range(rng.randrange(1, 60)):
        off = rng.randrange(0, size)
        length = min(rng.choice([1, 512, 4096, 65536, 300000]), size - off)
        op = rng.choice(["write", "write", "zero", "trim", "clear",
                         "toggle"])
        i = rng.randrange(len(grans))
        if op == "clear":
            for d in daemons:
                d.must("block-dirty-bitmap-clear", node="d" + label,
                       name=f"b{i}")
            model[i].clear()
            continue
        if op == "toggle":
            cmd = "disable" if enabled[i] else "enable"
            for d in daemons:
                d.must(f"block-dirty-bitmap-{cmd}", node="d" + label,
                       name=f"b{i}")
            enabled[i] = not enabled[i]
            continue
        for h in handles.values():
            if op == "write":
                h.pwrite(bytes([rng.randrange(256)]) * length, off)
            elif op == "zero":
                h.zero(length, off)
            else:
                h.trim(length, off)
        for j, g in enumerate(grans):
            if enabled[j]:
                model[j].update(range(off // g, (off + length - 1) // g + 1))
    for h in handles.values():
        h.flush()
        h.shutdown()
    bad = []
    for i, g in enumerate(grans):
        nbits = (size + g - 1) // g
        want = model_hash(model[i], nbits)
        for d in daemons:
            got = d.must("x-debug-block-dirty-bitmap-sha256",
                         node="d" + label, name=f"b{i}")["sha256"]
            info = d.must("query-named-block-nodes", flat=True)
            node = [n for n in info if n["node-name"] == "d" + label][0]
            count = [b for b in node["dirty-bitmaps"]
                     if b["name"] == f"b{i}"][0]["count"]
            if got != want or count != len(model[i]) * g:
                bad.append(f"{d.which}: round {label} bitmap b{i} "
                           f"(granularity {g}, disk {size}): sha256 {got} "
                           f"count {count}, model {want} "
                           f"{len(model[i])} granules")
    for d in daemons:
        info = d.must("query-named-block-nodes", flat=True)
        names = [b["name"] for n in info if n["node-name"] == "d" + label
                 for b in n["dirty-bitmaps"]]
        want = [f"b{i}" for i in reversed(range(len(grans)))]
        if names != want:
            bad.append(f"{d.which}: round {label}: bitmaps listed as {names},"
                       f" QEMU lists the newest first: {want}")
    for d in daemons:
        d.must("block-export-del", id="e" + label)
        for _ in range(100):
            if not d.must("query-block-exports"):
                break
            time.sleep(0.02)
        d.must("blockdev-del", **{"node-name": "d" + label})
    return bad


def errors(daemons):
    lines = {}
    for d in daemons:
        out = []
        for args in ({"node": "nope", "name": "b0"},
                     {"node": "e", "name": "nope"},
                     {"node": "e"},
                     {"name": "b0"}):
            r = d.command("x-debug-block-dirty-bitmap-sha256", **args)
            out.append(f"{json.dumps(args)}: " + (
                "error %s: %s" % (r["error"]["class"], r["error"]["desc"])
                if "error" in r else "ok"))
        lines[d.which] = out
    return lines


def main(which, seed, rounds):
    names = ["snapnbd", "qsd"] if which == "both" else [which]
    tmp = tempfile.mkdtemp()
    daemons = [Daemon(n, tmp) for n in names]
    rng = random.Random(seed)
    bad = []
    try:
        for d in daemons:
            d.must("blockdev-add", driver="null-co", **{"node-name": "e"})
        for r in range(rounds):
            bad += one_round(daemons, tmp, rng, str(r))
        errs = errors(daemons)
    finally:
        for d in daemons:
            d.stop()
        subprocess.run(["rm", "-rf", tmp])
    for line in errs[names[0]]:
        print(line)
    if len(names) == 2 and errs["snapnbd"] != errs["qsd"]:
        bad.append(f"errors differ: snapnbd {errs['snapnbd']}, "
                   f"qsd {errs['qsd']}")
    for b in bad:
        print(f"FAIL seed {seed}: {b}")
    print(f"seed {seed}: {rounds} rounds, {len(bad)} failures")
    return 1 if bad else 0


if __name__ == "__main__":
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else random.randrange(1 << 30)
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    sys.exit(main(sys.argv[1], seed, rounds))
