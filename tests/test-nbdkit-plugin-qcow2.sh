#!/usr/bin/env bash
# nbdkit serving qcow2 chains through the snapnbd plugin, which nbdkit
# cannot do on its own:
#  - writable: writes copy-on-write into the top layer, write zeroes and
#    trims, from several connections at once (parallel thread model); the
#    backing files stay unchanged, qemu-img check is clean and the image
#    reads like a raw reference that took the same writes;
#  - extents: nbdinfo --map through nbdkit equals qemu-nbd's map of the
#    same image (holes, zeroes, data down the chain);
#  - stacked under --filter=cow (writes to the overlay, image untouched)
#    and --filter=blocksize (unaligned writes turned into aligned ones).
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qcow2-functions.sh"
requires qemu-io sha256sum
requires_plugin
run_nbdkit "$SNAPNBD_PLUGIN" --dump-plugin | grep -q '^snapnbd_formats=.*qcow2' ||
    fail "the plugin's block layer has no qcow2 driver"

cd "$tmp"
qemu-img create -q -f qcow2 base.qcow2 32M
qemu-io -f qcow2 -c 'write -P 1 0 20M' -c 'write -z 4M 2M' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 mid.qcow2
qemu-io -f qcow2 -c 'write -P 2 1M 3M' mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
sha256sum base.qcow2 mid.qcow2 >lower.sums
qemu-img convert -O raw top.qcow2 ref.raw
cd /

# Writable, three connections at once on disjoint ranges.
ops=("write -P 3 100K 200K;write -z 2M 64K"
     "write -P 4 10M 1M;discard 12M 1M"
     "write -P 5 30000K 3000;write -P 6 31M 1M")
start_nbdkit "$tmp/sock" "$tmp/pid" "$SNAPNBD_PLUGIN" \
    file="$tmp/top.qcow2" discard=unmap
clients=()
for o in "${ops[@]}"; do
    args=()
    IFS=';' read -ra cmds <<<"$o"
    for c in "${cmds[@]}"; do args+=(-c "$c"); done
    qemu-io -f raw "${args[@]}" "$(uri "$tmp/sock")" >/dev/null &
    clients+=($!)
    # The reference takes the same writes; a trim reads as zeroes (v3).
    qemu-io -f raw "${args[@]/discard/write -z}" "$tmp/ref.raw" >/dev/null
done
for c in "${clients[@]}"; do wait "$c" || fail "a client failed"; done
_stop_nbdkit "$tmp/pid" "$(cat "$tmp/pid")"
(cd "$tmp" && sha256sum --quiet -c lower.sums) || fail "a backing file changed"
qemu-img check -q "$tmp/top.qcow2" || fail "qemu-img check after writes"
qemu-img compare -q -f qcow2 -F raw "$tmp/top.qcow2" "$tmp/ref.raw" ||
    fail "the chain reads differently from the reference"

# Extents through nbdkit: qemu-nbd's map, line for line.
start_nbdkit "$tmp/sock" "$tmp/pid" "$SNAPNBD_PLUGIN" \
    file="$tmp/top.qcow2" readonly=true
start_qemu_nbd "$tmp/q.sock" "$tmp/q.pid" "$tmp/top.qcow2" -f qcow2
nbdinfo --map "$(uri "$tmp/sock")" >"$tmp/map.nbdkit" || fail "nbdinfo --map"
nbdinfo --map "$(uri "$tmp/q.sock")" >"$tmp/map.qemu"
diff -u "$tmp/map.qemu" "$tmp/map.nbdkit" || fail "map differs from qemu-nbd's"
grep -q hole "$tmp/map.nbdkit" && grep -q data "$tmp/map.nbdkit" ||
    fail "the map shows no holes or no data: $(cat "$tmp/map.nbdkit")"
_stop_nbdkit "$tmp/pid" "$(cat "$tmp/pid")"
_stop_server "$tmp/q.pid"

# Under the cow filter: writes read back, the image is untouched.
sha256sum "$tmp/top.qcow2" >"$tmp/top.sum"
start_nbdkit "$tmp/sock" "$tmp/pid" --filter=cow "$SNAPNBD_PLUGIN" \
    file="$tmp/top.qcow2" readonly=true
qemu-io -f raw -c 'write -P 7 5M 64K' -c 'read -P 7 5M 64K' \
    -c 'read -P 4 10M 1M' "$(uri "$tmp/sock")" >"$tmp/out" ||
    fail "cow: qemu-io failed"
grep -q 'Pattern verification failed' "$tmp/out" && fail "cow: bad data"
_stop_nbdkit "$tmp/pid" "$(cat "$tmp/pid")"
sha256sum --quiet -c "$tmp/top.sum" || fail "cow: the image changed"

# Under the blocksize filter: unaligned writes land as on a raw reference.
start_nbdkit "$tmp/sock" "$tmp/pid" --filter=blocksize "$SNAPNBD_PLUGIN" \
    file="$tmp/top.qcow2" minblock=4K maxdata=64K
bs_ops=(-c 'write -P 8 1000 3000' -c 'write -P 9 6291000 300000')
qemu-io -f raw "${bs_ops[@]}" "$(uri "$tmp/sock")" >/dev/null ||
    fail "blocksize: qemu-io failed"
qemu-io -f raw "${bs_ops[@]}" "$tmp/ref.raw" >/dev/null
_stop_nbdkit "$tmp/pid" "$(cat "$tmp/pid")"
qemu-img check -q "$tmp/top.qcow2" || fail "blocksize: qemu-img check"
qemu-img compare -q -f qcow2 -F raw "$tmp/top.qcow2" "$tmp/ref.raw" ||
    fail "blocksize: the image reads differently from the reference"
