# tests/backup-tool-functions.sh - sourced by the tests/test-backup-tool-*.sh
# (the snapnbd-backup client), after functions.sh.
#
#   $backup                  the client (SNAPNBD_BACKUP, or next to $SNAPNBD)
#   $BITMAP_SERVER           the server that exports a qcow2 image's
#                            persistent bitmaps with qemu-nbd's flags
#                            (-r -B NAME -f qcow2 -k SOCK); qemu-nbd by
#                            default, "$SNAPNBD" once it has -B
#   serve SOCK IMG ARGS...   start $BITMAP_SERVER on unix socket SOCK with
#                            IMG and ARGS (e.g. -r -B b0); stop_serving SOCK
#                            stops it (it must die on SIGTERM)
#   field DIR BACKUP KEY     a value from a backup's manifest
#   map_bytes URI CTX FLAG   bytes of the export whose CTX flags have FLAG
#                            set (nbdinfo --map), e.g. dirty bytes
#   one_line_error PATTERN STATUS CMD...  CMD must fail with exit STATUS and
#                            print exactly one line matching PATTERN
#   write_random IMG SEED N  N qemu-io writes of random sizes and offsets
#                            (data, zeroes and discards) to the qcow2 IMG
#   seed                     $SNAPNBD_SEED, or a random one; printed
requires qemu-img qemu-io nbdinfo

backup=${SNAPNBD_BACKUP:-$(dirname "$SNAPNBD")/tools/snapnbd-backup}
[ -x "$backup" ] || fail "snapnbd-backup is not built: $backup"
BITMAP_SERVER=${BITMAP_SERVER:-qemu-nbd}
requires "$BITMAP_SERVER"
seed=${SNAPNBD_SEED:-$(( (RANDOM << 15) | RANDOM ))}
echo "$0: seed $seed (SNAPNBD_SEED=$seed replays it)"

serve() {
    local sock=$1 img=$2 i
    shift 2
    rm -f "$sock" "$sock.pid"
    "$BITMAP_SERVER" -t -f qcow2 -k "$sock" --pid-file="$sock.pid" "$@" \
        "$img" &
    cleanup_fn "_stop_server '$sock.pid'"
    for i in $(seq 100); do
        if [ -S "$sock" ] && [ -s "$sock.pid" ]; then
            return 0
        fi
        kill -0 $! 2>/dev/null || fail "$BITMAP_SERVER exited at start: $*"
        sleep 0.05
    done
    fail "$BITMAP_SERVER did not start: $*"
}

stop_serving() {
    _stop_server "$1.pid"
    rm -f "$1.pid"
}

field() {
    sed -n "s/^$3=//p" "$1/$2.manifest"
}

map_bytes() {
    nbdinfo --map="$2" "$1" | awk -v f="$3" '
        int($3 / f) % 2 == 1 { sum += $2 } END { printf "%d\n", sum }'
}

one_line_error() {
    local pattern=$1 status=$2 st=0
    shift 2
    "$@" >"$tmp/out" 2>"$tmp/err" || st=$?
    [ "$st" -eq "$status" ] ||
        fail "'$*' exited with $st, not $status: $(cat "$tmp/err")"
    [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -Eq -e "$pattern" "$tmp/err" ||
        fail "'$*': expected one line matching '$pattern', got: $(cat "$tmp/err")"
}

write_random() {
    local img=$1 seed=$2 n=$3 size cmds
    size=$(qemu-img info --output=json "$img" |
           sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
    cmds=$($PYTHON - "$seed" "$n" "$size" <<'EOF'
import random, sys
rnd = random.Random(int(sys.argv[1]))
n, size = int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    length = rnd.choice([512, 4096, 65536, 200 * 1024, 1 << 20])
    off = rnd.randrange(0, (size - length) // 512) * 512
    kind = rnd.random()
    if kind < 0.7:
        print(f"-c 'write -P {rnd.randrange(1, 255)} {off} {length}'", end=' ')
    elif kind < 0.85:
        print(f"-c 'write -z {off} {length}'", end=' ')
    else:
        print(f"-c 'discard {off} {length}'", end=' ')
EOF
)
    eval "qemu-io -f qcow2 $cmds '$img'" >/dev/null ||
        fail "qemu-io writes to $img failed"
}
