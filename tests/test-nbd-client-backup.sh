#!/usr/bin/env bash
# Push-mode backup: a snapnbd daemon backs up a live qcow2 disk, written by
# four NBD clients during the job, into an NBD client node
# (blockdev-add driver=nbd) that points at a remote server: a second
# snapnbd serving a raw target, then qemu-nbd serving a qcow2 target.  The
# remote target equals the disk as it was when the job started (qemu-img
# compare), the qcow2 target and the live disk pass qemu-img check, and
# the writers lost nothing.  The targets start full of garbage, so a
# driver that skipped zero ranges (believing the remote zeroed) fails.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img qemu-nbd
requires_libnbd_python

size=$((64 << 20))
make_disk "$tmp/disk.img" $size "$seed"
qemu-img convert -f raw -O qcow2 "$tmp/disk.img" "$tmp/disk.qcow2"
start_daemon \
    --blockdev "driver=qcow2,node-name=disk,discard=unmap,file.driver=file,file.filename=$tmp/disk.qcow2" \
    --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --export type=nbd,id=e0,node-name=disk,name=disk,writable=on

garbage() { # PATH: $size bytes of 0x5a
    qemu-img create -q -f raw "$1" $size
    qemu-io -f raw -c "write -P 0x5a 0 $size" "$1" >/dev/null
}

# blockdev-add of the client node, the job, then blockdev-del: ROUND SOCK
push_round() {
    local round=$1 rsock=$2
    jobs_py "q = QMP('$qmp')
q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': 'remote$round',
      'server': {'type': 'unix', 'path': '$rsock'}, 'export': 'target'})" ||
        fail "round $round: blockdev-add driver=nbd failed"
    $PYTHON -c "import sys; sys.path.insert(0, '$srcdir')
import backup_load; backup_load.read_export('$nbdsock', 'disk', '$tmp/ref$round.img')"
    job='{"execute": "blockdev-backup", "arguments": {"job-id": "b'$round'",
          "device": "disk", "target": "remote'$round'", "sync": "full",
          "speed": 25165824}}'
    $PYTHON "$srcdir/backup_load.py" run "$qmp" "$nbdsock" "$job" \
        "$tmp/ref$round.img" $((seed + round)) 4 ||
        fail "round $round (seed $seed): the load run failed"
    jobs_py "q = QMP('$qmp'); q.cmd('blockdev-del', {'node-name': 'remote$round'})" ||
        fail "round $round: blockdev-del of the client node failed"
}

# 1. snapnbd serving a raw target.
garbage "$tmp/target1.img"
tsock=$tmp/target1.sock
start_server "$tsock" "$tmp/target1.pid" -t -f raw -x target "$tmp/target1.img"
push_round 1 "$tsock"
_stop_server "$tmp/target1.pid"
qemu-img compare -q -f raw -F raw "$tmp/ref1.img" "$tmp/target1.img" ||
    fail "snapnbd target (seed $seed): not the disk at the job's start"

# 2. qemu-nbd serving a qcow2 target.
qemu-img create -q -f qcow2 "$tmp/target2.qcow2" $size
qemu-io -f qcow2 -c "write -P 0x5a 0 $size" "$tmp/target2.qcow2" >/dev/null
tsock=$tmp/target2.sock
qemu-nbd -t -k "$tsock" -f qcow2 -x target --pid-file="$tmp/target2.pid" \
    "$tmp/target2.qcow2" &
cleanup_fn "_stop_server '$tmp/target2.pid'"
for i in $(seq 100); do [ -S "$tsock" ] && break; sleep 0.05; done
push_round 2 "$tsock"
_stop_server "$tmp/target2.pid"
qemu-img check -q "$tmp/target2.qcow2" || fail "qcow2 target: check failed"
qemu-img compare -q -f raw -F qcow2 "$tmp/ref2.img" "$tmp/target2.qcow2" ||
    fail "qemu-nbd target (seed $seed): not the disk at the job's start"

_stop_server "$tmp/daemon.pid"
qemu-img check -q "$tmp/disk.qcow2" || fail "live disk: check failed"
