#!/usr/bin/env bash
# A backup job whose target fails mid-job, through a blkdebug node under
# the target (blockdev-add over QMP, then blockdev-backup into it):
#   report  an EIO at 4 MiB: BLOCK_JOB_ERROR (write, report), the job fails
#           with the error's words;
#   stop    an EIO once: BLOCK_JOB_ERROR (stop), the job pauses with
#           io-status failed; job-resume retries and the backup completes,
#           equal to the source;
#   enospc  an ENOSPC once: paused with io-status nospace, then the same;
# and blkdebug's breakpoints over QMP (x-blkdebug-break, -wait-break,
# -resume, -remove-break) hold a target write mid-job until resumed; a
# request still held when SIGTERM comes does not keep the server alive;
# unshare-child-perms and take-child-perms act on permissions.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img
requires_libnbd_python

size=$((8 << 20))
head -c $size /dev/urandom >"$tmp/disk.img"
for p in report stop enospc break held perm; do
    truncate -s $size "$tmp/tgt-$p.img"
done
start_daemon \
    --blockdev "driver=raw,node-name=disk,file.driver=file,file.filename=$tmp/disk.img" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=e0,node-name=disk,name=disk,writable=on

cat >"$tmp/backup.py" <<'EOP'
import sys
qmp, tmp = sys.argv[1], sys.argv[2]
MiB = 1 << 20
q = QMP(qmp)

def add_target(policy, rules):
    q.cmd("blockdev-add", {
        "driver": "raw", "node-name": f"t-{policy}",
        "file": {"driver": "blkdebug", "node-name": f"dbg-{policy}",
                 "inject-error": rules,
                 "image": {"driver": "file",
                           "filename": f"{tmp}/tgt-{policy}.img"}}})

def backup(policy, **kw):
    args = {"job-id": f"j-{policy}", "device": "disk",
            "target": f"t-{policy}", "sync": "full",
            "x-perf": {"max-workers": 1}}
    args.update(kw)
    q.cmd("blockdev-backup", args)

# report: every write at 4 MiB fails.
add_target("report", [{"event": "write_aio", "errno": 5,
                       "sector": 4 * MiB // 512}])
backup("report", **{"on-target-error": "report"})
ev = q.wait_event("BLOCK_JOB_ERROR", device="j-report")
assert ev["data"] == {"device": "j-report", "operation": "write",
                      "action": "report"}, ev
ev = q.wait_event("BLOCK_JOB_COMPLETED", device="j-report")
assert "Input/output error" in ev["data"].get("error", ""), ev

# stop and enospc: the write at 4 MiB fails once, the job pauses.
for policy, errno, status in (("stop", 5, "failed"),
                              ("enospc", 28, "nospace")):
    add_target(policy, [{"event": "write_aio", "errno": errno,
                         "sector": 4 * MiB // 512, "once": True}])
    backup(policy, **{"on-target-error": policy})
    ev = q.wait_event("BLOCK_JOB_ERROR", device=f"j-{policy}")
    assert ev["data"]["action"] == "stop" and \
        ev["data"]["operation"] == "write", ev
    j = q.wait_status(f"j-{policy}", "paused")
    assert j["io-status"] == status and j["paused"], j
    q.cmd("job-resume", {"id": f"j-{policy}"})
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device=f"j-{policy}")
    assert "error" not in ev["data"], ev

# Breakpoints: the write at 4 MiB waits until resumed.
add_target("break", [])
q.cmd("x-blkdebug-break", {"node": "t-break", "event": "write_aio",
                           "tag": "bp"})
cls, desc = q.error("x-blkdebug-break", {"node": "t-break",
                                         "event": "nope", "tag": "x"})
assert "does not accept value 'nope'" in desc, desc
cls, desc = q.error("x-blkdebug-resume", {"node": "t-break", "tag": "bp"})
assert "No request is held" in desc, desc
backup("break")
q.cmd("x-blkdebug-wait-break", {"node": "dbg-break", "tag": "bp"})
j = q.job("j-break")
assert j["status"] == "running" and j["offset"] < 8 * MiB, j
# A second breakpoint, removed before anything reaches it.
q.cmd("x-blkdebug-break", {"node": "dbg-break", "event": "flush_to_disk",
                           "tag": "never"})
q.cmd("x-blkdebug-remove-break", {"node": "dbg-break", "tag": "never"})
q.cmd("x-blkdebug-resume", {"node": "t-break", "tag": "bp"})
ev = q.wait_event("BLOCK_JOB_COMPLETED", device="j-break")
assert "error" not in ev["data"], ev
cls, desc = q.error("x-blkdebug-wait-break", {"node": "dbg-break",
                                              "tag": "bp", "timeout": 0})
assert "No request reached breakpoint" in desc, desc
cls, desc = q.error("x-blkdebug-break", {"node": "disk", "event": "l1_update",
                                         "tag": "x"})
assert "No blkdebug node" in desc, desc

# unshare-child-perms: nobody else may write the image below (QEMU's
# sentence); take-child-perms takes names of QEMU's BlockPermission.
q.cmd("blockdev-add", {"driver": "file", "node-name": "f-perm",
                       "filename": f"{tmp}/tgt-perm.img"})
q.cmd("blockdev-add", {"driver": "blkdebug", "node-name": "dbg-perm",
                       "image": "f-perm", "unshare-child-perms": ["write"]})
_, desc = q.error("block-export-add", {"type": "nbd", "id": "e-perm",
                                       "node-name": "f-perm",
                                       "writable": True})
assert "Permission conflict on node 'f-perm': permissions 'write' are " \
    "both required by" in desc and "unshared by node 'dbg-perm'" in desc, desc
_, desc = q.error("blockdev-add", {"driver": "blkdebug", "node-name": "x",
                                   "image": "f-perm",
                                   "take-child-perms": ["nope"]})
assert desc == "Parameter 'take-child-perms[0]' does not accept value " \
    "'nope'", desc

# Left held: the shell sends SIGTERM meanwhile.
add_target("held", [])
q.cmd("x-blkdebug-break", {"node": "t-held", "event": "write_aio",
                           "tag": "forever"})
backup("held")
q.cmd("x-blkdebug-wait-break", {"node": "t-held", "tag": "forever"})
EOP
jobs_py "
try:
    exec(open('$tmp/backup.py').read())
except Exception:
    print('events:', q.events, file=sys.stderr)
    raise" "$qmp" "$tmp" || fail "backup into a failing target"
for p in stop enospc break; do
    cmp "$tmp/disk.img" "$tmp/tgt-$p.img" ||
        fail "$p: the backup differs from the source"
done
pid=$(cat "$tmp/daemon.pid")
kill "$pid"
for i in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$pid" 2>/dev/null &&
    fail "a request held at a breakpoint kept the server from stopping"
exit 0
