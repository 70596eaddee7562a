"""Commands that name a node a job's thread frees meanwhile
(tests/test-job-node-lookup.sh).

    job_node_lookup.py QMP-SOCKET [ROUNDS]

Each round starts a backup whose copy-before-write filter has a name,
then sends, in one write, job-cancel and commands naming the filter: the
monitor runs them while the job's thread ends the job and drops the
filter's last reference.  A command must hold the node it looked up (or
not find it); the daemon used to use the freed node (the QMP fuzzer's
seed 937865421: a blockdev-backup from an auto-named node that a job's
end had just freed crashed in refresh_node).
"""
import json
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


def main():
    q = QMP(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    for n in ("src", "tgt", "tgt2"):
        q.cmd("blockdev-add", {"driver": "null-co", "node-name": n,
                               "size": 64 * MIB})
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
    # the monitor still answers, and the filter went with its job
    names = [n["node-name"] for n in q.cmd("query-named-block-nodes")]
    assert "flt" not in names, f"the filter outlived its job: {names}"
    print(f"job_node_lookup: {rounds} rounds")


if __name__ == "__main__":
    main()
