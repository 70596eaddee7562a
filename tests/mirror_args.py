"""blockdev-mirror and drive-mirror argument checks, with QEMU 7.2's error
texts; each case runs against snapnbd and, when given a second QMP socket,
against qemu-storage-daemon too, which must answer the same.
Usage: mirror_args.py DIR QMP [QSD_QMP]"""
import os
import subprocess
import sys

from jobs_qmp import QMP

MiB = 1 << 20

BASE = {"job-id": "j", "device": "src", "target": "tgt", "sync": "full"}

# (arguments over BASE, the error's words, or None: accepted)
BLOCKDEV_CASES = [
    ({"granularity": 100},
     "Parameter 'granularity' expects a value in range [512B, 64MB]"),
    ({"granularity": 128 * MiB},
     "Parameter 'granularity' expects a value in range [512B, 64MB]"),
    ({"granularity": 1000}, "Parameter 'granularity' expects a power of 2"),
    ({"buf-size": -1}, "Invalid parameter 'buf-size'"),
    ({"speed": -1}, "Parameter 'speed' expects a non-negative value"),
    ({"on-source-error": "bogus"},
     "Parameter 'on-source-error' does not accept value 'bogus'"),
    ({"on-target-error": "bogus"},
     "Parameter 'on-target-error' does not accept value 'bogus'"),
    ({"copy-mode": "bogus"},
     "Parameter 'copy-mode' does not accept value 'bogus'"),
    ({"sync": "bogus"}, "Parameter 'sync' does not accept value 'bogus'"),
    ({"replaces": "nope"}, "Failed to find node with node-name='nope'"),
    ({"replaces": "tgt"},
     "Cannot replace 'tgt' by a node mirrored from 'src', because it "
     "cannot be guaranteed that doing so would not lead to an abrupt "
     "change of visible data"),
    ({"target": "src"}, "Can't mirror node into itself"),
    ({"filter-node-name": "src"}, "Duplicate nodes with node-name='src'"),
    ({"filter-node-name": "1bad"}, "Invalid node-name: '1bad'"),
    ({"filter-node-name": "mtop", "copy-mode": "write-blocking"}, None),
    ({"device": "nope"}, "Cannot find device='nope' nor node-name='nope'"),
    ({"granularity": 512, "buf-size": 100, "speed": 1 << 30,
      "on-source-error": "stop", "on-target-error": "enospc",
      "copy-mode": "write-blocking", "auto-finalize": False,
      "auto-dismiss": False}, None),
    ({"granularity": 64 * MiB, "on-source-error": "ignore",
      "on-target-error": "report", "copy-mode": "background"}, None),
]

DRIVE_BASE = {"job-id": "d", "device": "src", "sync": "full"}
DRIVE_CASES = [
    ({"format": "bogus"}, "Unknown file format 'bogus'"),
    ({"mode": "bogus"}, "Parameter 'mode' does not accept value 'bogus'"),
    ({"mode": "existing", "target": "{d}/nonexist.qcow2"},
     "Could not open '{d}/nonexist.qcow2': No such file or directory"),
    ({"replaces": "src"}, "a node-name must be provided when replacing a "
                          "named node of the graph"),
    ({"granularity": 1000}, "Parameter 'granularity' expects a power of 2"),
    ({}, None),
    ({"sync": "top", "granularity": 4096, "unmap": False}, None),
    ({"sync": "none", "mode": "absolute-paths", "format": "qcow2",
      "node-name": "dm-node"}, None),
]


def setup(q, d, tag):
    for name in ("src", "tgt"):
        path = f"{d}/{tag}-{name}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path,
                        str(16 * MiB)], check=True)
        q.cmd("blockdev-add", {"driver": "qcow2", "node-name": name,
                               "file": {"driver": "file",
                                        "filename": path}})


def run(q, cmd, args, job):
    r = q.execute(cmd, args)
    if "return" in r:
        q.cmd("job-cancel", {"id": job})
        q.wait_event("JOB_STATUS_CHANGE", id=job, status="concluded")
        if args.get("auto-dismiss", True):
            q.wait_event("JOB_STATUS_CHANGE", id=job, status="null")
        else:
            q.cmd("job-dismiss", {"id": job})
        q.events.clear()
        return None
    q.events.clear()  # a job that failed at creation sent none, or its own
    return r["error"]["desc"]


def cases(d):
    for extra, want in BLOCKDEV_CASES:
        a = dict(BASE)
        a.update(extra)
        yield "blockdev-mirror", a, "j", want
    for i, (extra, want) in enumerate(DRIVE_CASES):
        a = dict(DRIVE_BASE, target=f"{d}/dm{i}.img")
        a.update({k: v.format(d=d) if isinstance(v, str) else v
                  for k, v in extra.items()})
        yield "drive-mirror", a, "d", want and want.format(d=d)


def job_bitmap_unreachable(name, q):
    """A running mirror's own bitmap is QEMU's anonymous one: no bitmap
    command reaches it (snapnbd names it "#mirror-ID" in messages; its
    removal by that name freed it under the job), and a user's bitmap may
    have that name.  The mirror "j" runs; the mistakes found."""
    bad = []
    if name == "qsd":
        q.cmd("blockdev-mirror", dict(BASE, speed=1))
    own = {"node": "src", "name": "#mirror-j"}
    for cmd in ("block-dirty-bitmap-remove", "block-dirty-bitmap-clear",
                "block-dirty-bitmap-disable"):
        err = q.execute(cmd, own).get("error", {}).get("desc")
        if err != "Dirty bitmap '#mirror-j' not found":
            bad.append(f"{name} {cmd} of the mirror's bitmap: {err!r}")
    q.cmd("block-dirty-bitmap-add", own)
    # (qsd lists its mirror's bitmap too, without a name)
    names = [b["name"] for n in q.cmd("query-named-block-nodes")
             if n["node-name"] == "src" for b in n.get("dirty-bitmaps", [])
             if "name" in b]
    if names != ["#mirror-j"]:
        bad.append(f"{name} src's bitmaps: {names}")
    q.cmd("block-dirty-bitmap-remove", own)
    if q.job("j")["status"] != "running":
        bad.append(f"{name} the mirror: {q.job('j')}")
    if name == "qsd":
        q.cmd("job-cancel", {"id": "j"})
        q.wait_event("JOB_STATUS_CHANGE", id="j", status="null")
        q.events.clear()
    return bad


def main(d, sock, qsd_sock=None):
    q = QMP(sock)
    setup(q, d, "s")
    qq = None
    if qsd_sock:
        qq = QMP(qsd_sock)
        setup(qq, d + "/qsd", "q")
    bad = []
    for cmd, a, job, want in cases(d):
        got = run(q, cmd, a, job)
        if got != want:
            bad.append(f"snapnbd {cmd} {a}: {got!r}, expected {want!r}")
        if qq:
            qa = dict(a)
            if cmd == "drive-mirror":
                qa["target"] = a["target"].replace(d, d + "/qsd", 1)
            qgot = run(qq, cmd, qa, job)
            qwant = want and want.replace(d, d + "/qsd")
            if qgot != qwant:
                bad.append(f"qsd {cmd} {qa}: {qgot!r}, expected {qwant!r}")
    # The new arguments show in query-block-jobs.
    q.cmd("blockdev-mirror", dict(BASE, **{"copy-mode": "write-blocking",
                                           "speed": 1}))
    j = q.job("j")
    assert j["x-copy-mode"] == "write-blocking", j
    assert j["actively-synced"] is False, j
    for name, qmp in (("snapnbd", q), ("qsd", qq)):
        if qmp is not None:
            bad += job_bitmap_unreachable(name, qmp)
    q.cmd("job-cancel", {"id": "j"})
    for b in bad:
        print(b)
    assert not bad, f"{len(bad)} argument checks differ"
    print("mirror arguments ok" + (", as qemu-storage-daemon" if qq else ""))


if __name__ == "__main__":
    os.makedirs(sys.argv[1] + "/qsd", exist_ok=True)
    main(*sys.argv[1:])
