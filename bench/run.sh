#!/usr/bin/env bash
# bench/run.sh - interleaved benchmark of snapnbd against its peers
# (qemu-nbd 7.2 default, nbdkit file plugin), following the method of
# PERFORMANCE.md: image on tmpfs, servers on unix sockets, fio's nbd engine
# and nbdcopy as clients, every server restarted each round, the server
# order rotated round by round, medians over rounds.  See bench/README.md.
#
#   bench/run.sh            3 rounds, 5 s per fio workload (about 6 minutes;
#                           up to ~9 if nbdcopy runs hit NBDCOPY_TIMEOUT)
#   QUICK=1 bench/run.sh    1 round, 2 s per fio workload (about 1.5 minutes)
#
# Environment (defaults in brackets):
#   ROUNDS [3, QUICK: 1]        RUNTIME [5, QUICK: 2] seconds per fio workload
#   BENCH_DIR [/dev/shm/snapnbd-bench]  tmpfs directory for images and sockets
#   SERVERS ["snapnbd qemu-nbd nbdkit"] SNAPNBD [build/snapnbd]
#   SNAPNBD_ARGS [""]  extra snapnbd options, e.g. "--aio=io_uring"
#   NBDCOPY_REPS [2, QUICK: 1]  nbdcopy runs per server and round
#   NBDCOPY_DST [null:]  nbdcopy's discarding destination; a /dev/null
#       destination makes nbdcopy 1.14 fall back to a synchronous single
#       connection "pipe" copy that takes minutes, so it is not the default
#   NBDCOPY_TIMEOUT [30, QUICK: 10] seconds; past it MiB/s is estimated from
#       nbdcopy's progress and a note is printed
#   MAP_REPS [5, QUICK: 3] nbdinfo --map runs per server and round
#   MAP_EXTENTS [16384]  extents (alternating 32 KiB data / hole) of the map image
#   IMAGE_MIB [2048]     MAX_SECONDS [900, QUICK: 180] no new round after this
#   RESULTS_DIR [bench/results]
#   TLS [1]  0 skips the TLS rows (1M seq read QD4 and nbdcopy over X.509
#       TLS: certificates made once per run with certtool; clients are a
#       python libnbd loop and nbdcopy, since fio's nbd engine has no TLS)
#   TLS_ONLY [0]  1 runs the TLS rows only (a short check at high load)
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    : "${ROUNDS:=1}" "${RUNTIME:=2}" "${NBDCOPY_REPS:=1}" "${MAP_REPS:=3}" "${MAX_SECONDS:=180}" \
      "${NBDCOPY_TIMEOUT:=10}"
fi
ROUNDS=${ROUNDS:-3}
RUNTIME=${RUNTIME:-5}
NBDCOPY_REPS=${NBDCOPY_REPS:-2}
NBDCOPY_DST=${NBDCOPY_DST:-null:}
NBDCOPY_TIMEOUT=${NBDCOPY_TIMEOUT:-30}
MAP_REPS=${MAP_REPS:-5}
MAP_EXTENTS=${MAP_EXTENTS:-16384}
MAP_EXTENT_KIB=32
IMAGE_MIB=${IMAGE_MIB:-2048}
MAX_SECONDS=${MAX_SECONDS:-900}
BENCH_DIR=${BENCH_DIR:-/dev/shm/snapnbd-bench}
SERVERS=${SERVERS:-"snapnbd qemu-nbd nbdkit"}
SNAPNBD=${SNAPNBD:-$top/build/snapnbd}
SNAPNBD_ARGS=${SNAPNBD_ARGS:-}
RESULTS_DIR=${RESULTS_DIR:-$here/results}
TLS=${TLS:-1}
TLS_ONLY=${TLS_ONLY:-0}

# workload table: tag rw bs iodepth metric
WORKLOADS=(
    "randread4k_qd1   randread  4k 1  iops"
    "randread4k_qd32  randread  4k 32 iops"
    "randwrite4k_qd1  randwrite 4k 1  iops"
    "randwrite4k_qd32 randwrite 4k 32 iops"
    "seqread1m_qd4    read      1M 4  mibs"
    "seqwrite1m_qd4   write     1M 4  mibs"
)
CPU_WORKLOAD=randread4k_qd32   # the workload whose server CPU per I/O is reported

log()  { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die()  { log "error: $*"; exit 1; }
note() { log "note: $*"; printf '%s\n' "$*" >>"$outdir/notes.txt"; }
now_us() { local t=${EPOCHREALTIME/./}; echo "${t#0}"; }

for v in ROUNDS RUNTIME NBDCOPY_REPS NBDCOPY_TIMEOUT MAP_REPS MAP_EXTENTS IMAGE_MIB MAX_SECONDS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done

# ---------------------------------------------------------------- tools
command -v python3 >/dev/null || die "python3 is required"
command -v fio >/dev/null || die "fio is required"
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine (fio --enghelp=nbd)"
command -v nbdinfo >/dev/null || die "nbdinfo (libnbd-bin) is required"
command -v nbdcopy >/dev/null || die "nbdcopy (libnbd-bin) is required"
command -v timeout >/dev/null || die "timeout (coreutils) is required"

stamp=$(date +%Y%m%d-%H%M%S)
outdir=$RESULTS_DIR/$stamp
mkdir -p "$outdir/raw" || die "cannot create $outdir"
: >"$outdir/notes.txt"
samples=$outdir/samples.tsv
printf 'round\tposition\tserver\tmetric\tvalue\n' >"$samples"

avail=()
for s in $SERVERS; do
    case $s in
    snapnbd)
        if [[ -x $SNAPNBD ]]; then avail+=(snapnbd)
        else note "snapnbd: $SNAPNBD not found or not executable (build it first: ./run build); column skipped"; fi ;;
    qemu-nbd)
        if command -v qemu-nbd >/dev/null; then avail+=(qemu-nbd)
        else note "qemu-nbd not installed; column skipped"; fi ;;
    nbdkit)
        if command -v nbdkit >/dev/null && nbdkit file --dump-plugin >/dev/null 2>&1; then avail+=(nbdkit)
        else note "nbdkit or its file plugin not installed; column skipped"; fi ;;
    *) note "unknown server '$s' ignored" ;;
    esac
done
[[ ${#avail[@]} -gt 0 ]] || die "no server to benchmark"

# TLS rows: certtool for the certificates, a python3 with libnbd's bindings
# (the system one usually) for the seq-read loop.
tls_python=
if [[ $TLS == 1 ]]; then
    for p in /usr/bin/python3 python3; do
        if "$p" -c 'import nbd' 2>/dev/null; then tls_python=$p; break; fi
    done
    if ! command -v certtool >/dev/null; then
        note "certtool (gnutls-bin) not installed; TLS rows skipped"; TLS=0
    elif [[ -z $tls_python ]]; then
        note "no python3 with libnbd's bindings (python3-libnbd); TLS rows skipped"; TLS=0
    elif [[ " ${avail[*]} " == *" nbdkit "* ]] && ! nbdkit --dump-config 2>/dev/null | grep -qx 'tls=yes'; then
        note "nbdkit built without TLS: its TLS cells are FAIL"
    fi
fi

# ---------------------------------------------------------------- workdir
cpu_tck=$(getconf CLK_TCK)
made_bench_dir=0
[[ -d $BENCH_DIR ]] || made_bench_dir=1
mkdir -p "$BENCH_DIR" || die "cannot create $BENCH_DIR"
fstype=$(stat -f -c %T "$BENCH_DIR")
[[ $fstype == tmpfs ]] || note "$BENCH_DIR is on $fstype, not tmpfs: numbers are not comparable with PERFORMANCE.md"
map_mib=$(( MAP_EXTENTS * MAP_EXTENT_KIB / 1024 ))
need_mib=$(( IMAGE_MIB + map_mib / 2 + 256 ))
free_mib=$(( $(df -P -k "$BENCH_DIR" | awk 'NR==2 {print $4}') / 1024 ))
mem_mib=$(( $(awk '/^MemAvailable:/ {print $2}' /proc/meminfo) / 1024 ))
(( free_mib >= need_mib )) || die "$BENCH_DIR has $free_mib MiB free, need $need_mib MiB"
if [[ $fstype == tmpfs ]] && (( mem_mib < need_mib + 512 )); then
    die "only $mem_mib MiB of memory available, need $need_mib MiB for the tmpfs images plus 512 MiB"
fi
work=$(mktemp -d "$BENCH_DIR/run.XXXXXX") || die "mktemp in $BENCH_DIR failed"
image=$work/disk.raw
mapimg=$work/map.raw
sock=$work/nbd.sock
(( ${#sock} < 100 )) || die "socket path $sock too long"
tlsdir=$work/tls

make_tls_certs() {   # a CA, a server (localhost) and a client certificate in $tlsdir
    local d=$tlsdir k
    mkdir -p "$d/server" "$d/client" || return 1
    printf '%s\n' 'cn = snapnbd bench CA' ca cert_signing_key 'expiration_days = 2' >"$d/ca.info"
    printf '%s\n' 'organization = snapnbd bench' 'cn = localhost' 'dns_name = localhost' \
        tls_www_server signing_key encryption_key 'expiration_days = 2' >"$d/server.info"
    printf '%s\n' 'organization = snapnbd bench' 'cn = client' \
        tls_www_client signing_key encryption_key 'expiration_days = 2' >"$d/client.info"
    for k in ca server/server client/client; do
        certtool --generate-privkey --key-type=ecdsa --outfile "$d/$k-key.pem" 2>/dev/null || return 1
    done
    certtool --generate-self-signed --load-privkey "$d/ca-key.pem" --template "$d/ca.info" \
        --outfile "$d/ca-cert.pem" >/dev/null 2>&1 || return 1
    for k in server client; do
        certtool --generate-certificate --load-privkey "$d/$k/$k-key.pem" \
            --load-ca-certificate "$d/ca-cert.pem" --load-ca-privkey "$d/ca-key.pem" \
            --template "$d/$k.info" --outfile "$d/$k/$k-cert.pem" >/dev/null 2>&1 || return 1
        cp "$d/ca-cert.pem" "$d/$k/ca-cert.pem" || return 1
    done
}
[[ $TLS_ONLY == 1 && $TLS != 1 ]] && die "TLS_ONLY=1, but the TLS rows cannot run (see the notes above)"
if [[ $TLS == 1 ]] && ! make_tls_certs; then
    note "certtool could not make the TLS certificates; TLS rows skipped"; TLS=0
fi

SERVER_PID=
SERVER_NAME=
cleanup() {
    [[ -n $SERVER_PID ]] && stop_server
    rm -rf "$work"
    (( made_bench_dir )) && rmdir "$BENCH_DIR" 2>/dev/null
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM HUP
snapnbd_bin=
snapnbd_id=
# Run a private copy of snapnbd, so that a rebuild by someone else during the
# run cannot mix two binaries in one set of medians.
if [[ " ${avail[*]} " == *" snapnbd "* ]]; then
    cp "$SNAPNBD" "$work/snapnbd" || die "cannot copy $SNAPNBD"
    snapnbd_bin=$work/snapnbd
    snapnbd_id="sha256 $(sha256sum "$snapnbd_bin" | cut -c1-16), built $(date -r "$SNAPNBD" '+%F %T')"
fi

# ---------------------------------------------------------------- servers
alive() {   # the server process exists and is not a zombie
    local st
    [[ -n $SERVER_PID ]] || return 1
    st=$(cat "/proc/$SERVER_PID/stat" 2>/dev/null) || return 1
    st=${st##*) }
    [[ ${st%% *} != Z ]]
}

cpu_ticks() {   # utime + stime of the server (all its threads), clock ticks
    local st
    st=$(cat "/proc/$SERVER_PID/stat" 2>/dev/null) || { echo -1; return; }
    st=${st##*) }
    # shellcheck disable=SC2086
    set -- $st          # $1 = field 3 (state), so utime = $12, stime = $13
    echo $(( ${12} + ${13} ))
}

start_server() {   # NAME IMAGE [tls]: with "tls", X.509 TLS required, client certificates checked
    local name=$1 img=$2 tls=${3:-} cmd i qtls=()
    [[ $tls == tls ]] && qtls=(--object "tls-creds-x509,id=tls0,dir=$tlsdir/server,endpoint=server"
                               --tls-creds tls0)
    case $name in
    snapnbd)  # shellcheck disable=SC2206
              cmd=("$snapnbd_bin" -f raw -k "$sock" -t -e 0 $SNAPNBD_ARGS "${qtls[@]}" "$img") ;;
    qemu-nbd) cmd=(qemu-nbd -f raw -k "$sock" -t -e 0 "${qtls[@]}" "$img") ;;
    nbdkit)   cmd=(nbdkit -U "$sock" -f)
              [[ $tls == tls ]] && cmd+=(--tls=require "--tls-certificates=$tlsdir/server" --tls-verify-peer)
              cmd+=(file "file=$img") ;;
    esac
    if [[ $tls == tls ]]; then URI=$TLS_URI; else URI=$PLAIN_URI; fi
    rm -f "$sock"
    SERVER_NAME=$name
    echo "+ ${cmd[*]}" >>"$outdir/raw/server-$name.log"
    "${cmd[@]}" >>"$outdir/raw/server-$name.log" 2>&1 </dev/null &
    SERVER_PID=$!
    for ((i = 0; i < 100; i++)); do
        alive || break
        if [[ -S $sock ]] && timeout 5 nbdinfo --size "$URI" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    note "$name did not come up on $sock (see raw/server-$name.log)"
    stop_server
    return 1
}

stop_server() {   # only the PID we started
    local i pid=$SERVER_PID
    [[ -n $pid ]] || return 0
    if alive; then
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < 50; i++)); do alive || break; sleep 0.1; done
        if alive; then
            note "$SERVER_NAME (pid $pid) ignored SIGTERM for 5 s; sent SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    wait "$pid" 2>/dev/null
    SERVER_PID=
    rm -f "$sock"
}

PLAIN_URI="nbd+unix:///?socket=$sock"
TLS_URI="nbds+unix:///?socket=$sock&tls-certificates=$tlsdir/client"
URI=$PLAIN_URI   # the URI of the running server (start_server sets it)

# ---------------------------------------------------------------- recording
record() {   # METRIC VALUE
    printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$pos" "$SERVER_NAME" "$1" "$2" >>"$samples"
}

fio_result() {   # JSON_FILE DIRECTION METRIC -> "value total_ios" or nothing
    python3 - "$@" <<'EOF'
import json, sys
path, direction, metric = sys.argv[1:4]
try:
    with open(path) as f:
        text = f.read()
    # be tolerant of any banner printed before the JSON document
    d = json.loads(text[text.index('{'):])
    job = d["jobs"][0]
    if job.get("error", 0):
        sys.exit(1)
    r = job[direction]
    value = r["iops"] if metric == "iops" else r["bw_bytes"] / 1048576.0
    if r["total_ios"] <= 0:
        sys.exit(1)
    print(value, r["total_ios"])
except Exception:
    sys.exit(1)
EOF
}

run_fio() {   # TAG RW BS QD METRIC
    local tag=$1 rw=$2 bs=$3 qd=$4 metric=$5 out c0 c1 rc res dir
    out=$outdir/raw/fio-r$round-$SERVER_NAME-$tag.json
    case $rw in *read) dir="read" ;; *) dir="write" ;; esac
    c0=$(cpu_ticks)
    timeout $(( RUNTIME + 60 )) fio --name="$tag" --ioengine=nbd --uri="$URI" \
        --rw="$rw" --bs="$bs" --iodepth="$qd" --numjobs=1 \
        --time_based --runtime="$RUNTIME" --norandommap --randrepeat=0 \
        --output-format=json --output="$out" >"${out%.json}.log" 2>&1
    rc=$?
    c1=$(cpu_ticks)
    if (( rc != 0 )) || ! res=$(fio_result "$out" "$dir" "$metric"); then
        note "round $round $SERVER_NAME $tag: fio failed (rc $rc, see ${out#"$outdir"/})"
        record "$tag" nan
        return 1
    fi
    local value=${res% *} ios=${res#* }
    record "$tag" "$value"
    if (( c0 >= 0 && c1 >= 0 )); then
        # server CPU µs per I/O = ticks * 1e6 / CLK_TCK / ios
        record "cpu_us_per_io_$tag" "$(python3 -c "print(($c1 - $c0) * 1e6 / $cpu_tck / $ios)")"
    fi
    return 0
}

run_nbdcopy() {   # [METRIC]: nbdcopy_mibs, or nbdcopy_tls_mibs
    local metric=${1:-nbdcopy_mibs} i t0 t1 rc pct prog=$work/nbdcopy.progress
    for ((i = 0; i < NBDCOPY_REPS; i++)); do
        : >"$prog"
        t0=$(now_us)
        timeout "$NBDCOPY_TIMEOUT" nbdcopy --progress=3 "$URI" "$NBDCOPY_DST" \
            3>"$prog" >>"$outdir/raw/nbdcopy.log" 2>&1
        rc=$?
        t1=$(now_us)
        if (( rc == 124 )); then
            # a lower-bound estimate from nbdcopy's "N/100" progress lines
            pct=$(tail -n 1 "$prog" | cut -d/ -f1)
            pct=${pct:-0}
            note "round $round $SERVER_NAME: nbdcopy ($metric) timed out after ${NBDCOPY_TIMEOUT}s at ${pct}%;" \
                 "recorded MiB/s is an estimate from its progress"
            record "$metric" "$(python3 -c "print($IMAGE_MIB * $pct / 100 / (($t1 - $t0) / 1e6))")"
        elif (( rc != 0 )); then
            note "round $round $SERVER_NAME: nbdcopy ($metric) failed (rc $rc, see raw/nbdcopy.log)"
            record "$metric" nan
        else
            record "$metric" "$(python3 -c "print($IMAGE_MIB / (($t1 - $t0) / 1e6))")"
        fi
    done
}

# 1 MiB sequential reads, 4 in flight, for RUNTIME seconds, over TLS: a
# python libnbd loop (fio's nbd engine cannot do TLS).
run_tls_seqread() {
    local out=$outdir/raw/tls-seqread-r$round-$SERVER_NAME.log c0 c1 res rc
    c0=$(cpu_ticks)
    res=$(timeout $(( RUNTIME + 60 )) "$tls_python" - "$URI" "$RUNTIME" 2>"$out" <<'EOF'
import sys, time
import nbd
uri, runtime = sys.argv[1], float(sys.argv[2])
BS, QD = 1 << 20, 4
h = nbd.NBD()
h.set_uri_allow_local_file(True)   # for tls-certificates=DIR
h.connect_uri(uri)
if not h.get_tls_negotiated():
    sys.exit("TLS was not negotiated")
size = h.get_size() // BS * BS
bufs = [nbd.Buffer(BS) for _ in range(QD)]
free, inflight = list(range(QD)), {}
off = done = 0
t0 = time.monotonic()
end = t0 + runtime
while True:
    if time.monotonic() < end:
        while free:
            i = free.pop()
            if off + BS > size:
                off = 0
            inflight[h.aio_pread(bufs[i], off)] = i
            off += BS
    if not inflight:
        break
    h.poll(-1)
    for c in [c for c in inflight if h.aio_command_completed(c)]:
        free.append(inflight.pop(c))
        done += 1
elapsed = time.monotonic() - t0
h.shutdown()
print(done * BS / 1048576 / elapsed, done)
EOF
    )
    rc=$?
    c1=$(cpu_ticks)
    if (( rc != 0 )) || [[ $res != *" "* ]]; then
        note "round $round $SERVER_NAME: TLS seq read failed (rc $rc, see ${out#"$outdir"/})"
        record seqread1m_qd4_tls nan
        return 1
    fi
    echo "MiB/s reads: $res" >>"$out"
    record seqread1m_qd4_tls "${res% *}"
    if (( c0 >= 0 && c1 >= 0 )); then
        record cpu_us_per_io_seqread1m_qd4_tls "$(python3 -c "print(($c1 - $c0) * 1e6 / $cpu_tck / ${res#* })")"
    fi
}

run_map() {
    local i t0 t1 rc out=$outdir/raw/map-r$round-$SERVER_NAME.txt
    for ((i = 0; i < MAP_REPS; i++)); do
        t0=$(now_us)
        timeout 60 nbdinfo --map "$URI" >"$out" 2>&1
        rc=$?
        t1=$(now_us)
        if (( rc != 0 )); then
            note "round $round $SERVER_NAME: nbdinfo --map failed (rc $rc, see ${out#"$outdir"/})"
            record map_ms nan
            return 1
        fi
        record map_ms "$(python3 -c "print(($t1 - $t0) / 1000.0)")"
    done
    record map_lines "$(wc -l <"$out")"
}

ensure_up() {   # IMAGE TAG [tls]: restart the server if it died
    alive && return 0
    note "round $round: $SERVER_NAME died before $2; restarting it"
    stop_server
    start_server "$SERVER_NAME" "$1" "${3:-}"
}

# ---------------------------------------------------------------- images
log "creating ${IMAGE_MIB} MiB fully allocated raw image and ${map_mib} MiB map image in $work"
map_kernel_extents=$(python3 - "$image" "$IMAGE_MIB" "$mapimg" "$MAP_EXTENTS" "$MAP_EXTENT_KIB" <<'EOF'
import os, sys
image, mib, mapimg, extents, ext_kib = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
MiB = 1 << 20
base = bytearray(os.urandom(MiB))
with open(image, "wb") as f:
    for i in range(mib):
        base[0:8] = i.to_bytes(8, "little")      # every MiB distinct, none zero
        f.write(base)
st = os.stat(image)
assert st.st_blocks * 512 >= mib * MiB, "image is not fully allocated"
ext = ext_kib * 1024
chunk = os.urandom(ext)
fd = os.open(mapimg, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, extents * ext)
for i in range(0, extents, 2):
    os.pwrite(fd, chunk, i * ext)
# count data/hole runs as the kernel reports them
n, off, size = 0, 0, extents * ext
while off < size:
    try:
        d = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        d = size
    if d > off:
        n += 1
    if d >= size:
        break
    h = os.lseek(fd, d, os.SEEK_HOLE)
    n += 1
    off = h
os.close(fd)
print(n)
EOF
) || die "image creation failed"
(( map_kernel_extents == MAP_EXTENTS )) ||
    note "the map image shows $map_kernel_extents extents to SEEK_DATA/SEEK_HOLE, not $MAP_EXTENTS (hugepage tmpfs?)"

# ---------------------------------------------------------------- rounds
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
log "servers: ${avail[*]}; rounds: $ROUNDS; fio runtime: ${RUNTIME}s; load average: $load_start"
t_start=$SECONDS
rounds_done=0
n=${#avail[@]}
for ((round = 1; round <= ROUNDS; round++)); do
    if (( SECONDS - t_start > MAX_SECONDS )); then
        note "time budget MAX_SECONDS=$MAX_SECONDS used up after $rounds_done rounds; stopping early"
        break
    fi
    for ((pos = 0; pos < n; pos++)); do
        server=${avail[$(( (pos + round - 1) % n ))]}
        log "round $round/$ROUNDS: $server"
        # main image: fio workloads and nbdcopy
        if [[ $TLS_ONLY == 1 ]]; then
            :
        elif start_server "$server" "$image"; then
            for w in "${WORKLOADS[@]}"; do
                # shellcheck disable=SC2086
                set -- $w
                if ensure_up "$image" "$1"; then run_fio "$@"
                else record "$1" nan; fi
            done
            if ensure_up "$image" nbdcopy; then run_nbdcopy
            else record nbdcopy_mibs nan; fi
            stop_server
        else
            for w in "${WORKLOADS[@]}"; do record "${w%% *}" nan; done
            record nbdcopy_mibs nan
        fi
        # main image over TLS: python libnbd seq reads and nbdcopy
        if [[ $TLS == 1 ]]; then
            if start_server "$server" "$image" tls; then
                run_tls_seqread
                if ensure_up "$image" nbdcopy_tls tls; then run_nbdcopy nbdcopy_tls_mibs
                else record nbdcopy_tls_mibs nan; fi
                stop_server
            else
                record seqread1m_qd4_tls nan
                record nbdcopy_tls_mibs nan
            fi
        fi
        # sparse image: nbdinfo --map
        if [[ $TLS_ONLY == 1 ]]; then
            :
        elif start_server "$server" "$mapimg"; then
            run_map
            stop_server
        else
            record map_ms nan
        fi
    done
    rounds_done=$round
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(( SECONDS - t_start ))

# ---------------------------------------------------------------- report
versions() {
    echo "fio=$(fio --version 2>&1 | head -1)"
    command -v qemu-nbd >/dev/null && echo "qemu-nbd=$(qemu-nbd --version 2>&1 | head -1)"
    command -v nbdkit >/dev/null && echo "nbdkit=$(nbdkit --version 2>&1 | head -1)"
    echo "nbdcopy=$(nbdcopy --version 2>&1 | head -1)"
    echo "snapnbd_tree=$(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)"
    echo "snapnbd_binary=$SNAPNBD, ${snapnbd_id:-not run}"
    echo "kernel=$(uname -r)"
    echo "cpus=$(nproc)"
}
versions >"$outdir/versions.txt"

python3 - "$outdir" "${avail[*]}" "$CPU_WORKLOAD" <<EOF
import csv, json, math, statistics, sys
outdir, servers, cpu_wl = sys.argv[1], sys.argv[2].split(), sys.argv[3]
config = dict(rounds_requested=$ROUNDS, rounds_done=$rounds_done, runtime_s=$RUNTIME,
              quick=$QUICK == 1, image_mib=$IMAGE_MIB, map_extents=$MAP_EXTENTS,
              map_extent_kib=$MAP_EXTENT_KIB, map_kernel_extents=$map_kernel_extents,
              nbdcopy_reps=$NBDCOPY_REPS, nbdcopy_timeout_s=$NBDCOPY_TIMEOUT, nbdcopy_dst="$NBDCOPY_DST", map_reps=$MAP_REPS,
              bench_dir="$BENCH_DIR", bench_fs="$fstype", snapnbd_args="$SNAPNBD_ARGS",
              servers=servers, load_start="$load_start", load_end="$load_end",
              elapsed_s=$elapsed, tls=$TLS == 1)
versions = dict(l.rstrip("\n").split("=", 1) for l in open(outdir + "/versions.txt") if "=" in l)
notes = [l.rstrip("\n") for l in open(outdir + "/notes.txt") if l.strip()]

rows = list(csv.DictReader(open(outdir + "/samples.tsv"), delimiter="\t"))
with open(outdir + "/samples.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["round", "position", "server", "metric", "value"])
    for r in rows:
        w.writerow([r["round"], r["position"], r["server"], r["metric"], r["value"]])

samples = {}
for r in rows:
    v = float(r["value"])
    samples.setdefault(r["metric"], {}).setdefault(r["server"], []).append(v)

def med(metric, server):
    vals = [v for v in samples.get(metric, {}).get(server, []) if not math.isnan(v)]
    return statistics.median(vals) if vals else None

# (label, metric, higher_is_better, formatter)
def k(v): return f"{v/1000:.1f}k"
def i(v): return f"{v:.0f}"
def f1(v): return f"{v:.1f}"
table = [
    ("4k randread QD1 (IOPS)",        "randread4k_qd1",   True,  k),
    ("4k randread QD32 (IOPS)",       "randread4k_qd32",  True,  k),
    ("4k randwrite QD1 (IOPS)",       "randwrite4k_qd1",  True,  k),
    ("4k randwrite QD32 (IOPS)",      "randwrite4k_qd32", True,  k),
    ("1M seq read QD4 (MiB/s)",       "seqread1m_qd4",    True,  i),
    ("1M seq write QD4 (MiB/s)",      "seqwrite1m_qd4",   True,  i),
    ("nbdcopy whole export (MiB/s)", "nbdcopy_mibs", True, i),
] + ([
    ("1M seq read QD4 over TLS (MiB/s)", "seqread1m_qd4_tls", True, i),
    ("nbdcopy over TLS (MiB/s)",         "nbdcopy_tls_mibs",  True, i),
] if config["tls"] else []) + [
    ("server CPU/4k read QD32 (us) [lower better]", "cpu_us_per_io_" + cpu_wl, False, f1),
    ("nbdinfo --map %d ext (ms) [lower better]" % config["map_extents"], "map_ms", False, f1),
]
peers = [s for s in servers if s != "snapnbd"]
summary = []
lines = []
header = ["workload"] + servers + (["snapnbd/best peer"] if "snapnbd" in servers and peers else [])
out_rows = []
for label, metric, hib, fmt in table:
    if metric not in samples:   # not run (TLS_ONLY=1)
        continue
    meds = {s: med(metric, s) for s in servers}
    entry = dict(workload=label, metric=metric, higher_is_better=hib, median=meds,
                 samples={s: samples.get(metric, {}).get(s, []) for s in servers})
    cells = [label] + [fmt(meds[s]) if meds[s] is not None else "FAIL" for s in servers]
    pv = [(meds[p], p) for p in peers if meds[p] is not None]
    if "snapnbd" in servers and peers:
        if pv and meds["snapnbd"] is not None:
            best, who = (max if hib else min)(pv)
            ratio = meds["snapnbd"] / best if best else float("nan")
            entry.update(best_peer=who, best_peer_value=best, ratio=ratio)
            cells.append(f"{ratio:.2f}x ({who})")
        else:
            cells.append("n/a")
    summary.append(entry)
    out_rows.append(cells)
widths = [max(len(str(r[c])) for r in [header] + out_rows) for c in range(len(header))]
def fmt_row(r):
    return "| " + " | ".join(str(c).ljust(widths[j]) if j == 0 else str(c).rjust(widths[j])
                             for j, c in enumerate(r)) + " |"
lines.append(fmt_row(header))
lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
lines += [fmt_row(r) for r in out_rows]
lines.append("")
lines.append(f"medians of {config['rounds_done']} round(s), fio runtime {config['runtime_s']} s, "
             f"{config['image_mib']} MiB raw image on {config['bench_fs']} ({config['bench_dir']}), "
             f"load {config['load_start']} -> {config['load_end']}, {config['elapsed_s']} s")
lines.append("snapnbd: " + versions.get("snapnbd_binary", "?") + ", tree " + versions.get("snapnbd_tree", "?"))
lines.append("ratio = snapnbd / best peer; best = max for IOPS and MiB/s, min for CPU and time "
             "(so > 1 is better above, < 1 is better in the [lower better] rows)")
for s in servers:
    ml = samples.get("map_lines", {}).get(s)
    if ml and ml[-1] < config["map_extents"] * 0.9:
        lines.append(f"warning: {s} nbdinfo --map printed only {int(ml[-1])} lines "
                     f"for {config['map_extents']} extents (it merges or truncates extents)")
for n in notes:
    lines.append("note: " + n)
text = "\n".join(lines) + "\n"
open(outdir + "/table.txt", "w").write(text)
def clean(o):
    if isinstance(o, float) and math.isnan(o): return None
    if isinstance(o, dict): return {k: clean(v) for k, v in o.items()}
    if isinstance(o, list): return [clean(v) for v in o]
    return o
json.dump(clean(dict(config=config, versions=versions, notes=notes, summary=summary,
               samples=[dict(r, value=float(r["value"])) for r in rows])),
          open(outdir + "/results.json", "w"), indent=1)
print(text, end="")
EOF
rm -f "$samples"
ln -sfn "$stamp" "$RESULTS_DIR/latest"
log "results in ${outdir#"$top"/}/ (table.txt, samples.csv, results.json, raw/)"
