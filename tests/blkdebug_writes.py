"""blkdebug_writes - writes through an export until blkdebug injects an error.

    blkdebug_writes.py SOCK ERRNO_NAME REF SIZE

Writes 256 KiB FUA chunks (random data) from offset 0 up to SIZE through
the export on SOCK, then overwrites the first 256 KiB in place in 64 KiB
pieces (so that L2 tables are looked up, not only allocated); it stops two
writes after the one that failed.  The first write that fails must fail with ERRNO_NAME
(EIO, ENOSPC); every later one, including the failed range written again,
must succeed (the rule is once=on), and every byte acknowledged must read
back.  REF (a raw file of the export's size) receives what the image must
hold: the test compares the image with it after the server is gone.
"""
import os
import sys

import nbd

sock, errname, ref, size = sys.argv[1], sys.argv[2], sys.argv[3], \
    int(sys.argv[4])
CHUNK = 256 << 10
PIECE = 64 << 10

h = nbd.NBD()
h.connect_uri(f"nbd+unix:///?socket={sock}")
expected = bytearray(h.get_size())
failed_at = None
plan = [(o, CHUNK) for o in range(0, size, CHUNK)] + \
       [(o, PIECE) for o in range(0, CHUNK, PIECE)]
i = 0
after = 0
while i < len(plan) and after < 3:
    offset, n = plan[i]
    data = os.urandom(n)
    try:
        h.pwrite(data, offset, nbd.CMD_FLAG_FUA)
        expected[offset:offset + n] = data
        after += failed_at is not None
    except nbd.Error as e:
        assert failed_at is None, f"second failure at {offset}: {e}"
        assert e.errno == errname, f"write at {offset} failed with " \
            f"{e.errno}, not {errname}: {e}"
        failed_at = offset
        continue  # the same range again: the rule fired once
    i += 1
assert failed_at is not None, "no write failed: the event never fired"
# The server keeps serving, and lost nothing acknowledged.
for off in range(0, size, 1 << 20):
    n = min(1 << 20, size - off)
    got = h.pread(n, off)
    assert got == expected[off:off + n], f"read back differs at {off}"
h.flush()
h.shutdown()
with open(ref, "wb") as f:
    f.write(expected)
print(f"failed once at {failed_at} with {errname}")
