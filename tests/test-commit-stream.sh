#!/usr/bin/env bash
# block-commit and block-stream of qcow2 chains that two NBD clients keep
# writing through an export (tests/chain_live.py):
#  - an intermediate commit whose new backing-file string cannot fit the
#    overlay's header fails and leaves the chain and the data as they were;
#  - an intermediate commit with a backing-file string: the overlay's
#    header says exactly that string, the data is intact, the new backing
#    file cannot be deleted;
#  - an active commit reaches ready, completes under writes and the export
#    then writes into the base (a marker written after the pivot is in the
#    base file);
#  - block-stream to a base node, then of the whole chain: the top image
#    stands alone and holds the disk;
#  - an active commit into a shorter base grows it (as QEMU does);
#  - backing-mask-protocol stores a protocol base's format as raw;
#  - every image qemu-img check clean and equal to the writers' model.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img
requires qemu-io
requires_libnbd_python

start_daemon --nbd-server "addr.type=unix,addr.path=$nbdsock"
$PYTHON "$srcdir/chain_live.py" "$qmp" "$nbdsock" "$tmp" "$seed" ||
    fail "seed $seed: the commit and stream jobs failed"
_stop_server "$tmp/daemon.pid"

for f in a-0 a-1 a-2 b-0 b-1 b-2 b-3 g-0; do
    qemu-img check -q "$tmp/$f.qcow2" || fail "$f.qcow2 is not sound"
done
info() {
    qemu-img info --output=json "$1" |
        $PYTHON -c "import json, sys; print(json.load(sys.stdin).get('$2'))"
}
[ "$(info "$tmp/a-2.qcow2" backing-filename)" = a-0.qcow2 ] ||
    fail "a-2's backing file is '$(info "$tmp/a-2.qcow2" backing-filename)'"
[ "$(info "$tmp/b-3.qcow2" backing-filename)" = None ] ||
    fail "b-3 still has a backing file after streaming the whole chain"
qemu-img compare -q -f qcow2 -F raw "$tmp/a-0.qcow2" "$tmp/a-final.raw" ||
    fail "seed $seed: the base of the active commit is not the disk"
qemu-img compare -q -f qcow2 -F raw "$tmp/b-3.qcow2" "$tmp/b-final.raw" ||
    fail "seed $seed: the streamed image is not the disk"
[ "$(info "$tmp/g-0.qcow2" virtual-size)" = $((16 << 20)) ] ||
    fail "the base of a commit from a longer top did not grow"
qemu-io -f qcow2 -c "read -P 0x5c 10M 1M" "$tmp/g-0.qcow2" | grep -q "^read" ||
    fail "the grown base lacks the data committed past its old end"
[ "$(info "$tmp/r-2.qcow2" backing-filename-format)" = raw ] ||
    fail "backing-mask-protocol did not store format raw"
qemu-io -f qcow2 -c "read -P 0x6d 1M 1M" "$tmp/r-2.qcow2" | grep -q "^read" ||
    fail "the commit into a protocol base lost data"
