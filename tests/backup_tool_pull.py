#!/usr/bin/env python3
"""The QMP side of pull-mode backups for tests/test-backup-tool-pull.sh.

    backup_tool_pull.py begin QMP FLEECE NEW [OLD]
        A point in time of node "disk": the overlay FLEECE (a qcow2 file of
        the disk's size) is added as node "fleece" backed by "disk"; one
        transaction disables bitmap OLD (if given), adds bitmap NEW (the
        changes after this point) and starts a sync=none backup job into
        the overlay; the overlay is exported read-only as "pit", with OLD.
    backup_tool_pull.py end QMP [OLD]
        Deletes the export, cancels the job, deletes the overlay and bitmap
        OLD.
    backup_tool_pull.py writer URI SEED STOPFILE [no-unmap]
        Writes random ranges (data and zeroes) to the export until STOPFILE
        exists; prints how many writes it made.  When STOPFILE.pause
        appears it lets its writes in flight finish, then creates
        STOPFILE.paused and writes nothing until STOPFILE.pause is gone;
        then it removes STOPFILE.paused and goes on.  With no-unmap its
        write-zeroes requests carry NBD_CMD_FLAG_NO_HOLE.

This is the sequence QEMU documents for pull-mode incremental backup.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jobs_qmp import QMP, Writer  # noqa: E402


def begin(qmp, fleece, new, old=None):
    q = QMP(qmp)
    q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "fleece",
                           "backing": "disk",
                           "file": {"driver": "file", "filename": fleece}})
    actions = []
    if old:
        actions.append({"type": "block-dirty-bitmap-disable",
                        "data": {"node": "disk", "name": old}})
    actions += [
        {"type": "block-dirty-bitmap-add",
         "data": {"node": "disk", "name": new}},
        {"type": "blockdev-backup",
         "data": {"job-id": "pit", "device": "disk", "target": "fleece",
                  "sync": "none"}},
    ]
    q.cmd("transaction", {"actions": actions})
    q.cmd("block-export-add", {"type": "nbd", "id": "pit",
                               "node-name": "fleece", "name": "pit",
                               "writable": False,
                               "bitmaps": [old] if old else []})


def end(qmp, old=None):
    q = QMP(qmp)
    q.cmd("block-export-del", {"id": "pit"})
    q.wait_event("BLOCK_EXPORT_DELETED", id="pit")
    q.cmd("block-job-cancel", {"device": "pit"})
    q.wait_event("BLOCK_JOB_CANCELLED", device="pit")
    q.cmd("blockdev-del", {"node-name": "fleece"})
    if old:
        q.cmd("block-dirty-bitmap-remove", {"node": "disk", "name": old})


def writer(uri, seed, stopfile, unmap="unmap"):
    import nbd
    h = nbd.NBD()
    h.connect_uri(uri)
    size = h.get_size()
    h.shutdown()
    zero_flags = nbd.CMD_FLAG_NO_HOLE if unmap == "no-unmap" else 0
    w = Writer(nbd, uri, 0, size, int(seed), bytes(size), depth=4,
               zero_flags=zero_flags)
    pause, paused = stopfile + ".pause", stopfile + ".paused"
    while not os.path.exists(stopfile):
        if os.path.exists(pause):
            w.drain()
            open(paused, "w").close()
            while os.path.exists(pause):
                time.sleep(0.01)
            os.unlink(paused)
        w.step()
    w.drain()
    print(w.writes)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"begin": begin, "end": end, "writer": writer}[cmd](*args)
