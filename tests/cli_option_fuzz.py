"""Option syntax against qemu-storage-daemon: random --nbd-server and
--export specs (QEMU's key=value syntax: nested keys, list indexes,
escaped commas, bad values), each given to snapnbd and to
qemu-storage-daemon with the same --blockdev; both must fail or both get
as far as a sentinel export that fails on purpose, with the same message.
Usage: cli_option_fuzz.py SNAPNBD DIR SEED CASES
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
KNOWN = [
    "tls-authz is not permitted without --tls-creds",
    "Parameter 'type' does not accept value 'fuse'",
    "Parameter 'type' does not accept value 'vhost-user-blk'",
]


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


def make_spec(rnd, keys, required, path):
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
    if rnd.random() < 0.1 and pairs and pairs[0][0] == "type":
        pairs[0] = (None, pairs[0][1])         # the implied key
    spec = ",".join(k if v is None else v if k is None else f"{k}={v}"
                    for k, v in pairs)
    if rnd.random() < 0.05:
        spec += ","                            # trailing comma
    return spec


def message(proc, prog):
    lines = [line for line in proc.stderr.decode(errors="replace")
             .splitlines() if line.startswith(prog + ":")]
    return lines[0][len(prog) + 1:].strip() if lines else None


def run(cmd, prog):
    p = subprocess.run(cmd, capture_output=True, timeout=20)
    return p.returncode, message(p, prog)


def main(snapnbd, d, seed, cases):
    rnd = random.Random(seed)
    template = f"{d}/template.qcow2"
    img = f"{d}/disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", template,
                    "1M"], check=True)
    subprocess.run(["qemu-img", "bitmap", "--add", template, "b0"],
                   check=True)
    blockdevs = ["--blockdev", f"driver=file,node-name=f0,filename={img}",
                 "--blockdev", "driver=qcow2,node-name=d0,file=f0"]
    sock = f"{d}/nbd.sock"
    bad = []
    for case in range(cases):
        if rnd.random() < 0.5:
            server = make_spec(rnd, SERVER_KEYS,
                               [("addr.type", "unix"), ("addr.path", sock)],
                               sock)
            export = SENTINEL
        else:
            server = f"addr.type=unix,addr.path={sock}"
            export = make_spec(rnd, EXPORT_KEYS,
                               [("type", "nbd"), ("id", "e0"),
                                ("node-name", "d0")], sock)
        opts = blockdevs + ["--nbd-server", server, "--export", export]
        if export != SENTINEL:
            opts += ["--export", SENTINEL]
        got = {}
        for prog, cmd in (("snapnbd", [snapnbd] + opts),
                          ("qemu-storage-daemon",
                           ["qemu-storage-daemon"] + opts)):
            if os.path.exists(sock):
                os.unlink(sock)
            # qemu-storage-daemon leaves bitmaps in use when it fails to
            # start (it exits without closing the image): a fresh copy.
            shutil.copyfile(template, img)
            got[prog] = run(cmd, prog)
        s, q = got["snapnbd"], got["qemu-storage-daemon"]
        if s[1] and any(k in s[1] for k in KNOWN):
            continue
        if s[1] and q[1]:  # snapnbd names the export in conflicts
            s = (s[0], re.sub(r"NBD export '[^']*'",
                              "an unnamed block device", s[1]))
        if (s[0] == 0) != (q[0] == 0) or s[1] != q[1]:
            bad.append(f"case {case}: {' '.join(opts[4:])}\n"
                       f"  snapnbd: {s}\n  qsd:     {q}")
    for b in bad[:int(os.environ.get("SHOW", "10"))]:
        print(b)
    print(f"seed {seed}: {cases} cases, {len(bad)} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]),
                  int(sys.argv[4])))
