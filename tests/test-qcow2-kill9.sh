#!/usr/bin/env bash
# kill -9 in the middle of random writes, zeroes and trims, several times
# over the same images: qemu-img check may find leaked clusters but never
# corruption, data flushed before the kill reads back, and the image stays
# writable.  One image without a backing file (64K clusters), one with 4K
# clusters over a backing file.  SEED=n repeats a run.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img qemu-io
seed=${SEED:-$RANDOM}
echo "seed $seed"

# check_after_kill IMG: no corruption (exit 0, or 3 for leaks only).
check_after_kill() {
    local rc=0
    qemu-img check "$1" >"$tmp/check" 2>&1 || rc=$?
    [ $rc -eq 0 ] || [ $rc -eq 3 ] ||
        fail "$1 corrupt after kill -9 (seed $seed): $(cat "$tmp/check")"
}

round() {
    local img=$1 cs=$2 pid io size0 i
    start_server "$tmp/sock" "$tmp/pid" -t -f qcow2 --discard=unmap "$img"
    pid=$(cat "$tmp/pid")
    # Flushed data in the upper half, random I/O below it.
    qemu-io -f raw -c "write -P $((seed % 200 + 1)) 28M 1M" -c flush \
        "$(uri "$tmp/sock")" >/dev/null || fail "pattern write failed"
    /usr/bin/python3 "$srcdir/random_io.py" "$(uri "$tmp/sock")" \
        "$tmp/scratch" "$seed" 1000000 --granule "$cs" --limit $((24 << 20)) --flush-every 40 \
        >/dev/null 2>&1 &
    io=$!
    # Under load the client may take a while to start: kill only once its
    # writes reach the image (it grows), then at a random moment.
    size0=$(stat -c %s "$img")
    for i in $(seq 200); do
        [ "$(stat -c %s "$img")" -gt "$size0" ] && break
        sleep 0.05
    done
    sleep "0.$((RANDOM % 8 + 2))"
    kill -9 "$pid"
    wait "$io" && fail "the I/O did not notice the kill"
    check_after_kill "$img"
    # Flushed random writes must have reached the image, or the kill
    # tested nothing.
    [ "$(sed -n 's|^\([0-9]*\)/.*allocated.*|\1|p' "$tmp/check")" -gt "$3" ] ||
        fail "no random write reached $img before the kill: $(cat "$tmp/check")"
    qemu-io -f qcow2 -c "read -P $((seed % 200 + 1)) 28M 1M" "$img" \
        >"$tmp/read" || fail "flushed data lost (seed $seed): $(cat "$tmp/read")"
    seed=$((seed + 1))
}

truncate -s 32M "$tmp/scratch"
qemu-img create -q -f qcow2 "$tmp/plain.qcow2" 32M
qemu-img create -q -f qcow2 "$tmp/base.qcow2" 32M
qemu-io -f qcow2 -c 'write -P 7 0 20M' "$tmp/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=4096 -b "$tmp/base.qcow2" \
    -F qcow2 "$tmp/overlay.qcow2" 32M
for i in 1 2 3; do
    round "$tmp/plain.qcow2" 65536 16
    round "$tmp/overlay.qcow2" 4096 256
done
# What leaked is repairable, and the repaired image is clean.
for img in "$tmp/plain.qcow2" "$tmp/overlay.qcow2"; do
    qemu-img check -q -r leaks "$img" >/dev/null 2>&1 || :
    qemu-img check -q "$img" || fail "$img not clean after repairing leaks"
done
