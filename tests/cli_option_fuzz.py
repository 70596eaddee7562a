"""Option syntax against qemu-storage-daemon: random --nbd-server,
--export, --blockdev, --object and --chardev (with --monitor) specs
(QEMU's key=value syntax: nested keys, list indexes, escaped commas,
implied keys, bad values, help requests), each given to snapnbd and to
qemu-storage-daemon; both must fail or both get as far as a sentinel
export that fails on purpose, with the same message; help goes to stdout,
which must match too.
Usage: cli_option_fuzz.py SNAPNBD DIR SEED CASES (SNAPNBD_CLIFUZZ_MODES: a
comma-separated subset of server,export,blockdev,object,chardev)
Prints the seed; a failing case prints both command lines."""
import os
import random
import re
import shutil
import subprocess
import sys

SENTINEL = "type=nbd,id=zz-sentinel,node-name=no-such-node"

# Known differences, documented in docs/snapnbd.pod; snapnbd-only members
# (x-...) are left out of the vocabulary:
#  - tls-authz without tls-creds is refused (qemu-storage-daemon 7.2
#    ignores it silently, so a user may think it applies);
#  - a permission conflict names the NBD export, where QEMU says "an
#    unnamed block device";
#  - export types other than nbd (fuse, vhost-user-blk) are not in
#    snapnbd's enum, as in a qemu-storage-daemon built without them.
#  - --blockdev: drivers snapnbd does not have are not in its
#    BlockdevDriver enum; qcow2's overlap-check is not in its schema, and
#    data-file is refused by the driver (external data files: left out of
#    the vocabulary, as QEMU opens it before the backing and snapnbd
#    refuses it after); a writable raw node over a read-only file (below);
#  - --object: object types snapnbd does not make, properties it does not
#    implement (encrypted secrets, passwordid, sanity-check); its help
#    lists the types snapnbd makes (and lists them for a type it does not
#    make, where QEMU gives that type's properties);
#  - --chardev: backends other than socket and stdio, and socket features other
#    than a unix socket path in server mode, are refused (QEMU would go on
#    to use them, or fail later with its own words); "--chardev help" lists
#    snapnbd's backends.
KNOWN = [
    "tls-authz is not permitted without --tls-creds",
    "Parameter 'type' does not accept value 'fuse'",
    "Parameter 'type' does not accept value 'vhost-user-blk'",
    "Parameter 'driver' does not accept value 'vmdk'",
    "Parameter 'overlap-check' is unexpected",
    "is not supported (only secret, iothread",
    "is not supported (encrypted secrets)",
    "property 'passwordid' is not supported",
    "property 'sanity-check' is not supported",
    "is not supported (only a unix socket path with server=on)",
    "is not supported (only socket and stdio)",
    # qsd 7.2 accepts an enabled bitmap on a read-only export when it is
    # named as {node, name}; snapnbd refuses it however it is named
    "incompatible with readonly export",
]
# help listings that differ by design (above): their first line
KNOWN_HELP = ["List of user creatable objects:",
              "Available chardev backend types: "]


def value(rnd, kind):
    pools = {
        "bool": ["on", "off", "yes", "no", "true", "false", "y", "n",
                 "maybe", "", "1", "ON"],
        "int": ["0", "1", "16", "0x10", "-1", "99999999999", "1k", "", "x",
                "010", "4294967295", "4294967296", " 1"],
        "str": ["f0", "d0", "e0", "b0", "", "a,,b", "x y", "über",
                "no-such-node", "f0,,"],
    }
    return rnd.choice(pools[kind])


EXPORT_KEYS = [
    ("type", ["nbd", "fuse", "vhost-user-blk", "", "NBD"]),
    ("id", "str"), ("node-name", "str"), ("writable", "bool"),
    ("writethrough", "bool"), ("name", "str"), ("description", "str"),
    ("allocation-depth", "bool"), ("iothread", "str"),
    ("fixed-iothread", "bool"), ("bitmaps", "list"),
    ("bogus", "str"), ("node-name.x", "str"), ("id.0", "str"),
]

SERVER_KEYS = [
    ("addr.type", ["unix", "inet", "fd", "vsock", "", "UNIX"]),
    ("addr.path", "path"), ("addr.abstract", "bool"), ("addr.tight", "bool"),
    ("addr.host", ["127.0.0.1", "", "::1x"]), ("addr.port", "int"),
    ("addr.str", "str"), ("max-connections", "int"), ("tls-creds", "str"),
    ("tls-authz", "str"), ("bogus", "str"), ("addr", "str"),
    ("addr.0", "str"),
]


# Keys QEMU's keyval lexer rejects or treats specially (value None: a bare
# word).
LEXICAL = [("writable", None), ("", "x"), ("a..b", "1"), (".a", "1"),
           ("a.", "1"), ("help", None), ("?", None), ("1a", "x"),
           ("__com.example_x", "1"), ("x" * 130, "1"),
           ("bitmaps." + "9" * 12, "b0"), ("node-name.0", "d0"),
           ("addr.type.x", "unix"), ("a b", "1"), ("é", "1")]


def list_keys(rnd, key):
    """Keys and values of a list member: "key.N=" or "key.N.node=" forms,
    with holes, duplicates and mixed forms now and then."""
    n = rnd.randint(0, 3)
    idx = list(range(n))
    if n and rnd.random() < 0.2:
        idx[rnd.randrange(n)] = n + 1          # a hole
    if rnd.random() < 0.1:
        idx.append("x")                        # not an index
    out = []
    for i in idx:
        if rnd.random() < 0.7:
            out.append((f"{key}.{i}", value(rnd, "str")))
        else:
            out.append((f"{key}.{i}.node", rnd.choice(["d0", "f0", "x"])))
            out.append((f"{key}.{i}.name", rnd.choice(["b0", "b1", "x"])))
    if rnd.random() < 0.1:
        out.append((key, value(rnd, "str")))   # scalar beside the list
    return out


def make_spec(rnd, keys, required, path, implied="type"):
    pairs = list(required)
    for _ in range(rnd.randint(0, 5)):
        key, kind = rnd.choice(keys)
        if kind == "list":
            pairs += list_keys(rnd, key)
        elif kind == "path":
            pairs.append((key, path))
        elif isinstance(kind, list):
            pairs.append((key, rnd.choice(kind)))
        else:
            pairs.append((key, value(rnd, kind)))
    if rnd.random() < 0.3 and pairs:
        pairs.pop(rnd.randrange(len(pairs)))   # drop a required key
    if rnd.random() < 0.15:                    # lexical oddities
        pairs.append(rnd.choice(LEXICAL))
    rnd.shuffle(pairs)
    keys_given = [k for k, _ in pairs]
    if rnd.random() < 0.15 and implied in keys_given:   # the implied key
        i = keys_given.index(implied)
        pairs.insert(0, (None, pairs.pop(i)[1]))
    spec = ",".join(k if v is None else v if k is None else f"{k}={v}"
                    for k, v in pairs)
    if rnd.random() < 0.05:
        spec += ","                            # trailing comma
    return spec


BLOCKDEV_COMMON = [
    ("node-name", ["n1", "f0", "", "1n", "n" * 40, "n-1.x", "n_1"]),
    ("read-only", "bool"), ("auto-read-only", "bool"),
    ("force-share", ["on", "off", "no", "maybe"]),
    ("cache.direct", ["off", "no", "x", ""]), ("cache.no-flush", "bool"),
    ("cache", ["on", "x"]), ("cache.bogus", "bool"),
    ("discard", ["ignore", "unmap", "on", "off", "", "UNMAP"]),
    ("detect-zeroes", ["off", "on", "unmap", "x", ""]),
    ("bogus", "str"), ("driver.x", "str"), ("read-only.0", "bool"),
]
FILE_KEYS = [
    ("filename", "img"), ("filename", ["", "/no/such/file", "."]),
    ("locking", ["on", "off", "auto", "x", ""]),
    ("aio", ["threads", "native", "io_uring", "x", ""]),
    ("aio-max-batch", "int"), ("drop-cache", "bool"),
    ("pr-manager", "str"), ("x-check-cache-dropped", "bool"),
]
FORMAT_KEYS = [
    ("file", ["f0", "", "no-such-node", "n1"]), ("file.driver", ["file",
     "raw", "x", ""]), ("file.filename", "img"), ("file.locking", ["off",
     "x"]), ("file.node-name", ["n2", "f0", ""]), ("file.read-only",
     "bool"), ("file.cache.direct", ["off", "x"]), ("file.bogus", "str"),
    ("file.0", "str"),
]
DRIVER_KEYS = {
    "file": FILE_KEYS,
    "raw": FORMAT_KEYS + [("offset", "int"), ("size", "int")],
    "qcow2": FORMAT_KEYS + [
        ("lazy-refcounts", "bool"), ("cache-size", "int"),
        ("l2-cache-size", "int"), ("refcount-cache-size", "int"),
        ("cache-clean-interval", "int"), ("pass-discard-request", "bool"),
        ("pass-discard-other", "bool"), ("l2-cache-entry-size", "int"),
        ("backing", ["", "f0", "no-such-node"]),
        ("backing.driver", ["null-co", "x"]),
        ("encrypt.format", ["aes", "luks", "x"]),
        ("overlap-check", ["none", "all"])],
    "null-co": [("size", "int"), ("latency-ns", "int"),
                ("read-zeroes", "bool")],
}


def blockdev_spec(rnd, img, raw):
    driver = rnd.choice(["file", "raw", "qcow2", "null-co", "null-aio"])
    base = "null-co" if driver == "null-aio" else driver
    required = [("driver", driver), ("node-name", "n1")]
    if base == "file":
        required.append(("filename", rnd.choice([img, raw])))
    elif base in ("raw", "qcow2"):
        if rnd.random() < 0.5:
            required.append(("file", "f0"))
        else:
            required += [("file.driver", "file"),
                         ("file.filename", img if base == "qcow2" else raw)]
    keys = BLOCKDEV_COMMON + DRIVER_KEYS[base]
    if rnd.random() < 0.1:
        keys = keys + [("driver", ["FILE", "", "vmdk", "nbd", "file,,x"])]
    path = img if base == "qcow2" else raw
    keys = [(k, v if v != "img" else "path") for k, v in keys]
    return make_spec(rnd, keys, required, path, implied="driver")


OBJECT_KEYS = {
    "secret": [("data", ["abc", "", "QUJD", "!!"]),
               ("file", ["/no/such/secret", "", "secretfile"]),
               ("format", ["raw", "base64", "x", ""]),
               ("keyid", "str"), ("iv", "str"), ("loaded", "bool")],
    "authz-simple": [("identity", ["CN=x", "", "a,,b"])],
    "authz-list": [("policy", ["allow", "deny", "x"]),
                   ("rules.0.match", ["CN=*", ""]),
                   ("rules.0.policy", ["allow", "x"]),
                   ("rules.0.format", ["glob", "exact", "x"])],
    "iothread": [("poll-max-ns", "int"), ("poll-grow", "int"),
                 ("poll-shrink", "int"), ("aio-max-batch", "int"),
                 ("thread-pool-min", "int"), ("thread-pool-max", "int")],
    "tls-creds-x509": [("dir", ["/no/such/dir", "", "."]),
                       ("endpoint", ["server", "client", "x"]),
                       ("verify-peer", "bool"), ("priority", "str"),
                       ("sanity-check", "bool"), ("loaded", "bool"),
                       ("passwordid", "str")],
    "tls-creds-psk": [("dir", ["/no/such/dir", ""]),
                      ("endpoint", ["server", "client", "x"]),
                      ("username", "str")],
    "throttle-group": [("x-iops-total", "int"), ("x-bps-read", "int"),
                       ("limits.iops-total", "int"),
                       ("limits.bps-total-max", "int"),
                       ("limits.iops-size", "int"), ("limits.x", "int")],
}


def object_spec(rnd, d):
    qom = rnd.choice(sorted(OBJECT_KEYS) + ["bogus", "", "memory-backend-ram"])
    required = [("qom-type", qom), ("id", rnd.choice(["o0", "o0", "", "1x",
                                                      "a b", "o" * 40]))]
    if qom == "secret" and rnd.random() < 0.7:
        required.append(("data", "abc"))
    if qom == "authz-simple" and rnd.random() < 0.7:
        required.append(("identity", "CN=x"))
    keys = OBJECT_KEYS.get(qom, []) + [("bogus", "str"), ("id.x", "str")]
    spec = make_spec(rnd, keys, required, d, implied="qom-type")
    return spec.replace("=secretfile", f"={d}/secretfile")


CHARDEV_KEYS = [
    ("path", ["@SOCK@", "@SOCK@", "", "/no/such/dir/c.sock", "@NOSOCK@"]),
    ("server", "bool"), ("server", ["on", "off"]), ("wait", "bool"),
    ("host", ["127.0.0.1", ""]), ("port", ["0", "x", ""]),
    ("fd", ["x", "99", "", "-1", "99999999999"]), ("reconnect", "int"),
    ("tls-creds", ["t0", "s0", ""]), ("tls-authz", ["a0"]),
    ("delay", "bool"), ("nodelay", "bool"), ("telnet", "bool"),
    ("websocket", "bool"), ("tn3270", "bool"), ("mux", ["on", "off"]),
    ("abstract", "bool"), ("tight", "bool"), ("to", "int"),
    ("size", ["1k", "x", "1.5M", "0x10", "-1", "99999999999999999999"]),
    ("logfile", ["/no/such/dir/log"]), ("ipv4", "bool"), ("cols", "int"),
    ("bogus", "str"), ("backend", ["socket", "null", "x"]),
    ("id", ["c0", "c1"]), ("server", None), ("nowait", None),
    ("nobogus", None), ("delay", None), ("help", None), ("?", None),
    ("a,,b", None),
]


def chardev_spec(rnd, d):
    backend = rnd.choice(["socket"] * 8 + ["null", "bogus", "", "msmouse",
                                           "tty", "mux", "help"])
    required = [("backend", backend),
                ("id", rnd.choice(["c0"] * 15 + ["", "1c", "c-1"])),
                ("path", "@SOCK@"), ("server", "on")]
    pairs = list(required)
    for _ in range(rnd.randint(0, 4)):
        key, kind = rnd.choice(CHARDEV_KEYS)
        if kind is None:
            pairs.append((key, None))
        elif isinstance(kind, list):
            pairs.append((key, rnd.choice(kind)))
        else:
            pairs.append((key, value(rnd, kind)))
    if rnd.random() < 0.3:
        pairs.pop(rnd.randrange(len(pairs)))   # drop a required one
    rnd.shuffle(pairs)
    keys_given = [k for k, _ in pairs]
    if rnd.random() < 0.8 and "backend" in keys_given:  # as usually written
        pairs.insert(0, (None, pairs.pop(keys_given.index("backend"))[1]))
    spec = ",".join(k if v is None else v if k is None else f"{k}={v}"
                    for k, v in pairs)
    spec = (spec.replace("@SOCK@", f"{d}/c.sock")
            .replace("@NOSOCK@", f"{d}/none.sock"))
    # a server waits for a client unless told not to: never here
    server = [v for k, v in pairs if k == "server"]
    if server and server[-1] not in ("off", "no", "false", "n"):
        spec += ",wait=off"
    return spec


def chardev_opts(rnd, d):
    """--chardev (maybe twice, maybe with an --object the tls-creds name)
    and maybe --monitor."""
    opts = []
    if rnd.random() < 0.2:
        opts += ["--object", "secret,id=s0,data=x"]
    opts += ["--chardev", chardev_spec(rnd, d)]
    if rnd.random() < 0.2:
        opts += ["--chardev", f"socket,id={rnd.choice(['c0', 'c1'])},"
                 f"path={d}/c2.sock,server=on,wait=off"]
    monitors = []
    for _ in range(rnd.choice([0, 0, 1, 1, 2])):
        monitors += ["--monitor", rnd.choice(["c0", "chardev=c0", "c1",
                                              "c0,mode=readline", "c0,help",
                                              "c0,pretty=on", "c0,x=1"])]
    # options run in the order given: a monitor before its chardev fails
    return monitors + opts if rnd.random() < 0.1 else opts + monitors


def message(proc, prog):
    # warnings (QEMU's deprecation notes) are not the error
    lines = [line for line in proc.stderr.decode(errors="replace")
             .splitlines() if line.startswith(prog + ":") and
             ": warning: " not in line]
    return lines[0][len(prog) + 1:].strip() if lines else None


def run(cmd, prog):
    p = subprocess.run(cmd, capture_output=True, timeout=20)
    return p.returncode, message(p, prog), p.stdout.decode(errors="replace")


def main(snapnbd, d, seed, cases):
    rnd = random.Random(seed)
    template = f"{d}/template.qcow2"
    img = f"{d}/disk.qcow2"
    raw = f"{d}/disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", template,
                    "1M"], check=True)
    subprocess.run(["qemu-img", "bitmap", "--add", template, "b0"],
                   check=True)
    with open(f"{d}/secretfile", "w") as f:
        f.write("abc")
    file_node = ["--blockdev", f"driver=file,node-name=f0,filename={img}"]
    blockdevs = file_node + ["--blockdev", "driver=qcow2,node-name=d0,file=f0"]
    sock = f"{d}/nbd.sock"
    plain_server = f"addr.type=unix,addr.path={sock}"
    bad = []
    modes = os.environ.get("SNAPNBD_CLIFUZZ_MODES",
                           "server,export,blockdev,object,chardev").split(",")
    for case in range(cases):
        mode = rnd.choice(modes)
        server, export, before = plain_server, SENTINEL, blockdevs
        if mode == "server":
            server = make_spec(rnd, SERVER_KEYS,
                               [("addr.type", "unix"), ("addr.path", sock)],
                               sock)
        elif mode == "export":
            export = make_spec(rnd, EXPORT_KEYS,
                               [("type", "nbd"), ("id", "e0"),
                                ("node-name", "d0")], sock)
        elif mode == "blockdev":
            before = file_node + ["--blockdev", blockdev_spec(rnd, img, raw)]
        elif mode == "chardev":
            before = chardev_opts(rnd, d) + blockdevs
        else:
            before = ["--object", object_spec(rnd, d)] + blockdevs
        opts = before + ["--nbd-server", server, "--export", export]
        if export != SENTINEL:
            opts += ["--export", SENTINEL]
        got = {}
        for prog, cmd in (("snapnbd", [snapnbd] + opts),
                          ("qemu-storage-daemon",
                           ["qemu-storage-daemon"] + opts)):
            for left in (sock, f"{d}/c.sock", f"{d}/c2.sock"):
                if os.path.exists(left):
                    os.unlink(left)
            # qemu-storage-daemon leaves bitmaps in use when it fails to
            # start (it exits without closing the image): a fresh copy.
            shutil.copyfile(template, img)
            with open(raw, "wb") as f:
                f.truncate(1 << 20)
            got[prog] = run(cmd, prog)
        s, q = got["snapnbd"], got["qemu-storage-daemon"]
        if s[1] and any(k in s[1] for k in KNOWN):
            continue
        if not s[1] and any(s[2].startswith(k) for k in KNOWN_HELP):
            continue
        # a writable raw node over a read-only file: snapnbd refuses it at
        # once, QEMU once something takes the write permission
        if (s[1] and s[1].endswith(": Block node is read-only") and
                re.search(r"--blockdev (raw,|\S*driver=raw)", " ".join(opts))):
            continue
        if s[1] and q[1]:  # snapnbd names the export in conflicts
            s = (s[0], re.sub(r"NBD export '[^']*'",
                              "an unnamed block device", s[1]), s[2])
        # help's status is QEMU's: 0, but 1 for --chardev's option list
        if (s[0] == 0) != (q[0] == 0) or s[1] != q[1] or s[2] != q[2]:
            bad.append(f"case {case} ({mode}): {' '.join(opts)}\n"
                       f"  snapnbd: {s}\n  qsd:     {q}")
    for b in bad[:int(os.environ.get("SHOW", "10"))]:
        print(b)
    print(f"seed {seed}: {cases} cases, {len(bad)} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]),
                  int(sys.argv[4])))
