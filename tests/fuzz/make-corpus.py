#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/TARGET/).

The seeds are committed; this script says how they were made (it needs
qemu-img and qemu-io for the qcow2 seeds).  Run from anywhere:
    tests/fuzz/make-corpus.py
"""
import hashlib
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


# --- qcow2: mode byte (bit 0: writable) + image --------------------------
def qcow2_seeds():
    with tempfile.TemporaryDirectory() as t:
        def img(name, create_opts, *io, mode=1, after=None):
            p = os.path.join(t, name + ".qcow2")
            run("qemu-img", "create", "-q", "-f", "qcow2", "-o",
                "cluster_size=512," + create_opts, p, "1M")
            for c in io:
                run("qemu-io", "-f", "qcow2", "-c", c, p)
            if after:
                after(p)
            data = open(p, "rb").read()
            put("qcow2", name, bytes([mode]) + data)
            put("qcow2", name + "-ro", bytes([0]) + data)

        img("empty", "compat=1.1")
        img("data", "compat=1.1", "write -P 1 0 4k", "write -P 2 300k 2k",
            "write -z 600k 4k", mode=3)
        img("v2", "compat=0.10", "write -P 3 64k 1k", mode=5)
        img("refcount1", "refcount_bits=1", "write -P 4 0 1k")
        img("refcount64", "refcount_bits=64", "write -P 5 512k 1k", mode=7)
        img("lazy", "lazy_refcounts=on", "write -P 6 0 2k")

        def snapshot(p):
            run("qemu-img", "snapshot", "-c", "s1", p)
            run("qemu-io", "-f", "qcow2", "-c", "write -P 7 0 1k", p)
        img("snapshot", "compat=1.1", "write -P 8 0 2k", after=snapshot)

        def bitmap(p):
            run("qemu-img", "bitmap", "--add", p, "b0")
        img("bitmap", "compat=1.1", "write -P 9 0 1k", after=bitmap, mode=9)

        def dirty(p):
            # lazy refcounts, killed while dirty
            subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 10 4k 4k",
                            "-c", "abort", p], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        img("dirty", "lazy_refcounts=on", "write -P 11 0 1k", after=dirty,
            mode=11)

        src = os.path.join(t, "raw")
        with open(src, "wb") as f:
            f.write(b"\x2a" * 8192 + b"\0" * 8192)
        p = os.path.join(t, "compressed.qcow2")
        run("qemu-img", "convert", "-c", "-O", "qcow2", "-o",
            "cluster_size=512", src, p)
        data = open(p, "rb").read()
        put("qcow2", "compressed", bytes([1]) + data)
        put("qcow2", "compressed-ro", bytes([0]) + data)


# --- bitmap: flags, nb_bitmaps, dir_size, clusters 4.. ---------------------
def bitmap_seeds():
    def entry(table, name, gran=16, flags=0):
        e = struct.pack(">QIIBBHI", table, 1, flags, 1, gran, len(name), 0)
        e += name
        return e + b"\0" * (-len(e) % 8)

    for flags, tag in ((1, "rw"), (0, "ro"), (3, "dirty")):
        d = entry(5 * 512, b"b0")
        payload = d.ljust(512, b"\0")
        payload += struct.pack(">Q", 6 * 512).ljust(512, b"\0")  # table
        payload += b"\xff" * 2 + b"\0" * 510                       # data
        head = bytes([flags]) + struct.pack(">HH", 1, len(d))
        put("bitmap", "one-" + tag, head + payload)
    d = entry(5 * 512, b"all", flags=2) + entry(6 * 512, b"none", gran=9)
    payload = d.ljust(512, b"\0") + struct.pack(">Q", 1).ljust(512, b"\0")
    payload += b"\0" * 512
    put("bitmap", "two", bytes([1]) + struct.pack(">HH", 2, len(d)) + payload)


# --- nbd: what a client sends ----------------------------------------------
IHAVEOPT = 0x49484156454F5054
REQ_MAGIC = 0x25609513


def opt(code, data=b""):
    return struct.pack(">QII", IHAVEOPT, code, len(data)) + data


def name_data(name, infos=()):
    return (struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos))
            + b"".join(struct.pack(">H", i) for i in infos))


def meta(name, queries):
    d = struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries))
    for q in queries:
        d += struct.pack(">I", len(q)) + q
    return d


def req(typ, offset=0, length=0, flags=0, handle=1, payload=b""):
    return struct.pack(">IHHQQI", REQ_MAGIC, flags, typ, handle, offset,
                       length) + payload


def nbd_seeds():
    flags = struct.pack(">I", 3)  # fixed newstyle, no zeroes
    io = (req(1, 4096, 512, payload=b"\x55" * 512) + req(0, 4096, 512)
          + req(6, 0, 65536, flags=2) + req(4, 8192, 4096) + req(3)
          + req(5, 0, 4096) + req(0, 1048000, 1024) + req(2))
    put("nbd", "export-name", b"\0" + flags + opt(1, b"") + io)
    put("nbd", "go-structured",
        b"\0" + flags + opt(8) + opt(10, meta(b"", [b"base:allocation"]))
        + opt(7, name_data(b"", (0, 1, 2, 3))) + io[:-len(req(2))]
        + req(7, 0, 1048576) + req(0, 0, 131072, flags=4) + req(2))
    put("nbd", "options",
        b"\0" + flags + opt(3) + opt(6, name_data(b"ro", (3,))) + opt(5) + opt(9)
        + opt(10, meta(b"ro", [b"qemu:", b"base:"])) + opt(99, b"xyz")
        + opt(7, name_data(b"nope")) + opt(2))
    put("nbd", "read-only",
        b"\0" + flags + opt(8)
        + opt(10, meta(b"ro", [b"qemu:allocation-depth", b"base:allocation"]))
        + opt(7, name_data(b"ro", (3,))) + req(1, 0, 512, payload=b"x" * 512)
        + req(7, 0, 65536) + req(0, 0, 512) + req(2))
    # TLS required: refusals before STARTTLS, then a handshake of garbage
    # (a real ClientHello start: record type 22, TLS 1.0).
    put("nbd", "tls-refused",
        b"\1" + flags + opt(3) + opt(7, name_data(b"")) + opt(1, b""))
    put("nbd", "tls-starttls",
        b"\1" + flags + opt(8) + opt(5)
        + b"\x16\x03\x01\x00\x30\x01\x00\x00\x2c\x03\x03" + b"\0" * 40)


# --- qmp -----------------------------------------------------------------------
def qmp_seeds():
    put("qmp", "basic", b'{"execute": "qmp_capabilities"}\n'
        b'{"execute": "query-version"}{"execute": "query-commands"}\n'
        b'{"execute": "query-named-block-nodes", "arguments": {"flat": true}}'
        b'\n{"execute": "query-jobs"} {"execute": "query-block-exports"}\n')
    put("qmp", "blockdev", b'{"execute": "blockdev-add", "arguments": '
        b'{"driver": "null-co", "node-name": "n0", "size": 1048576}}\n'
        b'{"execute": "block-dirty-bitmap-add", "arguments": {"node": "n0",'
        b' "name": "b0", "granularity": 65536}}\n'
        b'{"execute": "transaction", "arguments": {"actions": [{"type": '
        b'"block-dirty-bitmap-clear", "data": {"node": "n0", "name": "b0"}}]}}'
        b'\n{"execute": "block-dirty-bitmap-remove", "arguments": '
        b'{"node": "n0", "name": "b0"}}\n'
        b'{"execute": "blockdev-del", "arguments": {"node-name": "n0"}}\n')
    put("qmp", "create", b'{"execute": "blockdev-create", "arguments": '
        b'{"job-id": "c1", "options": {"driver": "file", "filename": "a.img",'
        b' "size": 0}}}\n{"execute": "query-jobs"}\n'
        b'{"execute": "blockdev-add", "arguments": {"driver": "file", '
        b'"node-name": "f0", "filename": "a.img"}}\n'
        b'{"execute": "blockdev-create", "arguments": {"job-id": "c2", '
        b'"options": {"driver": "qcow2", "file": "f0", "size": 1048576, '
        b'"cluster-size": 512}}}\n{"execute": "job-dismiss", "arguments": '
        b'{"id": "c1"}}\n')
    put("qmp", "backup", b'{"execute": "blockdev-add", "arguments": '
        b'{"driver": "null-co", "node-name": "s", "size": 1048576}}\n'
        b'{"execute": "blockdev-add", "arguments": {"driver": "null-co", '
        b'"node-name": "t", "size": 1048576}}\n'
        b'{"execute": "blockdev-backup", "arguments": {"job-id": "j", '
        b'"device": "s", "target": "t", "sync": "full", "speed": 0}}\n'
        b'{"execute": "job-pause", "arguments": {"id": "j"}}\n'
        b'{"execute": "query-jobs"}{"execute": "job-cancel", "arguments": '
        b'{"id": "j"}}\n')
    put("qmp", "lexer", b"{'execute': 'query-version', 'id': [1, 2.5e3, "
        b"null, true, \"\\u00e9\\xC0\\x80\"]}\n{\"a\": }\n[1, 2\n"
        b"{\"execute\": 3}\n\xff\xfe{\"execute\": \"x\"}}]\n")


# --- manifest -------------------------------------------------------------
def manifest_seeds():
    sums = ("# snapnbd-backup sums 1\n0 4194304 data " + "ab" * 32
            + "\n8388608 2097152 zero\n")
    sha = hashlib.sha256(sums.encode()).hexdigest()
    m = ("[backup]\nformat=1\nname=0001-full\nkind=full\nsequence=1\n"
         "source=nbd+unix:///?socket=/tmp/s\nexport-size=16777216\n"
         "started=2026-01-01T00:00:00Z\nseconds=0.5\nbytes-read=4194304\n"
         "bytes-dirty=16777216\nbytes-data=4194304\nbytes-zero=2097152\n"
         "extents=2\nsums-sha256=" + sha + "\n")
    put("manifest", "full", (m + "--sums--\n" + sums).encode())
    put("manifest", "inc", m.replace("kind=full", "kind=inc").replace(
        "sequence=1", "parent=0000-full\nbitmap=b0\nsequence=1").encode())
    put("manifest", "manifest-only", m.encode())


if __name__ == "__main__":
    qcow2_seeds()
    bitmap_seeds()
    nbd_seeds()
    qmp_seeds()
    manifest_seeds()
    sys.exit(0)
