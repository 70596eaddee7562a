"""Nodes a job's thread frees while others still use them
(tests/test-job-node-refs.sh).

    job_node_refs.py QMP-SOCKET DIR lookup [ROUNDS]
    job_node_refs.py QMP-SOCKET DIR moved-target
    job_node_refs.py QMP-SOCKET DIR mirror-bitmap [ROUNDS]

lookup: each round starts a backup whose copy-before-write filter has a
name, then sends, in one write, job-cancel and commands naming the
filter: the monitor runs them while the job's thread ends the job and
drops the filter's last reference.  A command must hold the node it
looked up (or not find it); the daemon used the freed node (the QMP
fuzzer's seed 937865421: a blockdev-backup from an auto-named node that a
job's end had just freed crashed in refresh_node).

moved-target: mirror A copies "a" to a node of its own (drive-mirror's
target T); mirror B copies T to "b2" and completes: its switch moves T's
users, A's target edge with them, to "b2", and B's end drops T's last
reference.  A still writes to T (a guest write to "a" arrives over NBD)
and its cancel made T read-only again: both used the freed node (the
same seed, at SIGTERM: mirror_clean's bdrv_ref).  A now holds T itself.

mirror-bitmap: a mirror's own dirty bitmap goes when its thread ends the
job; query-named-block-nodes, sent with the cancel, listed the node's
bitmaps (many users' first, so that the listing takes a while) and read
the freed one (seed 448881646).
"""
import json
import os
import subprocess
import sys
import time

from jobs_qmp import QMP

MIB = 1024 * 1024


def send_batch(q, msgs):
    """Sends @msgs in one write; the replies in order (events kept)."""
    q.sock.sendall(b"".join(json.dumps(m).encode() + b"\r\n" for m in msgs))
    replies = []
    while len(replies) < len(msgs):
        r = q._recv()
        if "event" in r:
            q.events.append(r)
        else:
            replies.append(r)
    return replies


def wait_no_jobs(q, timeout=30):
    deadline = time.monotonic() + timeout
    while q.cmd("query-jobs"):
        for j in q.cmd("query-jobs"):
            if j["status"] == "concluded":
                q.execute("job-dismiss", {"id": j["id"]})
            elif j["status"] not in ("aborting", "null"):
                q.execute("job-cancel", {"id": j["id"]})
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs left: {q.cmd('query-jobs')}")
        time.sleep(0.01)


def null(q, name):
    q.cmd("blockdev-add", {"driver": "null-co", "node-name": name,
                           "size": 16 * MIB})


def lookup(q, rounds):
    for n in ("src", "tgt", "tgt2"):
        null(q, n)
    for i in range(rounds):
        q.cmd("blockdev-backup", {"job-id": "j", "device": "src",
                                  "target": "tgt", "sync": "none",
                                  "filter-node-name": "flt"})
        send_batch(q, [
            {"execute": "job-cancel", "arguments": {"id": "j"}},
            {"execute": "block-dirty-bitmap-add",
             "arguments": {"node": "flt", "name": "b%d" % i}},
            {"execute": "blockdev-backup",
             "arguments": {"job-id": "k", "device": "flt", "target": "tgt2",
                           "sync": "none"}},
            {"execute": "block-dirty-bitmap-add",
             "arguments": {"node": "flt", "name": "c%d" % i}},
            {"execute": "query-named-block-nodes"},
        ])
        wait_no_jobs(q)
    names = [n["node-name"] for n in q.cmd("query-named-block-nodes")]
    assert "flt" not in names, f"the filter outlived its job: {names}"
    print(f"job_node_refs: lookup: {rounds} rounds")


def moved_target(q, d):
    null(q, "a")
    null(q, "b2")
    target = os.path.join(d, "t.raw")
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", target, "16M"],
                   check=True)
    q.cmd("drive-mirror", {"job-id": "A", "device": "a", "target": target,
                           "format": "raw", "sync": "full",
                           "mode": "existing"})
    q.wait_status("A", "ready")
    t = [n["node-name"] for n in q.cmd("query-named-block-nodes")
         if n["node-name"].startswith("#") and n["drv"] == "raw"]
    assert len(t) == 1, f"drive-mirror's target: {t}"
    q.cmd("blockdev-mirror", {"job-id": "B", "device": t[0], "target": "b2",
                              "sync": "full"})
    q.wait_status("B", "ready")
    q.cmd("job-complete", {"id": "B"})
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device="B")
    assert "error" not in ev["data"], f"B did not switch: {ev}"
    sock = os.path.join(d, "nbd.sock")
    q.cmd("nbd-server-start",
          {"addr": {"type": "unix", "data": {"path": sock}}})
    q.cmd("block-export-add", {"type": "nbd", "id": "ea", "node-name": "a",
                               "writable": True})
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x33 0 4M",
                    f"nbd+unix:///a?socket={sock}"], check=True,
                   stdout=subprocess.DEVNULL)
    time.sleep(0.5)  # A copies the write
    q.cmd("job-cancel", {"id": "A"})
    q.wait_event("BLOCK_JOB_CANCELLED", device="A", timeout=30)
    q.cmd("query-named-block-nodes")
    print("job_node_refs: moved-target: ok")


def mirror_bitmap(q, rounds):
    null(q, "ms")
    null(q, "mt")
    for i in range(200):
        q.cmd("block-dirty-bitmap-add", {"node": "ms", "name": f"u{i}",
                                         "granularity": 512})
    for i in range(rounds):
        q.cmd("blockdev-mirror", {"job-id": "m", "device": "ms",
                                  "target": "mt", "sync": "full"})
        send_batch(q, [{"execute": "job-cancel", "arguments": {"id": "m"}}] +
                   [{"execute": "query-named-block-nodes"}] * 4)
        wait_no_jobs(q)
    print(f"job_node_refs: mirror-bitmap: {rounds} rounds")


def main():
    q = QMP(sys.argv[1])
    d, scenario = sys.argv[2], sys.argv[3]
    if scenario == "lookup":
        lookup(q, int(sys.argv[4]) if len(sys.argv) > 4 else 300)
    elif scenario == "mirror-bitmap":
        mirror_bitmap(q, int(sys.argv[4]) if len(sys.argv) > 4 else 100)
    elif scenario == "moved-target":
        moved_target(q, d)
    else:
        raise SystemExit(f"unknown scenario {scenario}")


if __name__ == "__main__":
    main()
