#!/usr/bin/env bash
# bench/qcow2.sh - qcow2 rows: snapnbd against qemu-nbd -f qcow2 (and nbdkit
# running snapnbd's plugin, since nbdkit has no qcow2 of its own), on tmpfs,
# fio's nbd engine, servers restarted for every workload, the order rotated
# each round, medians over rounds.  See bench/README.md.
#
#   randwrite4k_alloc   4k random writes QD32 into an empty 2 GiB qcow2
#                       (every first write to a cluster allocates it)
#   randread4k_full     4k random reads QD32 from a fully written 1 GiB qcow2
#   seqread1m_chain3    1 MiB sequential reads QD4 of a 3-layer qcow2 chain
#
# Environment: ROUNDS [3], RUNTIME [5] s per workload, QUICK=1 (1 round, 2 s),
# BENCH_DIR [/dev/shm/snapnbd-bench], SNAPNBD [build/snapnbd],
# PLUGIN [build/nbdkit-snapnbd-plugin.so], SERVERS ["snapnbd qemu-nbd nbdkit"].
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
if [[ ${QUICK:-0} == 1 ]]; then : "${ROUNDS:=1}" "${RUNTIME:=2}"; fi
ROUNDS=${ROUNDS:-3}
RUNTIME=${RUNTIME:-5}
BENCH_DIR=${BENCH_DIR:-/dev/shm/snapnbd-bench}
SNAPNBD=${SNAPNBD:-$top/build/snapnbd}
PLUGIN=${PLUGIN:-$top/build/nbdkit-snapnbd-plugin.so}
SERVERS=${SERVERS:-"snapnbd qemu-nbd nbdkit"}

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
for c in fio qemu-img qemu-io nbdinfo python3; do
    command -v $c >/dev/null || { log "$c is required"; exit 1; }
done
[[ -x $SNAPNBD ]] || { log "build snapnbd first (./run build)"; exit 1; }
[[ -f $PLUGIN ]] || SERVERS=${SERVERS/nbdkit/}

mkdir -p "$BENCH_DIR"
work=$(mktemp -d "$BENCH_DIR/qcow2.XXXXXX")
sock=$work/sock
pid=
trap '[[ -n $pid ]] && kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
cp "$SNAPNBD" "$work/snapnbd"

log "making images"
head -c 1G /dev/urandom >"$work/rand.raw"
qemu-img convert -O qcow2 "$work/rand.raw" "$work/full.qcow2"
qemu-img convert -O qcow2 "$work/rand.raw" "$work/base.qcow2"
rm -f "$work/rand.raw"
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$work/mid.qcow2"
qemu-io -f qcow2 -c 'write -P 2 256M 256M' "$work/mid.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$work/top.qcow2"
qemu-io -f qcow2 -c 'write -P 3 700M 100M' "$work/top.qcow2" >/dev/null

start() {   # SERVER IMAGE
    rm -f "$sock"
    case $1 in
    snapnbd)  "$work/snapnbd" -f qcow2 -k "$sock" -t -e 0 "$2" & ;;
    qemu-nbd) qemu-nbd -f qcow2 -k "$sock" -t -e 0 "$2" & ;;
    nbdkit)   nbdkit -U "$sock" -f "$PLUGIN" file="$2" & ;;
    esac
    pid=$!
    for _ in $(seq 100); do
        nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "$1 did not start"; return 1
}

stop() { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=; }

fio_iops_or_mibs() {   # RW BS QD -> IOPS (random) or MiB/s (sequential)
    fio --name=q --ioengine=nbd --uri="nbd+unix:///?socket=$sock" --rw="$1" \
        --bs="$2" --iodepth="$3" --time_based --runtime="$RUNTIME" \
        --norandommap --randrepeat=0 --output-format=json 2>/dev/null |
        python3 -c 'import json,sys
t = sys.stdin.read(); j = json.loads(t[t.index("{"):])["jobs"][0]
r = j["read"] if j["read"]["io_bytes"] else j["write"]
print(r["iops"] if sys.argv[1] == "rand" else r["bw_bytes"] / 1048576)' \
        "${1:0:4}"
}

samples=$work/samples
: >"$samples"
servers=($SERVERS)
for ((round = 0; round < ROUNDS; round++)); do
    for ((i = 0; i < ${#servers[@]}; i++)); do
        s=${servers[(i + round) % ${#servers[@]}]}
        log "round $((round + 1)) $s"
        rm -f "$work/empty.qcow2"
        qemu-img create -q -f qcow2 "$work/empty.qcow2" 2G
        start "$s" "$work/empty.qcow2" &&
            echo "$s randwrite4k_alloc $(fio_iops_or_mibs randwrite 4k 32)" >>"$samples"
        stop
        start "$s" "$work/full.qcow2" &&
            echo "$s randread4k_full $(fio_iops_or_mibs randread 4k 32)" >>"$samples"
        stop
        start "$s" "$work/top.qcow2" &&
            echo "$s seqread1m_chain3 $(fio_iops_or_mibs read 1M 4)" >>"$samples"
        stop
    done
done

python3 - "$samples" $SERVERS <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    s, w, v = line.split()
    rows.setdefault(w, {}).setdefault(s, []).append(float(v))
servers = sys.argv[2:]
peers = [s for s in servers if s != "snapnbd"]
print("%-20s" % "qcow2 workload" + "".join("%14s" % s for s in servers) +
      "".join("%18s" % ("snapnbd/" + p) for p in peers))
for w, unit in (("randwrite4k_alloc", "IOPS"), ("randread4k_full", "IOPS"),
                ("seqread1m_chain3", "MiB/s")):
    med = {s: statistics.median(rows.get(w, {}).get(s, [float("nan")]))
           for s in servers}
    print("%-20s" % ("%s (%s)" % (w, unit)) +
          "".join("%14.0f" % med[s] for s in servers) +
          "".join("%18.2f" % (med["snapnbd"] / med[p]) if med[p] else "" for p in peers))
EOF
