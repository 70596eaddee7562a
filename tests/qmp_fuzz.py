"""qmp_fuzz - a schema-driven, seeded fuzzer of the QMP monitor, for
tests/test-qmp-fuzz.sh (which starts the daemon and checks the images).

    python3 qmp_fuzz.py --qmp SOCK --pid PIDFILE --dir DIR --seed N
                        [--iters N] [--seconds S] [--timeout S]
                        [--save FILE] [--replay FILE] [--stats]
                        [--qsd SOCK --qsd-dir DIR] [--no-step-around]

Sets up a few nodes (raw, qcow2 over a backing file with a bitmap,
null-co), an NBD export and some objects through QMP, reads
query-qmp-schema, then sends random commands built from the schema:
mostly valid arguments (right types, names of nodes, jobs, bitmaps and
exports that exist, plausible sizes), then mutated (wrong types, missing and
extra members, huge and negative integers, odd strings, deep nesting, enum
values off by one, names of nodes just deleted, names taken), and short
sequences (add, delete, use; start a job, delete its node; transactions of
mixed actions).  Every so often a second connection sends broken JSON bytes.

After each command the daemon must answer within --timeout seconds, with
"return" or an "error" that has a class and a desc, and must be alive.  At
the end the NBD export "keep" (its node is never named by the fuzzer) must
serve the bytes written at the start, and DIR/strict-images lists the
qcow2 images of the setup whose nodes stayed open all along (the shell
runs qemu-img check on them).

Every message sent is logged, always to --save (the shell removes it after
a pass); on a failure the last messages are printed: --replay FILE sends
that log again, in order, with the same checks.  The sequence depends only
on the seed and on the daemon's answers (job timing included).

With --one-job, a job starts only while no other one runs (JOB_COMMANDS).
With --qsd every logged message also goes to qemu-storage-daemon, set up
the same way over copies of the images, and the error classes that differ
are listed at the end (not a failure: the two daemons' states drift apart).
Never sent: quit, x-blkdebug-break; values that would make a valid
command wait long are clamped (WAIT_CAPS); file names stay in DIR.
"""
import argparse
import base64
import json
import os
import random
import socket
import sys
import time

KEEP_PATTERN = 0x5A
KEEP_SIZE = 4 << 20

# Never sent: quit ends the daemon; a breakpoint holds requests on purpose.
SKIP_COMMANDS = {"quit", "x-blkdebug-break"}
# Enum values not chosen: rbd needs a cluster (connecting can take
# minutes), vsock a hypervisor, full preallocation of a fuzzed size fills
# the disk.
SKIP_VALUES = {"rbd", "vsock", "full"}
# Members whose big but valid values would make a command wait that long
# (seconds, or ns): an accepted value is clamped to this.
WAIT_CAPS = {"open-timeout": 2, "reconnect-delay": 2, "timeout": 2,
             "latency-ns": 1000000, "cbw-timeout": 5}

# --one-job (SNAPNBD_QMPFUZZ_ONE_JOB=1) starts a job only while no other
# one runs.  The fuzzer found that two jobs sharing a node (mirror a->b
# and b->c, a backup from a mirror's target) which finished together
# waited for each other for ever (fixed: block/drain.c, job threads take
# turns to drain); by default jobs run together, to keep finding such bugs.
JOB_COMMANDS = {"blockdev-mirror", "drive-mirror", "blockdev-backup",
                "drive-backup", "block-stream", "block-commit"}
TX_JOB_ACTIONS = {"blockdev-backup", "drive-backup"}

NODE_MEMBERS = {"node-name", "node", "device", "target", "base", "top",
                "base-node", "top-node", "replaces", "bottom", "overlay",
                "image", "file", "backing", "data-file", "snapshot-node-name",
                "filter-node-name", "overlay-node-name"}
FILE_MEMBERS = {"filename", "snapshot-file", "backing-file",
                "config", "conf"}
BITMAP_MEMBERS = {"name", "bitmap", "target-bitmap", "x-dirty-bitmap"}
JOB_COMMANDS_WITH_ID = {"job-pause", "job-resume", "job-cancel",
                        "job-complete", "job-finalize", "job-dismiss"}

INT_RANGES = {
    "int8": (-2**7, 2**7 - 1), "int16": (-2**15, 2**15 - 1),
    "int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1),
    "int": (-2**63, 2**63 - 1), "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1), "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1), "size": (0, 2**64 - 1),
}

HOSTILE_INTS = [0, -1, 1, -2**31, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
                2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**64 - 1, 2**64,
                2**70, 10**30, -10**30, 511, 513, 1 << 62, (1 << 62) + 1]
HOSTILE_STRINGS = ["", " ", "a" * 4096, "x" * 70000, "\x00", "a\x00b",
                   "\ud800", "\udfff\ud800", "\x7f\x1b[2J", "%s%s%n",
                   "\u00e9\u4e2d\U0001f600", "\n", "../" * 20 + "etc",
                   "#block0", "-", "node,name=x", "'\"\\", "\\u0000"]


class Raw:
    """JSON text spliced into an encoded message as it is."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return "Raw(%d chars)" % len(self.text)


def encode(v):
    if isinstance(v, Raw):
        return v.text
    if isinstance(v, dict):
        return "{" + ", ".join(json.dumps(str(k)) + ": " + encode(x)
                               for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(encode(x) for x in v) + "]"
    if isinstance(v, float) and v != v:
        return "NaN"
    return json.dumps(v)


class Failure(Exception):
    pass


class Conn:
    def __init__(self, path, timeout):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.timeout = timeout
        self.buf = b""
        self.events = 0

    def line(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except socket.timeout:
                return None
            if not data:
                raise EOFError("the daemon closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def reply(self, what):
        """The next reply that is not an event, checked."""
        while True:
            line = self.line(self.timeout)
            if line is None:
                raise Failure("no answer within %g s to %s"
                              % (self.timeout, what))
            try:
                msg = json.loads(line)
            except ValueError:
                raise Failure("not JSON: %r (to %s)" % (line[:200], what))
            if not isinstance(msg, dict):
                raise Failure("not an object: %r" % line[:200])
            if "event" in msg:
                self.events += 1
                continue
            check_reply(msg, line)
            return msg


def check_reply(msg, line):
    keys = set(msg) - {"id"}
    if keys == {"return"}:
        return
    if keys == {"error"}:
        e = msg["error"]
        if isinstance(e, dict) and isinstance(e.get("class"), str) and \
                isinstance(e.get("desc"), str) and e["class"] and e["desc"]:
            return
    raise Failure("malformed reply: %r" % line[:300])


class Fuzzer:
    def __init__(self, opts):
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.dir = opts.dir
        self.pid = int(open(opts.pid).read())
        self.log = ["D " + opts.dir]   # replays put their own dir there
        self.q = Conn(opts.qmp, opts.timeout)
        self.q.line(opts.timeout)
        self.send_main({"execute": "qmp_capabilities"}, log=False)
        self.nodes, self.jobs, self.exports = [], [], []
        self.bitmaps = []          # (node, name)
        self.objects = ["sec0", "tg0", "authz0", "io0"]
        self.deleted = []          # names of nodes that were deleted
        self.files = []
        self.counter = 0
        self.running = []          # jobs not yet concluded
        self.qsd = None            # qemu-storage-daemon, to compare with
        self.mismatches = {}       # (command, class, qsd's class) -> example
        self.compared = 0
        # node name -> image: while all its nodes stay open, an image of the
        # setup is written through its qcow2 node only (the graph refuses
        # other writers), so qemu-img check must pass on it at the end
        self.guards = {}
        self.released = set()
        self.stats = {}

    # --- talking ----------------------------------------------------------
    def alive(self):
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state not in ("Z", "X")

    def send_main(self, msg, log=True):
        text = msg if isinstance(msg, str) else encode(msg)
        if log:
            self.log.append("M " + text)
        try:
            self.q.sock.sendall(text.encode("utf-8", "surrogatepass") + b"\n")
            r = self.q.reply(text[:300])
        except (EOFError, OSError) as e:
            raise Failure("connection lost after %s: %s" % (text[:300], e))
        if not self.alive():
            raise Failure("the daemon died after %s" % text[:300])
        if log and self.qsd:
            self.compare(text, r)
        return r

    # --- the same messages to qemu-storage-daemon -------------------------
    def start_qsd(self):
        """The setup again on qemu-storage-daemon, over copies of the
        images in --qsd-dir; from then on every logged message goes to it
        too."""
        self.qsd = Conn(self.opts.qsd, self.opts.timeout)
        self.qsd.line(self.opts.timeout)
        main, d, files = self.q, self.dir, self.files
        self.q, self.dir = self.qsd, self.opts.qsd_dir
        self.must("qmp_capabilities")
        try:
            self.setup(refresh=False)
        finally:
            self.q, self.dir, self.files = main, d, files

    def compare(self, text, r):
        """Both refuse a message: with the same error class?  (The state
        of the two daemons drifts apart, so this is a report, not a
        failure.)  Not transactions nor blockdev-reopen: qemu-storage-daemon
        7.2 crashes on some (bitmap actions on missing nodes, an empty
        "options" list)."""
        if text.startswith(('{"execute": "transaction"',
                            '{"execute": "blockdev-reopen"')):
            return
        try:
            self.qsd.sock.sendall(text.replace(self.dir, self.opts.qsd_dir)
                                  .encode("utf-8", "surrogatepass") + b"\n")
            theirs = self.qsd.reply("qemu-storage-daemon: " + text[:200])
        except (Failure, EOFError, OSError) as e:
            print("qmp_fuzz: qemu-storage-daemon stopped answering (%s) at "
                  "message %d, %s; no more comparisons"
                  % (e, len(self.log), text[:300]), file=sys.stderr)
            self.qsd = None
            return
        self.compared += 1
        if "error" not in r or "error" not in theirs:
            return
        ours, qsd = r["error"], theirs["error"]
        if ours["class"] == qsd["class"] or qsd["class"] == "CommandNotFound":
            return
        try:
            cmd = json.loads(text).get("execute")
        except ValueError:
            cmd = "(not JSON)"
        key = (str(cmd), ours["class"], qsd["class"])
        self.mismatches.setdefault(key, (text[:300], ours["desc"][:150],
                                         qsd["desc"][:150]))

    def execute(self, name, args=None, log=True):
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        r = self.send_main(msg, log)
        key = name if isinstance(name, str) else "?"
        ok, err = self.stats.get(key, (0, 0))
        self.stats[key] = (ok + ("return" in r), err + ("error" in r))
        return r

    def must(self, name, args=None):
        r = self.execute(name, args, log=False)
        if "error" in r:
            raise Failure("setup %s %s: %s" % (name, args, r["error"]))
        return r["return"]

    # --- the world the arguments are drawn from ---------------------------
    def setup(self, refresh=True):
        d = self.dir
        self.must("blockdev-add", {"driver": "raw", "node-name": "keep",
                                   "file": {"driver": "file",
                                            "node-name": "keep-file",
                                            "filename": d + "/keep/keep.raw"}})
        self.must("blockdev-add", {"driver": "raw", "node-name": "fz-raw",
                                   "file": {"driver": "file",
                                            "node-name": "fz-raw-file",
                                            "filename": d + "/fz-raw.img"}})
        self.must("blockdev-add", {"driver": "qcow2", "node-name": "fz-top",
                                   "file": {"driver": "file",
                                            "node-name": "fz-top-file",
                                            "filename": d + "/fz-top.qcow2"}})
        self.must("blockdev-add", {"driver": "null-co", "node-name": "fz-null",
                                   "size": 16 << 20, "read-zeroes": True})
        self.must("block-dirty-bitmap-add", {"node": "fz-raw", "name": "b1"})
        self.must("object-add", {"qom-type": "secret", "id": "sec0",
                                 "data": "fuzzpass"})
        self.must("object-add", {"qom-type": "throttle-group", "id": "tg0",
                                 "limits": {"iops-total": 100000}})
        self.must("object-add", {"qom-type": "authz-simple", "id": "authz0",
                                 "identity": "nobody"})
        self.must("object-add", {"qom-type": "iothread", "id": "io0"})
        self.start_nbd()
        self.must("block-export-add", {"type": "nbd", "id": "fz-exp",
                                       "node-name": "fz-top",
                                       "writable": True})
        self.files = [d + "/fz-raw.img", d + "/fz-top.qcow2",
                      d + "/fz-back.qcow2", "fz-new0.img", "fz-new1.qcow2",
                      d + "/missing/x.img"]
        if refresh:
            self.refresh()

    def start_nbd(self):
        self.must("nbd-server-start", {"addr": {"type": "unix", "data": {
            "path": self.dir + "/nbd.sock"}}})
        self.must("block-export-add", {"type": "nbd", "id": "keep",
                                       "node-name": "keep"})

    def refresh(self):
        r = self.execute("query-named-block-nodes", {"flat": True},
                         log=False)
        nodes, bitmaps = [], []
        for n in r.get("return", []):
            name = n.get("node-name", "")
            if name.startswith("keep"):
                continue
            nodes.append(name)
            for b in n.get("dirty-bitmaps", []):
                if "name" in b:
                    bitmaps.append((name, b["name"]))
        if not self.guards:
            for n in r.get("return", []):
                f = os.path.basename(n.get("image", {}).get("filename", ""))
                if f in ("fz-top.qcow2", "fz-back.qcow2"):
                    self.guards[n.get("node-name")] = f
        for name, image in self.guards.items():
            if name not in nodes:
                self.released.add(image)
        for name in self.nodes:
            if name not in nodes and name not in self.deleted:
                self.deleted = (self.deleted + [name])[-10:]
        self.nodes, self.bitmaps = nodes, bitmaps
        r = self.execute("query-jobs", log=False)
        self.jobs = [j["id"] for j in r.get("return", [])]
        self.running = [j["id"] for j in r.get("return", [])
                        if j.get("status") not in ("concluded", "null")]
        r = self.execute("query-block-exports", log=False)
        self.exports = [e["id"] for e in r.get("return", [])
                        if e["id"] != "keep"]

    def new_name(self, prefix="fz"):
        self.counter += 1
        return "%s-%d" % (prefix, self.counter)

    # --- valid values -----------------------------------------------------
    def node_name(self, fresh):
        r = self.rng.random()
        if fresh and r < 0.7:
            return self.new_name()
        if self.deleted and r < 0.1:
            return self.rng.choice(self.deleted)
        if self.nodes and r < 0.95:
            return self.rng.choice(self.nodes)
        return self.new_name()

    def string_for(self, member, cmd):
        rng = self.rng
        if member in FILE_MEMBERS:
            return rng.choice(self.files)
        if member == "path":
            # a unix socket (an image there would be unlinked, as QEMU
            # does) or a QOM path
            return rng.choice([self.dir + "/nbd.sock", "fz-nbd.sock",
                               "/objects", "/objects/sec0", "fz-dir/x.sock"])
        if member == "id" and cmd in JOB_COMMANDS_WITH_ID or \
                member == "device" and cmd.startswith("block-job-"):
            if self.jobs and rng.random() < 0.85:
                return rng.choice(self.jobs)
            return self.new_name("job")
        if member == "job-id":
            if self.jobs and rng.random() < 0.15:
                return rng.choice(self.jobs)      # a name taken
            return self.new_name("job")
        if member == "id" and cmd.startswith("object-") or \
                member in ("tls-creds", "tls-authz", "throttle-group",
                           "key-secret", "iothread", "password-secret",
                           "pr-manager"):
            return rng.choice(self.objects + [self.new_name("obj")])
        if member in ("id", "name") and ("export" in cmd or
                                          cmd.startswith("nbd-")):
            if self.exports and rng.random() < 0.7:
                return rng.choice(self.exports)
            return self.new_name("exp")
        if member in BITMAP_MEMBERS:
            if self.bitmaps and rng.random() < 0.8:
                return rng.choice(self.bitmaps)[1]
            return self.new_name("bm")
        if member == "node-name" and cmd in ("blockdev-add", "drive-mirror") \
                or member in ("snapshot-node-name", "filter-node-name",
                              "overlay-node-name"):
            return self.node_name(fresh=True)
        if member in NODE_MEMBERS:
            return self.node_name(fresh=False)
        if member in ("format", "backing-fmt"):
            return rng.choice(["raw", "qcow2", "null-co", "luks"])
        if member in ("host",):
            return rng.choice(["127.0.0.1", "localhost", "no.such.invalid"])
        if member in ("port",):
            return rng.choice(["1", "0", "65535", "x"])
        if member == "data" and cmd == "object-add":
            return "fuzzpass"
        if member in ("event",):
            return rng.choice(["read_aio", "write_aio", "flush_to_disk",
                               "nope"])
        return rng.choice(["a", "tag0", "x-1", self.new_name("s")])

    def int_for(self, member, tname):
        rng = self.rng
        lo, hi = INT_RANGES.get(tname, INT_RANGES["int"])
        if member in ("granularity",):
            v = 1 << rng.randint(9, 22)
        elif member in ("size", "offset", "length", "len", "cluster-size",
                        "buf-size", "speed", "bytes", "count"):
            v = rng.choice([0, 512, 4096, 65536, 1 << 20, 16 << 20,
                            rng.randrange(0, 32 << 20, 512)])
            if member == "cluster-size":
                v = 1 << rng.randint(9, 21)
        else:
            v = rng.choice([0, 1, 2, 3, 16, 100, 4096])
        return max(lo, min(hi, v))

    def value(self, t, member, cmd, depth):
        info = self.types[t]
        meta = info["meta-type"]
        rng = self.rng
        if meta == "builtin":
            jt = info["json-type"]
            if jt == "string":
                return self.string_for(member, cmd)
            if jt == "int":
                return self.int_for(member, t)
            if jt == "number":
                return rng.choice([0.0, 1.5, 100.0])
            if jt == "boolean":
                return rng.random() < 0.5
            if jt == "null":
                return None
            return rng.choice([1, "x", {"a": 1}, [1]])
        if meta == "enum":
            values = [v for v in info["values"] if v not in SKIP_VALUES]
            return rng.choice(values or info["values"])
        if meta == "array":
            if depth > 6:
                return []
            return [self.value(info["element-type"], member, cmd, depth + 1)
                    for _ in range(rng.choice([0, 1, 1, 2, 3]))]
        if meta == "alternate":
            choices = info["members"]
            if depth > 4:   # end the recursion: a name, not a new node
                simple = [m for m in choices
                          if self.types[m["type"]]["meta-type"] != "object"]
                choices = simple or choices
            return self.value(rng.choice(choices)["type"], member, cmd, depth)
        return self.obj(t, cmd, depth)

    def obj(self, t, cmd, depth):
        info = self.types[t]
        rng = self.rng
        out = {}
        tag = info.get("tag")
        for m in info["members"]:
            optional = "default" in m
            if optional and (depth > 4 or rng.random() < 0.6):
                continue
            if m["name"] == tag:
                continue
            out[m["name"]] = self.value(m["type"], m["name"], cmd, depth + 1)
        if tag:
            cases = [v for v in info["variants"]
                     if v["case"] not in SKIP_VALUES]
            if cases:
                v = rng.choice(cases)
                out[tag] = v["case"]
                out.update(self.obj(v["type"], cmd, depth + 1))
        return out

    # --- mutations --------------------------------------------------------
    def hostile(self):
        rng = self.rng
        k = rng.randrange(10)
        if k < 3:
            return rng.choice(HOSTILE_INTS)
        if k < 6:
            return rng.choice(HOSTILE_STRINGS)
        if k == 6:
            return rng.choice([None, True, 1.5, -0.0, 1e308, [], {}, [[]],
                               {"": {}}])
        if k == 7:
            n = rng.choice([2, 50, 500])
            return Raw("[" * n + "]" * n)
        if k == 8:
            return rng.choice(self.deleted or ["gone"])
        n = rng.choice([2, 50, 500])
        return Raw('{"a": ' * n + "1" + "}" * n)

    def paths(self, v):
        """Every place in v a value sits: (container, key)."""
        out = []
        if isinstance(v, dict):
            for k, x in v.items():
                out.append((v, k))
                out += self.paths(x)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                out.append((v, i))
                out += self.paths(x)
        return out

    def mutate(self, args):
        rng = self.rng
        places = self.paths(args)
        k = rng.randrange(8)
        if not places or k == 0:
            # an extra member, at the top or anywhere
            dicts = [args] + [c[key] for c, key in places
                              if isinstance(c[key], dict)]
            rng.choice(dicts)[rng.choice(["x", "node-name", "",
                                          "arguments", "a" * 300])] = \
                self.hostile()
            return args
        c, key = rng.choice(places)
        old = c[key]
        if k == 1 and isinstance(c, dict):
            del c[key]                            # a member missing
        elif k == 2 and isinstance(old, str):
            # an enum value off by one, a name nearly right
            c[key] = rng.choice([old + "x", old[:-1], old.upper(),
                                 old + "\x00", " " + old])
        elif k == 3 and isinstance(old, int) and not isinstance(old, bool):
            c[key] = rng.choice([-old, old - 1, old + 1, old * 2**32,
                                 -2**63, 2**64 - 1, old + 2**63])
        elif k == 4:
            c[key] = rng.choice([str(old)[:50], [old], {"v": old},
                                 None]) if not isinstance(old, Raw) else 1
        elif k == 5 and isinstance(old, str) and self.nodes:
            c[key] = rng.choice(self.nodes)       # a name that is taken
        else:
            c[key] = self.hostile()
        return args

    # --- commands and sequences -------------------------------------------
    def args_for(self, cmd):
        t = self.types[cmd]["arg-type"]
        return self.obj(t, cmd, 0)

    def clamp(self, v, member=None):
        if isinstance(v, dict):
            for k, x in v.items():
                v[k] = self.clamp(x, k)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                v[i] = self.clamp(x, member)
        elif member in WAIT_CAPS and isinstance(v, int) and \
                not isinstance(v, bool) and WAIT_CAPS[member] < v < 2**64:
            v = WAIT_CAPS[member]
        elif member == "host" and isinstance(v, str) and \
                v not in ("localhost", "no.such.invalid"):
            v = "127.0.0.1"       # listen and connect on loopback only
        elif member in FILE_MEMBERS | {"path"} and isinstance(v, str) and \
                v not in self.files and not v.startswith(
                    (self.dir + "/nbd.sock", "/objects")):
            # a fuzzed file name stays in the test's directory
            v = "fz-" + v.replace("/", "_").replace("\x00", "")[:200]
        return v

    def second_job(self, cmd, args):
        """Would this start a job while another runs (see JOB_COMMANDS)?"""
        if not self.opts.step_around or not self.running or \
                not isinstance(cmd, str):
            return False
        if cmd in JOB_COMMANDS:
            return True
        if cmd == "transaction" and isinstance(args, dict) and \
                isinstance(args.get("actions"), list):
            return any(isinstance(a, dict) and
                       isinstance(a.get("type"), str) and
                       a["type"] in TX_JOB_ACTIONS
                       for a in args["actions"])
        return False

    def one(self, cmd, args):
        if args is not None:
            args = self.clamp(args)
        if self.second_job(cmd, args):
            return None
        r = self.execute(cmd, args)
        if "return" in r and not str(cmd).startswith("query-"):
            self.refresh()
        return r

    def random_command(self):
        rng = self.rng
        cmd = rng.choice(self.commands)
        args = self.args_for(cmd)
        if rng.random() < 0.45:
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                args = self.mutate(args)
        if rng.random() < 0.03:
            args = rng.choice([[], "x", None, 1, [args]])
        if rng.random() < 0.02:
            cmd = rng.choice([cmd + "x", cmd.upper(), "", 1, None, [cmd]])
        if not args and rng.random() < 0.5:
            args = None
        self.one(cmd, args)

    def seq_add_del_use(self):
        name = self.new_name()
        driver = self.rng.choice([
            {"driver": "null-co", "size": 1 << 20},
            {"driver": "raw", "file": "fz-raw-file"},
            {"driver": "qcow2", "file": "fz-top-file"},
            {"driver": "copy-on-read", "file": "fz-raw"},
            {"driver": "throttle", "throttle-group": "tg0", "file": "fz-null"},
        ])
        self.one("blockdev-add", dict(driver, **{"node-name": name}))
        if self.rng.random() < 0.5:
            self.one("block-dirty-bitmap-add", {"node": name, "name": "b"})
        if self.rng.random() < 0.5:
            self.one("block-export-add", {"type": "nbd", "id": name,
                                          "node-name": name})
        self.one("blockdev-del", {"node-name": name})
        self.deleted = (self.deleted + [name])[-10:]
        self.random_command()

    def seq_job_then_delete(self):
        rng = self.rng
        src = rng.choice(self.nodes or ["fz-null"])
        tgt = self.new_name()
        job = self.new_name("job")
        self.one("blockdev-add", {"driver": "null-co", "node-name": tgt,
                                  "size": 16 << 20})
        kind = rng.randrange(4)
        if kind == 0:
            self.one("blockdev-backup", {"job-id": job, "device": src,
                                         "target": tgt,
                                         "sync": rng.choice(["full", "none"]),
                                         "speed": rng.choice([0, 1 << 20])})
        elif kind == 1:
            self.one("blockdev-mirror", {"job-id": job, "device": src,
                                         "target": tgt, "sync": "full"})
        elif kind == 2:
            self.one("block-stream", {"job-id": job, "device": src})
        else:
            self.one("block-commit", {"job-id": job, "device": src})
        for _ in range(rng.randrange(1, 4)):
            step = rng.randrange(7)
            if step == 0:
                self.one("blockdev-del", {"node-name": tgt})
            elif step == 1:
                self.one("blockdev-del", {"node-name": src})
            elif step == 2:
                self.one("job-cancel", {"id": job, "force": rng.random() < .5})
            elif step == 3:
                self.one(rng.choice(["job-pause", "job-resume",
                                     "job-complete", "job-finalize",
                                     "job-dismiss"]), {"id": job})
            elif step == 4:
                self.one("block_resize", {"node-name": rng.choice([src, tgt]),
                                          "size": rng.choice([0, 1 << 20,
                                                              -512])})
            elif step == 5:
                self.one("block-export-add", {"type": "nbd",
                                              "id": self.new_name("exp"),
                                              "node-name": tgt})
            else:
                self.random_command()
        self.one("query-jobs", None)

    def seq_transaction(self):
        t = self.types["transaction"]["arg-type"]
        actions = [m for m in self.types[t]["members"]
                   if m["name"] == "actions"][0]["type"]
        n = self.rng.randrange(1, 5)
        args = {"actions": [self.value(self.types[actions]["element-type"],
                                       "actions", "transaction", 1)
                            for _ in range(n)]}
        if self.rng.random() < 0.3:
            args["actions"].append({"type": "abort", "data": {}})
        if self.rng.random() < 0.3:
            args = self.mutate(args)
        if self.rng.random() < 0.5:
            args["properties"] = {"completion-mode":
                                  self.rng.choice(["individual", "grouped"])}
        self.one("transaction", args)

    def seq_duplicates(self):
        name = self.rng.choice(self.nodes or ["fz-null"])
        self.one("blockdev-add", {"driver": "null-co", "node-name": name})
        self.one("object-add", {"qom-type": "secret",
                                "id": self.rng.choice(self.objects),
                                "data": "x"})
        self.one("block-dirty-bitmap-add", {"node": name, "name": "dup"})
        self.one("block-dirty-bitmap-add", {"node": name, "name": "dup"})
        self.one("block-dirty-bitmap-merge", {"node": name, "target": "dup",
                                              "bitmaps": ["dup", "dup"]})
        self.one("block-dirty-bitmap-remove", {"node": name, "name": "dup"})

    # --- broken bytes on a second connection ------------------------------
    def raw_payloads(self):
        rng = self.rng
        n = rng.choice([100, 1000, 10000, 100000])
        return rng.choice([
            b'{"execute": "query-version"',
            b'{"execute": "blockdev-add", "arguments": {"driver": "nu',
            b"[" * n + b"]" * n,
            b"[" * n,
            b'{"a": ' * n + b"1" + b"}" * n,
            b'{"execute": "query-version", "arguments": {"x": ' +
            b"9" * 100000 + b"}}",
            b'{"execute": 1e999999}',
            b'{"execute": -99999999999999999999999999999999}',
            b'{"execute": "\\x41"}',
            b'{"execute": "\\u12"}',
            b'{"execute": "\\uZZZZ"}',
            b'{"execute": "\\ud800\\u0041"}',
            b'{"execute": "\xff\xfe\xc0\x80"}',
            b'{"execute": "\x00"}',
            b"\x00" * 64,
            b"\xff" * 64,
            b'"' + b"a" * 300000,
            b'{"execute": "query-version"}' * 200,
            b"}" * 1000 + b"]" * 1000,
            b"'single quotes'",
            b"{'execute': 'qmp_capabilities'}",
            b'{"execute": "qmp_capabilities", "id": ' + b"[" * 5000 + b"]" *
            5000 + b"}",
            b"{" + b'"k": 1, ' * 50000 + b'"execute": "query-version"}',
            bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000))),
        ])

    def raw_round(self):
        payload = self.raw_payloads()
        negotiate = self.rng.random() < 0.5
        self.log.append("R %d %s" % (negotiate,
                                     base64.b64encode(payload).decode()))
        self.send_raw(payload, negotiate)

    def send_raw(self, payload, negotiate):
        c = Conn(self.opts.qmp, self.opts.timeout)
        try:
            c.line(self.opts.timeout)
            if negotiate:
                c.sock.sendall(b'{"execute": "qmp_capabilities"}\n')
                c.reply("qmp_capabilities (raw connection)")
            c.sock.sendall(payload + b"\n")
            # answers until the daemon is quiet or closes
            try:
                while c.line(0.3) is not None:
                    pass
            except EOFError:
                pass
        except OSError:
            pass    # the daemon may close on garbage; it must live on
        finally:
            c.sock.close()
        if not self.alive():
            raise Failure("the daemon died after raw bytes on a second "
                          "connection")
        self.execute("query-version", log=False)

    # --- the run ----------------------------------------------------------
    def load_schema(self):
        schema = self.must("query-qmp-schema")
        self.types = {i["name"]: i for i in schema}
        self.commands = sorted(i["name"] for i in schema
                               if i["meta-type"] == "command"
                               and i["name"] not in SKIP_COMMANDS)

    def step(self):
        r = self.rng.random()
        if r < 0.70:
            self.random_command()
        elif r < 0.78:
            self.seq_add_del_use()
        elif r < 0.86:
            self.seq_job_then_delete()
        elif r < 0.93:
            self.seq_transaction()
        elif r < 0.96:
            self.seq_duplicates()
        else:
            self.raw_round()

    def run(self):
        self.setup()
        if self.opts.qsd:
            self.start_qsd()
        self.load_schema()
        start = time.monotonic()
        i = 0
        while i < self.opts.iters and \
                time.monotonic() - start < self.opts.seconds:
            self.step()
            i += 1
        return i

    def replay(self, path):
        self.setup()
        old_dir = self.dir
        for entry in open(path).read().splitlines():
            kind, rest = entry.split(" ", 1)
            if kind == "D":
                old_dir = rest
            elif kind == "M":
                rest = rest.replace(old_dir, self.dir)
                self.log.append(entry)
                self.send_main(rest, log=False)
            elif kind == "R":
                negotiate, data = rest.split(" ", 1)
                self.log.append(entry)
                self.send_raw(base64.b64decode(data), negotiate == "1")

    def final_checks(self):
        """The protected export serves its bytes after everything."""
        import nbd
        self.execute("nbd-server-stop", log=False)
        self.start_nbd()
        h = nbd.NBD()
        h.connect_uri("nbd+unix:///keep?socket=%s/nbd.sock" % self.dir)
        try:
            data = h.pread(KEEP_SIZE, 0)
        finally:
            h.shutdown()
        if data != bytes([KEEP_PATTERN]) * KEEP_SIZE:
            raise Failure("export keep does not serve its data any more")
        self.refresh()
        with open(os.path.join(self.dir, "strict-images"), "w") as out:
            for image in sorted(set(self.guards.values()) - self.released):
                out.write(image + "\n")
        # stop the jobs so the images are closed cleanly at SIGTERM
        for job in self.jobs:
            self.execute("job-cancel", {"id": job, "force": True}, log=False)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--qmp", required=True)
    p.add_argument("--pid", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=40)
    p.add_argument("--timeout", type=float, default=10)
    p.add_argument("--save", default="qmp-fuzz-failure.log")
    p.add_argument("--replay")
    p.add_argument("--qsd", help="qemu-storage-daemon's QMP socket: send it "
                   "every message too and report differing error classes")
    p.add_argument("--qsd-dir", help="its copies of the images")
    p.add_argument("--stats", action="store_true",
                   help="print each command's count of returns and errors")
    p.add_argument("--one-job", dest="step_around", action="store_true",
                   help="start a job only while no other one runs")
    opts = p.parse_args()
    f = Fuzzer(opts)
    try:
        try:
            if opts.replay:
                f.replay(opts.replay)
                n = len(f.log)
            else:
                n = f.run()
            f.final_checks()
        finally:
            # kept for a replay: the shell's later checks may fail too
            with open(opts.save, "w") as out:
                out.write("".join(line + "\n" for line in f.log))
    except Failure as e:
        print("qmp_fuzz: FAIL (seed %d, after %d messages): %s"
              % (opts.seed, len(f.log), e), file=sys.stderr)
        print("qmp_fuzz: the last messages:", file=sys.stderr)
        for line in f.log[-15:]:
            print("  " + line[:1000], file=sys.stderr)
        print("qmp_fuzz: the whole sequence is in %s; replay it with\n"
              "  SNAPNBD_QMPFUZZ_REPLAY=%s make check "
              "TESTS=tests/test-qmp-fuzz.sh\nor the seed with "
              "SNAPNBD_QMPFUZZ_SEED=%d" % (os.path.abspath(opts.save),
                                           os.path.abspath(opts.save),
                                           opts.seed), file=sys.stderr)
        return 1
    for (cmd, ours, qsd), (text, d1, d2) in sorted(f.mismatches.items()):
        print("qmp_fuzz: %s: %s here, %s in qemu-storage-daemon, e.g. %s\n"
              "    snapnbd: %s\n    qemu-storage-daemon: %s"
              % (cmd, ours, qsd, text, d1, d2))
    if opts.qsd:
        print("qmp_fuzz: %d messages compared with qemu-storage-daemon, %d "
              "kinds of differing error classes" % (f.compared,
                                                    len(f.mismatches)))
    if opts.stats:
        for cmd, (ok, err) in sorted(f.stats.items()):
            print("qmp_fuzz: %-40s %6d returns %6d errors" % (cmd, ok, err))
    ok = sum(s[0] for s in f.stats.values())
    err = sum(s[1] for s in f.stats.values())
    print("qmp_fuzz: seed %d: %d steps, %d messages, %d returns, %d errors, "
          "%d events" % (opts.seed, n, len(f.log), ok, err, f.q.events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
