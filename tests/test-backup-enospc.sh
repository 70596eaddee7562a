#!/usr/bin/env bash
# A backup target that runs out of space (a file on a small tmpfs), with
# each on-target-error policy, while the source export keeps serving:
#   report  BLOCK_JOB_ERROR (report), the job fails with ENOSPC's message;
#   stop    BLOCK_JOB_ERROR (stop), the job pauses with io-status nospace;
#           the guest writes on; after space is freed, job-resume completes
#           it and the backup is the point in time;
#   enospc  the same as stop for ENOSPC;
#   ignore  BLOCK_JOB_ERROR (ignore), the job retries until space is freed,
#           then completes with the point in time;
# and a guest write that needs a copy-before-write while the target is full
# goes through (the export loses nothing) and fails the job instead.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img mount umount
requires_libnbd_python

small=$tmp/small
mkdir "$small"
mount -t tmpfs -o size=32M tmpfs "$small" 2>/dev/null || {
    echo "$0: skipped: cannot mount a tmpfs (needs root)"
    exit 77
}
cleanup_fn "umount -l '$small'"

size=$((32 << 20))
make_disk "$tmp/disk.img" $size "$seed"
start_daemon \
    --blockdev "driver=raw,node-name=disk,file.driver=file,file.filename=$tmp/disk.img" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=e0,node-name=disk,name=disk,writable=on

cat >"$tmp/enospc.py" <<'EOP'
import os, subprocess, sys, time
import nbd
qmp, nbdsock, tmp, small, policy, seed = sys.argv[1:7]
seed = int(seed)
MiB = 1 << 20
uri = f"nbd+unix:///disk?socket={nbdsock}"
q = QMP(qmp)
ref, target = f"{tmp}/ref-{policy}.img", f"{small}/backup-{policy}.img"
filler = f"{small}/filler"
subprocess.check_call(["cp", "--sparse=always", f"{tmp}/disk.img", ref])
with open(filler, "wb") as f:     # leaves about 12 MiB for the backup
    f.write(b"\1" * (20 * MiB))

def guest_writes(lo, hi, n=300):
    """n writes to [lo, hi) through the export, checked: nothing lost."""
    with open(f"{tmp}/disk.img", "rb") as f:
        f.seek(lo)
        initial = f.read(hi - lo)
    w = Writer(nbd, uri, lo, hi, seed, initial)
    for _ in range(n):
        w.step()
    w.check()

job = f"e-{policy}"
on_error = "stop" if policy == "cbw" else policy
# One copy at a time: when the target fills up, everything before the
# failed chunk is copied (with several, a descheduled copy of an early
# chunk may be the one that fails), so the guest may write [0, 4 MiB)
# without a copy-before-write.
q.cmd("drive-backup", {"job-id": job, "device": "disk", "target": target,
                       "format": "raw", "sync": "full",
                       "on-target-error": on_error,
                       "x-perf": {"max-workers": 1}})
if policy == "report":
    ev = q.wait_event("BLOCK_JOB_ERROR", device=job)
    assert ev["data"] == {"device": job, "operation": "write",
                          "action": "report"}, ev
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device=job)
    assert "No space left on device" in ev["data"].get("error", ""), ev
    guest_writes(0, size := os.path.getsize(ref))
    sys.exit(0)
if policy == "ignore":
    while sum(1 for e in q.events if e["event"] == "BLOCK_JOB_ERROR") < 3:
        q.wait_event("JOB_STATUS_CHANGE", timeout=0.2) if False else \
            time.sleep(0.05)
        q.execute("query-jobs")   # collects the events meanwhile
    ev = q.find_event("BLOCK_JOB_ERROR", device=job)
    assert ev["data"]["action"] == "ignore", ev
    assert q.job(job)["status"] == "running"
else:
    ev = q.wait_event("BLOCK_JOB_ERROR", device=job)
    assert ev["data"]["action"] == "stop", ev
    j = q.wait_status(job, "paused")
    assert j["io-status"] == "nospace" and j["paused"], j
    # The guest writes on where the backup is done.
    guest_writes(0, 4 * MiB)
if policy == "cbw":
    # Needs the old data of an uncopied chunk first: the target is full.
    guest_writes(28 * MiB, 32 * MiB, 50)
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device=job)
    assert "the point in time is lost" in ev["data"].get("error", ""), ev
    sys.exit(0)
os.unlink(filler)
if policy != "ignore":
    q.cmd("job-resume", {"id": job})
ev = q.wait_event("BLOCK_JOB_COMPLETED", device=job)
assert "error" not in ev["data"], ev
EOP
for policy in report stop enospc ignore cbw; do
    jobs_py "
try:
    exec(open('$tmp/enospc.py').read())
except Exception:
    print('events:', q.events, file=sys.stderr)
    raise" "$qmp" "$nbdsock" "$tmp" "$small" $policy "$seed" ||
        fail "on-target-error=$policy (seed $seed)"
    case $policy in
    stop|enospc|ignore)
        qemu-img compare -q -f raw -F raw "$tmp/ref-$policy.img" \
            "$small/backup-$policy.img" ||
            fail "$policy: the backup is not the point in time (seed $seed)"
        ;;
    esac
    rm -f "$small"/*
done
kill -0 "$(cat "$tmp/daemon.pid")" || fail "the server died"
