#!/usr/bin/python3
# random_io.py URI REFERENCE SEED COUNT [--granule N] [--no-trim] [--qd N]
#              [--limit BYTES] [--flush-every N]
#
# Random writes, write-zeroes (with and without may-trim) and trims of
# random sizes and alignments through NBD, up to QD requests in flight
# (never overlapping each other, though they may share clusters), mirrored
# into the raw file REFERENCE.  A trim is mirrored as zeroes on the whole
# granules (clusters) it covers, which is what a v3 qcow2 image exported
# with discard=unmap does; --no-trim leaves trims out.  The caller then
# compares the image with REFERENCE (qemu-img compare).  --limit keeps all
# requests below BYTES; --flush-every adds a flush after every N requests.
import os
import random
import sys

import nbd


def parse_args(argv):
    opts = {"granule": 65536, "trim": True, "qd": 16, "limit": None,
            "flush_every": 0}
    args = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--granule":
            opts["granule"] = int(argv[i + 1])
            i += 1
        elif a == "--no-trim":
            opts["trim"] = False
        elif a == "--qd":
            opts["qd"] = int(argv[i + 1])
            i += 1
        elif a == "--flush-every":
            opts["flush_every"] = int(argv[i + 1])
            i += 1
        elif a == "--limit":
            opts["limit"] = int(argv[i + 1])
            i += 1
        else:
            args.append(a)
        i += 1
    return args, opts


def random_range(rng, size, granule):
    """Offsets and lengths of all alignments; now and then whole granules."""
    kind = rng.random()
    if kind < 0.3:
        length = rng.randint(1, 4096)
    elif kind < 0.8:
        length = rng.randint(1, 4 * granule)
    else:
        length = granule * rng.randint(1, 8)
    length = min(length, size)
    if rng.random() < 0.3:
        offset = rng.randrange(0, size // granule) * granule
    else:
        offset = rng.randrange(0, size - length + 1)
    return offset, min(length, size - offset)


def overlaps(busy, off, length):
    return any(off < o + n and o < off + length for o, n in busy.values())


def mirror(ref, op, off, length, granule, size):
    if op == "trim":
        start = -(-off // granule) * granule
        end = off + length if off + length == size else \
            (off + length) // granule * granule
        if end <= start:
            return
        off, length = start, end - start
    if op != "write":
        os.pwrite(ref, bytes(length), off)


def main():
    args, opts = parse_args(sys.argv[1:])
    uri, ref_path, seed, count = args[0], args[1], int(args[2]), int(args[3])
    rng = random.Random(seed)
    h = nbd.NBD()
    h.connect_uri(uri)
    disk_size = h.get_size()
    size = min(disk_size, opts["limit"] or disk_size)
    ref = os.open(ref_path, os.O_RDWR)
    granule = opts["granule"]
    ops = ["write"] * 6 + ["zero", "zero_trim"] + (["trim"] if opts["trim"]
                                                   else [])
    busy = {}
    done = 0
    while done < count or busy:
        while done < count and len(busy) < opts["qd"]:
            off, length = random_range(rng, size, granule)
            if overlaps(busy, off, length):
                break
            op = rng.choice(ops)
            if op == "write":
                data = rng.randbytes(length)
                os.pwrite(ref, data, off)
                cookie = h.aio_pwrite(nbd.Buffer.from_bytearray(
                    bytearray(data)), off)
            elif op == "trim":
                cookie = h.aio_trim(length, off)
            else:
                flags = nbd.CMD_FLAG_NO_HOLE if op == "zero" else 0
                cookie = h.aio_zero(length, off, flags=flags)
            mirror(ref, op, off, length, granule, disk_size)
            busy[cookie] = (off, length)
            done += 1
            if opts["flush_every"] and done % opts["flush_every"] == 0:
                busy[h.aio_flush()] = (0, 0)
        h.poll(-1)
        for cookie in list(busy):
            if h.aio_command_completed(cookie):
                del busy[cookie]
    h.flush()
    h.shutdown()
    os.close(ref)


if __name__ == "__main__":
    try:
        main()
    except nbd.Error as e:
        print("random_io.py: seed %s: %s" % (sys.argv[3], e), file=sys.stderr)
        sys.exit(1)
