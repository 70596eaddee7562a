#!/usr/bin/env bash
# A raw image whose format was probed (no -f) is protected as qemu-nbd
# protects it: the minimum block size advertised is 512 and a write that
# would make block 0 look like a qcow2 header (or another format QEMU
# probes) fails with EPERM, whole or unaligned, so the file stays raw.
# With -f raw every write is allowed.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img nbdinfo nbdsh

disk=$tmp/disk.img
truncate -s 1M "$disk"
qemu-img create -q -f qcow2 "$tmp/hdr.qcow2" 1M
printf 'KDMV' >"$tmp/hdr.vmdk"
printf '# Disk DescriptorFile\nversion=1\n' >"$tmp/hdr.vmdk-text"

# check SOCK: the probed export's rules.
check() {
    nbdinfo "$(uri "$1")" >"$tmp/info" || fail "nbdinfo: $1"
    grep -q "block_size_minimum: 512" "$tmp/info" ||
        fail "minimum block size: $(cat "$tmp/info")"
    $PYTHON - "$(uri "$1")" "$tmp" <<'EOP' || fail "probed writes"
import sys, errno, nbd
h = nbd.NBD()
h.set_strict_mode(0)   # send unaligned requests as they are
h.connect_uri(sys.argv[1])
tmp = sys.argv[2]
def refused(buf, off):
    try:
        h.pwrite(buf, off)
    except nbd.Error as e:
        assert e.errnum == errno.EPERM, e
        return
    raise SystemExit("a %d-byte header at %d was written" % (len(buf), off))
qcow2 = open(tmp + "/hdr.qcow2", "rb").read(4096)
refused(qcow2, 0)              # whole blocks
refused(qcow2[:104], 0)        # just the header: io.c reads the rest of block 0
h.pwrite(b"QFI", 0)            # the magic's first bytes alone are harmless,
refused(b"\xfb\0\0\0\3", 3)    # its last and a version complete a header
refused(open(tmp + "/hdr.vmdk", "rb").read(), 0)
refused(open(tmp + "/hdr.vmdk-text", "rb").read(), 0)
h.pwrite(qcow2, 512)           # block 1 may hold anything
h.pwrite(b"\x42" * 4096, 0)    # data is data
assert h.pread(4096, 0) == b"\x42" * 4096
h.shutdown()
EOP
}

start_server "$tmp/sock" "$tmp/pid" -t "$disk" 2>/dev/null
check "$tmp/sock"
_stop_server "$tmp/pid"
qemu-img info "$disk" | grep -q "file format: raw" || fail "the file is no longer raw"

# --image-opts without a driver probes too.
start_server "$tmp/sock" "$tmp/pid" -t --image-opts \
    "file.driver=file,file.filename=$disk" 2>/dev/null
check "$tmp/sock"
_stop_server "$tmp/pid"

# An explicit -f raw: the user said what the file is.
start_server "$tmp/sock" "$tmp/pid" -t -f raw "$disk"
nbdinfo "$(uri "$tmp/sock")" | grep -q "block_size_minimum: 1" ||
    fail "-f raw: minimum block size is not 1"
nbdsh -u "$(uri "$tmp/sock")" \
    -c "h.pwrite(open('$tmp/hdr.qcow2', 'rb').read(4096), 0)" ||
    fail "-f raw: a header write was refused"
_stop_server "$tmp/pid"
