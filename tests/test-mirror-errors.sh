#!/usr/bin/env bash
# Mirror error policies through blkdebug nodes under the target and the
# source, as QEMU: on-target-error report (BLOCK_JOB_ERROR, the job fails
# with the errno's words), stop and enospc (the job pauses with io-status
# failed / nospace until job-resume, then gets ready and the target equals
# the source), ignore (the range is tried again), and on-source-error stop
# for a failed read (operation "read").
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img
requires_libnbd_python

size=$((8 << 20))
head -c $size /dev/urandom >"$tmp/disk.img"
for p in report stop enospc ignore src; do
    truncate -s $size "$tmp/tgt-$p.img"
done
cp "$tmp/disk.img" "$tmp/src.img"
start_daemon \
    --blockdev "driver=raw,node-name=disk,file.driver=file,file.filename=$tmp/disk.img"

jobs_py '
tmp = sys.argv[2]
MiB = 1 << 20
q = QMP(sys.argv[1])

def blkdebug(name, path, rules):
    q.cmd("blockdev-add", {"driver": "raw", "node-name": name,
        "file": {"driver": "blkdebug", "inject-error": rules,
                 "image": {"driver": "file", "filename": path}}})

def mirror(job, device, target, **kw):
    args = {"job-id": job, "device": device, "target": target,
            "sync": "full", "buf-size": MiB}
    args.update(kw)
    q.cmd("blockdev-mirror", args)

def finish_equal(job):
    q.wait_event("BLOCK_JOB_READY", device=job)
    q.cmd("block-job-cancel", {"device": job})
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device=job)
    assert "error" not in ev["data"], ev

blkdebug("t-report", f"{tmp}/tgt-report.img",
         [{"event": "write_aio", "errno": 5, "sector": 4 * MiB // 512}])
mirror("j-report", "disk", "t-report", **{"on-target-error": "report"})
ev = q.wait_event("BLOCK_JOB_ERROR", device="j-report")
assert ev["data"] == {"device": "j-report", "operation": "write",
                      "action": "report"}, ev
ev = q.wait_event("BLOCK_JOB_COMPLETED", device="j-report")
assert ev["data"].get("error") == "Input/output error", ev

for policy, errno, status in (("stop", 5, "failed"),
                              ("enospc", 28, "nospace")):
    blkdebug(f"t-{policy}", f"{tmp}/tgt-{policy}.img",
             [{"event": "write_aio", "errno": errno,
               "sector": 4 * MiB // 512, "once": True}])
    mirror(f"j-{policy}", "disk", f"t-{policy}",
           **{"on-target-error": policy})
    ev = q.wait_event("BLOCK_JOB_ERROR", device=f"j-{policy}")
    assert ev["data"]["action"] == "stop", ev
    j = q.wait_status(f"j-{policy}", "paused")
    assert j["io-status"] == status and j["paused"], j
    q.cmd("job-resume", {"id": f"j-{policy}"})
    finish_equal(f"j-{policy}")

# enospc reports any other error.
blkdebug("t-enospc2", f"{tmp}/tgt-report.img",
         [{"event": "write_aio", "errno": 5, "sector": 4 * MiB // 512}])
mirror("j-enospc2", "disk", "t-enospc2", **{"on-target-error": "enospc"})
ev = q.wait_event("BLOCK_JOB_ERROR", device="j-enospc2")
assert ev["data"]["action"] == "report", ev
q.wait_event("BLOCK_JOB_COMPLETED", device="j-enospc2")

blkdebug("t-ignore", f"{tmp}/tgt-ignore.img",
         [{"event": "write_aio", "errno": 5, "sector": 4 * MiB // 512,
           "once": True}])
mirror("j-ignore", "disk", "t-ignore", **{"on-target-error": "ignore"})
ev = q.wait_event("BLOCK_JOB_ERROR", device="j-ignore")
assert ev["data"]["action"] == "ignore", ev
finish_equal("j-ignore")

# A failed read of the source: operation "read", on-source-error.
blkdebug("s-src", f"{tmp}/src.img",
         [{"event": "read_aio", "errno": 5, "sector": 2 * MiB // 512,
           "once": True}])
q.cmd("blockdev-add", {"driver": "raw", "node-name": "t-src",
      "file": {"driver": "file", "filename": f"{tmp}/tgt-src.img"}})
mirror("j-src", "s-src", "t-src", **{"on-source-error": "stop",
                                     "on-target-error": "report"})
ev = q.wait_event("BLOCK_JOB_ERROR", device="j-src")
assert ev["data"] == {"device": "j-src", "operation": "read",
                      "action": "stop"}, ev
q.wait_status("j-src", "paused")
q.cmd("job-resume", {"id": "j-src"})
finish_equal("j-src")
print("mirror error policies ok")
' "$qmp" "$tmp" || fail "the mirror error policies are not as in QEMU"
_stop_server "$tmp/daemon.pid"
for p in stop enospc ignore; do
    cmp -s "$tmp/disk.img" "$tmp/tgt-$p.img" ||
        fail "on-target-error $p: the target is not the source after resume"
done
cmp -s "$tmp/src.img" "$tmp/tgt-src.img" ||
    fail "on-source-error stop: the target is not the source after resume"
