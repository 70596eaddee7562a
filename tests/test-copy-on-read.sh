#!/usr/bin/env bash
# The copy-on-read filter over a qcow2 chain base <- mid <- top: after a
# read through the filter, what the read found in mid or base is allocated
# in top itself (qemu-img map), with the same bytes (read from top with no
# backing), and the image stays clean; ranges that no layer holds are not
# copied; NBD_CMD_CACHE copies as a read does.  With bottom=mid only what mid holds is copied, not base's data.
# The same runs against qemu-storage-daemon, when installed, show that
# these are QEMU's answers.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img qemu-io nbdsh
requires_libnbd_python

make_chain() {   # DIR: base (0-1M, 5M-5M+64K), mid (2M-3M), top (4M-4M+64K)
    qemu-img create -q -f qcow2 "$1/base.qcow2" 8M
    qemu-io -f qcow2 -c 'write -P 0x11 0 1M' -c 'write -P 0x44 5M 64K' \
        "$1/base.qcow2" >/dev/null
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$1/mid.qcow2"
    qemu-io -f qcow2 -c 'write -P 0x22 2M 1M' "$1/mid.qcow2" >/dev/null
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$1/top.qcow2"
    qemu-io -f qcow2 -c 'write -P 0x33 4M 64K' "$1/top.qcow2" >/dev/null
}

qcow2() {   # NAME DIR [BACKING]
    echo "driver=qcow2,node-name=$1,file.driver=file,file.filename=$2/$1.qcow2${3:+,backing=$3}"
}

# allocated_in_top DIR START LENGTH: is the range data held by top itself?
allocated_in_top() {
    qemu-img map --output=json -f qcow2 "$1/top.qcow2" |
        $PYTHON -c "
import json, sys
start, end = $2, $2 + $3
for e in json.load(sys.stdin):
    if e['start'] < end and start < e['start'] + e['length']:
        if e['depth'] != 0 or not e['data']:
            sys.exit(1)
"
}

# serve DAEMON ARGS...: snapnbd (daemon mode) or qemu-storage-daemon.
serve() {
    local daemon=$1 i
    shift
    if [ $daemon = snapnbd ]; then
        start_daemon "$@"
        return
    fi
    rm -f "$nbdsock" "$tmp/qsd.pid"
    qemu-storage-daemon --pidfile "$tmp/qsd.pid" "$@" &
    cleanup_fn "_stop_server '$tmp/qsd.pid'"
    for i in $(seq 100); do
        [ -S "$nbdsock" ] && [ -s "$tmp/qsd.pid" ] && return 0
        sleep 0.05
    done
    fail "qemu-storage-daemon did not start: $*"
}

stop() {
    if [ $1 = snapnbd ]; then
        _stop_server "$tmp/daemon.pid"
    else
        _stop_server "$tmp/qsd.pid"
    fi
}

daemons=snapnbd
command -v qemu-storage-daemon >/dev/null && daemons+=" qsd"
for daemon in $daemons; do
for mode in all bottom; do
    d=$tmp/$daemon-$mode
    mkdir "$d"
    make_chain "$d"
    qemu-img convert -O raw "$d/top.qcow2" "$d/before.raw"
    bottom=
    [ $mode = bottom ] && bottom=",bottom=mid"
    serve $daemon \
        --blockdev "$(qcow2 base "$d")" \
        --blockdev "$(qcow2 mid "$d" base)" \
        --blockdev "$(qcow2 top "$d" mid)" \
        --blockdev "driver=copy-on-read,node-name=cor,file=top$bottom" \
        --nbd-server "addr.type=unix,addr.path=$nbdsock" \
        --export type=nbd,id=e0,node-name=cor,name=cor
    nbdsh -u "nbd+unix:///cor?socket=$nbdsock" -c '
assert h.pread(1 << 20, 0) == b"\x11" * (1 << 20)
assert h.pread(3 << 20, 1 << 20)[1 << 20:2 << 20] == b"\x22" * (1 << 20)
assert h.pread(65536, 4 << 20) == b"\x33" * 65536
assert h.pread(65536, 6 << 20) == bytes(65536)
h.cache(65536, 5 << 20)    # NBD_CMD_CACHE copies too
' || fail "$daemon $mode: reads through the filter"
    stop $daemon
    qemu-img check -q "$d/top.qcow2" || fail "$daemon $mode: top.qcow2 is not clean"
    qemu-img compare -q -f qcow2 -F raw "$d/top.qcow2" "$d/before.raw" ||
        fail "$daemon $mode: the data changed"
    top_alone="json:{\"driver\":\"qcow2\",\"backing\":null,\"file\":{\"driver\":\"file\",\"filename\":\"$d/top.qcow2\"}}"
    allocated_in_top "$d" $((2 << 20)) $((1 << 20)) ||
        fail "$daemon $mode: mid's data was not copied into top"
    qemu-io -c 'read -P 0x22 2M 1M' "$top_alone" | grep -q 'read 1048576' ||
        fail "$daemon $mode: top alone does not hold mid's data"
    if [ $mode = all ]; then
        allocated_in_top "$d" 0 $((1 << 20)) ||
            fail "$daemon: base's data was not copied into top"
        qemu-io -c 'read -P 0x11 0 1M' "$top_alone" |
            grep -q 'read 1048576' || fail "$daemon: top alone does not hold base's data"
        allocated_in_top "$d" $((5 << 20)) 65536 ||
            fail "$daemon: NBD_CMD_CACHE copied nothing into top"
    else
        allocated_in_top "$d" 0 $((1 << 20)) &&
            fail "$daemon bottom=mid: base's data was copied into top"
    fi
    allocated_in_top "$d" $((6 << 20)) 65536 &&
        fail "$daemon $mode: a range no layer holds was copied"
done
done

# Only nodes of the chain may be the bottom.
d=$tmp/bad
mkdir "$d"
make_chain "$d"
start_daemon --blockdev "$(qcow2 base "$d")"
jobs_py "
q = QMP(sys.argv[1])
_, desc = q.error('blockdev-add', {'driver': 'copy-on-read', 'node-name': 'c',
                                   'file': 'base', 'bottom': 'nope'})
assert desc == \"Bottom node 'nope' not found\", desc
q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'other',
      'file': {'driver': 'file', 'filename': '$d/mid.qcow2'},
      'backing': None})
_, desc = q.error('blockdev-add', {'driver': 'copy-on-read', 'node-name': 'c',
                                   'file': 'base', 'bottom': 'other'})
assert 'is not a member of the backing chain' in desc, desc
" "$qmp" || fail "bottom checks"
exit 0
