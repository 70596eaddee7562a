"""A point-in-time read whose reply the client has not read yet: the
guest's later write must not show in it (see test-fleece-unread-reply.sh).
Usage: fleece_unread_reply.py QMP NBDSOCK DIR MODE (overlay | filter)"""
import subprocess
import sys
import time

import nbd
from jobs_qmp import QMP

MiB = 1 << 20
SIZE = 16 * MiB
OLD, NEW = 0x11, 0x77


def uri(sock, name):
    return f"nbd+unix:///{name}?socket={sock}"


def setup(q, d, mode):
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                    "-b", f"{d}/disk.qcow2", f"{d}/fleece.qcow2",
                    str(SIZE)], check=True)
    q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "fleece",
                           "backing": "disk",
                           "file": {"driver": "file",
                                    "filename": f"{d}/fleece.qcow2"}})
    if mode == "overlay":
        q.cmd("blockdev-backup", {"job-id": "fl", "device": "disk",
                                  "target": "fleece", "sync": "none"})
    else:
        # QEMU 7.2's way: a copy-before-write filter over the disk
        q.cmd("blockdev-add", {"driver": "copy-before-write",
                               "node-name": "cbw", "file": "disk",
                               "target": "fleece"})
        q.cmd("block-export-del", {"id": "e0"})
        q.wait_event("BLOCK_EXPORT_DELETED")
        q.cmd("block-export-add", {"type": "nbd", "id": "e1",
                                   "node-name": "cbw", "name": "disk",
                                   "writable": True})
    q.cmd("block-export-add", {"type": "nbd", "id": "pit",
                               "node-name": "fleece", "name": "pit"})


def main(qmp, sock, d, mode):
    q = QMP(qmp)
    setup(q, d, mode)
    pit = nbd.NBD()
    pit.connect_uri(uri(sock, "pit"))
    guest = nbd.NBD()
    guest.connect_uri(uri(sock, "disk"))
    for off in (0, 4 * MiB):
        buf = nbd.Buffer(MiB)
        # The request leaves now; its reply waits in the socket unread.
        cookie = pit.aio_pread(buf, off)
        time.sleep(0.3)
        guest.pwrite(bytes([NEW]) * MiB, off)
        guest.flush()
        while not pit.aio_command_completed(cookie):
            pit.poll(-1)
        got = buf.to_bytearray()
        assert got == bytes([OLD]) * MiB, \
            f"{mode}: the point in time at {off} has {len(got) - got.count(OLD)} " \
            f"bytes of the later write"
        assert pit.pread(MiB, off) == bytes([OLD]) * MiB
    print(f"{mode}: unread replies kept the point in time")


if __name__ == "__main__":
    main(*sys.argv[1:])
