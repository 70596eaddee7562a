"""Jobs that share a node and finish together (tests/test-jobs-shared-node.sh).

    jobs_shared_node.py QMP-SOCKET SCENARIO

Each scenario sets up two jobs over one shared node, ends both at once and
checks that both are gone within 20 s and the monitor still answers.
"""
import sys
import time

from jobs_qmp import QMP

MIB = 1024 * 1024


def null(q, name):
    q.cmd("blockdev-add", {"driver": "null-co", "node-name": name,
                           "size": 64 * MIB})


def gone(q, ids, what):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = [j["id"] for j in q.cmd("query-jobs") if j["id"] in ids]
        if not left:
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: jobs {left} still there after 20 s: "
                         f"{q.cmd('query-jobs')}")


def two_mirrors(q, j1="j1", j2="j2"):
    for n in ("a", "b", "c"):
        null(q, n)
    q.cmd("blockdev-mirror", {"job-id": j1, "device": "a", "target": "b",
                              "sync": "full"})
    q.wait_status(j1, "ready", timeout=30)
    q.cmd("blockdev-mirror", {"job-id": j2, "device": "b", "target": "c",
                              "sync": "full"})
    q.wait_status(j2, "ready", timeout=30)


def mirror_then_backup(q, j1="j1", j2="j2"):
    for n in ("x", "y", "z"):
        null(q, n)
    q.cmd("blockdev-mirror", {"job-id": j1, "device": "x", "target": "y",
                              "sync": "full"})
    q.wait_status(j1, "ready", timeout=30)
    q.cmd("blockdev-backup", {"job-id": j2, "device": "y", "target": "z",
                              "sync": "full", "speed": 1 * MIB})
    q.wait_status(j2, "running", timeout=30)


def main():
    q = QMP(sys.argv[1])
    scenario = sys.argv[2]
    if scenario == "two-mirrors-cancel":
        two_mirrors(q)
        q.cmd("job-cancel", {"id": "j1"})
        q.cmd("job-cancel", {"id": "j2"})
        gone(q, ("j1", "j2"), "two chained mirrors cancelled together")
    elif scenario == "two-mirrors-complete":
        two_mirrors(q)
        q.cmd("job-complete", {"id": "j2"})
        q.cmd("job-complete", {"id": "j1"})
        gone(q, ("j1", "j2"), "two chained mirrors completed together")
    elif scenario == "mirror-backup-cancel":
        mirror_then_backup(q)
        q.cmd("job-cancel", {"id": "j2"})
        q.cmd("job-cancel", {"id": "j1"})
        gone(q, ("j1", "j2"), "a mirror and a backup sharing y cancelled")
    elif scenario == "setup-only":
        two_mirrors(q)
        mirror_then_backup(q, "k1", "k2")
        return
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    q.cmd("query-block-jobs")   # the monitor still answers
    print(f"{scenario}: ok")


main()
