"""qmp_schema - checks of query-qmp-schema for tests/test-qmp-schema.sh.

    python3 qmp_schema.py SNAPNBD_SOCKET [QSD_SOCKET]

1. The introspection is well formed: every type named is defined once,
   every SchemaInfo has the members of its meta-type, and the commands are
   exactly those of query-commands.
2. Every argument the schema lists is accepted: for each command, the
   arguments built from its schema (every member, of its type, recursing
   into structs, unions and lists) never get "is unexpected" nor a type
   error back.
3. A table of bad inputs gets the same error class and text as
   qemu-storage-daemon 7.2 (when QSD_SOCKET is given) for the commands both
   have; and always the text written here, which is QEMU's.
4. The replies of the query commands and the events of a job and an export
   are what their declared types say (required members present, nothing
   undeclared, JSON types and enum values right).
5. With qemu-storage-daemon: every command and event both have is typed as
   QEMU 7.2 types it (arguments, replies), snapnbd having at most fewer
   members, branches and enum values, save the additions listed.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))
from jobs_qmp import QMP  # noqa: E402

META_MEMBERS = {
    "builtin": {"json-type"},
    "enum": {"members", "values"},
    "array": {"element-type"},
    "object": {"members"},
    "alternate": {"members"},
    "command": {"arg-type", "ret-type"},
    "event": {"arg-type"},
}


def check_introspection(q):
    schema = q.cmd("query-qmp-schema")
    by_name = {}
    for info in schema:
        name, meta = info["name"], info["meta-type"]
        assert name not in by_name, f"{name} defined twice"
        by_name[name] = info
        missing = META_MEMBERS[meta] - set(info)
        assert not missing, f"{name} ({meta}) lacks {missing}"

    def defined(t, where):
        assert t in by_name, f"{where} uses type {t}, which is not defined"

    for info in schema:
        meta, where = info["meta-type"], info["name"]
        if meta in ("command", "event"):
            defined(info["arg-type"], where)
            assert by_name[info["arg-type"]]["meta-type"] == "object", where
        if meta == "command":
            defined(info["ret-type"], where)
        if meta == "array":
            defined(info["element-type"], where)
            assert where == "[%s]" % info["element-type"], where
        if meta == "enum":
            assert [m["name"] for m in info["members"]] == info["values"]
        if meta == "alternate":
            for m in info["members"]:
                defined(m["type"], where)
        if meta == "object":
            names = [m["name"] for m in info["members"]]
            for m in info["members"]:
                defined(m["type"], where)
                assert set(m) - {"name", "type", "default", "features"} == \
                    set(), m
            if "tag" in info:
                assert info["tag"] in names, where
                tag_type = [m["type"] for m in info["members"]
                            if m["name"] == info["tag"]][0]
                values = by_name[tag_type]["values"]
                cases = [v["case"] for v in info["variants"]]
                assert sorted(cases) == sorted(values), (where, cases)
                for v in info["variants"]:
                    defined(v["type"], where)
    commands = {i["name"] for i in schema if i["meta-type"] == "command"}
    listed = {c["name"] for c in q.cmd("query-commands")}
    assert commands == listed, (
        f"only in query-commands: {sorted(listed - commands)}; "
        f"only in the schema: {sorted(commands - listed)}")
    for required in ("blockdev-add", "blockdev-backup", "block-export-add",
                     "transaction", "query-qmp-schema"):
        assert required in commands, required
    return by_name


# Every string member is this: the name of a node (with a bitmap of that
# name) that exists, so that handlers get past their lookups to their own
# checks of the members; as a file name, a file in the test's directory.
NAME = "n0"
FILE_MEMBERS = {"filename", "snapshot-file", "path", "conf", "config"}


class Sampler:
    """Arguments that fill every member of a type (a union: each branch
    in turn), with values of the declared JSON types."""

    def __init__(self, by_name):
        self.types = by_name

    def value(self, t, depth):
        info = self.types[t]
        meta = info["meta-type"]
        if meta == "builtin":
            return {"string": NAME, "int": 1, "number": 1.5, "boolean": True,
                    "null": None, "value": {"any": [1]}}[info["json-type"]]
        if meta == "enum":
            return info["values"][0]
        if meta == "array":
            return [self.value(info["element-type"], depth)]
        if meta == "alternate":
            # near the top, the object branch (a nested node); deeper, the
            # string branch (a node name), which ends the recursion
            for m in info["members"]:
                if depth <= 1 and \
                        self.types[m["type"]]["meta-type"] == "object":
                    return self.value(m["type"], depth)
            for m in info["members"]:
                if self.types[m["type"]].get("json-type") == "string":
                    return NAME
            return self.value(info["members"][0]["type"], depth)
        return self.objects(t, depth)[0]

    def objects(self, t, depth):
        """One object per union branch (or one for a struct)."""
        info = self.types[t]
        base = {}
        for m in info["members"]:
            if "default" in m and depth > 3:
                continue
            base[m["name"]] = self.value(m["type"], depth + 1)
            if m["name"] in FILE_MEMBERS:
                # in the test's directory (the server's is elsewhere)
                base[m["name"]] = os.path.join(os.getcwd(), NAME)
        if "tag" not in info:
            return [base]
        out = []
        for v in info["variants"]:
            o = dict(base)
            o[info["tag"]] = v["case"]
            o.update(self.objects(v["type"], depth + 1)[0])
            out.append(o)
        return out


def check_all_members_accepted(q, by_name):
    sampler = Sampler(by_name)
    skip = {"quit", "qmp_capabilities", "nbd-server-start"}
    tried = 0
    q.cmd("blockdev-add", {"driver": "null-co", "node-name": NAME,
                           "size": 1 << 20})
    q.cmd("block-dirty-bitmap-add", {"node": NAME, "name": NAME})
    tx = by_name["transaction"]["arg-type"]
    action = [m["type"] for m in by_name[tx]["members"]
              if m["name"] == "actions"][0]
    action = by_name[action]["element-type"]
    samples = [("transaction", {"actions": [a]})
               for a in sampler.objects(action, 1)]
    for name, info in sorted(by_name.items()):
        if info["meta-type"] != "command" or name in skip:
            continue
        samples += [(name, args)
                    for args in sampler.objects(info["arg-type"], 0)]
    for name, args in samples:
        tried += 1
        r = q.execute(name, args)
        desc = r.get("error", {}).get("desc", "")
        for bad in ("is unexpected", "Invalid parameter type",
                    "is missing", "does not accept value"):
            assert bad not in desc, (name, args, desc)
    # nbd-server-start with every member: it would start a server; stop it
    r = q.execute("nbd-server-start", {
        "addr": {"type": "unix", "data": {"path": sys.argv[1] + ".nbd"}},
        "tls-creds": "nope", "tls-authz": "nope", "max-connections": 1})
    assert "unexpected" not in r.get("error", {}).get("desc", ""), r
    return tried


# (command, arguments, QEMU's error text)
BAD = [
    ("blockdev-del", {}, "Parameter 'node-name' is missing"),
    ("blockdev-del", {"node-name": 1},
     "Invalid parameter type for 'node-name', expected: string"),
    ("blockdev-del", {"node-name": "a", "x": 1}, "Parameter 'x' is unexpected"),
    ("query-named-block-nodes", {"flat": "yes"},
     "Invalid parameter type for 'flat', expected: boolean"),
    ("block-job-set-speed", {"device": "j", "speed": "1"},
     "Invalid parameter type for 'speed', expected: integer"),
    ("block-job-set-speed", {"device": "j", "speed": 1.5},
     "Invalid parameter type for 'speed', expected: integer"),
    ("block-dirty-bitmap-add", {"node": "n", "name": "b", "granularity": -1},
     "Parameter 'granularity' expects uint32_t"),
    ("block-dirty-bitmap-add", {"node": "n", "name": "b",
                                "granularity": "64k"},
     "Parameter 'granularity' expects uint64"),
    ("block-dirty-bitmap-merge", {"node": "n", "target": "t",
                                  "bitmaps": [{"node": "n"}]},
     "Parameter 'bitmaps[0].name' is missing"),
    ("block-dirty-bitmap-merge", {"node": "n", "target": "t",
                                  "bitmaps": [3]},
     "Invalid parameter type for 'bitmaps[0]', expected: "
     "BlockDirtyBitmapOrStr"),
    ("block-dirty-bitmap-merge", {"node": "n", "target": "t",
                                  "bitmaps": "b"},
     "Invalid parameter type for 'bitmaps', expected: array"),
    ("blockdev-backup", {"device": "d", "target": "t", "sync": "sometimes"},
     "Parameter 'sync' does not accept value 'sometimes'"),
    ("blockdev-backup", {"device": "d", "target": "t"},
     "Parameter 'sync' is missing"),
    ("blockdev-backup", {"device": "d", "target": "t", "sync": "full",
                         "x-perf": {"max-workers": "8"}},
     "Invalid parameter type for 'x-perf.max-workers', expected: integer"),
    ("blockdev-backup", {"device": "d", "target": "t", "sync": "full",
                         "x-perf": 1},
     "Invalid parameter type for 'x-perf', expected: object"),
    ("blockdev-backup", {"device": "d", "target": "t", "sync": "full",
                         "on-source-error": "panic"},
     "Parameter 'on-source-error' does not accept value 'panic'"),
    ("blockdev-add", {"node-name": "n"}, "Parameter 'driver' is missing"),
    ("blockdev-add", {"driver": "raw", "node-name": "n"},
     "Parameter 'file' is missing"),
    ("blockdev-add", {"driver": "raw", "node-name": "n",
                      "file": {"driver": "file"}},
     "Parameter 'file.filename' is missing"),
    ("blockdev-add", {"driver": "raw", "node-name": "n", "file": 5},
     "Invalid parameter type for 'file', expected: BlockdevRef"),
    ("blockdev-add", {"driver": "qcow2", "node-name": "n", "file": "f",
                      "backing": 5},
     "Invalid parameter type for 'backing', expected: BlockdevRefOrNull"),
    ("blockdev-add", {"driver": "file", "node-name": "n", "filename": "f",
                      "cache": {"direct": 1}},
     "Invalid parameter type for 'cache.direct', expected: boolean"),
    ("blockdev-add", {"driver": "file", "node-name": "n", "filename": "f",
                      "bogus": 1}, "Parameter 'bogus' is unexpected"),
    ("blockdev-add", {"driver": "file", "node-name": "n", "filename": "f",
                      "aio": "magic"},
     "Parameter 'aio' does not accept value 'magic'"),
    ("blockdev-add", {"driver": "null-co", "node-name": "n",
                      "detect-zeroes": "maybe"},
     "Parameter 'detect-zeroes' does not accept value 'maybe'"),
    ("blockdev-add", {"driver": "raw", "node-name": "n",
                      "file": {"driver": "file", "filename": "f",
                               "locking": 1}},
     "Invalid parameter type for 'file.locking', expected: string"),
    ("blockdev-add", {"driver": "nbd", "node-name": "n",
                      "server": {"type": "unix"}},
     "Parameter 'server.path' is missing"),
    ("blockdev-add", {"driver": "null-co", "node-name": "n", "size": "1"},
     "Invalid parameter type for 'size', expected: integer"),
    ("block-export-add", {"type": "nbd", "id": "e", "node-name": "n",
                          "writable": "yes"},
     "Invalid parameter type for 'writable', expected: boolean"),
    ("block-export-add", {"type": "nbd", "id": "e"},
     "Parameter 'node-name' is missing"),
    ("block-export-del", {"id": "e", "mode": "soft"},
     "Parameter 'mode' does not accept value 'soft'"),
    ("nbd-server-start", {"addr": {"type": "unix", "data": {}}},
     "Parameter 'addr.data.path' is missing"),
    ("nbd-server-start", {"addr": {"type": "unix",
                                   "data": {"path": "p"}},
                          "max-connections": -1},
     "Parameter 'max-connections' expects uint32_t"),
    ("transaction", {"actions": [{"type": "block-dirty-bitmap-add",
                                  "data": {"node": "n"}}]},
     "Parameter 'actions[0].data.name' is missing"),
    ("transaction", {"actions": [{"type": "bogus", "data": {}}]},
     "Parameter 'type' does not accept value 'bogus'"),
    ("transaction", {"actions": [{"type": "abort", "data": {"x": 1}}]},
     "Parameter 'actions[0].data.x' is unexpected"),
    ("transaction", {"actions": [{"type": "abort"}]},
     "Parameter 'actions[0].data' is missing"),
    ("transaction", {"actions": [], "properties": {"completion-mode": "x"}},
     "Parameter 'completion-mode' does not accept value 'x'"),
    ("transaction", {"actions": [{"type": "blockdev-backup", "data": {
        "device": "d", "target": "t", "sync": "full", "speed": True}}]},
     "Invalid parameter type for 'actions[0].data.speed', expected: integer"),
    ("block-export-add", {"type": "nbd", "id": "e", "node-name": "n",
                          "bitmaps": [{"node": "n", "name": 3}]},
     "Invalid parameter type for 'bitmaps[0].name', expected: string"),
    ("block_resize", {"node-name": "n", "size": "1G"},
     "Invalid parameter type for 'size', expected: integer"),
    ("block_resize", {"node-name": "n"}, "Parameter 'size' is missing"),
    ("blockdev-reopen", {"options": [{"node-name": "n"}]},
     "Parameter 'options[0].driver' is missing"),
    ("blockdev-reopen", {"options": {"driver": "raw"}},
     "Invalid parameter type for 'options', expected: array"),
    ("blockdev-snapshot-internal-sync", {"device": "d"},
     "Parameter 'name' is missing"),
    ("blockdev-snapshot-delete-internal-sync", {"id": "1"},
     "Parameter 'device' is missing"),
    ("transaction", {"actions": [{"type": "blockdev-snapshot-internal-sync",
                                  "data": {"device": "d", "name": 1}}]},
     "Invalid parameter type for 'actions[0].data.name', expected: string"),
    ("nbd-server-add", {"device": "d", "writable": "no"},
     "Invalid parameter type for 'writable', expected: boolean"),
    ("nbd-server-remove", {"name": "x", "mode": "now"},
     "Parameter 'mode' does not accept value 'now'"),
    ("query-blockstats", {"query-nodes": 1},
     "Invalid parameter type for 'query-nodes', expected: boolean"),
    ("x-blockdev-amend", {"job-id": "a", "node-name": "n",
                          "options": {"driver": "luks"}},
     "Parameter 'options.state' is missing"),
    ("x-blockdev-amend", {"job-id": "a", "node-name": "n",
                          "options": {"driver": "luks", "state": "on"}},
     "Parameter 'state' does not accept value 'on'"),
    ("x-debug-query-block-graph", {"depth": 1},
     "Parameter 'depth' is unexpected"),
    ("job-cancel", {"id": ["j"]},
     "Invalid parameter type for 'id', expected: string"),
    ("block-commit", {"device": "d", "on-error": "explode"},
     "Parameter 'on-error' does not accept value 'explode'"),
    ("blockdev-create", {"job-id": "c", "options": {"driver": "qcow2",
                                                    "file": "f"}},
     "Parameter 'options.size' is missing"),
    ("blockdev-create", {"job-id": "c", "options": {"driver": "file",
                                                    "filename": "f",
                                                    "size": "1G"}},
     "Parameter 'options.size' expects uint64"),
    ("blockdev-snapshot-sync", {"device": "d"},
     "Parameter 'snapshot-file' is missing"),
    ("blockdev-snapshot-sync", {"snapshot-file": "f", "mode": "new"},
     "Parameter 'mode' does not accept value 'new'"),
    ("object-add", {"qom-type": "throttle-group", "id": "t",
                    "limits": {"iops-total": "5"}},
     "Invalid parameter type for 'limits.iops-total', expected: integer"),
    ("object-del", {}, "Parameter 'id' is missing"),
    ("query-jobs", {"x": 1}, "Parameter 'x' is unexpected"),
]


def check_bad_inputs(q, qsd):
    compared = 0
    qsd_commands = ({c["name"] for c in qsd.cmd("query-commands")}
                    if qsd else set())
    for name, args, text in BAD:
        r = q.execute(name, args)
        assert "error" in r, (name, args, r)
        got = (r["error"]["class"], r["error"]["desc"])
        assert got == ("GenericError", text), (name, args, got)
        if name in qsd_commands:
            want = qsd.execute(name, args)["error"]
            # QEMU 7.2 calls a list element 'null' where snapnbd names it
            # by its path (test-qmp-errors.sh): the one difference allowed
            if want["desc"] != got[1] and "'null'" in want["desc"]:
                got = (got[0], re.sub(r"'[^']*\[\d+\]'", "'null'", got[1]))
            assert (want["class"], want["desc"]) == got, \
                (name, args, "qemu-storage-daemon:", want, "snapnbd:", got)
            compared += 1
    return compared


def conforms(by_name, value, t, path="value"):
    """The problems of @value as a @t of the introspection (a reply)."""
    info = by_name[t]
    meta = info["meta-type"]
    if meta == "builtin":
        jt = info["json-type"]
        ok = {"string": lambda v: isinstance(v, str),
              "int": lambda v: isinstance(v, int) and
              not isinstance(v, bool),
              "number": lambda v: isinstance(v, (int, float)) and
              not isinstance(v, bool),
              "boolean": lambda v: isinstance(v, bool),
              "null": lambda v: v is None,
              "value": lambda v: True}[jt](value)
        return [] if ok else [f"{path}: not a {jt}: {value!r}"]
    if meta == "enum":
        return [] if value in info["values"] else \
            [f"{path}: {value!r} not in {info['values']}"]
    if meta == "array":
        if not isinstance(value, list):
            return [f"{path}: not a list"]
        return [p for i, v in enumerate(value)
                for p in conforms(by_name, v, info["element-type"],
                                  f"{path}[{i}]")]
    if meta == "alternate":
        for m in info["members"]:
            if not conforms(by_name, value, m["type"], path):
                return []
        return [f"{path}: no branch of the alternate fits {value!r}"]
    if not isinstance(value, dict):
        return [f"{path}: not an object"]
    members = list(info["members"])
    if "tag" in info:
        case = [v for v in info["variants"]
                if v["case"] == value.get(info["tag"])]
        if case:
            members += by_name[case[0]["type"]]["members"]
    problems = []
    for m in members:
        if m["name"] in value:
            problems += conforms(by_name, value[m["name"]], m["type"],
                                 f"{path}.{m['name']}")
        elif "default" not in m:
            problems.append(f"{path}: lacks {m['name']}")
    names = {m["name"] for m in members}
    problems += [f"{path}: {k} is not declared" for k in value
                 if k not in names]
    return problems


def check_replies(q, by_name):
    """Replies of the query commands are what their ret-type says, with
    nodes, bitmaps, an export and a job to report."""
    q.cmd("blockdev-add", {"driver": "null-co", "node-name": "rs-src",
                           "size": 1 << 20, "read-zeroes": True})
    q.cmd("blockdev-add", {"driver": "null-co", "node-name": "rs-dst",
                           "size": 1 << 20})
    q.cmd("block-dirty-bitmap-add", {"node": "rs-src", "name": "b0",
                                     "persistent": False})
    q.cmd("block-dirty-bitmap-add", {"node": "rs-src", "name": "b1",
                                     "disabled": True})
    q.cmd("nbd-server-start", {"addr": {"type": "unix", "data": {
        "path": sys.argv[1] + ".replies"}}})
    q.cmd("block-export-add", {"type": "nbd", "id": "rs-e",
                               "node-name": "rs-src", "bitmaps": ["b1"]})
    q.cmd("blockdev-backup", {"job-id": "rs-j", "device": "rs-src",
                              "target": "rs-dst", "sync": "none"})
    q.cmd("blockdev-add", {"driver": "null-co", "node-name": "rs-m",
                           "size": 1 << 20})
    q.cmd("blockdev-mirror", {"job-id": "rs-mj", "device": "rs-dst",
                              "target": "rs-m", "sync": "full"})
    q.wait_event("BLOCK_JOB_READY", device="rs-mj")
    checked = 0
    for name, args in (("query-version", None), ("query-commands", None),
                       ("query-qmp-schema", None),
                       ("query-named-block-nodes", None),
                       ("query-named-block-nodes", {"flat": True}),
                       ("query-block-exports", None), ("query-jobs", None),
                       ("query-block-jobs", None), ("query-block", None),
                       ("query-blockstats", None),
                       ("query-blockstats", {"query-nodes": True}),
                       ("x-debug-query-block-graph", None)):
        ret = q.cmd(name, args)
        problems = conforms(by_name, ret, by_name[name]["ret-type"], name)
        assert not problems, problems[:5]
        checked += 1
    # and the events of a job and an export, as their arg-type says
    q.cmd("job-cancel", {"id": "rs-j"})
    q.wait_event("BLOCK_JOB_CANCELLED", device="rs-j")
    q.wait_event("JOB_STATUS_CHANGE", id="rs-j", status="concluded")
    q.cmd("job-cancel", {"id": "rs-mj"})
    q.wait_event("JOB_STATUS_CHANGE", id="rs-mj", status="concluded")
    q.cmd("block-export-del", {"id": "rs-e"})
    q.wait_event("BLOCK_EXPORT_DELETED", id="rs-e")
    for ev in q.events:
        info = by_name.get(ev["event"])
        assert info and info["meta-type"] == "event", ev
        problems = conforms(by_name, ev.get("data", {}), info["arg-type"],
                            ev["event"])
        assert not problems, problems
    return checked + len(q.events)


# What snapnbd's schema has that QEMU 7.2's has not (snapnbd(1)), as the
# ends of member paths (a type is compared once, on the first path).
ADDITIONS = (
    "block-commit/backing-mask-protocol",
    "block-stream/backing-mask-protocol",
    "/+throttle/limits",
    "blockdev-mirror/unmap",
    "/x-auto-write-blocking",
    "query-block-jobs[]/actively-synced",
    "query-block-jobs[]/x-copy-mode",
    "/+throttle/throttle-group (optional)",
    "x-blockdev-amend/options/+qcow2/version",
    "x-blockdev-amend/options/+qcow2/lazy-refcounts",
    "x-blockdev-amend/options/+qcow2/refcount-bits",
    "/+rbd/x-dirty-since",
    "block-export-add/x-iothreads",
    "block-export-add/x-priority",
    "block-export-add/x-background-rate",
    "/x-cbw",
    "/x-max-store-bytes",
    "/+copy-before-write/x-on-store-full",
    "x-perf/x-background-share",
)


def added(path):
    return any(path.endswith(a) for a in ADDITIONS)


def compare(ours, theirs, a, b, path, seen, out):
    """Differences of our type @a from QEMU's @b: ours may have fewer
    members, branches and enum values, never others or other types."""
    if (a, b) in seen:
        return
    seen.add((a, b))
    x, y = ours[a], theirs[b]
    if x["meta-type"] != y["meta-type"]:
        out.append(f"{path}: {x['meta-type']} vs {y['meta-type']}")
    elif x["meta-type"] == "builtin":
        if x["json-type"] != y["json-type"]:
            out.append(f"{path}: {x['json-type']} vs {y['json-type']}")
    elif x["meta-type"] == "enum":
        extra = set(x["values"]) - set(y["values"])
        if extra:
            out.append(f"{path}: values {sorted(extra)}")
    elif x["meta-type"] == "array":
        compare(ours, theirs, x["element-type"], y["element-type"],
                path + "[]", seen, out)
    elif x["meta-type"] == "alternate":
        if len(x["members"]) != len(y["members"]):
            out.append(f"{path}: alternate branches differ")
        for m, n in zip(x["members"], y["members"]):
            compare(ours, theirs, m["type"], n["type"], path, seen, out)
    elif x["meta-type"] == "object":
        theirs_m = {m["name"]: m for m in y["members"]}
        for m in x["members"]:
            mp = f"{path}/{m['name']}"
            n = theirs_m.get(m["name"])
            if n is None:
                if not added(mp):
                    out.append(f"{mp}: not in QEMU 7.2")
                continue
            if ("default" in m) != ("default" in n) and \
                    not added(f"{mp} (optional)"):
                out.append(f"{mp}: optional differs")
            compare(ours, theirs, m["type"], n["type"], mp, seen, out)
        if x.get("tag") != y.get("tag"):
            out.append(f"{path}: tag {x.get('tag')} vs {y.get('tag')}")
        theirs_v = {v["case"]: v["type"] for v in y.get("variants", ())}
        for v in x.get("variants", ()):
            if v["case"] not in theirs_v:
                out.append(f"{path}/+{v['case']}: not in QEMU 7.2")
            else:
                compare(ours, theirs, v["type"], theirs_v[v["case"]],
                        f"{path}/+{v['case']}", seen, out)


# QEMU 7.2 commands that qemu-storage-daemon 7.2 lacks (its schema leaves
# out qapi/misc.json), checked against QEMU's qapi/misc.json by hand.
QEMU_NOT_QSD = {"query-iothreads"}


def check_against_qemu(ours, qsd):
    """Our commands' arguments and replies, and our events, are QEMU 7.2's
    (a subset), save the additions listed."""
    theirs = {i["name"]: i for i in qsd.cmd("query-qmp-schema")}
    out, compared = [], 0
    for name, info in ours.items():
        if info["meta-type"] not in ("command", "event"):
            continue
        if name not in theirs:
            assert name.startswith("x-blkdebug-") or name in QEMU_NOT_QSD, \
                f"{name} not in QEMU"
            continue
        compared += 1
        for part in ("arg-type", "ret-type"):
            if part in info:
                compare(ours, theirs, info[part], theirs[name][part],
                        name, set(), out)
    assert not out, out
    return compared


def main():
    q = QMP(sys.argv[1])
    qsd = QMP(sys.argv[2]) if len(sys.argv) > 2 else None
    by_name = check_introspection(q)
    tried = check_all_members_accepted(q, by_name)
    compared = check_bad_inputs(q, qsd)
    replies = check_replies(q, by_name)
    print(f"introspection: {len(by_name)} entities; {tried} argument sets "
          f"accepted; {len(BAD)} bad inputs, {compared} compared with "
          f"qemu-storage-daemon; {replies} replies and events as declared")
    if qsd:
        # the same checks of qemu-storage-daemon's own introspection
        check_introspection(qsd)
        n = check_against_qemu(by_name, qsd)
        print(f"{n} commands and events typed as in qemu-storage-daemon")


if __name__ == "__main__":
    main()
