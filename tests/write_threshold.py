#!/usr/bin/python3
"""write_threshold - block-set-write-threshold and BLOCK_WRITE_THRESHOLD.

    write_threshold.py snapnbd|qsd

Runs one script of QMP commands and NBD writes against a daemon
(snapnbd from $SNAPNBD, or qemu-storage-daemon) and prints what it saw,
one line a step, with nothing in it that differs between runs: the test
diffs the two daemons' transcripts.  It also asserts what a management
layer relies on (exit status 1 and a FAIL line otherwise):
  - the threshold shows in query-named-block-nodes, on its node only;
  - a write (or write-zeroes, or discard when the node discards) that
    reaches past it emits one BLOCK_WRITE_THRESHOLD with the amount, and
    disarms it (write_threshold 0, no second event);
  - on snapnbd, 16 writes in flight crossing it at once give one event;
  - a write below it, a discard on discard=ignore, 0, and a threshold on
    the file node under qcow2 (met as clusters are allocated) behave as
    in QEMU; bad arguments get QEMU's errors.
"""
import json
import os
import subprocess
import sys
import tempfile

import nbd

from jobs_qmp import QMP

KiB, MiB = 1 << 10, 1 << 20
failed = False


class Qmp(QMP):
    def take_events(self, name):
        """The events @name so far: a query first, so that any event a
        finished write emitted has been read."""
        self.execute("query-version")
        got = [e["data"] for e in self.events if e["event"] == name]
        self.events = [e for e in self.events if e["event"] != name]
        return got


def say(line):
    print(line, flush=True)


def expect(ok, what):
    global failed
    if not ok:
        failed = True
        say("FAIL " + what)


def outcome(reply):
    if "error" in reply:
        return "error %s: %s" % (reply["error"]["class"],
                                 reply["error"]["desc"])
    return "ok"


def thresholds(qmp, nodes):
    info = qmp.cmd("query-named-block-nodes", {"flat": True})
    by_name = {n["node-name"]: n["write_threshold"] for n in info}
    return {n: by_name.get(n) for n in nodes}


def main(which):
    tmp = tempfile.mkdtemp()
    raw, qcow2 = f"{tmp}/disk.raw", f"{tmp}/disk.qcow2"
    for path in (raw, raw + "2"):
        with open(path, "wb") as f:
            f.truncate(4 * MiB)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", qcow2,
                    "64M"], check=True)
    qmp_path, sock = f"{tmp}/qmp.sock", f"{tmp}/nbd.sock"
    argv = ([os.environ["SNAPNBD"]] if which == "snapnbd"
            else ["qemu-storage-daemon"])
    argv += [
        "--blockdev", f"driver=file,node-name=f0,filename={raw}",
        "--blockdev", "driver=raw,node-name=d0,file=f0,discard=unmap",
        "--blockdev", f"driver=file,node-name=f1,filename={qcow2}",
        "--blockdev", "driver=qcow2,node-name=d1,file=f1",
        "--blockdev", f"driver=file,node-name=f2,filename={raw}2",
        "--blockdev", "driver=raw,node-name=d2,file=f2,discard=ignore",
        "--nbd-server", f"addr.type=unix,addr.path={sock}",
        "--export", "type=nbd,id=e0,node-name=d0,name=raw,writable=on",
        "--export", "type=nbd,id=e1,node-name=d1,name=qcow2,writable=on",
        "--export", "type=nbd,id=e2,node-name=d2,name=ignore,writable=on",
        "--chardev", f"socket,id=m0,path={qmp_path},server=on,wait=off",
        "--monitor", "m0"]
    daemon = subprocess.Popen(argv)
    try:
        qmp = Qmp(qmp_path)
        run_script(qmp, sock)
        if which == "snapnbd":
            concurrent_crossing(qmp, sock)
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
        subprocess.run(["rm", "-rf", tmp])
    return 1 if failed else 0


def connect(sock, name):
    h = nbd.NBD()
    h.set_export_name(name)
    h.connect_unix(sock)
    return h


def concurrent_crossing(qmp, sock):
    """snapnbd's own promise (QEMU may emit twice): of writes on 4
    connections (served by as many threads) that all cross the threshold
    at once, one event.  Not in the transcript."""
    for rnd in range(5):
        qmp.execute("block-set-write-threshold",
                    {"node-name": "d0", "write-threshold": 2 * MiB})
        hs = [connect(sock, "raw") for _ in range(4)]
        for i, h in enumerate(hs):
            for j in range(4):
                h.aio_pwrite(b"\7" * 4096,
                             2 * MiB + (i * 4 + j) * 65536)
        for h in hs:
            while h.aio_in_flight() > 0:
                h.poll(-1)
            h.shutdown()
        got = qmp.take_events("BLOCK_WRITE_THRESHOLD")
        expect(len(got) == 1, f"round {rnd}: 16 crossing writes on 4 "
               f"connections gave {len(got)} events, not 1")


def run_script(qmp, sock):
    ev = "BLOCK_WRITE_THRESHOLD"
    set_t = lambda node, t: outcome(qmp.execute(  # noqa: E731
        "block-set-write-threshold", {"node-name": node,
                                      "write-threshold": t}))

    say("set d0 1M: " + set_t("d0", MiB))
    got = thresholds(qmp, ["d0", "f0"])
    say(f"thresholds: {got}")
    expect(got == {"d0": MiB, "f0": 0}, "the threshold shows on d0 only")

    h = connect(sock, "raw")
    h.pwrite(b"\1" * 4096, 512 * KiB)
    got = qmp.take_events(ev)
    say(f"write below: {got}")
    expect(got == [], "a write below the threshold emitted an event")

    h.pwrite(b"\2" * 8192, MiB - 4096)
    got = qmp.take_events(ev)
    say(f"write across: {got}")
    expect(got == [{"node-name": "d0", "amount-exceeded": 4096,
                    "write-threshold": MiB}],
           "a write across it emits one event with the amount")
    got = thresholds(qmp, ["d0"])
    say(f"after: {got}")
    expect(got == {"d0": 0}, "the threshold is disarmed after its event")
    h.pwrite(b"\3" * 4096, 2 * MiB)
    got = qmp.take_events(ev)
    say(f"write after: {got}")
    expect(got == [], "a disarmed threshold emitted again")

    say("set d0 2M: " + set_t("d0", 2 * MiB))
    h.zero(64 * KiB, 2 * MiB)
    got = qmp.take_events(ev)
    say(f"write-zeroes across: {got}")
    expect(len(got) == 1 and got[0]["amount-exceeded"] == 64 * KiB,
           "write-zeroes across emits one event")

    say("set d0 3M: " + set_t("d0", 3 * MiB))
    h.trim(MiB, 3 * MiB - 4096)
    got = qmp.take_events(ev)
    say(f"discard across (discard=unmap): {got}")
    expect(len(got) == 1 and got[0]["write-threshold"] == 3 * MiB,
           "a discard across, on a node that discards, emits one event")

    say("set d0 3M, then 0: " + set_t("d0", 3 * MiB) + " " + set_t("d0", 0))
    h.pwrite(b"\4" * 4096, 3 * MiB + 4096)
    got = qmp.take_events(ev)
    say(f"write after 0: {got}")
    expect(got == [], "threshold 0 did not disarm")
    h.shutdown()

    say("set d2 1M (discard=ignore): " + set_t("d2", MiB))
    h = connect(sock, "ignore")
    h.trim(2 * MiB, 0)
    got = qmp.take_events(ev)
    say(f"discard across (discard=ignore): {got}")
    expect(got == [], "an ignored discard emitted an event")
    got = thresholds(qmp, ["d2"])
    say(f"after: {got}")
    expect(got == {"d2": MiB}, "an ignored discard disarmed the threshold")
    h.shutdown()

    say("set f1 1M (qcow2's file): " + set_t("f1", MiB))
    h = connect(sock, "qcow2")
    for i in range(40):   # 40 clusters: the file grows past 1 MiB
        h.pwrite(b"\5" * 4096, i * 64 * KiB * 3)
        if qmp.take_events(ev):
            say(f"qcow2's file crossed 1M at cluster write {i}")
            break
    else:
        say("qcow2's file never crossed 1M")
        expect(False, "allocating writes to qcow2 did not meet the file's "
               "threshold")
    got = thresholds(qmp, ["d1", "f1"])
    say(f"qcow2 thresholds after: {got}")
    expect(got == {"d1": 0, "f1": 0}, "f1 disarmed after its event")
    h.shutdown()

    for args in ({"node-name": "nope", "write-threshold": 1},
                 {"node-name": "d0", "write-threshold": -1},
                 {"node-name": "d0", "write-threshold": "1"},
                 {"node-name": "d0"},
                 {"write-threshold": 1},
                 {"node-name": "d0", "write-threshold": 1, "x": 1}):
        say(f"{json.dumps(args)}: " +
            outcome(qmp.execute("block-set-write-threshold", args)))
    got = thresholds(qmp, ["d0"])
    say(f"after the bad calls: {got}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
