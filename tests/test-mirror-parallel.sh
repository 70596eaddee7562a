#!/usr/bin/env bash
# The mirror keeps several copies in flight, as many as buf-size holds (as
# QEMU: copies of buf-size/16, at least 1 MiB, at most 16 at once).  The
# targets are nbdkit memory disks whose writes take 0.2 s each (the delay
# filter), so the time to READY of a 16 MiB mirror counts the waves of
# 1 MiB copies: the default buf-size (16 MiB) sends them all at once (one
# wave, ready well within 1.6 s; one copy at a time took 3.2 s), buf-size
# 4 MiB four at a time (at least 0.8 s), buf-size 1 MiB one at a time (at
# least 3.2 s).  Each target then equals the source.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires nbdkit
requires qemu-img
requires_libnbd_python
[ -n "$(nbdkit --dump-plugin memory 2>/dev/null)" ] &&
    nbdkit --filter=delay null --dump-plugin >/dev/null 2>&1 || {
    echo "$0: skipped: nbdkit's memory plugin or delay filter is missing"
    exit 77
}

size=$((16 << 20))
head -c $size /dev/urandom >"$tmp/disk.img"
for t in 16 4 1; do
    start_nbdkit "$tmp/t$t.sock" "$tmp/t$t.pid" --filter=delay memory \
        $size wdelay=200ms
done
start_daemon \
    --blockdev "driver=raw,node-name=disk,file.driver=file,file.filename=$tmp/disk.img"

jobs_py '
tmp = sys.argv[2]
MiB = 1 << 20
q = QMP(sys.argv[1])

def mirror(buf_mib, default=False):
    """Seconds from blockdev-mirror to BLOCK_JOB_READY."""
    name = f"t{buf_mib}"
    q.cmd("blockdev-add", {"driver": "nbd", "node-name": name,
                           "server": {"type": "unix",
                                      "path": f"{tmp}/{name}.sock"}})
    args = {"job-id": name, "device": "disk", "target": name,
            "sync": "full"}
    if not default:
        args["buf-size"] = buf_mib * MiB
    t0 = time.monotonic()
    q.cmd("blockdev-mirror", args)
    q.wait_event("BLOCK_JOB_READY", device=name, timeout=60)
    took = time.monotonic() - t0
    q.cmd("block-job-cancel", {"device": name})
    ev = q.wait_event("BLOCK_JOB_COMPLETED", device=name)
    assert "error" not in ev["data"], ev
    q.cmd("blockdev-del", {"node-name": name})
    print(f"buf-size {buf_mib} MiB: ready in {took:.2f} s")
    return took

took = mirror(16, default=True)
assert took < 1.6, f"16 copies in flight: ready in {took:.2f} s, not < 1.6"
took = mirror(4)
assert took >= 0.78, f"buf-size 4 MiB: ready in {took:.2f} s, too fast"
assert took < 3.1, f"4 copies in flight: ready in {took:.2f} s, not < 3.1"
took = mirror(1)
assert took >= 3.1, f"buf-size 1 MiB: ready in {took:.2f} s, too fast"
' "$qmp" "$tmp" || fail "mirror copies in flight"

for t in 16 4 1; do
    qemu-img compare -f raw -F raw "$tmp/disk.img" \
        "nbd+unix:///?socket=$tmp/t$t.sock" ||
        fail "target of buf-size $t MiB differs from the source"
done
echo "$0: PASS"
