#!/usr/bin/env bash
# QMP on stdin and stdout (--chardev stdio, as QEMU's own iotests and
# scripts drive qemu-storage-daemon), beside qemu-storage-daemon 7.2 where
# it is installed: the same input must give the same transcript.
#  - QEMU's iotest qsd-jobs: a job still there at quit is cancelled, and
#    its event comes before quit's answer; block-stream refuses a base that
#    a writable export writes (the stream's "intermediate node" edge);
#  - a writable export added on the base while a stream runs is refused;
#  - the end of stdin ends the input, not the output: SIGTERM after it
#    still writes BLOCK_EXPORT_DELETED;
#  - --chardev stdio errors in QEMU's words; stdio with --fork refused;
#  - started with stdin, stdout and stderr closed, snapnbd puts /dev/null
#    there, so no image takes their numbers.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"
requires qemu-img qemu-io

qemu-img create -q -f qcow2 "$tmp/base.qcow2" 64M
qemu-io -c "write -P 0x5a 0 8M" "$tmp/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -F qcow2 -b "$tmp/base.qcow2" "$tmp/top.qcow2"

chain=(--blockdev "node-name=file_base,driver=file,filename=$tmp/base.qcow2"
       --blockdev node-name=fmt_base,driver=qcow2,file=file_base
       --blockdev "node-name=file_top,driver=file,filename=$tmp/top.qcow2"
       --blockdev node-name=fmt_top,driver=qcow2,file=file_top,backing=fmt_base)

# qsd-jobs, first part: the iotest drops the job's status and READY events
qmp_drop='JOB_STATUS_CHANGE|BLOCK_JOB_READY'
qmp_stdio_both job-at-quit --blockdev "node-name=file0,driver=file,filename=$tmp/top.qcow2" \
    --blockdev node-name=fmt0,driver=qcow2,file=file0 <<'EOF'
{"execute":"qmp_capabilities"}
{"execute": "block-commit", "arguments": {"device": "fmt0", "job-id": "job0"}}
{"execute": "quit"}
EOF
cat > "$tmp/job-at-quit.want" <<'EOF'
QMP_VERSION
{"return": {}}
{"return": {}}
{"timestamp": {TIMESTAMP}, "event": "BLOCK_JOB_CANCELLED", "data": {"device": "job0", "len": 0, "offset": 0, "speed": 0, "type": "commit"}}
{"return": {}}
EOF
diff -u "$tmp/job-at-quit.want" "$tmp/job-at-quit.snapnbd" ||
    fail "a job at quit: expected (-) vs snapnbd (+)"
qmp_drop='^$'

# qsd-jobs, second part
qmp_stdio_both stream-base "${chain[@]}" \
    --nbd-server "addr.type=unix,addr.path=$tmp/nbd.sock" \
    --export type=nbd,id=export1,node-name=fmt_base,writable=on,name=export1 <<'EOF'
{"execute": "qmp_capabilities"}
{"execute": "block-stream", "arguments": {"device": "fmt_top", "job-id": "job0"}}
{"execute": "quit"}
EOF
cat > "$tmp/stream-base.want" <<'EOF'
QMP_VERSION
{"return": {}}
{"timestamp": {TIMESTAMP}, "event": "JOB_STATUS_CHANGE", "data": {"status": "created", "id": "job0"}}
{"timestamp": {TIMESTAMP}, "event": "JOB_STATUS_CHANGE", "data": {"status": "null", "id": "job0"}}
{"error": {"class": "GenericError", "desc": "Permission conflict on node 'fmt_base': permissions 'write' are both required by an unnamed block device (uses node 'fmt_base' as 'root' child) and unshared by stream job 'job0' (uses node 'fmt_base' as 'intermediate node' child)."}}
{"timestamp": {TIMESTAMP}, "event": "BLOCK_EXPORT_DELETED", "data": {"id": "export1"}}
{"return": {}}
EOF
diff -u "$tmp/stream-base.want" "$tmp/stream-base.snapnbd" ||
    fail "stream under a writable export: expected (-) vs snapnbd (+)"

# A writer that comes while the stream runs (1 byte/s: it stays running);
# read-only, the same export is fine.
qmp_drop='JOB_STATUS_CHANGE|BLOCK_JOB_'
qmp_stdio_both stream-later "${chain[@]}" \
    --nbd-server "addr.type=unix,addr.path=$tmp/nbd.sock" <<'EOF'
{"execute": "qmp_capabilities"}
{"execute": "block-stream", "arguments": {"device": "fmt_top", "job-id": "job0", "speed": 1}}
{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "w", "node-name": "fmt_base", "writable": true}}
{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "r", "node-name": "fmt_base"}}
{"execute": "query-block-exports"}
{"execute": "quit"}
EOF
grep -q '"error".*Permission conflict on node .fmt_base.: permissions .write. are both required by an unnamed block device (uses node .fmt_base. as .root. child) and unshared by stream job .job0. (uses node .fmt_base. as .intermediate node. child)' \
    "$tmp/stream-later.snapnbd" ||
    fail "a writable export of the base, added while streaming: $(cat "$tmp/stream-later.snapnbd")"
grep -qF '"return": [{"node-name": "fmt_base", "shutting-down": false, "type": "nbd", "id": "r"}]' \
    "$tmp/stream-later.snapnbd" ||
    fail "the read-only export: $(cat "$tmp/stream-later.snapnbd")"
qmp_drop='^$'

# After the end of stdin the daemon serves on, and what it says still
# reaches stdout: here the export's deletion at SIGTERM.
mkfifo "$tmp/in"
"$SNAPNBD" --chardev stdio,id=m --monitor chardev=m \
    --blockdev "driver=file,node-name=f0,filename=$tmp/base.qcow2" \
    --nbd-server "addr.type=unix,addr.path=$tmp/eof.sock" \
    < "$tmp/in" > "$tmp/eof.out" 2>&1 &
pid=$!
cleanup_fn "kill $pid 2>/dev/null"
printf '%s\n' '{"execute":"qmp_capabilities"}' \
    '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e","node-name":"f0"}}' \
    > "$tmp/in"
for i in $(seq 100); do
    grep -c '"return": {}' "$tmp/eof.out" 2>/dev/null | grep -qx 2 && break
    sleep 0.05
done
nbdinfo --size "$(uri "$tmp/eof.sock" f0)" >/dev/null 2>&1 ||
    fail "no export after the end of stdin: $(cat "$tmp/eof.out")"
kill -0 $pid || fail "the daemon exited at the end of stdin"
kill -TERM $pid
wait $pid || fail "status $? after SIGTERM"
grep -q '"event": "BLOCK_EXPORT_DELETED", "data": {"id": "e"}' "$tmp/eof.out" ||
    fail "no event after the end of stdin: $(cat "$tmp/eof.out")"

# --chardev stdio's errors
check_error() {
    local want=$1
    shift
    # (stderr only: a greeting may go to stdout first, from another thread)
    "$SNAPNBD" "$@" < /dev/null 2> "$tmp/out" >/dev/null && fail "accepted: $*"
    grep -qxF "snapnbd: $want" "$tmp/out" || fail "$*: $(cat "$tmp/out")"
    if [ -n "$qmp_stdio_qsd" ] && [[ $want != *--fork* ]]; then
        $qmp_stdio_qsd "$@" < /dev/null 2> "$tmp/out" >/dev/null && fail "qsd accepted: $*"
        grep -qxF "qemu-storage-daemon: $want" "$tmp/out" ||
            fail "qsd: $*: $(cat "$tmp/out")"
    fi
}
check_error "--chardev stdio,id=t: cannot use stdio by multiple character devices" \
    --chardev stdio,id=s --chardev stdio,id=t
check_error "--chardev stdio,id=s,foo=bar: Invalid parameter 'foo'" \
    --chardev stdio,id=s,foo=bar
check_error "--monitor chardev=s: Device 's' is in use" \
    --chardev stdio,id=s --monitor chardev=s --monitor chardev=s
"$SNAPNBD" --fork --chardev stdio,id=s < /dev/null > "$tmp/out" 2>&1 &&
    fail "stdio with --fork accepted"
grep -qxF "snapnbd: --chardev stdio,id=s: cannot use stdio with --fork" \
    "$tmp/out" || fail "stdio with --fork: $(cat "$tmp/out")"

# Closed standard descriptors
qemu-img create -q -f raw "$tmp/disk.raw" 1M
"$SNAPNBD" -f raw -k "$tmp/closed.sock" -t "$tmp/disk.raw" <&- >&- 2>&- &
pid=$!
cleanup_fn "kill $pid 2>/dev/null"
for i in $(seq 100); do
    [ -S "$tmp/closed.sock" ] && break
    sleep 0.05
done
nbdinfo --size "$(uri "$tmp/closed.sock")" >/dev/null ||
    fail "not serving with the standard descriptors closed"
for fd in 0 1 2; do
    [ "$(readlink "/proc/$pid/fd/$fd")" = /dev/null ] ||
        fail "fd $fd is $(readlink "/proc/$pid/fd/$fd"), not /dev/null"
done
kill -TERM $pid
wait $pid || fail "status $? after SIGTERM"
echo "qmp over stdio: ok${qmp_stdio_qsd:+, the same transcripts as qemu-storage-daemon}"
