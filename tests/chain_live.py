"""block-commit and block-stream under concurrent writes (see
test-commit-stream.sh).  Usage: chain_live.py QMP NBDSOCK DIR SEED [qsd]

With "qsd" the same sequence runs against qemu-storage-daemon, without
the commit whose header write fails: QEMU 7.2 crashes there
("Could not update backing file link: No space left on device", then
SIGSEGV).

Every chain is built by qemu-img/qemu-io from random layers; what the
export shows at first must be what QEMU reads from the chain, and after
every job the export must hold exactly what the writers' model says."""
import random
import subprocess
import sys

import nbd
from jobs_qmp import QMP, make_disk
from live_writers import read_all, settle, start, stop, uri

MiB = 1 << 20
SIZE = 16 * MiB


def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def save(path, data):
    with open(path, "wb") as f:
        f.write(data)


def qemu_reads(path):
    """The guest view of an image chain, as QEMU reads it."""
    run("qemu-img", "convert", "-U", "-O", "raw", path, path + ".view")
    with open(path + ".view", "rb") as f:
        return f.read()


def make_chain(d, name, layers, seed, top_opts=()):
    """layers qcow2 images d/NAME-0 (random disk) <- ... <- d/NAME-(n-1),
    each above the first holding random patterned ranges."""
    rnd = random.Random(seed)
    paths = [f"{d}/{name}-{i}.qcow2" for i in range(layers)]
    make_disk(f"{d}/{name}.raw", SIZE, seed)
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2",
        f"{d}/{name}.raw", paths[0])
    for i in range(1, layers):
        opts = list(top_opts) if i == layers - 1 else []
        run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
            "-b", paths[i - 1], *opts, paths[i], str(SIZE))
        cmds = []
        for _ in range(rnd.randrange(4, 12)):
            ln = rnd.choice((4096, 65536, 300 * 1024, MiB))
            off = rnd.randrange(0, SIZE - ln) & ~511
            if rnd.randrange(4):
                cmds += ["-c", f"write -P {rnd.randrange(1, 256)} {off} {ln}"]
            else:
                cmds += ["-c", f"write -z {off} {ln}"]
        run("qemu-io", "-f", "qcow2", *cmds, paths[i])
    return paths


def add_chain(q, name, paths, read_only_below=True):
    """blockdev-add of every layer, named NAME-i, each the backing of the
    next; the lower ones read-only, as management layers add them."""
    backing = None
    for i, p in enumerate(paths):
        opts = {"driver": "qcow2", "node-name": f"{name}-{i}",
                "file": {"driver": "file", "filename": p},
                "backing": backing}
        if read_only_below and i < len(paths) - 1:
            opts["read-only"] = True
        q.cmd("blockdev-add", opts)
        backing = f"{name}-{i}"


def export(q, node):
    q.cmd("block-export-add", {"type": "nbd", "id": "live", "name": "live",
                               "node-name": node, "writable": True})


def unexport(q):
    q.cmd("block-export-del", {"id": "live", "mode": "hard"})
    q.wait_event("BLOCK_EXPORT_DELETED", id="live")


def backing_of(q, node):
    for n in q.cmd("query-named-block-nodes"):
        if n["node-name"] == node:
            return n.get("backing_file")
    raise AssertionError(f"node {node} is gone")


def marker(sock, model, off, byte):
    h = nbd.NBD()
    h.connect_uri(uri(sock))
    h.pwrite(bytes([byte]) * 65536, off)
    h.flush()
    h.shutdown()
    return model[:off] + bytes([byte]) * 65536 + model[off + 65536:]


def job_ok(q, job):
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device=job)
    assert "error" not in ev["data"], ev
    return ev


def commit_failing_header(q, sock, d, model, seed):
    """The overlay's header cannot take the new name (1 KiB clusters):
    the job fails, the chain and every byte stay as they were."""
    ws, ts = start(sock, SIZE, seed, model)
    settle(ws)
    q.cmd("block-commit", {"job-id": "c0", "device": "a-2",
                           "top-node": "a-1", "base-node": "a-0",
                           "backing-file": "/" + "x" * 1000})
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device="c0")
    assert "error" in ev["data"], f"a header that cannot fit passed: {ev}"
    settle(ws)
    model = stop(ws, ts)
    assert backing_of(q, "a-2") == f"{d}/a-1.qcow2", "the chain changed"
    assert read_all(sock, SIZE) == model, "a failed commit changed the disk"
    return model


def commit_intermediate(q, sock, d, model, seed):
    """a-1 into a-0 while the writers write a-2; a-2's header then names
    a-0 by the given relative name."""
    ws, ts = start(sock, SIZE, seed, model)
    settle(ws)
    q.cmd("block-commit", {"job-id": "c1", "device": "a-2",
                           "top-node": "a-1", "base-node": "a-0",
                           "backing-file": "a-0.qcow2", "speed": 64 * MiB})
    job_ok(q, "c1")
    settle(ws)
    model = stop(ws, ts)
    assert read_all(sock, SIZE) == model, "the commit lost data"
    assert backing_of(q, "a-2") == f"{d}/a-0.qcow2", backing_of(q, "a-2")
    r = q.execute("blockdev-del", {"node-name": "a-0"})
    assert "error" in r, "the new backing file could be deleted"
    return model


def commit_active(q, sock, d, model, seed):
    """a-2 (the active layer) into a-0: ready, complete under writes, the
    export then writes into a-0."""
    ws, ts = start(sock, SIZE, seed, model)
    q.cmd("block-commit", {"job-id": "c2", "device": "a-2"})
    q.wait_event("BLOCK_JOB_READY", device="c2")
    settle(ws)
    q.cmd("job-complete", {"id": "c2"})
    job_ok(q, "c2")
    settle(ws)
    model = stop(ws, ts)
    model = marker(sock, model, 2 * MiB, 0xe1)
    assert read_all(sock, SIZE) == model, "the active commit lost data"
    exports = q.cmd("query-block-exports")
    assert exports[0]["node-name"] == "a-0", exports
    save(f"{d}/a-final.raw", model)
    return model


def stream(q, sock, d, seed):
    """b-3 <- b-2 <- b-1 <- b-0: stream b-2 and b-1 into b-3 down to b-0
    under writes, then the rest of the chain."""
    paths = make_chain(d, "b", 4, seed + 100)
    add_chain(q, "b", paths)
    export(q, "b-3")
    model = read_all(sock, SIZE)
    assert model == qemu_reads(paths[3]), "the chain reads wrong"
    ws, ts = start(sock, SIZE, seed + 1, model)
    settle(ws)
    q.cmd("block-stream", {"job-id": "s1", "device": "b-3",
                           "base-node": "b-0", "filter-node-name": "cor"})
    job_ok(q, "s1")
    settle(ws)
    names = [n["node-name"] for n in q.cmd("query-named-block-nodes")]
    assert "cor" not in names, "the stream's filter stayed"
    q.cmd("block-stream", {"job-id": "s2", "device": "b-3"})
    job_ok(q, "s2")
    settle(ws)
    model = stop(ws, ts)
    assert backing_of(q, "b-3") is None, backing_of(q, "b-3")
    model = marker(sock, model, 5 * MiB, 0xe2)
    assert read_all(sock, SIZE) == model, "the stream lost data"
    save(f"{d}/b-final.raw", model)
    unexport(q)


def commit_grows_base(q, d):
    """A 4 MiB base under a 16 MiB overlay grows when committed into."""
    run("qemu-img", "create", "-q", "-f", "qcow2", f"{d}/g-0.qcow2", "4M")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
        f"{d}/g-0.qcow2", f"{d}/g-1.qcow2", "16M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5c 10M 1M",
        f"{d}/g-1.qcow2")
    add_chain(q, "g", [f"{d}/g-0.qcow2", f"{d}/g-1.qcow2"])
    q.cmd("block-commit", {"job-id": "cg", "device": "g-1"})
    q.wait_event("BLOCK_JOB_READY", device="cg")
    q.cmd("job-complete", {"id": "cg"})
    job_ok(q, "cg")


def commit_masks_protocol(q, d):
    """A base that is a protocol node (driver file, no format layer) is
    named as format raw with backing-mask-protocol."""
    run("qemu-img", "create", "-q", "-f", "raw", f"{d}/r-0.raw", "4M")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
        f"{d}/r-0.raw", f"{d}/r-1.qcow2")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x6d 1M 1M",
        f"{d}/r-1.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
        f"{d}/r-1.qcow2", f"{d}/r-2.qcow2")
    q.cmd("blockdev-add", {"driver": "file", "node-name": "r-0",
                           "filename": f"{d}/r-0.raw", "read-only": True})
    q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "r-1",
                           "read-only": True, "backing": "r-0",
                           "file": {"driver": "file",
                                    "filename": f"{d}/r-1.qcow2"}})
    q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "r-2",
                           "backing": "r-1",
                           "file": {"driver": "file",
                                    "filename": f"{d}/r-2.qcow2"}})
    q.cmd("block-commit", {"job-id": "cr", "device": "r-2",
                           "top-node": "r-1", "base-node": "r-0",
                           "backing-mask-protocol": True})
    job_ok(q, "cr")


def main(qmp, sock, d, seed, peer=None):
    q = QMP(qmp)
    paths = make_chain(d, "a", 3, seed, top_opts=("-o", "cluster_size=1024"))
    add_chain(q, "a", paths)
    export(q, "a-2")
    model = read_all(sock, SIZE)
    assert model == qemu_reads(paths[2]), "the chain reads wrong"
    if peer != "qsd":
        model = commit_failing_header(q, sock, d, model, seed + 10)
    model = commit_intermediate(q, sock, d, model, seed + 20)
    commit_active(q, sock, d, model, seed + 30)
    unexport(q)
    stream(q, sock, d, seed)
    commit_grows_base(q, d)
    commit_masks_protocol(q, d)
    print("commits and streams done")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]),
         *sys.argv[5:])
