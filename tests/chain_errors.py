"""Bad block-commit / block-stream requests, and what the server answers
(see test-chain-errors.sh).  Usage: chain_errors.py QMP OUT

The server holds the chain c-0 <- c-1 <- c-2 (c-2 on top, no parent),
images DIR/c-N.qcow2.  Writes one line per case to OUT: the case's name
and "ok", or the error's class and text, so that two servers' answers
can be diffed."""
import json
import sys

from jobs_qmp import QMP

CASES = [
    ("commit-no-device", "block-commit", {"device": "nope"}),
    ("commit-top-both", "block-commit",
     {"device": "c-2", "top-node": "c-1", "top": "x"}),
    ("commit-top-missing", "block-commit",
     {"device": "c-2", "top-node": "nope"}),
    ("commit-base-both", "block-commit",
     {"device": "c-2", "base-node": "c-0", "base": "x"}),
    ("commit-base-file-missing", "block-commit",
     {"device": "c-2", "base": "/nonexistent.qcow2"}),
    ("commit-base-above-top", "block-commit",
     {"device": "c-2", "top-node": "c-1", "base-node": "c-2"}),
    ("commit-into-itself", "block-commit",
     {"device": "c-2", "top-node": "c-1", "base-node": "c-1"}),
    ("commit-active-backing-file", "block-commit",
     {"device": "c-2", "backing-file": "x.qcow2"}),
    ("commit-not-root", "block-commit", {"device": "c-1"}),
    ("commit-bad-on-error", "block-commit",
     {"device": "c-2", "top-node": "c-1", "on-error": "explode"}),
    ("commit-bad-speed", "block-commit",
     {"job-id": "j1", "device": "c-2", "top-node": "c-1", "speed": -1}),
    ("commit-speed-type", "block-commit",
     {"device": "c-2", "top-node": "c-1", "speed": "fast"}),
    ("stream-no-device", "block-stream", {"device": "nope"}),
    ("stream-base-and-bottom", "block-stream",
     {"device": "c-2", "base-node": "c-0", "bottom": "c-1"}),
    ("stream-base-and-base-node", "block-stream",
     {"device": "c-2", "base-node": "c-0", "base": "x"}),
    ("stream-base-not-backing", "block-stream",
     {"device": "c-1", "base-node": "c-2"}),
    ("stream-base-is-top", "block-stream",
     {"device": "c-2", "base-node": "c-2"}),
    ("stream-bottom-missing", "block-stream",
     {"device": "c-2", "bottom": "nope"}),
    ("stream-backing-file-whole-chain", "block-stream",
     {"device": "c-2", "backing-file": "x.qcow2"}),
    ("stream-base-file-missing", "block-stream",
     {"device": "c-2", "base": "/nonexistent.qcow2"}),
]


def answer(q, name, args):
    r = q.execute(name, args)
    if "error" in r:
        return f'{r["error"]["class"]}: {r["error"]["desc"]}'
    return "ok"


def main(qmp, out):
    q = QMP(qmp)
    lines = [f"{case}: {answer(q, name, args)}" for case, name, args in CASES]
    # A second job on a chain a commit holds: QEMU's op blocker words.
    q.cmd("block-commit", {"job-id": "slow", "device": "c-2",
                           "top-node": "c-1", "base-node": "c-0",
                           "speed": 1})
    lines.append("commit-while-commit: " + answer(
        q, "block-commit", {"job-id": "j2", "device": "c-2",
                            "top-node": "c-1", "base-node": "c-0"}))
    lines.append("stream-while-commit: " + answer(
        q, "block-stream", {"job-id": "j3", "device": "c-2"}))
    lines.append("del-while-commit: " + answer(
        q, "blockdev-del", {"node-name": "c-1"}))
    q.cmd("block-job-cancel", {"device": "slow", "force": True})
    q.wait_event("BLOCK_JOB_CANCELLED", device="slow")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
