#!/usr/bin/env bash
# Several clients at once (-e 0 -t), each with many requests in flight:
# 4 clients write disjoint regions simultaneously (unaligned sizes mixed
# in), while reading back, and every region ends up holding exactly what
# its client wrote, in the export and in the file.  Then fio's nbd engine
# does the same with its own verification, if fio has it.
source "${srcdir:-$(dirname "$0")}/functions.sh"

img=$tmp/disk.img
truncate -s 16M "$img"
start_server "$tmp/sock" "$tmp/pid" -f raw -t -e 0 "$img"

cat >"$tmp/client.py" <<'EOP'
import hashlib, os, random, sys, nbd
uri, idx = sys.argv[1], int(sys.argv[2])
region = 4 * 1024 * 1024
base = idx * region
rnd = random.Random(idx)
ref = bytearray(region)
h = nbd.NBD()
h.connect_uri(uri)
assert h.can_multi_conn(), "-e 0 must advertise multi-conn"

# 2000 writes, up to 64 in flight, random sizes (some unaligned) at random
# places in this client's region.  Overlapping writes are never in flight
# together: NBD does not order them.
busy = {}           # cookie -> (start, end)
def reap():
    for c in list(busy):
        if h.aio_command_completed(c):
            del busy[c]
for i in range(2000):
    ln = rnd.choice((512, 4096, 4096, 65536, 1, 777, 8193))
    off = rnd.randrange(0, region - ln)
    while any(a < off + ln and off < b for a, b in busy.values()) or \
            len(busy) >= 64:
        h.poll(-1)
        reap()
    data = bytes([rnd.randrange(1, 256)]) * ln
    busy[h.aio_pwrite(data, base + off)] = (off, off + ln)
    ref[off:off + ln] = data
    if i % 200 == 0:
        # a read of something no write in flight touches
        while busy:
            h.poll(-1)
            reap()
        assert h.pread(ln, base + off) == data
while busy:
    h.poll(-1)
    reap()
h.flush()
got = h.pread(region, base)
assert got == ref, f"client {idx}: region differs"
print(hashlib.sha256(ref).hexdigest())
h.shutdown()
EOP

pids=()
for i in 0 1 2 3; do
    $PYTHON "$tmp/client.py" "$(uri "$tmp/sock")" $i >"$tmp/sum$i" &
    pids+=($!)
done
for i in 0 1 2 3; do
    wait "${pids[$i]}" || fail "client $i failed"
done

# Each region of the file is what its client wrote, and no client's data
# leaked into another's region.
for i in 0 1 2 3; do
    got=$(dd if="$img" bs=4M skip=$i count=1 status=none | sha256sum |
          cut -d' ' -f1)
    [ "$got" = "$(cat "$tmp/sum$i")" ] || fail "region $i of the file differs"
done

# fio with its nbd engine: 4 jobs, one connection each, iodepth 32,
# verifying what it wrote.
if command -v fio >/dev/null && fio --enghelp 2>/dev/null | grep -qx '.nbd'
then
    (cd "$tmp" && fio --name=conc --ioengine=nbd --uri="$(uri "$tmp/sock")" \
        --rw=randwrite --bsrange=512-64k --iodepth=32 --numjobs=4 \
        --size=4M --offset_increment=4M --verify=crc32c --do_verify=1 \
        --verify_fatal=1 --verify_state_save=0 --randrepeat=0 \
        --output="$tmp/fio.out") ||
        fail "fio failed: $(cat "$tmp/fio.out")"
    grep -q 'err= 0' "$tmp/fio.out" || fail "fio errors: $(cat "$tmp/fio.out")"
    grep -qi 'verify.*fail\|bad magic\|crc32c.*mismatch' "$tmp/fio.out" &&
        fail "fio verification failed: $(cat "$tmp/fio.out")"
else
    echo "$0: fio with the nbd engine is not available: fio part skipped"
fi
kill -0 "$(cat "$tmp/pid")" || fail "server died"
