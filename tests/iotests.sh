#!/usr/bin/env bash
# iotests.sh - QEMU's own iotests as the yardstick of "drop-in for qemu-nbd".
#
#   tests/iotests.sh [TEST...]      (what `./run iotests` runs)
#
# Gets the iotests of the installed QEMU from Debian's source package
# (a private apt source list under .cache/, so the system's apt setup is not
# touched), builds nothing of QEMU, and runs the NBD-relevant tests -- those
# whose protocols include nbd (or "generic", which includes it) and those
# that start qemu-nbd themselves -- with `./check -nbd -raw` and
# `./check -nbd -qcow2` (the file-only tests that start qemu-nbd with
# `-file`), once with Debian's qemu-nbd as QEMU_NBD_PROG and
# once with snapnbd.  Prints one line per (format, test) that ran with
# either server, and exits 1 if a test passes with qemu-nbd but not with
# snapnbd.
#
# Debian's qemu-system has no qtest accelerator: QEMU_PROG is a wrapper
# that swaps `-accel qtest` for `-accel tcg` (the -qtest socket still works).
#
# Environment: SNAPNBD (default build/snapnbd), IOTESTS_TIMEOUT (seconds
# per test, default 180), IOTESTS_SERVERS (default "qemu-nbd snapnbd";
# qemu-nbd's results are kept in .cache/iotests and reused when only
# snapnbd is asked for), IOTESTS_FORMATS (default "raw qcow2").
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cache=$top/.cache
results=$cache/iotests
snapnbd=${SNAPNBD:-$top/build/snapnbd}
limit=${IOTESTS_TIMEOUT:-180}
servers=${IOTESTS_SERVERS:-qemu-nbd snapnbd}
formats=${IOTESTS_FORMATS:-raw qcow2}

die() { echo "iotests: $*" >&2; exit 2; }

for p in qemu-nbd qemu-img qemu-io qemu-storage-daemon qemu-system-x86_64 \
         apt-get dpkg-source python3; do
    command -v $p >/dev/null || die "$p is missing (qemu-utils, qemu-system-x86, dpkg-dev)"
done
[ -x "$snapnbd" ] || die "$snapnbd is missing: build first (./run build)"

# The source version of the installed qemu-utils (1:7.2+dfsg-7+deb12u18).
version=$(dpkg-query -W -f='${source:Version}' qemu-utils) ||
    die "qemu-utils is not installed"
tree=$cache/qemu-src/${version#*:}
iotests=$tree/tests/qemu-iotests

fetch_source() {
    local apt=$cache/apt
    local opts=(-o "Dir::Etc::SourceList=$apt/sources.list"
                -o "Dir::Etc::SourceParts=/nonexistent"
                -o "Dir::State::Lists=$apt/lists"
                -o "Dir::Cache=$apt/cache"
                -o "APT::Sandbox::User=root")
    mkdir -p "$apt/lists/partial" "$apt/cache" "$cache/qemu-src/dl"
    # deb-src lines for the suites the system's apt knows (bookworm, ...)
    local suites uri
    suites=$(sed -n 's/^Suites: *//p' /etc/apt/sources.list.d/debian.sources \
             2>/dev/null | tr '\n' ' ')
    : > "$apt/sources.list"
    for s in ${suites:-bookworm bookworm-updates bookworm-security}; do
        case $s in *-security) uri=http://deb.debian.org/debian-security ;;
                   *) uri=http://deb.debian.org/debian ;; esac
        echo "deb-src $uri $s main" >> "$apt/sources.list"
    done
    apt-get -qq "${opts[@]}" update >&2 || die "apt-get update failed"
    (cd "$cache/qemu-src/dl" &&
     apt-get -qq "${opts[@]}" source --download-only "qemu=$version" >&2 &&
     rm -rf "$tree.tmp" &&
     dpkg-source -q -x qemu_"${version#*:}".dsc "$tree.tmp" >&2) ||
        die "could not get the source of qemu $version"
    mv "$tree.tmp" "$tree"
    rm -rf "$cache/qemu-src/dl"
}
[ -x "$iotests/check" ] || fetch_source

# QEMU_PROG: Debian's qemu-system-x86_64 with tcg instead of qtest.
qemu_wrapper=$results/qemu-system-tcg
mkdir -p "$results"
cat > "$qemu_wrapper" <<'EOF'
#!/usr/bin/env bash
args=()
for a in "$@"; do
    if [ "${prev:-}" = "-accel" ] && [ "$a" = "qtest" ]; then a=tcg; fi
    args+=("$a"); prev=$a
done
exec /usr/bin/qemu-system-x86_64 "${args[@]}"
EOF
chmod +x "$qemu_wrapper"

# The NBD-relevant tests, each with the protocol it runs with: nbd for
# those whose protocols include nbd (or "generic", or that name none), file
# for the file-only tests that start qemu-nbd themselves.
candidates() {
    local f
    cd "$iotests" || return
    for f in [0-9][0-9][0-9] tests/*; do
        [ -f "$f" ] || continue
        if grep -qE '^_supported_proto.*\b(nbd|generic)\b' "$f" &&
           ! grep -qE '^_unsupported_proto.*\bnbd\b' "$f"; then
            echo "${f#tests/} nbd"
        elif grep -qE "supported_protocols=\[[^]]*'nbd'" "$f"; then
            echo "${f#tests/} nbd"
        elif grep -qE 'QEMU_NBD|qemu_nbd' "$f"; then
            if grep -qE '^_supported_proto|supported_protocols=' "$f"; then
                echo "${f#tests/} file"
            else
                echo "${f#tests/} nbd"
            fi
        fi
    done
}

declare -A proto
while read -r t p; do proto[$t]=$p; done < <(candidates)
if [ $# -gt 0 ]; then
    tests=("$@")
else
    mapfile -t tests < <(printf '%s\n' "${!proto[@]}" | sort)
fi

# run_one SERVER FORMAT TEST: prints pass, fail, skip or timeout.
run_one() {
    local server=$1 fmt=$2 test=$3 prog scratch pid t=0 status log
    local p=${proto[$test]:-nbd}
    case $server in
    qemu-nbd) prog=/usr/bin/qemu-nbd ;;
    snapnbd) prog=$snapnbd ;;
    esac
    scratch=$(mktemp -d /tmp/iot.XXXXXX)
    log=$results/$server.$fmt.$test.log
    (cd "$iotests" &&
     exec env QEMU_PROG="$qemu_wrapper" QEMU_NBD_PROG="$prog" \
         QEMU_IMG_PROG=/usr/bin/qemu-img QEMU_IO_PROG=/usr/bin/qemu-io \
         QSD_PROG=/usr/bin/qemu-storage-daemon \
         TEST_DIR="$scratch/t" SOCK_DIR="$scratch/s" \
         setsid ./check -tap -"$p" -"$fmt" "$test") > "$log" 2>&1 &
    pid=$!
    while kill -0 $pid 2>/dev/null; do
        if [ $t -ge $((limit * 10)) ]; then
            kill -KILL -- -$pid 2>/dev/null
            status=timeout
            break
        fi
        sleep 0.1
        t=$((t + 1))
    done
    wait $pid 2>/dev/null
    # servers that daemonized out of the test's process group
    for p in $(pgrep -f "$scratch"); do kill -KILL "$p" 2>/dev/null; done
    cp "$scratch/t/$test.out.bad" "$results/$server.$fmt.$test.out.bad" \
        2>/dev/null
    rm -rf "$scratch"
    if [ -z "${status:-}" ]; then
        if grep -q "^ok $fmt $test # SKIP" "$log"; then status=skip
        elif grep -q "^ok $fmt $test" "$log"; then status=pass
        else status=fail
        fi
    fi
    echo $status
}

declare -A result
for server in $servers; do
    for fmt in $formats; do
        for test in "${tests[@]}"; do
            r=$(run_one "$server" "$fmt" "$test")
            result[$server,$fmt,$test]=$r
            echo "$fmt $test $r" >> "$results/$server.results.new"
            echo "iotests: $server -${proto[$test]:-nbd} -$fmt $test: $r" >&2
        done
    done
    # keep the earlier results of tests not rerun this time
    if [ -f "$results/$server.results" ]; then
        awk 'NR==FNR { seen[$1" "$2]=1; next } !seen[$1" "$2]' \
            "$results/$server.results.new" "$results/$server.results" \
            >> "$results/$server.results.new"
    fi
    mv "$results/$server.results.new" "$results/$server.results"
done

# The table, from the stored results of both servers.
lookup() { awk -v f="$2" -v t="$3" '$1==f && $2==t { print $3 }' \
               "$results/$1.results" 2>/dev/null; }
regressions=0 both=0 qn=0 sn=0
printf '%-10s %-24s %-8s %-8s\n' config test qemu-nbd snapnbd
for fmt in $formats; do
    for test in "${tests[@]}"; do
        q=$(lookup qemu-nbd "$fmt" "$test"); s=$(lookup snapnbd "$fmt" "$test")
        [ "${q:-skip}" = skip ] && [ "${s:-skip}" = skip ] && continue
        note=
        [ "$q" = pass ] && qn=$((qn + 1))
        [ "$s" = pass ] && sn=$((sn + 1))
        if [ "$q" = pass ] && [ "$s" != pass ]; then
            note="  <-- regression"; regressions=$((regressions + 1))
        fi
        printf '%-10s %-24s %-8s %-8s%s\n' "${proto[$test]:-nbd}-$fmt" "$test" \
            "${q:--}" "${s:--}" "$note"
    done
done
echo "qemu-nbd passes $qn, snapnbd passes $sn; $regressions pass with qemu-nbd and not with snapnbd"
[ $regressions -eq 0 ]
