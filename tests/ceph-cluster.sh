# tests/ceph-cluster.sh - a throw-away one-node Ceph cluster for the rbd
# tests (sourced after functions.sh, or run alone: "ceph-cluster.sh DIR"
# starts one in DIR and prints its ceph.conf; stop it with
# "ceph-cluster.sh --stop DIR").
#
#   ceph_cluster_start DIR   one ceph-mon (--mkfs) and one ceph-osd with
#                            memstore on a free 127.0.0.1 port, every path
#                            in DIR, no systemd, no mgr; pool "rbd" of size
#                            1, initialised.  Sets $CEPH_CONF (and exports
#                            it, so rbd/rados find the cluster).  Skips the
#                            test (exit 77) when the ceph packages are
#                            missing; fails when the cluster does not come up.
#   ceph_cluster_stop DIR    stops the OSD, then the mon, by PID.
#   requires_rbd             skip unless snapnbd was built with the rbd
#                            driver (librbd-dev) and ceph is installed
#   start_ceph               ceph_cluster_start in $tmp/ceph, stopped at
#                            exit; prints how long start-up took
#   qemu_has_rbd             does qemu-img/qemu-nbd have the rbd driver
#                            (qemu-block-extra)?
#
# Start-up waits for "rbd pool init", which returns once the pool's PGs are
# active (ceph -s needs a mgr).  The settings that make it quick and quiet
# are explained next to each.

_ceph_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

_ceph_wait_pidfile() {
    local f=$1 i
    for i in $(seq 100); do
        [ -s "$f" ] && return 0
        sleep 0.1
    done
    return 1
}

ceph_cluster_start() {
    local dir=$1 port fsid c
    for c in ceph-mon ceph-osd ceph-authtool monmaptool ceph rbd; do
        if ! command -v "$c" >/dev/null 2>&1; then
            echo "$0: skipped: '$c' is not installed (apt-get install ceph-mon ceph-osd ceph-common)"
            exit 77
        fi
    done
    mkdir -p "$dir/mon" "$dir/osd" "$dir/run" "$dir/log"
    port=$(_ceph_free_port)
    fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    # Each daemon has its own keyring: a "keyring" line in [global] breaks
    # the OSD's authentication.
    cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$port
ms bind msgr1 = false
public network = 127.0.0.1/32
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
run dir = $dir/run
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
osd pool default size = 1
osd pool default min size = 1
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
# no mgr: without this, health turns MGR_DOWN after 120 s
mon mgr mkfs grace = 86400
# small disks of CI machines
mon data avail warn = 1
mon data avail crit = 0
# the default 1 s makes start-up ~7 s
paxos propose interval = 0.1
osd objectstore = memstore
memstore device bytes = 1073741824
osd data = $dir/osd
[mon]
mon data = $dir/mon/\$id
keyring = $dir/mon.keyring
[osd]
keyring = $dir/osd.keyring
[client]
keyring = $dir/client.admin.keyring
# one per client process, or every client after the first complains
admin socket = $dir/run/\$name.\$pid.asok
EOF
    export CEPH_CONF=$dir/ceph.conf
    {
    ceph-authtool "$dir/mon.keyring" --create-keyring --gen-key -n mon. \
        --cap mon 'allow *' &&
    ceph-authtool "$dir/client.admin.keyring" --create-keyring --gen-key \
        -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
        --cap mds 'allow *' --cap mgr 'allow *' &&
    ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/client.admin.keyring" &&
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" \
        "$dir/monmap" &&
    ceph-mon -c "$CEPH_CONF" --mkfs -i a --monmap "$dir/monmap" \
        --keyring "$dir/mon.keyring"
    } >"$dir/log/setup.log" 2>&1 ||
        fail "ceph-mon --mkfs failed: $(cat "$dir/log/setup.log")"
    ceph-mon -c "$CEPH_CONF" -i a || fail "ceph-mon did not start"
    _ceph_wait_pidfile "$dir/run/mon.a.pid" || fail "ceph-mon wrote no pid file"
    local osd_uuid id
    osd_uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    id=$(timeout 30 ceph osd new "$osd_uuid") || fail "ceph osd new failed"
    ceph-osd -c "$CEPH_CONF" -i "$id" --mkfs --mkkey --no-mon-config --osd-uuid "$osd_uuid" \
        --keyring "$dir/osd.keyring" >"$dir/log/osd-mkfs.log" 2>&1 ||
        fail "ceph-osd --mkfs failed: $(tail -5 "$dir/log/osd-mkfs.log")"
    timeout 30 ceph auth add "osd.$id" osd 'allow *' mon 'allow profile osd' \
        -i "$dir/osd.keyring" >/dev/null 2>&1 || fail "ceph auth add osd failed"
    ceph-osd -c "$CEPH_CONF" -i "$id" 2>>"$dir/log/setup.log" ||
        fail "ceph-osd did not start"
    _ceph_wait_pidfile "$dir/run/osd.$id.pid" || fail "ceph-osd wrote no pid file"
    timeout 60 ceph osd pool create rbd 8 >/dev/null 2>&1 &&
    timeout 60 ceph osd pool set rbd size 1 --yes-i-really-mean-it >/dev/null 2>&1 &&
    timeout 60 rbd pool init rbd || fail "the rbd pool did not become ready"
}

ceph_cluster_stop() {
    local dir=$1 f pid i
    # The OSD first: a mon stopped first leaves the OSD retrying.
    for f in "$dir"/run/osd.*.pid "$dir"/run/mon.*.pid; do
        [ -s "$f" ] || continue
        pid=$(cat "$f")
        kill "$pid" 2>/dev/null || continue
        for i in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || :
    done
    return 0
}

requires_rbd() {
    local out
    out=$("$SNAPNBD" -k "$tmp/rbd-probe.sock" --image-opts \
        driver=raw,file.driver=rbd 2>&1)
    if [[ $out == *"Unknown driver 'rbd'"* ]]; then
        echo "$0: skipped: snapnbd was built without the rbd driver (librbd-dev)"
        exit 77
    fi
}

start_ceph() {
    local t0
    t0=$(date +%s%N)
    cleanup_fn "ceph_cluster_stop '$tmp/ceph'"
    ceph_cluster_start "$tmp/ceph"
    echo "$0: ceph cluster up in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}

qemu_has_rbd() {
    qemu-img --help 2>/dev/null | grep -qw rbd
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    fail() { echo "$0: FAIL: $*" >&2; exit 1; }
    if [ "${1:-}" = --stop ]; then
        ceph_cluster_stop "$2"
    else
        ceph_cluster_start "$1"
        echo "$CEPH_CONF"
    fi
fi
