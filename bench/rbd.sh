#!/usr/bin/env bash
# bench/rbd.sh - snapnbd against qemu-nbd (QEMU's rbd driver, from
# qemu-block-extra) on one RBD image of a throw-away one-node Ceph cluster
# (tests/ceph-cluster.sh: memstore OSD, so it measures the client path, not
# disks).  fio's nbd engine, one job: 4k randread and randwrite at QD1 and
# QD32, 1 MiB sequential read and write at QD4; RUNTIME seconds each
# (default 6: about 2 minutes in all).  Both servers run with their default
# cache (librbd's cache on), "-f raw -t -e 0" on a unix socket.
#
#   ./run build && bench/rbd.sh            IMAGE_MIB=256 RUNTIME=6 by default
#
# Numbers on a shared machine move from run to run: compare the two
# servers within one run only.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
: "${SNAPNBD:=$top/build/snapnbd}"
: "${RUNTIME:=6}"
: "${IMAGE_MIB:=256}"
export PATH=/usr/bin:$PATH LANG=C

fail() { echo "bench/rbd.sh: $*" >&2; exit 1; }
for c in fio qemu-nbd nbdinfo rbd python3; do
    command -v "$c" >/dev/null || fail "'$c' is not installed"
done
[ -x "$SNAPNBD" ] || fail "$SNAPNBD is missing: ./run build"
qemu-img --help | grep -qw rbd || fail "qemu-nbd has no rbd driver (qemu-block-extra)"

tmp=$(mktemp -d /tmp/snapnbd-bench-rbd.XXXXXX)
source "$top/tests/ceph-cluster.sh"
server_pid=
cleanup() {
    set +e # every step, even after one fails
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    ceph_cluster_stop "$tmp/ceph"
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

t0=$(date +%s%N)
ceph_cluster_start "$tmp/ceph"
echo "cluster up in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
conf=$CEPH_CONF
# Fully written, so that reads hit objects (not holes).
head -c "$((IMAGE_MIB << 20))" /dev/urandom >"$tmp/fill.raw"
rbd import --no-progress "$tmp/fill.raw" rbd/bench >/dev/null 2>&1 || fail "rbd import"
rm -f "$tmp/fill.raw"

workloads=(
    "randread-4k-qd1 --rw=randread --bs=4k --iodepth=1"
    "randread-4k-qd32 --rw=randread --bs=4k --iodepth=32"
    "randwrite-4k-qd1 --rw=randwrite --bs=4k --iodepth=1"
    "randwrite-4k-qd32 --rw=randwrite --bs=4k --iodepth=32"
    "read-1m-qd4 --rw=read --bs=1m --iodepth=4"
    "write-1m-qd4 --rw=write --bs=1m --iodepth=4"
)

start_server() {
    local sock=$tmp/$1.sock i
    rm -f "$sock"
    case $1 in
    snapnbd) "$SNAPNBD" -f raw -t -e 0 -k "$sock" "rbd:rbd/bench:conf=$conf" & ;;
    qemu-nbd) qemu-nbd -f raw -t -e 0 -k "$sock" "rbd:rbd/bench:conf=$conf" & ;;
    esac
    server_pid=$!
    for i in $(seq 100); do
        nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "$1 did not start"
}

for server in snapnbd qemu-nbd; do
    start_server $server
    for w in "${workloads[@]}"; do
        set -- $w
        name=$1; shift
        fio --name="$name" --ioengine=nbd --uri="nbd+unix:///?socket=$tmp/$server.sock" \
            --numjobs=1 --time_based --runtime="$RUNTIME" --norandommap \
            --randrepeat=0 --output-format=json "$@" >"$tmp/$server-$name.json"
    done
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || :
    server_pid=
done

python3 - "$tmp" "${workloads[@]}" <<'EOF'
import json, sys
tmp, workloads = sys.argv[1], [w.split()[0] for w in sys.argv[2:]]
def result(server, name):
    text = open(f"{tmp}/{server}-{name}.json").read()
    # fio may print notes before its JSON
    j = json.loads(text[text.index("{"):])["jobs"][0]
    io = j["write"] if "write" in name else j["read"]
    if "1m" in name:
        return io["bw"] / 1024, "MiB/s"
    return io["iops"], "IOPS"
print(f"{'workload':20} {'snapnbd':>10} {'qemu-nbd':>10}  unit   ratio")
for name in workloads:
    s, unit = result("snapnbd", name)
    q, _ = result("qemu-nbd", name)
    print(f"{name:20} {s:10.0f} {q:10.0f}  {unit:6} {s / q if q else 0:5.2f}")
EOF
