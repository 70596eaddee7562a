#!/usr/bin/env bash
# bench/backup-tool.sh - snapnbd-backup's incremental backup against the
# time it takes just to read the dirty bytes, and nbdinfo --map of a dirty
# bitmap on a 1 TiB image; each server that exports bitmaps in one run.
#
#   inc       snapnbd-backup inc of a 4 GiB sparse qcow2 disk (DATA_MIB of
#             scattered data) after 1 % of it changed in scattered 64 KiB
#             writes, against qemu-nbd -r -B b0 (and snapnbd -r -B b0 when
#             `snapnbd --help` offers --bitmap): wall time and bytes read,
#             median of ROUNDS, each into a fresh directory holding the
#             same full backup (hard links)
#   dirty     the lower bound: a libnbd client (python, 16 requests in
#             flight) that maps the bitmap and reads exactly the dirty
#             ranges, and nothing else
#   map       nbdinfo --map=qemu:dirty-bitmap:b0 of a 1 TiB qcow2 image
#             with MAP_WRITES scattered 4 KiB writes: seconds per call,
#             median of ROUNDS
#
# Environment: ROUNDS [3], DATA_MIB [512], MAP_WRITES [4096],
# BENCH_DIR [/dev/shm/snapnbd-bench], SNAPNBD [build/snapnbd],
# BACKUP [build/tools/snapnbd-backup], QUICK=1 (1 round).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
if [[ ${QUICK:-0} == 1 ]]; then : "${ROUNDS:=1}"; fi
ROUNDS=${ROUNDS:-3}
DATA_MIB=${DATA_MIB:-512}
MAP_WRITES=${MAP_WRITES:-4096}
BENCH_DIR=${BENCH_DIR:-/dev/shm/snapnbd-bench}
SNAPNBD=${SNAPNBD:-$top/build/snapnbd}
BACKUP=${BACKUP:-$top/build/tools/snapnbd-backup}
SIZE=$((4 << 30))
PY=/usr/bin/python3   # the system python has libnbd's bindings

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
for c in qemu-img qemu-io qemu-nbd nbdinfo; do
    command -v $c >/dev/null || { log "$c is required"; exit 1; }
done
$PY -c 'import nbd' 2>/dev/null || { log "python3-libnbd is required"; exit 1; }
[[ -x $BACKUP ]] || { log "build snapnbd-backup first (./run build)"; exit 1; }

servers="qemu-nbd"
if [[ -x $SNAPNBD ]] && "$SNAPNBD" --help 2>&1 | grep -e '--bitmap' |
        grep -qv 'not supported'; then
    servers="$servers snapnbd"
else
    log "snapnbd has no -B/--bitmap yet: qemu-nbd only"
fi

mkdir -p "$BENCH_DIR"
work=$(mktemp -d "$BENCH_DIR/backup-tool.XXXXXX")
sock=$work/sock
uri="nbd+unix:///?socket=$sock"
pid=
trap '[[ -n $pid ]] && kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

serve() {   # SERVER IMAGE: read-only, bitmap b0 exported
    rm -f "$sock"
    case $1 in
    qemu-nbd) qemu-nbd -r -t -B b0 -f qcow2 -k "$sock" "$2" & ;;
    snapnbd)  "$SNAPNBD" -r -t -B b0 -f qcow2 -k "$sock" "$2" & ;;
    esac
    pid=$!
    for _ in $(seq 100); do
        nbdinfo --size "$uri" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "$1 did not start"; exit 1
}
unserve() { kill "$pid"; wait "$pid" 2>/dev/null; pid=; }

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
now() { date +%s.%N; }

# qemu-io commands: N writes of LEN bytes at random LEN-aligned offsets of
# SIZE bytes, each with its own pattern.
scattered() {   # N LEN SIZE SEED
    $PY - "$@" <<'EOF'
import random, sys
n, ln, size, seed = map(int, sys.argv[1:])
rnd = random.Random(seed)
for off in rnd.sample(range(size // ln), n):
    print(f"write -P {rnd.randrange(1, 256)} {off * ln} {ln}")
EOF
}

# --- the 4 GiB disk -----------------------------------------------------------
log "making a 4 GiB disk with $DATA_MIB MiB of scattered data"
$PY - "$work/base.raw" $SIZE $DATA_MIB <<'EOF'
import os, random, sys
path, size, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(1)
with open(path, "wb") as f:
    f.truncate(size)
    for slot in rnd.sample(range(size >> 20), mib):
        f.seek(slot << 20)
        f.write(os.urandom(1 << 20))
EOF
qemu-img convert -O qcow2 "$work/base.raw" "$work/disk.qcow2"
rm -f "$work/base.raw"
qemu-img bitmap --add "$work/disk.qcow2" b0

serve qemu-nbd "$work/disk.qcow2"
t0=$(now)
"$BACKUP" full -q "$uri" "$work/full" || { log "full backup failed"; exit 1; }
full_s=$(echo "$(now) - $t0" | bc)
unserve

changes=$(( SIZE / 100 / 65536 ))
log "changing 1 %: $changes scattered 64 KiB writes"
scattered $changes 65536 $SIZE 2 | qemu-io -f qcow2 "$work/disk.qcow2" >/dev/null

# The lower bound: map the bitmap, read the dirty ranges, keep nothing.
read_dirty() {
    $PY - "$uri" <<'EOF'
import nbd, sys, time
t0 = time.monotonic()
h = nbd.NBD()
h.add_meta_context("qemu:dirty-bitmap:b0")
h.connect_uri(sys.argv[1])
size, ranges, off = h.get_size(), [], 0
def cb(ctx, start, entries, err):
    global off
    for i in range(0, len(entries), 2):
        if entries[i + 1] & 1:
            ranges.append((off, entries[i]))
        off += entries[i]
while off < size:
    h.block_status(min(size - off, 1 << 31), off, cb)
chunks = [(o + d, min(4 << 20, n - d)) for o, n in ranges
          for d in range(0, n, 4 << 20)]
bufs, busy, total = [nbd.Buffer(4 << 20) for _ in range(16)], {}, 0
while chunks or busy:
    while chunks and len(busy) < 16:
        o, n = chunks.pop()
        b = bufs.pop() if n == 4 << 20 else nbd.Buffer(n)
        busy[h.aio_pread(b, o)] = b
        total += n
    h.poll(-1)
    for c in [c for c in busy if h.aio_command_completed(c)]:
        b = busy.pop(c)
        if len(b) == 4 << 20:
            bufs.append(b)
print(f"{time.monotonic() - t0:.3f} {total}")
EOF
}

declare -A inc_s inc_read dirty_s
for server in $servers; do
    serve "$server" "$work/disk.qcow2"
    dirty=$(nbdinfo --map=qemu:dirty-bitmap:b0 "$uri" |
            awk '$3 % 2 == 1 { s += $2; n++ } END { print s, n }')
    times=() reads=() dirty_times=()
    for r in $(seq "$ROUNDS"); do
        rm -rf "$work/inc" && cp -al "$work/full" "$work/inc"
        t0=$(now)
        "$BACKUP" inc -q "$uri" "$work/inc" --bitmap b0 ||
            { log "$server: inc failed"; exit 1; }
        times+=("$(echo "$(now) - $t0" | bc)")
        reads+=("$(sed -n 's/^bytes-read=//p' "$work/inc/0002-inc.manifest")")
        dirty_times+=("$(read_dirty | cut -d' ' -f1)")
    done
    inc_s[$server]=$(printf '%s\n' "${times[@]}" | median)
    inc_read[$server]=${reads[0]}
    dirty_s[$server]=$(printf '%s\n' "${dirty_times[@]}" | median)
    unserve
done
rm -rf "$work/inc" "$work/full"

# --- nbdinfo --map on 1 TiB ---------------------------------------------------
log "making a 1 TiB image with $MAP_WRITES scattered 4 KiB writes"
qemu-img create -q -f qcow2 "$work/big.qcow2" 1T
qemu-img bitmap --add "$work/big.qcow2" b0
scattered "$MAP_WRITES" 4096 $((1 << 40)) 3 | qemu-io -f qcow2 "$work/big.qcow2" >/dev/null
declare -A map_s map_n
for server in $servers; do
    serve "$server" "$work/big.qcow2"
    times=()
    for r in $(seq "$ROUNDS"); do
        t0=$(now)
        map_n[$server]=$(nbdinfo --map=qemu:dirty-bitmap:b0 "$uri" | wc -l)
        times+=("$(echo "$(now) - $t0" | bc)")
    done
    map_s[$server]=$(printf '%s\n' "${times[@]}" | median)
    unserve
done

# --- the table -----------------------------------------------------------------
read -r dirty_bytes dirty_ranges <<<"$dirty"
echo
echo "snapnbd-backup inc: 4 GiB qcow2 disk, $DATA_MIB MiB data, 1 % changed" \
     "($(echo "scale=1; $dirty_bytes / 1048576" | bc) MiB dirty in $dirty_ranges ranges), $BENCH_DIR," \
     "median of $ROUNDS"
printf '%-10s %10s %12s %14s %16s %8s\n' server "inc (s)" "read (MiB)" \
    "MiB/s" "dirty only (s)" "ratio"
for server in $servers; do
    printf '%-10s %10.3f %12.1f %14.0f %16.3f %8.2f\n' "$server" \
        "${inc_s[$server]}" "$(echo "${inc_read[$server]} / 1048576" | bc -l)" \
        "$(echo "${inc_read[$server]} / 1048576 / ${inc_s[$server]}" | bc -l)" \
        "${dirty_s[$server]}" "$(echo "${inc_s[$server]} / ${dirty_s[$server]}" | bc -l)"
done
printf 'full backup (qemu-nbd): %.3f s for %d MiB of data\n' "$full_s" "$DATA_MIB"
echo
echo "nbdinfo --map=qemu:dirty-bitmap:b0 of a 1 TiB qcow2 image" \
     "($MAP_WRITES scattered 4 KiB writes), median of $ROUNDS"
printf '%-10s %10s %10s\n' server "s/call" extents
for server in $servers; do
    printf '%-10s %10.3f %10d\n' "$server" "${map_s[$server]}" "${map_n[$server]}"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
