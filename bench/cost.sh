#!/usr/bin/env bash
# bench/cost.sh - what one NBD request costs the server, in counts that
# do not depend on the machine's load: syscalls and context switches per
# request (perf stat, whole server process, native speed) and user-space
# instructions per request in the transmission workers (callgrind,
# --toggle-collect=worker_loop; callgrind serialises threads).
#
#   bench/cost.sh [SNAPNBD]        default build/snapnbd
#
# Environment: N [20000] requests per workload; TOOLS ["perf callgrind"];
# SNAPNBD_ARGS extra server arguments (e.g. --aio=io_uring); BENCH_DIR
# [/dev/shm] for the 256 MiB raw image and the socket.
# Workloads: fio's nbd engine, 4k random read and write, QD1 and QD32,
# and 1 MiB random reads at QD4 (N/10 of them; the server's path is that
# of the bench's 1 MiB sequential reads).
set -euo pipefail

BIN=${1:-build/snapnbd}
N=${N:-20000}
TOOLS=${TOOLS:-perf callgrind}
dir=$(mktemp -d "${BENCH_DIR:-/dev/shm}/snapnbd-cost.XXXXXX")
trap 'rm -rf "$dir"' EXIT

for t in fio $TOOLS; do
    case $t in callgrind) t=valgrind ;; esac
    command -v "$t" >/dev/null || { echo "cost.sh: $t is required" >&2; exit 1; }
done
head -c $((256 << 20)) /dev/urandom >"$dir/disk.raw"

# Runs the server under $1 (perf or callgrind) for one fio workload.
run_one() {
    local tool=$1 op=$2 qd=$3 bs=$4 n=$5 pid child
    rm -f "$dir/sock"
    # shellcheck disable=SC2086
    if [ "$tool" = callgrind ]; then
        valgrind --tool=callgrind --collect-atstart=no \
            --toggle-collect=worker_loop --callgrind-out-file="$dir/cg.out" \
            "$BIN" -f raw -k "$dir/sock" -t -e 0 ${SNAPNBD_ARGS:-} \
            "$dir/disk.raw" 2>/dev/null &
    else
        perf stat -x, -o "$dir/perf.out" \
            -e raw_syscalls:sys_enter,context-switches \
            "$BIN" -f raw -k "$dir/sock" -t -e 0 ${SNAPNBD_ARGS:-} \
            "$dir/disk.raw" &
    fi
    pid=$!
    for _ in $(seq 300); do [ -S "$dir/sock" ] && break; sleep 0.1; done
    fio --name=cost --ioengine=nbd --uri="nbd+unix:///?socket=$dir/sock" \
        --rw="rand$op" --bs="$bs" --iodepth="$qd" --number_ios="$n" \
        --io_size=$(( n * $(numfmt --from=iec "${bs^^}") )) \
        --norandommap --randrepeat=0 --size=256M >/dev/null ||
        echo "cost.sh: fio failed ($op QD$qd $bs)" >&2 # the server still stops
    # Stop the server (perf's child, or valgrind itself) by its PID.
    if [ "$tool" = callgrind ]; then child=$pid; else child=$(pgrep -P "$pid"); fi
    kill -TERM "$child"
    wait "$pid" || true
}

printf '%-16s %14s %14s %14s\n' workload syscalls/req ctxsw/req instr/req
for wl in "read 1 4k" "read 32 4k" "write 1 4k" "write 32 4k" "read 4 1M"; do
    set -- $wl
    n=$N
    [ "$3" = 4k ] || n=$(( N / 10 ))
    sc=- cs=- ir=-
    for tool in $TOOLS; do
        run_one "$tool" "$1" "$2" "$3" "$n"
        if [ "$tool" = callgrind ]; then
            ir=$(awk -v n="$n" '/^(summary|totals):/ { printf "%d", $2 / n; exit }' "$dir/cg.out")
        else
            sc=$(awk -F, -v n="$n" '/raw_syscalls/ { printf "%.2f", $1 / n }' "$dir/perf.out")
            cs=$(awk -F, -v n="$n" '/context-switches/ { printf "%.2f", $1 / n }' "$dir/perf.out")
        fi
    done
    printf '%-16s %14s %14s %14s\n' "$3 $1 QD$2" "$sc" "$cs" "$ir"
done
