#!/usr/bin/env bash
# Schema-driven fuzzing of the QMP monitor (tests/qmp_fuzz.py): random
# commands built from query-qmp-schema, valid then mutated, sequences that
# use what was just deleted, broken JSON bytes on a second connection.  Every
# command must be answered within 10 s with "return" or a well-formed
# "error", the daemon must stay alive, the protected export must still serve
# its data, the daemon must stop cleanly on SIGTERM, and qemu-img check must
# pass on the setup's qcow2 images (those whose nodes stayed open).
#
#   SNAPNBD_QMPFUZZ_SEED=N     replay a seed (printed at every run)
#   SNAPNBD_QMPFUZZ_ITERS=N    steps (default 2000, within 40 s); the long
#                              mode is ./run qmp-fuzz N
#   SNAPNBD_QMPFUZZ_SECONDS=S  time budget (default 40, or 100000 when
#                              ITERS is given)
#   SNAPNBD_QMPFUZZ_REPLAY=F   send the messages logged in F again (a
#                              failure writes them to qmp-fuzz-SEED.log)
#   SNAPNBD_QMPFUZZ_QSD=1      send every message to qemu-storage-daemon
#                              too (over copies of the images) and list
#                              the errors whose class differs (a report:
#                              the two daemons' states drift apart)
#   SNAPNBD_QMPFUZZ_STATS=1    print each command's returns and errors
#   SNAPNBD_QMPFUZZ_ONE_JOB=1  start a job only while no other one runs
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"
requires qemu-img qemu-io
"$PYTHON" -c 'import nbd' 2>/dev/null || {
    echo "$0: skipped: python3-libnbd is not installed"; exit 77; }

seed=${SNAPNBD_QMPFUZZ_SEED:-$((RANDOM * 32768 + RANDOM))}
iters=${SNAPNBD_QMPFUZZ_ITERS:-2000}
if [ -n "${SNAPNBD_QMPFUZZ_ITERS:-}" ]; then
    seconds=${SNAPNBD_QMPFUZZ_SECONDS:-100000}
else
    seconds=${SNAPNBD_QMPFUZZ_SECONDS:-40}
fi
save=$PWD/qmp-fuzz-$seed.log
echo "$0: seed $seed (SNAPNBD_QMPFUZZ_SEED=$seed replays it)"

mkdir "$tmp/keep"
qemu-img create -q -f raw "$tmp/keep/keep.raw" 4M
qemu-io -f raw -c 'write -P 0x5a 0 4M' "$tmp/keep/keep.raw" >/dev/null
qemu-img create -q -f raw "$tmp/fz-raw.img" 16M
qemu-img create -q -f qcow2 "$tmp/fz-back.qcow2" 16M
qemu-io -f qcow2 -c 'write -P 0x11 0 1M' -c 'write -P 0x22 8M 1M' \
    "$tmp/fz-back.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b fz-back.qcow2 -F qcow2 "$tmp/fz-top.qcow2"
qemu-io -f qcow2 -c 'write -P 0x33 512K 1M' "$tmp/fz-top.qcow2" >/dev/null
qemu-img bitmap --add "$tmp/fz-top.qcow2" b0

opts=()
if [ -n "${SNAPNBD_QMPFUZZ_QSD:-}" ]; then
    mkdir "$tmp/qsd"
    cp -r "$tmp/keep" "$tmp"/fz-* "$tmp/qsd/"
    cd "$tmp/qsd"
    start_qsd "$tmp/qsd/qmp" || fail "qemu-storage-daemon did not start"
    opts+=(--qsd "$tmp/qsd/qmp" --qsd-dir "$tmp/qsd")
fi

# The daemon works in $tmp: relative file names land there.
cd "$tmp"
start_qmp "$tmp/qmp" "$tmp/pid"
if [ -n "${SNAPNBD_QMPFUZZ_REPLAY:-}" ]; then
    opts+=(--replay "$SNAPNBD_QMPFUZZ_REPLAY")
fi
if [ -n "${SNAPNBD_QMPFUZZ_ONE_JOB:-}" ]; then
    opts+=(--one-job)
fi
if [ -n "${SNAPNBD_QMPFUZZ_STATS:-}" ]; then
    opts+=(--stats)
fi
# A daemon that stops answering (the fuzzer's "no answer within 10 s")
# is still running: its threads' stacks say where it waits.
stacks() {
    local pid
    pid=$(cat "$tmp/pid" 2>/dev/null) || return 0
    kill -0 "$pid" 2>/dev/null && command -v gdb >/dev/null &&
        gdb -p "$pid" -batch -ex 'thread apply all bt' >&2 2>/dev/null
    return 0
}
"$PYTHON" "$srcdir/qmp_fuzz.py" --qmp "$tmp/qmp" --pid "$tmp/pid" \
    --dir "$tmp" --seed "$seed" --iters "$iters" --seconds "$seconds" \
    --save "$save" "${opts[@]}" || { stacks; fail "seed $seed: see above"; }
# (from here on a failure is replayed with SNAPNBD_QMPFUZZ_REPLAY=$save)

# SIGTERM must stop the daemon whatever the fuzzing left behind; when it
# does not, the threads' stacks say where it waits.
pid=$(cat "$tmp/pid")
kill "$pid"
for i in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
    command -v gdb >/dev/null &&
        gdb -p "$pid" -batch -ex 'thread apply all bt' >&2 2>/dev/null
    kill -9 "$pid"
    fail "seed $seed: the daemon ignored SIGTERM after the fuzzing; the messages: $save"
fi
rm -f "$tmp/pid"
# It is this shell's child: its status shows a crash or a sanitizer report
# (abort_on_error) at exit, which the log alone would not fail.
status=0
wait "$pid" 2>/dev/null || status=$?
case $status in
0|143|127) ;;   # 127: not our child (started elsewhere), nothing to learn
*) fail "seed $seed: the daemon exited with status $status after SIGTERM; the messages: $save" ;;
esac
# The qcow2 images of the setup whose nodes stayed open all along were
# written through their qcow2 nodes only (the graph refuses other writers of
# their file nodes): qemu-img check must pass (qmp_fuzz.py lists them in
# strict-images).  Others may be byte copies of a qcow2 file taken while it
# was in use (a mirror from its file node), or images released to such
# writers: they are checked and reported only.
[ -f "$tmp/strict-images" ] || fail "seed $seed: no strict-images list"
echo "$0: images checked strictly:" $(cat "$tmp/strict-images")
while read -r img; do
    qemu-img check -q "$tmp/$img" ||
        fail "seed $seed: qemu-img check $img failed; the messages: $save"
done <"$tmp/strict-images"
for img in "$tmp"/*; do
    [ -f "$img" ] && ! grep -qxF "$(basename "$img")" "$tmp/strict-images" &&
        [ "$(head -c 4 "$img" | od -An -tx1 | tr -d ' \n')" = 514649fb ] ||
        continue
    qemu-img check -q "$img" >/dev/null 2>&1 ||
        echo "$0: note: qemu-img check $img: status $? (not checked strictly)"
done
qemu-io -f raw -c 'read -P 0x5a 0 4M' "$tmp/keep/keep.raw" | grep -q '^read' ||
    fail "seed $seed: keep.raw changed; the messages: $save"
rm -f "$save"
