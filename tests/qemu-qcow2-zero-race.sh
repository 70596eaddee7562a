#!/usr/bin/env bash
# A deterministic reproducer of a QEMU 7.2 qcow2 bug (not a test of
# snapnbd, and not run by make check): a misaligned write-zeroes with
# MAY_UNMAP that races an in-flight write to another part of the same
# preallocated zero cluster unmaps the cluster under that write; the write
# then links the freed host cluster back into the L2 table, the next
# allocation takes it again, and two guest clusters share one host cluster
# ("ERROR cluster N refcount=1 reference=2"; each reads the other's data).
#
# This is what made tests/test-backup-tool-pull.sh fail now and then with
# qemu-storage-daemon 7.2: below a copy-before-write filter (a backup job's,
# or a blockdev-add'ed one) QEMU 7.2 drops MAY_UNMAP on a node opened with
# discard=ignore, so full-cluster zero writes during a point in time leave
# preallocated zero clusters; between points in time the NBD export's
# zero writes do unmap (7.2 ignores discard=ignore there), and the writer's
# unaligned writes (several per cluster in flight) hit the race.  The disk
# was corrupted, so the point in time and the backup differed.
#
# blkdebug holds the first write where it writes the data (after it has
# looked up the cluster and dropped the qcow2 lock), the zero write runs
# meanwhile, then the first write resumes.
#
# Then, with qemu-storage-daemon, it shows the two halves of the trigger:
# a full-cluster NBD write-zeroes (MAY_UNMAP) unmaps the cluster, but the
# same request while a sync=none backup job runs leaves it allocated.
#
# Usage: tests/qemu-qcow2-zero-race.sh
# Exit status: 0 if the installed qemu-io shows the bug, 1 if not.
set -eu
dir=$(mktemp -d /tmp/qcow2-zero-race.XXXXXX)
img=$dir/disk.qcow2
trap 'rm -rf "$dir"' EXIT
qemu-img create -q -f qcow2 "$img" 1M
# Cluster 0 becomes a preallocated zero cluster (zeroed without unmap).
qemu-io -f qcow2 -c 'write -P 7 0 64k' -c 'write -z 0 64k' "$img" >/dev/null
qemu-io -f qcow2 \
    -c 'break write_aio A' -c 'aio_write -P 1 0 4k' -c 'wait_break A' \
    -c 'aio_write -z -u 8k 4k' -c 'resume A' -c 'aio_flush' \
    -c 'write -P 2 128k 64k' "blkdebug::$img" >/dev/null
qemu-img map -f qcow2 --output=json "$img"
if qemu-img check -q "$img" 2>/dev/null; then
    echo "$0: not reproduced: $(qemu-io --version | head -1)"
    exit 1
fi
qemu-img check "$img" 2>&1 | grep ERROR
# Guest cluster 0 now reads what was written to guest cluster 2.
qemu-io -f qcow2 -r -c 'read -P 2 0 64k' "$img" >/dev/null &&
    echo "guest cluster 0 reads guest cluster 2's data"

command -v qemu-storage-daemon >/dev/null || {
    echo "$0: reproduced: $(qemu-io --version | head -1)"
    exit 0
}
echo "-- qemu-storage-daemon: a zero write without, then with a backup job"
qemu-img create -q -f qcow2 "$img" 1M
qemu-io -f qcow2 -c 'write -P 1 0 256k' "$img" >/dev/null
qemu-img create -q -f qcow2 "$dir/fleece.qcow2" 1M
qemu-storage-daemon \
    --blockdev "driver=qcow2,node-name=disk,file.driver=file,file.filename=$img" \
    --nbd-server "addr.type=unix,addr.path=$dir/nbd.sock" \
    --export type=nbd,id=guest,node-name=disk,name=guest,writable=on \
    --chardev "socket,id=qmp0,path=$dir/qmp.sock,server=on,wait=off" \
    --monitor chardev=qmp0 &
qsd=$!
trap 'set +e; kill $qsd 2>/dev/null; wait $qsd 2>/dev/null; rm -rf "$dir"' EXIT
for i in $(seq 100); do [ -S "$dir/nbd.sock" ] && break; sleep 0.05; done
guest="nbd+unix:///guest?socket=$dir/nbd.sock"
pull() { /usr/bin/python3 "$(dirname "$0")/backup_tool_pull.py" "$@"; }
qemu-io -f raw -c 'write -z -u 0 64k' "$guest" >/dev/null
pull begin "$dir/qmp.sock" "$dir/fleece.qcow2" b1
qemu-io -f raw -c 'write -z -u 64k 64k' "$guest" >/dev/null
pull end "$dir/qmp.sock"
kill $qsd
wait $qsd || :
# Cluster 0: zero, no offset (unmapped); cluster 1: zero at an offset.
qemu-img map -f qcow2 --output=json "$img" | head -2
echo "$0: reproduced: $(qemu-io --version | head -1)"
