#!/usr/bin/env bash
# Daemon mode and the control socket's command line.  With
# qemu-storage-daemon's options (--chardev/--monitor, --blockdev as options
# or JSON, --nbd-server, --export) and no image, snapnbd serves what they
# say, also with --fork; quit ends it (status 0, sockets removed).  A bad
# option fails at startup naming the option, with qemu-storage-daemon's
# message for option-syntax values.  With an image and --qmp, the
# command line's export is served and QMP adds another beside it on the
# same socket; nbd-server-start is refused there.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"
requires nbdinfo nbdsh qemu-io

img=$tmp/disk.img
truncate -s 8M "$img"
qemu-io -f raw -c 'write -P 0x44 0 64k' "$img" >/dev/null
qsock=$tmp/qmp
nbd=$tmp/nbd

wait_gone() {
    local i
    for i in $(seq 100); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.05
    done
    fail "$2"
}

# --- qemu-storage-daemon's syntax, forked --------------------------------------
"$SNAPNBD" --fork --pid-file="$tmp/pid" \
    --chardev "socket,id=m0,path=$qsock,server=on,wait=off" \
    --chardev "socket,id=u0,path=$tmp/unused.sock,server=on,wait=off" \
    --monitor chardev=m0 \
    --blockdev "driver=file,node-name=f0,filename=$img" \
    --blockdev '{"driver": "raw", "node-name": "disk", "file": "f0"}' \
    --nbd-server "addr.type=unix,addr.path=$nbd" \
    --export type=nbd,id=e0,node-name=disk,name=d,writable=on ||
    fail "daemon did not start"
cleanup_fn "_stop_server '$tmp/pid'"
pid=$(cat "$tmp/pid")
[ -S "$qsock" ] && [ -S "$nbd" ] || fail "sockets missing after --fork"
# a --chardev is made when given, as QEMU makes it, monitor or not
[ -S "$tmp/unused.sock" ] || fail "the unused --chardev is not bound"
out=$(qmp "$qsock" '{"execute": "query-block-exports"}')
[ "$out" = '{"return": [{"node-name": "disk", "shutting-down": false, "type": "nbd", "id": "e0"}]}' ] ||
    fail "exports: $out"
nbdsh -u "$(uri "$nbd" d)" -c 'assert h.pread(4, 0) == b"\x44" * 4' \
    -c 'h.pwrite(b"\x55" * 512, 1 << 20)' -c 'h.flush()' || fail "nbdsh"
qemu-io -f raw -c 'read -P 0x55 1M 512' "$img" | grep -q 'Pattern verification failed' &&
    fail "the write did not land"
qmp "$qsock" '{"execute": "quit"}' >/dev/null || fail "quit"
wait_gone "$pid" "still running after quit"
[ ! -e "$qsock" ] && [ ! -e "$nbd" ] && [ ! -e "$tmp/unused.sock" ] ||
    fail "sockets left behind"

# --- startup errors ----------------------------------------------------------------
bad() {
    local pattern=$1
    shift
    "$SNAPNBD" "$@" >"$tmp/out" 2>&1 && fail "accepted: $*"
    grep -Eq -- "$pattern" "$tmp/out" || fail "$*: $(cat "$tmp/out")"
    [ ! -e "$qsock" ] || fail "$*: left a socket"
}
bad "--export .*Cannot find device='' nor node-name='nonode'" \
    --qmp="unix:$qsock,server,wait=off" \
    --nbd-server "addr.type=unix,addr.path=$nbd" \
    --export type=nbd,id=e0,node-name=nonode
bad "--blockdev .*Parameter 'file.driver' is missing" \
    --blockdev '{"driver": "raw", "node-name": "x", "file": {}}'
bad "--blockdev .*JSON parse error" --blockdev '{"driver": '
bad "--qmp tcp:.*only unix" --qmp=tcp:localhost:4444,server
bad '--monitor .*chardev "nope" not found' --monitor chardev=nope
bad "expecting one image file name" -k "$nbd"

# --nbd-server and --export in option syntax: values parsed as the schema
# types them (NbdServerOptions, BlockExportOptions), with
# qemu-storage-daemon's messages; where it is installed, the same ones.
qemu-img create -q -f qcow2 "$tmp/q.qcow2" 1M
qemu-img create -q -f qcow2 -o compat=0.10 "$tmp/q2.qcow2" 1M
opt_errors=(
    "--nbd-server addr.type=unix,addr.path=$nbd,max-connections=x|Parameter 'max-connections' expects integer"
    "--nbd-server addr.type=unix,addr.path=$nbd,max-connections=99999999999|Parameter 'max-connections' expects uint32_t"
    "--nbd-server addr.type=unix|Parameter 'addr.path' is missing"
    "--nbd-server addr.type=inet,addr.host=127.0.0.1|Parameter 'addr.port' is missing"
    "--nbd-server addr.type=unix,addr.path=$nbd,addr.tight=maybe|Parameter 'addr.tight' expects 'on' or 'off'"
    "--nbd-server addr.type=unix,addr.path=$nbd,bogus=1|Parameter 'bogus' is unexpected"
    "--export type=nbd,id=e,node-name=f0,writable=maybe|Parameter 'writable' expects 'on' or 'off'"
    "--export type=nbd,id=e,node-name=f0,bogus=1|Parameter 'bogus' is unexpected"
    "--export type=nbd,node-name=f0|Parameter 'id' is missing"
    "--export type=nbd,id=e,node-name=f0,bitmaps.1=b1|Parameter 'bitmaps.0' missing"
    "--export type=nbd,id=e,node-name=f0,bitmaps.0=b1,bitmaps=x|Parameters 'bitmaps.*' used inconsistently"
    "--export type=nbd,id=e,node-name=f0,bitmaps=x,bitmaps.0=b1|Parameters 'bitmaps.*' used inconsistently"
    "--export type=nbd,id=e,node-name=f0,bitmaps.0=b1,bitmaps.a=x|Parameters 'bitmaps.*' used inconsistently"
    "--export type=nbd,id=e,node-name=f0,bitmaps.x=b1|Invalid parameter type for 'bitmaps', expected: array"
    "--export type=nbd,id=e,node-name=f0,bitmaps.0=b1|Bitmap 'b1' is not found"
    "--export type=nbd,id=e,node-name=f0,allocation-depth=y,writethrough=no --export type=nbd,id=e,node-name=f0|Block export id 'e' is already in use"
    # --blockdev: keyval with "driver" implied, typed as BlockdevOptions
    "--blockdev qcow2,node-name=d1,file.driver=file|Parameter 'file.filename' is missing"
    "--blockdev driver=raw,node-name=r1,file=f0,offset=1k|Parameter 'offset' expects integer"
    "--blockdev driver=raw,node-name=r1,file=f0,file.driver=file|Parameters 'file.*' used inconsistently"
    "--blockdev driver=raw,node-name=r1,file=f0,read-only|Expected '=' after parameter 'read-only'"
    "--blockdev driver=null-co,node-name=n1,size=64M|Parameter 'size' expects integer"
    "--blockdev driver=null-co,node-name=n1,latency-ns=-1|latency-ns is invalid"
    "--blockdev driver=raw,node-name=r1,file=f0,offset=16777216|Offset (16777216) cannot be greater than size of the containing file (8388608)"
    "--blockdev driver=raw,node-name=r1,file=f0,offset=4096,size=8388608|The sum of offset (4096) and size (8388608) has to be smaller or equal to the  actual size of the containing file (8388608)"
    "--blockdev driver=raw,node-name=r1,file=f0,size=1000|Specified size is not multiple of 512"
    "--blockdev driver=file,node-name=f1,filename=$img,pr-manager=pm0|No persistent reservation manager with id 'pm0'"
    "--blockdev driver=qcow2,node-name=q1,file.driver=file,file.filename=$img,file.read-only=on|Block node is read-only"
    "--blockdev driver=file,node-name=f1,filename=|The 'file' block driver requires a file name"
    # QEMU's order: the root's node-name given, its file, its node-name,
    # its other children, its backing
    "--blockdev driver=raw,file.driver=file,file.filename=$img,file.node-name=|'node-name' must be specified for the root node"
    "--blockdev driver=qcow2,node-name=1n,file=f0,backing=nope|Invalid node-name: '1n'"
    "--blockdev driver=qcow2,node-name=q1,file=nope,file.x=1|Parameters 'file.*' used inconsistently"
    # a node's discard options before its name; a child's discard is unmap
    "--blockdev driver=null-co,node-name=,discard=ignore,detect-zeroes=unmap|setting detect-zeroes to unmap is not allowed without setting discard operation to unmap"
    "--blockdev driver=raw,node-name=r1,discard=ignore,file.driver=null-co,file.node-name=9c,file.detect-zeroes=unmap|Invalid node-name: '9c'"
    # (qemu-storage-daemon 7.2 aborts after saying it)
    "--blockdev driver=null-co,node-name=n1,size=-1|Parameter 'size' expects a non-negative number below 2^64"
    "--blockdev driver=qcow2,node-name=q1,file.driver=file,file.filename=$tmp/q.qcow2,encrypt.format=aes|No encryption in image header, but options specified format 'aes'"
    "--blockdev driver=qcow2,node-name=q1,file.driver=file,file.filename=$tmp/q.qcow2,backing=nope|Could not open backing file: Cannot find device='nope' nor node-name='nope'"
    "--blockdev driver=raw,node-name=r1,file=f0,help|Help is not available for this option"
    # qcow2's runtime options: QEMU's checks, after the header and before
    # the encryption, type errors in its QDict's order
    "--blockdev driver=qcow2,node-name=q1,file.driver=file,file.filename=$tmp/q.qcow2,cache-size=100,l2-cache-size=50,refcount-cache-size=50|cache-size, l2-cache-size and refcount-cache-size may not be set at the same time"
    "--blockdev driver=qcow2,node-name=q1,file.driver=file,file.filename=$tmp/q.qcow2,cache-size=100,l2-cache-size=200|l2-cache-size may not exceed cache-size"
    "--blockdev driver=qcow2,node-name=q1,file.driver=file,file.filename=$tmp/q.qcow2,cache-size=100,refcount-cache-size=200|refcount-cache-size may not exceed cache-size"
    "--blockdev driver=qcow2,node-name=q1,file.driver=file,file.filename=$tmp/q.qcow2,l2-cache-entry-size=1000|L2 cache entry size must be a power of two between 512 and the cluster size (65536)"
    "--blockdev driver=qcow2,node-name=q1,file.driver=file,file.filename=$tmp/q.qcow2,cache-size=9223372036854775807|Refcount cache size too big"
    "--blockdev driver=qcow2,node-name=q1,file.driver=file,file.filename=$tmp/q.qcow2,cache-clean-interval=-1,lazy-refcounts=on|Cache clean interval too big"
    "--blockdev driver=qcow2,node-name=q1,file.driver=file,file.filename=$tmp/q2.qcow2,lazy-refcounts=on,encrypt.format=luks|Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level"
    "--blockdev driver=qcow2,node-name=q1,file.driver=file,file.filename=$tmp/q.qcow2,refcount-cache-size=-1,encrypt.format=luks|Parameter 'refcount-cache-size' expects a non-negative number below 2^64"
    "--blockdev driver=qcow2,node-name=q1,file.driver=file,file.filename=$tmp/q.qcow2,l2-cache-size=-1,l2-cache-entry-size=-1|Parameter 'l2-cache-entry-size' expects a non-negative number below 2^64"
    # bdrv_open_common's checks before the node's name, in its order
    "--blockdev driver=file,filename=$img,node-name=n1,filename=,node-name=1n|The 'file' block driver requires a file name"
    "--blockdev driver=null-co,node-name=1n,force-share=on|force-share=on can only be used with read-only images"
    "--blockdev driver=null-co,node-name=1n,force-share=on,read-only=on|Invalid node-name: '1n'"
    "--blockdev driver=file,filename=,node-name=n1,discard=ignore,detect-zeroes=unmap|The 'file' block driver requires a file name"
    # a backing opens after its parent's driver: the parent's errors
    # first, the backing's (nested ones too) prefixed
    "--blockdev driver=qcow2,node-name=q1,file.driver=file,file.filename=$tmp/q.qcow2,backing=nope,cache-clean-interval=-1|Cache clean interval too big"
    "--blockdev driver=qcow2,node-name=q1,file.driver=file,file.filename=$tmp/q.qcow2,backing.driver=raw,backing.file=nope|Could not open backing file: Cannot find device='nope' nor node-name='nope'"
    "--blockdev driver=qcow2,node-name=9q,file.driver=file,file.filename=$tmp/q.qcow2,backing.driver=null-co,backing.node-name=9x|Invalid node-name: '9q'"
    "--blockdev driver=qcow2,node-name=q1,file.driver=file,file.filename=$tmp/q.qcow2,backing.driver=null-co,backing.node-name=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa|Could not open backing file: Node name too long"
    # --object: keyval with "qom-type" implied, typed as ObjectOptions
    "--object secret,id=s0|Either 'file' or 'data' must be provided"
    "--object secret,id=s0,data=x,loaded=on|Property 'secret.loaded' is not writable"
    "--object secret,id=s0,data=x,bogus=1|Parameter 'bogus' is unexpected"
    "--object iothread,id=t0,poll-max-ns=-1|poll-max-ns value must be in range [0, 9223372036854775807]"
    "--object iothread,id=t0,thread-pool-min=65|bad thread-pool-min/thread-pool-max values"
    "--object iothread,id=t0,poll-grow=-1,poll-shrink=-1|poll-shrink value must be in range [0, 9223372036854775807]"
    # set in the order QEMU's output visitor fills its QDict: in one
    # bucket, thread-pool-max (put after thread-pool-min) comes first
    "--object iothread,id=t0,thread-pool-min=-1,thread-pool-max=-1|thread-pool-max value must be in range [0, 9223372036854775807]"
    "--object iothread,id=t0,thread-pool-max=-1,thread-pool-min=-1|thread-pool-max value must be in range [0, 9223372036854775807]"
    "--nbd-server addr.type=fd,addr.str=x|Unable to parse FD number x"
    "--nbd-server addr.type=vsock,addr.cid=x,addr.port=1|Failed to parse cid 'x'"
    "--nbd-server addr.type=vsock,addr.cid=2,addr.port=4294967296|Failed to parse port '4294967296'"
    "--object secret,id=s0,data=!!,format=base64|Base64 data contains invalid characters"
    "--object tls-creds-x509,id=t0,endpoint=server|Missing 'dir' property value"
    "--object tls-creds-psk,id=t0,endpoint=server,username=u|username should not be set when endpoint=server"
    "--object tls-creds-psk,id=t0,endpoint=server,dir=|Unable to access credentials /keys.psk: No such file or directory"
    "--object throttle-group,id=g0,x-iops-size=4096|iops size requires an iops value to be set"
    "--object throttle-group,id=g0,x-iops-total=10,x-iops-read=5|bps/iops/max total values and read/write values cannot be used at the same time"
    "--object throttle-group,id=g0,x-bps-total-max=5,x-bps-total=2000000000000000|bps/iops/max values must be within [0, 1000000000000000]"
    # throttle-group: properties set in QEMU's (QDict) order, each checked
    # as its setter does
    "--object throttle-group,id=g0,limits.bps-read-max=-1,x-iops-size=-1|Property values cannot be negative"
    "--object throttle-group,id=g0,limits.iops-size=-1|iops size requires an iops value to be set"
    "--object throttle-group,id=g0,x-bps-read-max-length=4294967296|x-bps-read-max-length value must be in therange [0, 4294967295]"
    "--object throttle-group,id=g0,limits.bps-read-max-length=4294967296|bps-read-max-length value must be in the range [0, 4294967295]"
    "--object throttle-group,id=g0,x-iops-total=5,x-iops-total-max=5,x-iops-total-max-length=0|the burst length cannot be 0"
    "--object authz-list,id=a0,rules.0.policy=allow|Parameter 'rules.0.match' is missing"
    "--object memory-backend-ram|Parameter 'id' is missing"
    "--object id=o0|Parameter 'qom-type' is missing"
    # --chardev: QemuOpts, checked when given as qemu-storage-daemon does
    "--chardev socket,id=c0,bogus=1|Invalid parameter 'bogus'"
    "--chardev socket,path=$tmp/x.sock|chardev: no id specified"
    "--chardev bogus,id=c0|'bogus' is not a valid char driver name"
    "--chardev socket,id=1c|Parameter 'id' expects an identifier"
    "--chardev id=c0|chardev: \"c0\" missing backend"
    "--chardev socket,id=c0,server=maybe|Parameter 'server' expects 'on' or 'off'"
    "--chardev socket,id=c0,nobogus|Invalid parameter 'bogus'"
    "--chardev socket,id=c0,to=x|Parameter 'to' expects a number"
    "--chardev socket,id=c0,bogus=1,help|Invalid parameter 'bogus'"
    "--chardev msmouse,id=c0|'msmouse' is not a valid char driver name"
    # the socket's checks, in QEMU's order
    "--chardev socket,id=c0,path=$tmp/c.sock,host=h|None or one of 'path', 'fd' or 'host' option required."
    "--chardev socket,id=c0,host=localhost|chardev: socket: no port given"
    "--chardev socket,id=c0,path=$tmp/c.sock,delay=on,nodelay=on|'delay' and 'nodelay' are mutually exclusive"
    "--chardev socket,id=c0,path=$tmp/c.sock,server=on,wait=off,tls-creds=t0|No TLS credentials with id 't0'"
    "--object secret,id=t0,data=x --chardev socket,id=c0,path=$tmp/c.sock,server=on,wait=off,tls-creds=t0|Object with id 't0' is not TLS credentials"
    "--chardev socket,id=c0,path=$tmp/c.sock,server=on,wait=off,tls-authz=a0|'tls_authz' option requires 'tls_creds' option"
    "--chardev socket,id=c0,path=$tmp/c.sock,server=on,wait=off,reconnect=1|'reconnect' option is incompatible with socket in server listen mode"
    "--chardev socket,id=c0,path=$tmp/none.sock,wait=off|'wait' option is incompatible with socket in client connect mode"
    "--chardev socket,id=c0,path=$tmp/c.sock,server=off,websocket=on|Websocket client is not implemented"
    "--chardev socket,id=c0,path=$tmp/none.sock|Failed to connect to '$tmp/none.sock': No such file or directory"
    "--chardev socket,id=c0,fd=x|Unable to parse FD number x"
    "--chardev socket,id=c0,fd=99|File descriptor '99' is not a socket"
    "--chardev socket,id=c0,path=$tmp/no/c.sock,server=on,wait=off|Failed to bind socket to $tmp/no/c.sock: No such file or directory"
    "--chardev socket,id=c0,path=$tmp/c.sock,server=on,wait=off --chardev socket,id=c0,path=$tmp/c2.sock,server=on,wait=off|duplicate yank instance"
    "--chardev socket,id=c0,path=$tmp/c.sock,server=on,wait=off --monitor c0 --monitor c0|Device 'c0' is in use"
    # in the order given, as qemu-storage-daemon: only what is made already
    "--export type=nbd,id=e,node-name=n9 --blockdev driver=null-co,node-name=n9|Cannot find device='' nor node-name='n9'"
    "--monitor c0 --chardev socket,id=c0,path=$tmp/c.sock,server=on,wait=off|chardev \"c0\" not found"
    # help: only --object and --chardev have it (below)
    "--monitor nope,help|Help is not available for this option"
    "--nbd-server help|Help is not available for this option"
    "--export help|Help is not available for this option"
    "--blockdev help|Help is not available for this option"
    "--object secret,help,a..b=1|Invalid parameter 'a..b'"
    # --monitor: keyval with "chardev" implied, typed as MonitorOptions
    "--monitor nope,pretty=maybe|Parameter 'pretty' expects 'on' or 'off'"
    "--monitor id=m0|Parameter 'chardev' is missing"
    "--monitor nope,mode=x|Parameter 'mode' does not accept value 'x'"
    "--monitor nope,bogus=1|Parameter 'bogus' is unexpected"
    "--chardev socket,id=c0,path=$tmp/m0.sock,server=on,wait=off --monitor c0,mode=readline|Only QMP is supported"
)
for case in "${opt_errors[@]}"; do
    IFS=' ' read -r -a opts <<<"${case%%|*}"
    # the message, literally (it may hold parentheses and brackets)
    want=$(printf '%s' "${case#*|}" | sed 's/[][\.*^$()+?{}|]/\\&/g')
    [[ "${opts[*]}" = --nbd-server* ]] || opts=(--nbd-server "addr.type=unix,addr.path=$nbd" "${opts[@]}")
    bad ": $want\$" --blockdev "driver=file,node-name=f0,filename=$img" \
        "${opts[@]}"
    if command -v qemu-storage-daemon >/dev/null; then
        timeout 10 qemu-storage-daemon \
            --blockdev "driver=file,node-name=f0,filename=$img" \
            "${opts[@]}" >"$tmp/qsd" 2>&1 && fail "qsd accepted: ${opts[*]}"
        grep -Eq -- ": $want\$" "$tmp/qsd" ||
            fail "qsd says otherwise for ${opts[*]}: $(cat "$tmp/qsd")"
        rm -f "$nbd"
    fi
done

# Help: --object and --chardev print on stdout, in QEMU's layout and with
# its status, what snapnbd has (the types it makes and their properties,
# from its schema; its backends); where qemu-storage-daemon is installed,
# the same bytes for what both have.
help_cases=(
    "0|--object secret,help"
    "0|--object iothread,help"
    "0|--object throttle-group,help"
    "0|--object tls-creds-x509,help"
    "0|--object qom-type=authz-list,?"
    "0|--object tls-creds-psk,help,bogus=1"
    "1|--chardev socket,help"
    "1|--chardev socket,id=c0,path=$tmp/c.sock,help,bogus=1"
)
for case in "${help_cases[@]}"; do
    IFS=' ' read -r -a opts <<<"${case#*|}"
    "$SNAPNBD" "${opts[@]}" >"$tmp/help" 2>"$tmp/err"
    st=$?
    [ "$st" = "${case%%|*}" ] || fail "${opts[*]}: status $st"
    [ -s "$tmp/help" ] && [ ! -s "$tmp/err" ] ||
        fail "${opts[*]}: $(cat "$tmp/err")"
    if command -v qemu-storage-daemon >/dev/null; then
        timeout 10 qemu-storage-daemon "${opts[@]}" >"$tmp/qsd" 2>&1
        [ $? = "$st" ] || fail "qsd's status differs for ${opts[*]}"
        diff "$tmp/help" "$tmp/qsd" || fail "${opts[*]}: not qsd's help"
    fi
done
"$SNAPNBD" --object help >"$tmp/help" || fail "--object help: status $?"
printf '%s\n' "List of user creatable objects:" "  authz-list" \
    "  authz-simple" "  iothread" "  secret" "  throttle-group" \
    "  tls-creds-psk" "  tls-creds-x509" | diff - "$tmp/help" ||
    fail "--object help"
# every type listed is one snapnbd makes: its properties, not the list
for type in $(sed -n 's/^  //p' "$tmp/help"); do
    "$SNAPNBD" --object "$type,help" "$img" >"$tmp/props" ||
        fail "$type,help"
    grep -qx "$type options:" "$tmp/props" || fail "$type: $(cat "$tmp/props")"
done
"$SNAPNBD" --chardev help >"$tmp/help" || fail "--chardev help: status $?"
printf 'Available chardev backend types: \n  socket\n  stdio\n' | diff - "$tmp/help" ||
    fail "--chardev help"

# Lists in option syntax ("bitmaps.N=", as QEMU's keyval): a string or
# an object per element; the export offers exactly those bitmaps.
qemu-img create -q -f qcow2 "$tmp/bm.qcow2" 1M
qemu-img bitmap --add "$tmp/bm.qcow2" b0
qemu-img bitmap --add "$tmp/bm.qcow2" b1
qemu-img bitmap --add "$tmp/bm.qcow2" b2
"$SNAPNBD" --blockdev "driver=file,node-name=f1,filename=$tmp/bm.qcow2" \
    --blockdev driver=qcow2,node-name=d1,file=f1 \
    --nbd-server "addr.type=unix,addr.path=$nbd" \
    --export type=nbd,id=e,node-name=d1,writable=on,bitmaps.0=b2,bitmaps.1.node=d1,bitmaps.1.name=b0 \
    --fork --pid-file="$tmp/pid3" 2>"$tmp/out" || fail "bitmap list: $(cat "$tmp/out")"
nbdinfo --list --json "$(uri "$nbd")" >"$tmp/list" || fail "nbdinfo bitmaps"
grep -q '"qemu:dirty-bitmap:b2"' "$tmp/list" && grep -q '"qemu:dirty-bitmap:b0"' "$tmp/list" ||
    fail "bitmaps.N not offered: $(cat "$tmp/list")"
grep -q '"qemu:dirty-bitmap:b1"' "$tmp/list" && fail "b1 offered, not asked for"
pid=$(cat "$tmp/pid3")
kill "$pid"
wait_gone "$pid" "still running after SIGTERM"
rm -f "$nbd"

# --- objects: made after --fork, in threads that leave SIGTERM to the
# daemon (an iothread's thread is the daemon's, and SIGTERM still ends it
# cleanly: pid file and sockets removed) ----------------------------------------
"$SNAPNBD" --fork --pid-file="$tmp/pid4" --object iothread,id=t0 \
    --chardev "socket,id=m0,path=$qsock,server=on,wait=off" --monitor m0 ||
    fail "daemon with an iothread did not start"
cleanup_fn "_stop_server '$tmp/pid4'"
pid=$(cat "$tmp/pid4")
tid=$(qmp "$qsock" '{"execute": "query-iothreads"}' |
    sed -n 's/.*"thread-id": \([0-9]*\).*/\1/p')
[ -n "$tid" ] && [ -d "/proc/$pid/task/$tid" ] ||
    fail "iothread $tid is not a thread of the daemon $pid"
kill "$pid"
wait_gone "$pid" "still running after SIGTERM"
[ ! -e "$tmp/pid4" ] && [ ! -e "$qsock" ] ||
    fail "SIGTERM did not shut the daemon down cleanly"

# --- an image and --qmp --------------------------------------------------------------
truncate -s 1M "$tmp/extra.img"
start_qmp "$qsock" "$tmp/pid2" -k "$nbd" -f raw -t -x main "$img"
out=$(qmp "$qsock" \
    '{"execute": "blockdev-add", "arguments": {"driver": "raw", "node-name": "extra", "read-only": true, "file": {"driver": "file", "filename": "'"$tmp/extra.img"'"}}}' \
    '{"execute": "nbd-server-start", "arguments": {"addr": {"type": "unix", "data": {"path": "'"$tmp/other"'"}}}}' \
    '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "x0", "node-name": "extra"}}')
grep -Fq '"desc": "NBD server already running"' <<<"$out" ||
    fail "nbd-server-start beside the command line's server: $out"
[ "$(grep -c '^{"return": {}}$' <<<"$out")" = 2 ] || fail "$out"
nbdinfo --list "$(uri "$nbd")" >"$tmp/list" || fail "nbdinfo"
grep -q 'export="main"' "$tmp/list" && grep -q 'export="extra"' "$tmp/list" ||
    fail "exports: $(cat "$tmp/list")"
[ "$(nbdinfo --size "$(uri "$nbd" extra)")" = 1048576 ] || fail "extra size"
pid=$(cat "$tmp/pid2")
qmp "$qsock" '{"execute": "quit"}' >/dev/null || fail "quit"
wait_gone "$pid" "still running after quit"
wait "$pid" || fail "exit status $? after quit"
