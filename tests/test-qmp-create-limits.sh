#!/usr/bin/env bash
# blockdev-create with sizes that QEMU's limits forbid ends the job with
# QEMU's error, and the daemon keeps serving: a qcow2 of 1 PiB with
# 512-byte clusters would need a 256 GiB L1 table (QEMU caps it at
# 32 MiB: "Failed to grow the L1 table: File too large"); it used to
# abort the whole daemon in g_malloc.  So did a dirty bitmap of 512-byte
# granularity on a node of 4 EiB (2^53 bits): now the command fails.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"
requires qemu-img

start_qmp "$tmp/qmp" "$tmp/pid"
Q() { qmp "$tmp/qmp" "$@" >"$tmp/out" || fail "qmp failed: $*"; }
# create JOB OPTIONS: runs a blockdev-create job to its end; $tmp/jobs
# holds query-jobs at the end.
create() {
    Q '{"execute":"blockdev-create","arguments":{"job-id":"'"$1"'","options":'"$2"'}}'
    grep -q '"return"' "$tmp/out" || fail "$1: $(cat "$tmp/out")"
    for _ in $(seq 100); do
        qmp "$tmp/qmp" '{"execute":"query-jobs"}' >"$tmp/jobs"
        grep -q '"concluded"' "$tmp/jobs" && break
        sleep 0.1
    done
    grep -q '"status": "concluded"' "$tmp/jobs" || fail "$1 did not conclude: $(cat "$tmp/jobs")"
    qmp "$tmp/qmp" '{"execute":"job-dismiss","arguments":{"id":"'"$1"'"}}' |
        grep -q '"return"' || fail "$1: job-dismiss failed"
}

img=$tmp/huge.qcow2
create c1 '{"driver":"file","filename":"'"$img"'","size":0}'
Q '{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"f0","filename":"'"$img"'"}}'
grep -q '"return"' "$tmp/out" || fail "blockdev-add f0: $(cat "$tmp/out")"
create c2 '{"driver":"qcow2","file":"f0","size":1125899906842624,"cluster-size":512}'
grep -q '"error": "Failed to grow the L1 table: File too large"' "$tmp/jobs" ||
    fail "1 PiB, 512-byte clusters: $(cat "$tmp/jobs")"
kill -0 "$(cat "$tmp/pid")" || fail "the daemon died"
# The same size with 64 KiB clusters is fine (a 16 MiB L1 table).
create c3 '{"driver":"qcow2","file":"f0","size":1125899906842624}'
grep -q '"error"' "$tmp/jobs" && fail "1 PiB, 64 KiB clusters: $(cat "$tmp/jobs")"
Q '{"execute":"blockdev-del","arguments":{"node-name":"f0"}}'
qemu-img info "$img" | grep -q "virtual size: 1 PiB" ||
    fail "not a 1 PiB image: $(qemu-img info "$img")"
qemu-img check -q "$img" || fail "the 1 PiB image is not sound"

# A bitmap too large for memory is the command's error, not an abort.
Q '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"n0","size":4611686018427387392}}'
grep -q '"return"' "$tmp/out" || fail "blockdev-add n0: $(cat "$tmp/out")"
Q '{"execute":"block-dirty-bitmap-add","arguments":{"node":"n0","name":"b0","granularity":512}}'
grep -q '"error".*Cannot allocate a dirty bitmap' "$tmp/out" ||
    fail "huge bitmap: $(cat "$tmp/out")"
kill -0 "$(cat "$tmp/pid")" || fail "the daemon died"
Q '{"execute":"block-dirty-bitmap-add","arguments":{"node":"n0","name":"b1","granularity":1073741824}}'
grep -q '"return"' "$tmp/out" || fail "a bitmap that fits: $(cat "$tmp/out")"
