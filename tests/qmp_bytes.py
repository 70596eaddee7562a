"""qmp_bytes - QMP as a byte stream, beside qemu-storage-daemon 7.2: random
mixes of commands, fragments of JSON and random bytes go to both daemons'
stdin (--chardev stdio); their transcripts must be the same, byte for byte
but for events' timestamps and the greeting.  Each case ends with a byte
that resynchronises QEMU's lexer (0xFF), then qmp_capabilities and quit,
so both daemons exit.

    python3 qmp_bytes.py SNAPNBD SEED CASES

Prints the seed, the first differing case (its input and both transcripts)
and "CASES cases from SEED, N differ"; exits 1 if any differs or if
snapnbd exits with a status other than 0.
"""
import random
import subprocess
import sys

COMMANDS = [
    b'{"execute":"qmp_capabilities"}',
    b'{"execute":"query-block-jobs"}',
    b'{"execute":"query-block-exports"}',
    b'{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"n%d"}}',
    b'{"execute":"blockdev-del","arguments":{"node-name":"n%d"}}',
    b'{"execute":"query-named-block-nodes","arguments":{"flat":true}}',
    b'{"execute":"x","id":[1,{"a":null}]}',
    b"{'execute':'query-block-jobs','id':'sq'}",
    b'{"execute":"blockdev-add","arguments":{"driver":"null-co"}}',
]
FRAGMENTS = [b'{', b'}', b'[', b']', b'"', b"'", b':', b',', b'\x00', b'\t',
             b'\xff', b'\xfe', b'\xc0\x80', b'\xe1', b'-', b'1e', b'tru',
             b'{"execute":', b'\\u00', b'"\\u', b'\n', b'\r\n']
END = b'\xff\n{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'


def case(rnd):
    parts = []
    for _ in range(rnd.randint(1, 10)):
        r = rnd.random()
        if r < 0.5:
            parts.append(rnd.choice(COMMANDS).replace(
                b"%d", str(rnd.randint(0, 2)).encode()))
        elif r < 0.8:
            parts.append(rnd.choice(FRAGMENTS))
        else:
            parts.append(bytes(rnd.randrange(256)
                               for _ in range(rnd.randint(1, 24))))
    return b"".join(parts) + END


def transcript(prog, data):
    p = subprocess.run([prog, "--chardev", "stdio,id=m",
                        "--monitor", "chardev=m"], input=data,
                       capture_output=True, timeout=30)
    lines = p.stdout.split(b"\r\n")[1:]  # the greeting differs
    return p.returncode, [l for l in lines if b'"timestamp"' not in l]


def main():
    snapnbd, seed, cases = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rnd = random.Random(seed)
    print(f"seed {seed}")
    differ = 0
    for i in range(cases):
        data = case(rnd)
        s = transcript(snapnbd, data)
        q = transcript("qemu-storage-daemon", data)
        if s != q or s[0] != 0:
            differ += 1
            if differ == 1:
                print(f"case {i}: {data!r}")
                print(f"  snapnbd: {s}")
                print(f"  qsd:     {q}")
    print(f"{cases} cases from {seed}, {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
