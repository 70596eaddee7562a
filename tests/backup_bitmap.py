"""backup_bitmap - the QMP and NBD side of tests/test-backup-bitmap.sh.

The daemon serves node "disk" (64 MiB) as the writable export "disk".

    backup_bitmap.py run QMP NBD CMD_JSON JOB_ID REF SEED SHIFT
        Sends CMD_JSON (a backup command or a transaction starting job
        JOB_ID), prints the job's total-progress read at once, then lets
        four NBD clients write random ranges of 2 MiB windows of the export
        (at 16 MiB * i + SHIFT MiB; REF is the disk before the job) until
        the job completes, and checks that they lost nothing.
    backup_bitmap.py count QMP BITMAP
        The dirty bytes of bitmap BITMAP of node "disk".
    backup_bitmap.py errors QMP NBD TMPDIR
        The argument checks of sync=bitmap/incremental, with QEMU's messages.
    backup_bitmap.py modes QMP NBD TMPDIR
        bitmap-mode on-success, always and never after cancel and success.
    backup_bitmap.py pull QMP NBD DISK TMPDIR SEED
        Pull-mode incremental backups: bitmap + sync=none fleecing + export
        of the overlay with the bitmap; a client reads only the dirty ranges.
"""
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backup_load  # noqa: E402
from jobs_qmp import QMP  # noqa: E402

MiB = 1 << 20
SIZE = 64 * MiB


def uri(sock, name):
    return f"nbd+unix:///{name}?socket={sock}"


def bitmap_info(q, name, node="disk"):
    for n in q.cmd("query-named-block-nodes", {"flat": True}):
        if n["node-name"] != node:
            continue
        for b in n.get("dirty-bitmaps", []):
            if b["name"] == name:
                return b
    return None


def count(q, name):
    return bitmap_info(q, name)["count"]


def job_info(q, job_id):
    for j in q.cmd("query-jobs"):
        if j["id"] == job_id:
            return j
    return None


def start_writers(sock, ref, seed, shift, stopfile, width=2 * MiB):
    """Four writer processes (backup_load.py writer), each on its window,
    writing as soon as they are connected."""
    backup_load.go_writers(stopfile)
    procs = []
    for i in range(4):
        lo = i * 16 * MiB + shift * MiB
        procs.append(subprocess.Popen(
            [sys.executable, backup_load.__file__, "writer", sock, str(lo),
             str(lo + width), str(seed * 100 + i), ref, stopfile],
            stdout=subprocess.PIPE, text=True))
    return procs


def run(qsock, sock, cmd_json, job_id, ref, seed, shift):
    seed, shift = int(seed), int(shift)
    cmd = json.loads(cmd_json)
    q = QMP(qsock)
    stopfile = f"{ref}.stop"
    q.cmd(cmd["execute"], cmd["arguments"])
    total = job_info(q, job_id)["total-progress"]
    procs = start_writers(sock, ref, seed, shift, stopfile)
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device=job_id)
    assert "error" not in ev["data"], f"job failed: {ev} (seed {seed})"
    writes = backup_load.stop_writers(procs, stopfile, seed)
    os.unlink(stopfile)
    if writes < 50:
        sys.exit(f"only {writes} guest writes during job {job_id}")
    print(f"{writes} guest writes during {job_id}", file=sys.stderr)
    print(total)


def expect_error(q, name, args, want):
    cls, desc = q.error(name, args)
    assert cls == "GenericError" and desc == want, \
        f"{name} {args}: got {cls} '{desc}', want '{want}'"


def errors(qsock, sock, tmp):
    q = QMP(qsock)
    q.cmd("block-dirty-bitmap-add", {"node": "disk", "name": "e"})
    target = os.path.join(tmp, "never-created.qcow2")

    def drive(**kw):
        args = {"job-id": "e0", "device": "disk", "target": target,
                "format": "qcow2"}
        args.update({k.replace("_", "-"): v for k, v in kw.items()})
        return args

    cases = [
        (drive(sync="bitmap"),
         "must provide a valid bitmap name for 'bitmap' sync mode"),
        (drive(sync="incremental"),
         "must provide a valid bitmap name for 'incremental' sync mode"),
        (drive(sync="incremental", bitmap="nope"),
         "Bitmap 'nope' could not be found"),
        (drive(sync="bitmap", bitmap="e"),
         "Bitmap sync mode must be given when providing a bitmap"),
        (drive(sync="incremental", bitmap="e", bitmap_mode="always"),
         "Bitmap sync mode must be 'on-success' when using sync mode "
         "'incremental'"),
        (drive(sync="full", bitmap_mode="on-success"),
         "Cannot specify bitmap sync mode without a bitmap"),
        (drive(sync="none", bitmap="e", bitmap_mode="on-success"),
         "sync mode 'none' does not produce meaningful bitmap outputs"),
        (drive(sync="full", bitmap="e", bitmap_mode="never"),
         "Bitmap sync mode 'never' has no meaningful effect when combined "
         "with sync mode 'full'"),
        (drive(sync="bitmap", bitmap="e", bitmap_mode="sometimes"),
         "Parameter 'bitmap-mode' does not accept value 'sometimes'"),
    ]
    for args, want in cases:
        expect_error(q, "drive-backup", args, want)
        args = dict(args, target="disk")
        del args["format"]
        expect_error(q, "blockdev-backup", args, want)
    assert not os.path.exists(target), "a refused drive-backup made a file"

    # An exported bitmap is busy: a backup cannot take it.
    q.cmd("block-export-add", {"type": "nbd", "id": "ee", "name": "ee",
                               "node-name": "disk", "writable": True,
                               "bitmaps": ["e"]})
    cls, desc = q.error("drive-backup", drive(sync="incremental", bitmap="e"))
    assert desc.startswith("Bitmap 'e' is currently in use by another "
                           "operation"), desc
    q.cmd("block-export-del", {"id": "ee"})
    q.wait_event("BLOCK_EXPORT_DELETED", id="ee")

    # A transaction that fails after the job's action gives the bitmap
    # back as it was: not busy, no bit lost.
    q.cmd("block-dirty-bitmap-clear", {"node": "disk", "name": "e"})
    h = nbd_handle(uri(sock, "disk"))
    h.pwrite(b"\x11" * MiB, 5 * MiB)
    h.shutdown()
    before = count(q, "e")
    assert before == MiB, before
    cls, desc = q.error("transaction", {"actions": [
        {"type": "drive-backup",
         "data": drive(sync="incremental", bitmap="e")},
        {"type": "abort", "data": {}}]})
    assert desc == "Transaction aborted using Abort action", desc
    info = bitmap_info(q, "e")
    assert not info["busy"] and info["count"] == before, info
    q.cmd("block-dirty-bitmap-remove", {"node": "disk", "name": "e"})
    print("errors: ok")


def nbd_handle(u, contexts=()):
    import nbd
    h = nbd.NBD()
    for c in contexts:
        h.add_meta_context(c)
    h.connect_uri(u)
    return h


def wait_progress(q, job_id):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        j = job_info(q, job_id)
        if j["current-progress"] > 0:
            return j
        time.sleep(0.02)
    raise TimeoutError(f"{job_id} made no progress")


def modes(qsock, sock, tmp):
    q = QMP(qsock)
    h = nbd_handle(uri(sock, "disk"))
    q.cmd("block-dirty-bitmap-add", {"node": "disk", "name": "m"})
    for off in range(0, 16 * MiB, MiB):
        h.pwrite(b"\x55" * MiB, off)
    assert count(q, "m") == 16 * MiB

    def backup(job_id, **kw):
        args = {"job-id": job_id, "device": "disk", "format": "qcow2",
                "target": os.path.join(tmp, job_id + ".qcow2"),
                "sync": "bitmap", "bitmap": "m"}
        args.update({k.replace("_", "-"): v for k, v in kw.items()})
        q.cmd("drive-backup", args)

    def cancel(job_id):
        q.cmd("job-cancel", {"id": job_id})
        return q.wait_event("BLOCK_JOB_CANCELLED", device=job_id)["data"]

    # on-success, cancelled midway: no bit lost, and the writes made during
    # the job are there too.  Meanwhile the bitmap is busy.
    before = count(q, "m")
    backup("m1", bitmap_mode="on-success", speed=2 * MiB)
    wait_progress(q, "m1")
    assert bitmap_info(q, "m")["busy"], bitmap_info(q, "m")
    for cmd in ("block-dirty-bitmap-clear", "block-dirty-bitmap-remove",
                "block-dirty-bitmap-disable"):
        cls, desc = q.error(cmd, {"node": "disk", "name": "m"})
        assert desc.startswith("Bitmap 'm' is currently in use by another "
                               "operation (backup job 'm1')"), (cmd, desc)
    cls, desc = q.error("drive-backup", {
        "job-id": "m9", "device": "disk", "sync": "incremental",
        "bitmap": "m", "target": os.path.join(tmp, "m9.qcow2")})
    assert "Bitmap 'm' is currently in use" in desc, desc
    h.pwrite(b"\x66" * MiB, 40 * MiB)
    ev = cancel("m1")
    assert 0 < ev["offset"] < before, ev
    info = bitmap_info(q, "m")
    assert not info["busy"], info
    assert info["count"] == before + MiB, \
        f"on-success after cancel: {info['count']} != {before} + 1 MiB"

    # always, cancelled midway: exactly what was copied is clean.
    before = count(q, "m")
    backup("m2", bitmap_mode="always", speed=2 * MiB)
    wait_progress(q, "m2")
    h.pwrite(b"\x77" * MiB, 48 * MiB)
    ev = cancel("m2")
    copied = ev["offset"]
    assert 0 < copied < before, ev
    got = count(q, "m")
    assert got == before - copied + MiB, \
        f"always after cancel: {got} != {before} - {copied} + 1 MiB"

    # never: the bitmap stays as it was, after success too.
    before = count(q, "m")
    backup("m3", bitmap_mode="never")
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device="m3")["data"]
    assert "error" not in ev and ev["len"] == before, ev
    assert count(q, "m") == before, (count(q, "m"), before)

    # on-success (as incremental) after success: clean.
    backup("m4", sync="incremental")
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device="m4")["data"]
    assert "error" not in ev and ev["len"] == before, ev
    assert count(q, "m") == 0, count(q, "m")

    # A bitmap with sync=full, always: clean after success.
    h.pwrite(b"\x88" * MiB, 30 * MiB)
    backup("m5", sync="full", bitmap_mode="always")
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device="m5")["data"]
    assert "error" not in ev and ev["len"] == SIZE, ev
    assert count(q, "m") == 0, count(q, "m")
    h.shutdown()
    q.cmd("block-dirty-bitmap-remove", {"node": "disk", "name": "m"})
    print("modes: ok")


def dirty_extents(h, ctx, size):
    """[(offset, length)] of the export's extents with flag 1 in @ctx."""
    out = []
    pos = 0

    def cb(meta, offset, entries, err):
        nonlocal pos
        if meta != ctx:
            return 0
        for length, flags in zip(entries[::2], entries[1::2]):
            if flags & 1:
                if out and out[-1][0] + out[-1][1] == pos:
                    out[-1] = (out[-1][0], out[-1][1] + length)
                else:
                    out.append((pos, length))
            pos += length
        return 0

    while pos < size:
        h.block_status(size - pos, pos, cb)
    return out


def nbdinfo_dirty(u, ctx):
    """Dirty bytes by nbdinfo --map, or None without nbdinfo."""
    if not shutil.which("nbdinfo"):
        return None
    out = subprocess.run(["nbdinfo", "--json", f"--map={ctx}", u],
                         check=True, capture_output=True, text=True).stdout
    return sum(e["length"] for e in json.loads(out) if e["type"] & 1)


def pull(qsock, sock, disk, tmp, seed):
    seed = int(seed)
    q = QMP(qsock)
    with open(disk, "rb") as f:
        prev = f.read()   # the disk when bitmap "old" began
    q.cmd("block-dirty-bitmap-add", {"node": "disk", "name": "p1"})
    for rnd in (1, 2):
        old, new = f"p{rnd}", f"p{rnd + 1}"
        # Changes to back up: the writers write, then stop.
        ref = os.path.join(tmp, f"pull-ref{rnd}.img")
        shutil.copyfile(disk, ref)
        stopfile = ref + ".stop"
        procs = start_writers(sock, ref, seed + rnd, 4 * rnd, stopfile,
                              width=3 * MiB)
        time.sleep(0.5)
        # Under load the writers may take a while to start: wait (up to
        # 20 s) until they have written something for the bitmap to hold.
        for _ in range(200):
            if count(q, old) > 0:
                break
            time.sleep(0.1)
        backup_load.stop_writers(procs, stopfile, seed)
        os.unlink(stopfile)
        with open(disk, "rb") as f:
            now = f.read()
        with open(ref, "wb") as f:
            f.write(now)
        # The point in time, as QEMU users take it.
        fleece = os.path.join(tmp, f"fleece{rnd}.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F",
                        "raw", "-b", disk, fleece, str(SIZE)], check=True)
        q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "fleece",
                               "backing": "disk",
                               "file": {"driver": "file",
                                        "filename": fleece}})
        q.cmd("transaction", {"actions": [
            {"type": "block-dirty-bitmap-disable",
             "data": {"node": "disk", "name": old}},
            {"type": "block-dirty-bitmap-add",
             "data": {"node": "disk", "name": new}},
            {"type": "blockdev-backup",
             "data": {"job-id": "pit", "device": "disk", "target": "fleece",
                      "sync": "none"}}]})
        export = {"type": "nbd", "id": "pit", "name": "pit",
                  "node-name": "fleece", "writable": False}
        cls, desc = q.error("block-export-add", dict(export, bitmaps=[new]))
        assert desc == f"Enabled bitmap '{new}' incompatible with " \
                       "readonly export", desc
        q.cmd("block-export-add", dict(export, bitmaps=[old]))
        dirty = count(q, old)
        # The client reads the changed ranges while the guest writes on.
        procs = start_writers(sock, ref, seed + 10 * rnd, 4 * rnd + 1,
                              stopfile)
        for _ in range(200):  # the writers are writing (the new bitmap
            if count(q, new) > 0:  # sees it) before the client reads
                break
            time.sleep(0.1)
        ctx = f"qemu:dirty-bitmap:{old}"
        h = nbd_handle(uri(sock, "pit"), [ctx])
        assert h.can_meta_context(ctx), f"no {ctx} on the export"
        backup = bytearray(prev)
        read = 0
        for off, length in dirty_extents(h, ctx, SIZE):
            backup[off:off + length] = h.pread(length, off)
            read += length
        h.shutdown()
        by_nbdinfo = nbdinfo_dirty(uri(sock, "pit"), ctx)
        writes = backup_load.stop_writers(procs, stopfile, seed)
        os.unlink(stopfile)
        assert writes > 0, "no guest writes during the pull"
        for c in range(0, SIZE, 64 * 1024):
            if backup[c:c + 65536] != now[c:c + 65536]:
                sys.exit(f"pull round {rnd} (seed {seed}): chunk at {c} "
                         "is not the point in time")
        assert 0 < read == dirty < SIZE // 2, (read, dirty)
        assert by_nbdinfo in (None, dirty), (by_nbdinfo, dirty)
        print(f"pull round {rnd}: read {read} dirty bytes of {SIZE}, "
              f"{writes} guest writes meanwhile", file=sys.stderr)
        q.cmd("block-export-del", {"id": "pit"})
        q.wait_event("BLOCK_EXPORT_DELETED", id="pit")
        q.cmd("job-cancel", {"id": "pit"})
        q.wait_event("BLOCK_JOB_CANCELLED", device="pit")
        q.cmd("blockdev-del", {"node-name": "fleece"})
        q.cmd("block-dirty-bitmap-remove", {"node": "disk", "name": old})
        q.events.clear()
        prev = now
    print("pull: ok")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "count":
        print(count(QMP(args[0]), args[1]))
    else:
        {"run": run, "errors": errors, "modes": modes,
         "pull": pull}[cmd](*args)
