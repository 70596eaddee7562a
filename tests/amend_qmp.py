"""x-blockdev-amend steps (see test-qmp-amend.sh).
Usage: amend_qmp.py QMP DIR common|extended

Prints one line per step: the command's error, or the amend job's end
("concluded", and its error if any) after waiting for it, then dismisses
it.  "common" runs what qemu-storage-daemon 7.2 answers too; "extended"
the options snapnbd adds (version, lazy-refcounts, refcount-bits)."""
import sys

from jobs_qmp import QMP

n = 0


def add(q, name, path, backing=False):
    args = {"driver": "qcow2", "node-name": name,
            "file": {"driver": "file", "node-name": name + "-f",
                     "filename": path}}
    if backing:
        args["backing"] = None
    q.cmd("blockdev-add", args)


def amend(q, args):
    global n
    n += 1
    jid = f"a{n}"
    if args is not None and "job-id" not in args:
        args = dict(args, **{"job-id": jid})
    r = q.execute("x-blockdev-amend", args)
    if "error" in r:
        print("error:", r["error"]["desc"])
        return
    q.wait_event("JOB_STATUS_CHANGE", id=jid, status="concluded")
    job = [j for j in q.cmd("query-jobs") if j["id"] == jid][0]
    print(job["type"], job["status"], job.get("error", "ok"),
          f'{job["current-progress"]}/{job["total-progress"]}')
    q.cmd("job-dismiss", {"id": jid})


def common(q, d):
    add(q, "q", f"{d}/q.qcow2")
    amend(q, {"node-name": "q", "options": {"driver": "qcow2"}})
    amend(q, {"job-id": "x", "node-name": "q"})
    amend(q, {"node-name": "q", "options": {}})
    amend(q, {"options": {"driver": "qcow2"}, "node-name": "nope"})
    amend(q, {"node-name": "q", "options": {"driver": "raw"}})
    amend(q, {"node-name": "q", "options": {"driver": "qcow2", "x": 1}})
    amend(q, {"node-name": "q", "options": {"driver": "luks"}})
    amend(q, {"node-name": "q", "options": {
        "driver": "qcow2",
        "encrypt": {"format": "luks", "state": "active",
                    "new-secret": "s"}}})


def extended(q, d):
    add(q, "zero", f"{d}/zero.qcow2")
    add(q, "over", f"{d}/over.qcow2", backing=True)
    add(q, "wide", f"{d}/wide.qcow2")
    add(q, "snap", f"{d}/snap.qcow2")
    add(q, "bm", f"{d}/bm.qcow2")
    opts = {"driver": "qcow2"}
    amend(q, {"node-name": "zero", "options": dict(opts, **{
        "lazy-refcounts": True})})
    amend(q, {"node-name": "zero", "options": dict(opts, **{
        "version": "v2", "lazy-refcounts": True})})
    amend(q, {"node-name": "zero", "options": dict(opts, **{
        "version": "v2", "lazy-refcounts": False})})
    amend(q, {"node-name": "zero", "options": dict(opts, **{
        "refcount-bits": 64})})
    amend(q, {"node-name": "zero", "options": dict(opts, **{
        "version": "v4"})})
    amend(q, {"node-name": "over", "options": dict(opts, **{
        "version": "v2"})})
    amend(q, {"node-name": "over", "options": dict(opts, **{
        "version": "v3", "lazy-refcounts": True})})
    amend(q, {"node-name": "wide", "options": dict(opts, **{
        "version": "v2"})})
    amend(q, {"node-name": "wide", "options": dict(opts, **{
        "refcount-bits": 64})})
    amend(q, {"node-name": "wide", "options": dict(opts, **{
        "refcount-bits": 16})})
    amend(q, {"node-name": "wide", "options": dict(opts, **{
        "refcount-bits": 3})})
    amend(q, {"node-name": "snap", "options": dict(opts, **{
        "version": "v2"})})
    amend(q, {"node-name": "bm", "options": dict(opts, **{
        "version": "v2"})})


if __name__ == "__main__":
    qmp = QMP(sys.argv[1])
    {"common": common, "extended": extended}[sys.argv[3]](qmp, sys.argv[2])
