#!/usr/bin/env bash
# blockdev-create, with QEMU's sequence for a new qcow2 image: a "create"
# job makes the file, blockdev-add opens it, a second job writes a qcow2
# image over the node, blockdev-add opens that.  Each job goes created ->
# running -> waiting -> pending -> concluded (JOB_STATUS_CHANGE events) and
# stays until job-dismiss; a failure is the job's error in query-jobs.
# The new image takes writes through an export and qemu-img finds it what
# was asked for (size, cluster size, version, backing file) and sound.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"
requires qemu-img qemu-io

img=$tmp/new.qcow2
start_qmp "$tmp/qmp" "$tmp/pid"
truncate -s 64M "$tmp/base.raw"
Q() { qmp "$tmp/qmp" "$@" >"$tmp/out" || fail "qmp failed: $*"; }
# create JOB OPTIONS: runs a blockdev-create job to its end, dismisses it.
create() {
    Q '{"execute":"blockdev-create","arguments":{"job-id":"'"$1"'","options":'"$2"'}}' \
      --wait-event JOB_STATUS_CHANGE \
      '{"execute":"query-jobs"}'
    for _ in $(seq 100); do
        qmp "$tmp/qmp" '{"execute":"query-jobs"}' | grep -q '"concluded"' && break
        sleep 0.1
    done
    qmp "$tmp/qmp" '{"execute":"query-jobs"}' >"$tmp/jobs"
    grep -q '"status": "concluded"' "$tmp/jobs" || fail "$1 did not conclude: $(cat "$tmp/jobs")"
    qmp "$tmp/qmp" '{"execute":"job-dismiss","arguments":{"id":"'"$1"'"}}' |
        grep -q '"return"' || fail "$1: job-dismiss failed"
}

create c1 '{"driver":"file","filename":"'"$img"'","size":0}'
grep -q '"error"' "$tmp/jobs" && fail "c1 failed: $(cat "$tmp/jobs")"
grep -q '"type": "create"' "$tmp/jobs" || fail "not a create job: $(cat "$tmp/jobs")"
[ -f "$img" ] || fail "the file was not created"
Q '{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"f0","filename":"'"$img"'"}}'
grep -q '"return"' "$tmp/out" || fail "blockdev-add f0: $(cat "$tmp/out")"
create c2 '{"driver":"qcow2","file":"f0","size":33554432,"cluster-size":4096,"version":"v3","backing-file":"base.raw","backing-fmt":"raw"}'
grep -q '"error"' "$tmp/jobs" && fail "c2 failed: $(cat "$tmp/jobs")"
Q '{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"q0","file":"f0","backing":null}}'
grep -q '"return"' "$tmp/out" || fail "blockdev-add q0: $(cat "$tmp/out")"
Q '{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix","data":{"path":"'"$tmp/nbd"'"}}}}'
Q '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e0","node-name":"q0","name":"q0","writable":true}}'
qemu-io -f raw -c 'write -P 9 1M 100K' "nbd+unix:///q0?socket=$tmp/nbd" >/dev/null ||
    fail "writing the new image failed"
Q '{"execute":"block-export-del","arguments":{"id":"e0"}}'
sleep 0.3
Q '{"execute":"blockdev-del","arguments":{"node-name":"q0"}}'
Q '{"execute":"blockdev-del","arguments":{"node-name":"f0"}}'
qemu-img check -q "$img" || fail "the new image is not sound"
qemu-img info --output=json "$img" >"$tmp/info"
for kv in '"virtual-size": 33554432' '"cluster-size": 4096' '"compat": "1.1"' \
          '"backing-filename": "base.raw"'; do
    grep -q "$kv" "$tmp/info" || fail "qemu-img info lacks $kv: $(cat "$tmp/info")"
done
qemu-io -f qcow2 -c 'read -P 9 1M 100K' "$img" | grep -q verification &&
    fail "the data written does not read back"

# A failure is the job's error, reported in query-jobs, not the command's.
create c3 '{"driver":"file","filename":"'"$tmp"'/no/such/dir/x.img","size":0}'
grep -q '"error": ".*no/such/dir' "$tmp/jobs" || fail "c3: no error: $(cat "$tmp/jobs")"
# Bad arguments are the command's error.
Q '{"execute":"blockdev-create","arguments":{"job-id":"c4","options":{"driver":"raw","file":"f0","size":1}}}'
# (raw has no creation options in the schema: QEMU's message, as
# qemu-storage-daemon 7.2 gives it)
grep -q "Parameter 'options.size' is unexpected" "$tmp/out" || fail "raw: $(cat "$tmp/out")"
Q '{"execute":"blockdev-create","arguments":{"job-id":"c5","options":{"driver":"qcow2","file":"nope","size":1048576}}}'
grep -q "Cannot find device='nope' nor node-name='nope'" "$tmp/out" || fail "nope: $(cat "$tmp/out")"

# An image open in the graph is not truncated by a file create over it: the
# job fails on the "write" lock, as in qemu-storage-daemon (found by
# test-qmp-fuzz.sh: the qcow2 node lost its image under it).
Q '{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"q1","file":{"driver":"file","filename":"'"$img"'"}}}'
grep -q '"return"' "$tmp/out" || fail "blockdev-add q1: $(cat "$tmp/out")"
size=$(stat -c %s "$img")
create c6 '{"driver":"file","filename":"'"$img"'","size":0}'
grep -q '"error": "Failed to get \\"write\\" lock' "$tmp/jobs" ||
    fail "c6: no lock error: $(cat "$tmp/jobs")"
[ "$(stat -c %s "$img")" -eq "$size" ] || fail "c6 truncated the open image"
Q '{"execute":"blockdev-del","arguments":{"node-name":"q1"}}'
qemu-img check -q "$img" || fail "the open image was damaged by c6"
