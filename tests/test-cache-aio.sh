#!/usr/bin/env bash
# --cache and --aio modes: every accepted combination serves the same data
# (aligned and unaligned writes land in the file exactly as on a local
# reference copy), --trace reports the aio engine and O_DIRECT use, and invalid
# combinations are refused like qemu-nbd does (aio=native needs
# cache.direct=on; unknown values).
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-io qemu-img

io=(-c 'write -P 0x5a 0 64K' -c 'write -P 0xa5 4097 5000'
    -c 'write -P 0x3c 1M 512' -c 'write -P 0xc3 2045K 3K')
check=(-c 'read -P 0x5a 0 4097' -c 'read -P 0xa5 4097 5000'
       -c 'read -P 0x5a 9097 56439' -c 'read -P 0x3c 1M 512'
       -c 'read -P 0xc3 2045K 3K' -c 'read -P 0 64K 960K')
truncate -s 2M "$tmp/ref.img"
qemu-io -f raw "${io[@]}" "$tmp/ref.img" >/dev/null

# Whether this filesystem takes O_DIRECT at all (tmpfs does not).
direct_ok=yes
dd if=/dev/zero of="$tmp/odirect" bs=4096 count=1 oflag=direct status=none \
    2>/dev/null || direct_ok=no

n=0
run() {
    # run EXPECT-IN-LOG ARGS...: serve a fresh image with ARGS, tracing the open.
    local expect=$1 img log sock
    shift
    n=$((n + 1))
    img=$tmp/disk$n.img sock=$tmp/sock$n log=$tmp/log$n
    truncate -s 2M "$img"
    if [[ " $* " = *" --cache=none "* || " $* " = *" -n "* ||
          " $* " = *" --cache=directsync "* ]] &&
        [ $direct_ok = no ]; then
        # O_DIRECT unsupported: the server must refuse, naming the file.
        if "$SNAPNBD" -f raw -T snapnbd_image_open -T bdrv_notice -k "$sock" "$@" "$img" 2>"$log"; then
            fail "$*: started without O_DIRECT support"
        fi
        grep -qF "$img" "$log" || fail "$*: error does not name the file"
        echo "$0: $*: O_DIRECT unsupported here, refused as expected"
        return
    fi
    start_server "$sock" "$tmp/pid$n" -f raw -T snapnbd_image_open -T bdrv_notice -t "$@" "$img" 2>"$log"
    grep -q "opened .*$expect" "$log" ||
        grep -q 'io_uring is not available' "$log" ||
        fail "$*: --trace does not show '$expect': $(cat "$log")"
    qemu-io -f raw "${io[@]}" "${check[@]}" "$(uri "$sock")" >"$tmp/out" 2>&1 ||
        fail "$*: qemu-io failed: $(cat "$tmp/out")"
    grep -q 'Pattern verification failed\|failed' "$tmp/out" &&
        fail "$*: read back differs: $(cat "$tmp/out")"
    cmp "$tmp/ref.img" "$img" || fail "$*: image differs from the reference"
}

run 'aio=threads, cache.direct=off'
run 'aio=threads, cache.direct=off' --aio=threads
run 'aio=io_uring, cache.direct=off' --aio=io_uring
run 'aio=threads, cache.direct=on' --cache=none
run 'aio=threads, cache.direct=on' -n
run 'aio=io_uring, cache.direct=on' --cache=none --aio=io_uring
run 'aio=io_uring, cache.direct=on' --cache=none --aio=native
run 'cache.direct=on' --cache=directsync --aio=io_uring
run 'cache.direct=off' --cache=writethrough
run 'cache.direct=off' --cache=unsafe --aio=io_uring
run 'cache.direct=off' --cache=writeback --aio=threads

refused() {
    # refused PATTERN ARGS...: the server must exit with an error saying
    # PATTERN instead of listening.
    local pattern=$1 pid i rc
    shift
    truncate -s 1M "$tmp/bad.img"
    rm -f "$tmp/bad.sock"
    "$SNAPNBD" -f raw -k "$tmp/bad.sock" "$@" "$tmp/bad.img" 2>"$tmp/err" &
    pid=$!
    for i in $(seq 50); do
        kill -0 $pid 2>/dev/null || break
        if [ -S "$tmp/bad.sock" ]; then
            kill $pid; wait $pid
            fail "$* was accepted (the server listens)"
        fi
        sleep 0.1
    done
    kill -0 $pid 2>/dev/null && { kill $pid; wait $pid; fail "$*: hangs"; }
    wait $pid && rc=0 || rc=$?
    [ $rc -ne 0 ] || fail "$*: exit status 0"
    grep -Eqi "$pattern" "$tmp/err" || fail "$*: unclear error: $(cat "$tmp/err")"
}
refused 'bogus' --aio=bogus
refused 'bogus' --cache=bogus
# qemu-nbd 7.2: "aio=native was specified, but it requires cache.direct=on,
# which was not specified."
refused 'native.*cache.direct' --aio=native
refused 'native.*cache.direct' --aio=native --cache=writeback
