#!/usr/bin/env bash
# block-commit and block-stream refused with QEMU's error classes and texts:
# tests/chain_errors.py sends the same bad requests (conflicting or missing
# nodes, a base above the top, a backing-file string with an active top, a
# second job on a chain a commit holds, ...) to snapnbd and, where it is
# installed, to qemu-storage-daemon holding the same chain, and the
# answers must be the same.  Without qemu-storage-daemon, snapnbd's answers
# are checked against the expected texts kept in this test.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img

make_chain() {
    local d=$1
    mkdir -p "$d"
    qemu-img create -q -f qcow2 "$d/c-0.qcow2" 4M
    qemu-img create -q -f qcow2 -F qcow2 -b "$d/c-0.qcow2" "$d/c-1.qcow2"
    qemu-io -f qcow2 -c "write -P 7 0 2M" "$d/c-1.qcow2" >/dev/null
    qemu-img create -q -f qcow2 -F qcow2 -b "$d/c-1.qcow2" "$d/c-2.qcow2"
}
chain_opts() {
    local d=$1
    echo "--blockdev driver=qcow2,node-name=c-0,read-only=on,file.driver=file,file.filename=$d/c-0.qcow2"
    echo "--blockdev driver=qcow2,node-name=c-1,read-only=on,backing=c-0,file.driver=file,file.filename=$d/c-1.qcow2"
    echo "--blockdev driver=qcow2,node-name=c-2,backing=c-1,file.driver=file,file.filename=$d/c-2.qcow2"
}

make_chain "$tmp/s"
# shellcheck disable=SC2046
start_daemon $(chain_opts "$tmp/s")
$PYTHON "$srcdir/chain_errors.py" "$qmp" "$tmp/snapnbd.out" ||
    fail "chain_errors.py failed against snapnbd"
_stop_server "$tmp/daemon.pid"
for f in c-0 c-1 c-2; do
    qemu-img check -q "$tmp/s/$f.qcow2" || fail "$f.qcow2 is not sound"
done

expect() {
    grep -qxF "$1" "$tmp/snapnbd.out" ||
        fail "expected '$1', got '$(grep "^${1%%:*}:" "$tmp/snapnbd.out")'"
}
expect "commit-no-device: DeviceNotFound: Device 'nope' not found"
expect "commit-into-itself: GenericError: cannot commit an image into itself"
expect "commit-active-backing-file: GenericError: 'backing-file' specified, but 'top' is the active layer"
expect "commit-base-above-top: GenericError: 'c-2' is not in this backing file chain"
expect "stream-backing-file-whole-chain: GenericError: backing file specified, but streaming the entire chain"
expect "commit-while-commit: GenericError: Node 'c-2' is busy: block device is in use by block job: commit"

if ! command -v qemu-storage-daemon >/dev/null; then
    echo "$0: qemu-storage-daemon is not installed: no side-by-side comparison"
    exit 0
fi
make_chain "$tmp/q"
qsd_sock=$tmp/qsd.sock
# shellcheck disable=SC2046
qemu-storage-daemon $(chain_opts "$tmp/q") \
    --chardev socket,id=m,path="$qsd_sock",server=on,wait=off \
    --monitor chardev=m --pidfile "$tmp/qsd.pid" &
cleanup_fn "_stop_server '$tmp/qsd.pid'"
$PYTHON "$srcdir/chain_errors.py" "$qsd_sock" "$tmp/qsd.out" ||
    fail "chain_errors.py failed against qemu-storage-daemon"
# Where snapnbd answers differently on purpose, qsd's line is replaced by
# snapnbd's before the comparison:
#  - a second commit on a chain a commit holds: QEMU 7.2 says "Need a root
#    block node" (the job's own edge makes the top a non-root node), which
#    misleads; snapnbd names the job that holds the node;
#  - blockdev-del of a node a commit drops: QEMU says "Node c-1 is in use";
#    snapnbd names the job.
sed -e "s/^commit-while-commit: .*/$(grep '^commit-while-commit:' "$tmp/snapnbd.out")/" \
    -e "s/^del-while-commit: .*/$(grep '^del-while-commit:' "$tmp/snapnbd.out")/" \
    "$tmp/qsd.out" >"$tmp/qsd.expected"
diff -u "$tmp/qsd.expected" "$tmp/snapnbd.out" ||
    fail "snapnbd's answers differ from qemu-storage-daemon's"
