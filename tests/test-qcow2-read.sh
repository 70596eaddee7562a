#!/usr/bin/env bash
# qcow2 images of every supported kind of cluster size (512, 4K, 64K, 2M)
# and both versions (compat=0.10 is v2, 1.1 is v3), with data written at
# unaligned offsets, zeroed ranges (v3 zero clusters; v2 has none) and
# unallocated ranges: snapnbd -r -f qcow2 serves exactly what qemu-img
# reads, and its block status map is qemu-nbd's.  Reads at odd offsets and
# lengths that straddle clusters return the same bytes as the image.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qcow2-functions.sh"
requires qemu-io

for cs in 512 4096 65536 2097152; do
    for compat in 0.10 1.1; do
        img=$tmp/c$cs-$compat.qcow2
        qemu-img create -q -f qcow2 -o cluster_size=$cs,compat=$compat \
            "$img" 24M
        qemu-io -f qcow2 -c 'write -P 0x5a 1000 70000' \
            -c 'write -P 0xa5 3M 2M' -c 'write -z 3500K 600K' \
            -c 'write -P 0x11 8M 4M' -c 'write -z 8M 2M' \
            -c 'write -P 0 14M 64K' -c 'write -P 0x77 24575K 1K' \
            "$img" >/dev/null || fail "qemu-io failed on $img"
        check_served "$img"
    done
done

# Unaligned reads through NBD (simple replies, so no block status is
# involved) must match the raw conversion of the image byte for byte.
img=$tmp/c512-1.1.qcow2
qemu-img convert -f qcow2 -O raw "$img" "$tmp/ref.raw"
start_server "$tmp/sock" "$tmp/pid" -r -t -f qcow2 "$img"
$PYTHON - "$(uri "$tmp/sock")" "$tmp/ref.raw" <<'EOP' || fail "unaligned reads differ"
import sys, random, nbd
ref = open(sys.argv[2], 'rb').read()
h = nbd.NBD()
h.set_request_structured_replies(False)
h.connect_uri(sys.argv[1])
assert h.get_size() == len(ref)
rnd = random.Random(7)
for i in range(300):
    off = rnd.randrange(len(ref))
    n = min(rnd.randrange(1, 300000), len(ref) - off)
    assert h.pread(n, off) == ref[off:off + n], (off, n)
h.shutdown()
EOP
_stop_server "$tmp/pid"

# -o with qcow2: a raw window over the qcow2 node, as qemu-nbd does.
start_server "$tmp/osock" "$tmp/opid" -r -t -f qcow2 -o 1000 "$img"
nbdcopy "$(uri "$tmp/osock")" "$tmp/window.raw" || fail "nbdcopy -o failed"
tail -c +1001 "$tmp/ref.raw" | cmp - "$tmp/window.raw" ||
    fail "-o 1000 window differs"
