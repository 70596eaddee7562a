#!/usr/bin/python3
"""change_backing_file - change-backing-file, step by step.

    change_backing_file.py snapnbd|qsd DIR

Opens a chain base <- mid <- top (top added with blockdev-add, mid and
base opened read-only from its header) and a lone image, then sends
change-backing-file with bad and good arguments: each step's outcome, and
at the end what `qemu-img info` reads in top's and mid's headers (the
name and format written; QEMU writes the image's own format), one line
each, for the test to diff between qemu-storage-daemon and snapnbd.  It
also asserts what must hold whoever runs it: the changed images pass
`qemu-img check`, and mid, read-only, is read-only again afterwards.
"""
import json
import os
import shutil
import subprocess
import sys

from jobs_qmp import QMP


def img(*args):
    subprocess.run(["qemu-img"] + list(args), check=True,
                   stdout=subprocess.DEVNULL)


def main(which, d):
    os.makedirs(d, exist_ok=True)
    img("create", "-q", "-f", "qcow2", f"{d}/base.qcow2", "1M")
    img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2",
        f"{d}/mid.qcow2")
    img("create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2",
        f"{d}/top.qcow2")
    img("create", "-q", "-f", "qcow2", f"{d}/lone.qcow2", "1M")
    shutil.copy(f"{d}/base.qcow2", f"{d}/base2.qcow2")
    argv = (["qemu-storage-daemon"] if which == "qsd"
            else [os.environ["SNAPNBD"]])
    qmp_path = f"{d}/qmp.sock"
    daemon = subprocess.Popen(argv + [
        "--chardev", f"socket,id=m0,path={qmp_path},server=on,wait=off",
        "--monitor", "m0"])
    lines, failed = [], False
    try:
        q = QMP(qmp_path)
        q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "top",
                               "file": {"driver": "file",
                                        "filename": f"{d}/top.qcow2"}})
        q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "lone",
                               "file": {"driver": "file",
                                        "node-name": "lone-file",
                                        "filename": f"{d}/lone.qcow2"}})
        nodes = q.cmd("query-named-block-nodes", {"flat": True})
        mid = [n["node-name"] for n in nodes if n["drv"] == "qcow2" and
               n["image"]["filename"].endswith("/mid.qcow2")][0]

        def step(label, device, image, backing):
            r = q.execute("change-backing-file",
                          {"device": device, "image-node-name": image,
                           "backing-file": backing})
            lines.append(f"{label}: " + ("ok" if "return" in r else
                         f'{r["error"]["class"]}: {r["error"]["desc"]}'))

        step("no-device", "nope", "top", "x")
        step("not-root", mid, mid, "x")
        step("no-image", "top", "nope", "x")
        step("no-backing", "lone", "lone", "x")
        step("file-node", "lone", "lone-file", "x")
        step("top", "top", "top", "mid.qcow2")
        step("mid-read-only", "top", mid, "base2.qcow2")
        step("too-long", "top", "top", "y" * 1100)
        nodes = q.cmd("query-named-block-nodes", {"flat": True})
        ro = [n["ro"] for n in nodes if n["node-name"] == mid][0]
        lines.append(f"mid read-only after: {ro}")
        if not ro:
            failed = True
            lines.append("FAIL: mid stayed writable")
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
    for f in ("top", "mid"):
        info = json.loads(subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", f"{d}/{f}.qcow2"],
            capture_output=True, text=True, check=True).stdout)
        lines.append(f"{f}: backing {info.get('backing-filename')} "
                     f"format {info.get('backing-filename-format')}")
        if subprocess.run(["qemu-img", "check", "-q", f"{d}/{f}.qcow2"]
                          ).returncode != 0:
            failed = True
            lines.append(f"FAIL: qemu-img check {f}.qcow2")
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
