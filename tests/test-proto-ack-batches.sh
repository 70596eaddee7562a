#!/usr/bin/env bash
# Write acknowledgements gathered while the reader serves a batch of
# writes leave every 8 (CORK_ACKS), not only once the batch is done: the
# client can work on them meanwhile.  13 writes sent at once to a node
# whose throttle lets a burst of 11 pass and then holds the 12th for about
# a second: within 0.3 s the client must have 8 acks (with acks held to
# the end of the batch it has none), and all 13 in the end.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"

null="file.driver=null-co,file.size=67108864"
start_daemon \
    --blockdev "driver=throttle,node-name=t,limits.iops-write=1,limits.iops-write-max=10,limits.iops-write-max-length=1,$null" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=e,node-name=t,name=t,writable=on

SOCK=$nbdsock PYTHONPATH=$srcdir PYTHONDONTWRITEBYTECODE=1 $PYTHON -c '
import os, socket, struct, time
import nbd_raw as N
c = N.connect(os.environ["SOCK"], name="t")
data = b"".join(struct.pack(">IHHQQI", N.REQUEST_MAGIC, 0, N.CMD_WRITE,
                            i + 1, i * 512, 512) + bytes([i]) * 512
                for i in range(13))
c.sock.sendall(data)
c.sock.settimeout(0.3)
got = b""
t0 = time.monotonic()
while time.monotonic() - t0 < 0.3:
    try:
        b = c.sock.recv(4096)
    except socket.timeout:
        break
    if not b:
        break
    got += b
early = len(got) // 16
assert early >= 8, f"{early} acks while a write waited, want 8"
c.sock.settimeout(30)
while len(got) < 13 * 16:
    got += c.sock.recv(4096)
cookies = sorted(struct.unpack(">IIQ", got[i:i + 16])[2]
                 for i in range(0, len(got), 16))
assert cookies == list(range(1, 14)), cookies
print(f"{early} acks early, 13 in all")
' || fail "write acknowledgements"
