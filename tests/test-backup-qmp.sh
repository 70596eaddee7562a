#!/usr/bin/env bash
# The job commands over QMP, as QEMU answers them: blockdev-backup,
# query-jobs / query-block-jobs shapes, pause / resume / set-speed / cancel
# (job-* and block-job-*), manual finalize and dismiss, QEMU's refusals
# (verbs in the wrong state, unknown jobs, bad arguments), op blockers
# (second backup of a node, blockdev-del and writable export of a target),
# transactions (all or nothing; completion-mode grouped: the jobs end
# together, a cancelled one takes the others with it), and the speed limit (never 10 % above it).
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img

size=$((32 << 20))
make_disk "$tmp/disk.img" $size "$seed"
make_disk "$tmp/disk2.img" $size $((seed + 1))
for t in tgt tgt2 tgt3; do truncate -s $size "$tmp/$t.img"; done
truncate -s 16M "$tmp/small.img"
start_daemon \
    --blockdev "driver=raw,node-name=disk,file.driver=file,file.filename=$tmp/disk.img" \
    --blockdev "driver=raw,node-name=disk2,file.driver=file,file.filename=$tmp/disk2.img" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=e0,node-name=disk,name=disk,writable=on

cat >"$tmp/qmp.py" <<'EOP'
import sys, time
qmp, tmp, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
MiB = 1 << 20

def add_raw(name, path):
    q.cmd("blockdev-add", {"driver": "raw", "node-name": name,
                           "file": {"driver": "file", "filename": path}})

def backup(job_id, target, **kw):
    args = {"job-id": job_id, "device": "disk", "target": target,
            "sync": "full"}
    args.update(kw)
    return args

q = QMP(qmp)
for n in ("tgt", "tgt2", "tgt3", "small"):
    add_raw(n, f"{tmp}/{n}.img")

# --- a running job and how it shows --------------------------------------
q.cmd("blockdev-backup", backup("b0", "tgt", speed=2 * MiB))
j = q.job("b0")
assert j["type"] == "backup" and j["len"] == size and j["speed"] == 2 * MiB
assert j["status"] == "running" and not j["paused"] and not j["ready"], j
assert j["io-status"] == "ok" and j["auto-finalize"] and j["auto-dismiss"]
# QEMU's members, and snapnbd's copy-before-write counters (x-cbw).
assert set(j) == {"type", "device", "len", "offset", "busy", "paused",
                  "speed", "io-status", "ready", "status", "auto-finalize",
                  "auto-dismiss", "x-cbw"}, j
[qj] = q.cmd("query-jobs")
assert qj["id"] == "b0" and qj["type"] == "backup" and \
    qj["status"] == "running" and qj["total-progress"] == size and \
    set(qj) == {"id", "type", "status", "current-progress",
                "total-progress", "x-cbw"}, qj
assert qj["x-cbw"]["granularity"] == 4096, qj   # a raw target

# --- op blockers -------------------------------------------------------------
# A second backup of the same source runs beside the first (as in QEMU).
q.cmd("blockdev-backup", backup("b1", "tgt2", speed=2 * MiB))
assert q.job("b1")["status"] == "running", q.job("b1")
q.cmd("block-job-cancel", {"device": "b1", "force": True})
q.wait_event("BLOCK_JOB_CANCELLED", device="b1")
for i in range(200):
    if q.job("b1") is None:
        break
    time.sleep(0.02)
assert q.job("b1") is None, q.job("b1")
_, desc = q.error("blockdev-backup", {"job-id": "b1", "device": "disk2",
                                      "target": "tgt", "sync": "full"})
assert desc == "Node 'tgt' is busy: in use by backup job 'b0' as its " \
    "target", desc
_, desc = q.error("blockdev-del", {"node-name": "tgt"})
assert desc == "Node 'tgt' is busy: in use by backup job 'b0' as its " \
    "target", desc
_, desc = q.error("block-export-add", {"type": "nbd", "id": "w",
                                       "node-name": "tgt",
                                       "writable": True})
assert "in use by backup job 'b0' as its target" in desc, desc
q.cmd("block-export-add", {"type": "nbd", "id": "ro", "node-name": "tgt"})
q.cmd("block-export-del", {"id": "ro"})
# ... and the other way round: a node exported writable is no target.
q.cmd("block-export-add", {"type": "nbd", "id": "w2", "node-name": "tgt2",
                           "writable": True})
_, desc = q.error("blockdev-backup", {"job-id": "b2", "device": "disk2",
                                      "target": "tgt2", "sync": "full"})
assert desc == "Node 'tgt2' is busy: written by NBD export 'tgt2'; it " \
    "cannot be a backup target", desc
q.cmd("block-export-del", {"id": "w2"})

# --- refusals ----------------------------------------------------------------
def refused(cmd, args, want, cls="GenericError"):
    got = q.error(cmd, args)
    assert got == (cls, want), f"{cmd} {args}: {got}, want {want}"

refused("job-complete", {"id": "b0"},
        "Job 'b0' in state 'running' cannot accept command verb 'complete'")
refused("job-finalize", {"id": "b0"},
        "Job 'b0' in state 'running' cannot accept command verb 'finalize'")
refused("job-dismiss", {"id": "b0"},
        "Job 'b0' in state 'running' cannot accept command verb 'dismiss'")
refused("job-pause", {"id": "nope"}, "Job not found")
refused("block-job-pause", {"device": "nope"}, "Block job 'nope' not found",
        "DeviceNotActive")
refused("job-resume", {"id": "b0"}, "Can't resume a job that was not paused")
refused("block-job-set-speed", {"device": "b0", "speed": -1},
        "Invalid parameter 'speed'")
refused("blockdev-backup", dict(backup("b0", "tgt2"), device="disk2"),
        "Job ID 'b0' already in use")
refused("blockdev-backup", dict(backup("1x", "tgt2"), device="disk2"),
        "Invalid job ID '1x'")
refused("drive-backup", {"device": "nope", "target": f"{tmp}/x.img",
                         "sync": "full"},
        "Cannot find device='nope' nor node-name='nope'")
refused("blockdev-backup", {"device": "disk2", "target": "tgt2"},
        "Parameter 'sync' is missing")
refused("blockdev-backup", dict(backup("x", "tgt2"), device="disk2",
                                sync="bogus"),
        "Parameter 'sync' does not accept value 'bogus'")
refused("blockdev-backup", dict(backup("x", "tgt2"), device="disk2",
                                sync="incremental"),
        "must provide a valid bitmap name for 'incremental' sync mode")
refused("blockdev-backup", dict(backup("x", "tgt2"), device="disk2",
                                **{"on-target-error": "bogus"}),
        "Parameter 'on-target-error' does not accept value 'bogus'")
refused("blockdev-backup", dict(backup("x", "small"), device="disk2"),
        "Source and target image have different sizes")
refused("blockdev-backup", dict(backup("x", "tgt2"), device="disk2",
                                bogus=1),
        "Parameter 'bogus' is unexpected")
refused("blockdev-backup", dict(backup("x", "tgt2"), device="disk2",
                                bitmap="bm0"),
        "Bitmap 'bm0' could not be found")

# --- pause, set-speed, resume ------------------------------------------------
q.cmd("job-pause", {"id": "b0"})
q.wait_event("JOB_STATUS_CHANGE", id="b0", status="paused")
j = q.job("b0")
assert j["paused"] and j["status"] == "paused" and not j["busy"], j
time.sleep(0.3)
assert q.job("b0")["offset"] == j["offset"], "a paused job copied"
refused("job-pause", {"id": "b0"}, "Job is already paused")
refused("block-job-cancel", {"device": "b0"},
        "The block job for device 'b0' is currently paused")
q.cmd("block-job-set-speed", {"device": "b0", "speed": 0})
assert q.job("b0")["speed"] == 0
q.cmd("block-job-resume", {"device": "b0"})
ev = q.wait_event("BLOCK_JOB_COMPLETED", device="b0")
assert ev["data"] == {"type": "backup", "device": "b0", "len": size,
                      "offset": size, "speed": 0}, ev
q.wait_event("JOB_STATUS_CHANGE", id="b0", status="null")
assert q.statuses("b0") == ["created", "running", "paused", "running",
                            "waiting", "pending", "concluded", "null"], \
    q.statuses("b0")
assert q.cmd("query-jobs") == [] and q.cmd("query-block-jobs") == []

# --- cancel ------------------------------------------------------------------
q.cmd("blockdev-backup", backup("b2", "tgt2", speed=1 * MiB))
time.sleep(0.2)
q.cmd("block-job-cancel", {"device": "b2"})
ev = q.wait_event("BLOCK_JOB_CANCELLED", device="b2")
assert ev["data"]["len"] == size and 0 < ev["data"]["offset"] < size, ev
q.wait_event("JOB_STATUS_CHANGE", id="b2", status="null")
assert q.statuses("b2") == ["created", "running", "aborting", "concluded",
                            "null"], q.statuses("b2")
assert not q.find_event("BLOCK_JOB_COMPLETED", device="b2")

# --- manual finalize and dismiss ---------------------------------------------
q.cmd("blockdev-backup", backup("b3", "tgt2", **{"auto-finalize": False,
                                                 "auto-dismiss": False}))
ev = q.wait_event("BLOCK_JOB_PENDING", id="b3")
assert ev["data"] == {"type": "backup", "id": "b3"}, ev
assert q.job("b3")["status"] == "pending"
refused("job-dismiss", {"id": "b3"},
        "Job 'b3' in state 'pending' cannot accept command verb 'dismiss'")
q.cmd("job-finalize", {"id": "b3"})
q.wait_event("BLOCK_JOB_COMPLETED", device="b3")
[qj] = q.cmd("query-jobs")
assert qj["status"] == "concluded" and "error" not in qj, qj
q.cmd("job-dismiss", {"id": "b3"})
assert q.cmd("query-jobs") == []

# --- transactions --------------------------------------------------------------
def tx(*actions):
    return {"actions": [{"type": t, "data": d} for t, d in actions]}

_, desc = q.error("transaction", tx(
    ("blockdev-backup", backup("t1", "tgt2")),
    ("blockdev-backup", {"job-id": "t2", "device": "disk2",
                         "target": "missing", "sync": "full"})))
assert desc == "Cannot find device='missing' nor node-name='missing'", desc
q.wait_event("JOB_STATUS_CHANGE", id="t1", status="null")
assert q.statuses("t1") == ["created", "aborting", "concluded", "null"], \
    q.statuses("t1")
assert q.cmd("query-jobs") == []
q.cmd("transaction", tx(
    ("blockdev-backup", backup("t3", "tgt2")),
    ("blockdev-backup", {"job-id": "t4", "device": "disk2",
                         "target": "tgt3", "sync": "full"})))
for j in ("t3", "t4"):
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device=j)
    assert "error" not in ev["data"], ev
# completion-mode grouped: the jobs finish together ...
q.cmd("transaction", dict(tx(
    ("blockdev-backup", backup("g1", "tgt2")),
    ("blockdev-backup", {"job-id": "g2", "device": "disk2",
                         "target": "tgt3", "sync": "full",
                         "speed": 8 * MiB})),
    properties={"completion-mode": "grouped"}))
for j in ("g1", "g2"):
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device=j)
    assert "error" not in ev["data"], ev
# the fast one waited for the slow one before it became pending
assert q.statuses("g1") == ["created", "running", "waiting", "pending",
                            "concluded", "null"], q.statuses("g1")
# ... and one cancelled takes the others with it.
q.cmd("transaction", dict(tx(
    ("blockdev-backup", backup("g3", "tgt2", speed=MiB)),
    ("blockdev-backup", {"job-id": "g4", "device": "disk2",
                         "target": "tgt3", "sync": "full", "speed": MiB})),
    properties={"completion-mode": "grouped"}))
q.cmd("block-job-cancel", {"device": "g3", "force": True})
for j in ("g3", "g4"):
    q.wait_event("BLOCK_JOB_CANCELLED", device=j)
    q.wait_event("JOB_STATUS_CHANGE", id=j, status="null")
assert q.find_event("BLOCK_JOB_COMPLETED", device="g4") is None
assert q.cmd("query-jobs") == [], q.cmd("query-jobs")

# --- speed limit: 32 MiB at 16 MiB/s takes 2 s within 10 % -------------------
for n in ("n1", "n2"):
    q.cmd("blockdev-add", {"driver": "null-co", "node-name": n,
                           "size": size, "read-zeroes": False})
t0 = time.monotonic()
q.cmd("blockdev-backup", {"job-id": "s0", "device": "n1", "target": "n2",
                          "sync": "full", "speed": 16 * MiB})
q.wait_event("BLOCK_JOB_COMPLETED", device="s0")
rate = size / MiB / (time.monotonic() - t0)
print(f"speed limit 16 MiB/s: {rate:.2f} MiB/s")
# The limit is a ceiling: never above it.  Below it the job may only be
# late by what a busy machine costs (CI shares two cores with the suite),
# not by half.
assert 16 * 0.5 <= rate <= 16 * 1.1, f"speed limit not honoured: {rate}"
EOP
jobs_py "exec(open('$tmp/qmp.py').read())" "$qmp" "$tmp" $size ||
    fail "QMP job commands (seed $seed)"
# The first backup ran with nobody writing: it is the disk.
for t in tgt tgt2; do
    qemu-img compare -q -f raw -F raw "$tmp/disk.img" "$tmp/$t.img" ||
        fail "$t is not a copy of the disk"
done
qemu-img compare -q -f raw -F raw "$tmp/disk2.img" "$tmp/tgt3.img" ||
    fail "tgt3 is not a copy of disk2"
