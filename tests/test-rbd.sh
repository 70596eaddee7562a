#!/usr/bin/env bash
# The rbd driver against a real one-node Ceph cluster (tests/ceph-cluster.sh):
#  - data written through snapnbd over NBD (file name syntax
#    rbd:pool/image:conf=PATH) reads back identically with "rbd export" and
#    with qemu-img (QEMU's rbd driver), and the reverse: an image "rbd
#    import" and qemu-io wrote is served identically by snapnbd (option
#    syntax driver=rbd,pool=,image=,conf=);
#  - nbdinfo --map shows the image's holes, as qemu-nbd's does;
#  - a snapshot @s1 exported read-only keeps the old data while the head
#    is written through another export; a snapshot is refused writable;
#  - write zeroes (thick and unmapping) read back as zeroes;
#  - a writable node that wrote holds RBD's exclusive lock, a read-only
#    node neither locks nor watches the image, yet its block status and
#    reads follow another client's writes;
#  - cephx: another user's key as a secret object (key-secret) or in the
#    file name (:id=USER:key=KEY); a wrong key is refused;
#  - blockdev-create driver=rbd makes an image of the size and object size
#    asked for, in a namespace.
# The same reads through qemu-nbd (where QEMU has the rbd driver) give the
# same bytes.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/ceph-cluster.sh"
source "$srcdir/qmp-functions.sh"
requires qemu-io qemu-img nbdinfo
requires_rbd
start_ceph
conf=$CEPH_CONF

# Extents with adjacent ones of one type merged: servers may split them
# differently.
merged_map() {
    nbdinfo --map "$1" | awk '
        { if (n && $3 == type && start + len == $1) { len += $2; next }
          if (n) print start, len, type; start = $1; len = $2; type = $3; n = 1 }
        END { if (n) print start, len, type }'
}

# The type (0 data, 3 hole) of the extent holding byte OFFSET.
type_at() {
    nbdinfo --map "$1" | awk -v o="$2" '$1 <= o && o < $1 + $2 { print $3 }'
}

# 64 KiB objects, so that holes show at that granularity.
rbd create --size 16M --object-size 64K rbd/a || fail "rbd create"
truncate -s 16M "$tmp/ref.raw"
writes=(-c 'write -P 0x5a 0 64k' -c 'write -P 0x33 3M 1000'
        -c 'write -P 0x77 8M 256k' -c 'write -P 0x11 15M 1M'
        -c 'write -P 0x44 12M 64k' -c 'write -z 12M 4k')
qemu-io -f raw "${writes[@]}" "$tmp/ref.raw" >/dev/null

# 1. snapnbd writes; rbd export and qemu-img read.
start_server "$tmp/s1" "$tmp/p1" -t -f raw "rbd:rbd/a:conf=$conf"
u=$(uri "$tmp/s1")
[ "$(nbdinfo --size "$u")" = 16777216 ] || fail "size: $(nbdinfo --size "$u")"
qemu-io -f raw "${writes[@]}" "$u" >"$tmp/out" 2>&1 || fail "qemu-io: $(cat "$tmp/out")"
qemu-img compare -q -f raw -F raw "$u" "$tmp/ref.raw" ||
    fail "snapnbd reads back other bytes than it wrote"
rbd export rbd/a "$tmp/export.raw" >/dev/null 2>&1 || fail "rbd export"
cmp "$tmp/export.raw" "$tmp/ref.raw" || fail "rbd export differs from what snapnbd wrote"
if qemu_has_rbd; then
    qemu-img compare -q -f raw -F raw "rbd:rbd/a:conf=$conf" "$tmp/ref.raw" ||
        fail "QEMU's rbd driver reads other bytes than snapnbd wrote"
fi
# A writable node that wrote holds RBD's exclusive lock (librbd's).
rbd lock ls rbd/a | grep -q "1 exclusive lock" || fail "no exclusive lock: $(rbd lock ls rbd/a)"

# 2. Holes: data objects are data (0), the rest holes reading as zeroes (3).
merged_map "$u" >"$tmp/map"
cat >"$tmp/map.expected" <<EOF
0 65536 0
65536 3080192 3
3145728 65536 0
3211264 5177344 3
8388608 262144 0
8650752 3932160 3
12582912 65536 0
12648448 3080192 3
15728640 1048576 0
EOF
diff -u "$tmp/map.expected" "$tmp/map" || fail "nbdinfo --map: unexpected holes"
if qemu_has_rbd; then
    qemu-nbd -t -r -f raw -k "$tmp/q1" --pid-file="$tmp/qp1" "rbd:rbd/a:conf=$conf" &
    cleanup_fn "_stop_server '$tmp/qp1'"
    for i in $(seq 100); do [ -S "$tmp/q1" ] && break; sleep 0.1; done
    merged_map "$(uri "$tmp/q1")" >"$tmp/qmap"
    diff -u "$tmp/qmap" "$tmp/map" || fail "the map differs from qemu-nbd's"
    qemu-img compare -q -f raw -F raw "$(uri "$tmp/q1")" "$u" ||
        fail "qemu-nbd serves other bytes than snapnbd"
    _stop_server "$tmp/qp1"
fi

# 3. Write zeroes, thick and unmapping.
qemu-io -f raw -c 'write -z 8M 64k' -c 'write -z -u 15M 64k' "$u" >/dev/null ||
    fail "write zeroes"
qemu-io -f raw -c 'write -z 8M 64k' -c 'write -z 15M 64k' "$tmp/ref.raw" >/dev/null
qemu-img compare -q -f raw -F raw "$u" "$tmp/ref.raw" || fail "write zeroes read back wrong"

# 4. A snapshot keeps its data while the head is written.
rbd snap create rbd/a@s1 >/dev/null 2>&1 || fail "rbd snap create"
cp "$tmp/ref.raw" "$tmp/ref-s1.raw"
"$SNAPNBD" -f raw -k "$tmp/s2" "rbd:rbd/a@s1:conf=$conf" 2>"$tmp/err" &&
    fail "a snapshot was opened writable"
grep -q "rbd snapshots are read-only" "$tmp/err" || fail "writable snapshot: $(cat "$tmp/err")"
start_server "$tmp/s2" "$tmp/p2" -t -r -f raw "rbd:rbd/a@s1:conf=$conf"
s1=$(uri "$tmp/s2")
nbdinfo "$s1" | grep -q "is_read_only: true" || fail "the snapshot export is writable"
qemu-io -f raw -c 'write -P 0xee 0 1M' -c 'write -P 0xdd 10M 100k' "$u" >/dev/null ||
    fail "head writes"
qemu-io -f raw -c 'write -P 0xee 0 1M' -c 'write -P 0xdd 10M 100k' "$tmp/ref.raw" >/dev/null
qemu-img compare -q -f raw -F raw "$s1" "$tmp/ref-s1.raw" ||
    fail "the snapshot export changed with the head"
qemu-img compare -q -f raw -F raw "$u" "$tmp/ref.raw" || fail "the head lost writes"
if qemu_has_rbd; then
    qemu-img compare -q -f raw -F raw "rbd:rbd/a@s1:conf=$conf" "$s1" ||
        fail "QEMU reads the snapshot differently"
fi
_stop_server "$tmp/p2"
_stop_server "$tmp/p1"

# 5. The reverse: rbd import and qemu-io write, snapnbd (option syntax) reads.
head -c 6M /dev/urandom >"$tmp/b.raw"
truncate -s 12M "$tmp/b.raw"
rbd import --object-size 1M "$tmp/b.raw" rbd/b >/dev/null 2>&1 || fail "rbd import"
if qemu_has_rbd; then
    qemu-io -f raw -c 'write -P 0x21 7M 300k' "rbd:rbd/b:conf=$conf" >/dev/null ||
        fail "qemu-io through QEMU's rbd driver"
    qemu-io -f raw -c 'write -P 0x21 7M 300k' "$tmp/b.raw" >/dev/null
fi
start_server "$tmp/s3" "$tmp/p3" -t -r --image-opts \
    "driver=raw,file.driver=rbd,file.pool=rbd,file.image=b,file.conf=$conf"
qemu-img compare -q -f raw -F raw "$(uri "$tmp/s3")" "$tmp/b.raw" ||
    fail "snapnbd serves other bytes than rbd import/qemu-io wrote"
nbdinfo --map "$(uri "$tmp/s3")" | grep -q "hole,zero" ||
    fail "no hole in an imported sparse image"
# A read-only node opens the image read-only: no lock, no watch.
[ -z "$(rbd lock ls rbd/b)" ] || fail "a read-only node locked: $(rbd lock ls rbd/b)"
rbd status rbd/b | grep -q "Watchers: none" || fail "a read-only node watches: $(rbd status rbd/b)"
# Its block status follows another client's writes (the object map is
# read from the cluster, not cached).
if qemu_has_rbd; then
    [ "$(type_at "$(uri "$tmp/s3")" 10485760)" = 3 ] ||
        fail "10M is not a hole yet: $(nbdinfo --map "$(uri "$tmp/s3")")"
    qemu-io -f raw -c 'write -P 0x31 10M 4k' "rbd:rbd/b:conf=$conf" >/dev/null ||
        fail "qemu-io through QEMU's rbd driver"
    qemu-io -f raw -c 'write -P 0x31 10M 4k' "$tmp/b.raw" >/dev/null
    [ "$(type_at "$(uri "$tmp/s3")" 10485760)" = 0 ] ||
        fail "a read-only export misses another writer's data: $(nbdinfo --map "$(uri "$tmp/s3")")"
    qemu-io -r -f raw -c 'read -P 0x31 10M 4k' "$(uri "$tmp/s3")" | grep -q "verification failed" &&
        fail "a read-only export reads stale data"
fi
_stop_server "$tmp/p3"

# 5b. cephx: another user's key through a secret object (key-secret) and
# in the file name (:id=USER:key=BASE64); a wrong key is refused.
ceph auth get-or-create client.t1 mon 'profile rbd' osd 'profile rbd pool=rbd' \
    >/dev/null 2>&1 || fail "ceph auth get-or-create"
key=$(ceph auth get-key client.t1 2>/dev/null) || fail "ceph auth get-key"
start_server "$tmp/s4" "$tmp/p4" -t -r --object "secret,id=k0,data=$key" \
    --image-opts "driver=raw,file.driver=rbd,file.pool=rbd,file.image=b,file.conf=$conf,file.user=t1,file.key-secret=k0"
qemu-img compare -q -f raw -F raw "$(uri "$tmp/s4")" "$tmp/b.raw" ||
    fail "key-secret: other bytes"
_stop_server "$tmp/p4"
start_server "$tmp/s4" "$tmp/p4" -t -r -f raw "rbd:rbd/b:conf=$conf:id=t1:key=$key"
qemu-img compare -q -f raw -F raw "$(uri "$tmp/s4")" "$tmp/b.raw" ||
    fail ":id=:key=: other bytes"
_stop_server "$tmp/p4"
other=$(ceph-authtool --gen-print-key)
timeout 60 "$SNAPNBD" -r -k "$tmp/s5" --object "secret,id=k0,data=$other" \
    --image-opts "driver=raw,file.driver=rbd,file.pool=rbd,file.image=b,file.conf=$conf,file.user=t1,file.key-secret=k0" \
    2>"$tmp/err" && fail "a wrong cephx key connected"
grep -q "error connecting" "$tmp/err" || fail "wrong key: $(cat "$tmp/err")"

# 6. blockdev-create driver=rbd (64 KiB objects, in a namespace).
rbd namespace create rbd/ns1 || fail "rbd namespace create"
start_qmp "$tmp/qmp" "$tmp/pq"
qmp "$tmp/qmp" '{"execute":"blockdev-create","arguments":{"job-id":"c1","options":{"driver":"rbd","size":33554432,"cluster-size":65536,"location":{"pool":"rbd","namespace":"ns1","image":"c","conf":"'"$conf"'"}}}}' >"$tmp/out"
grep -q '"return"' "$tmp/out" || fail "blockdev-create: $(cat "$tmp/out")"
for _ in $(seq 100); do
    qmp "$tmp/qmp" '{"execute":"query-jobs"}' >"$tmp/jobs"
    grep -q '"concluded"' "$tmp/jobs" && break
    sleep 0.1
done
grep -q '"error"' "$tmp/jobs" && fail "blockdev-create failed: $(cat "$tmp/jobs")"
rbd info --format json rbd/ns1/c >"$tmp/info" 2>&1 || fail "no image: $(cat "$tmp/info")"
grep -q '"size":33554432' "$tmp/info" && grep -q '"order":16' "$tmp/info" ||
    fail "created image: $(cat "$tmp/info")"
qmp "$tmp/qmp" '{"execute":"blockdev-add","arguments":{"driver":"rbd","node-name":"c","pool":"rbd","namespace":"ns1","image":"c","conf":"'"$conf"'"}}' \
    '{"execute":"query-named-block-nodes"}' >"$tmp/out"
grep -q '"file": "rbd:rbd/ns1/c"' "$tmp/out" || fail "blockdev-add rbd: $(cat "$tmp/out")"
# auth-client-required: the cluster wants cephx, "none" alone is refused.
qmp "$tmp/qmp" '{"execute":"blockdev-add","arguments":{"driver":"rbd","node-name":"c1","pool":"rbd","namespace":"ns1","image":"c","conf":"'"$conf"'","read-only":true,"auth-client-required":["cephx","none"]}}' \
    '{"execute":"blockdev-add","arguments":{"driver":"rbd","node-name":"c2","pool":"rbd","namespace":"ns1","image":"c","conf":"'"$conf"'","read-only":true,"auth-client-required":["none"]}}' >"$tmp/out"
[ "$(sed -n 1p "$tmp/out")" = '{"return": {}}' ] || fail "auth cephx: $(cat "$tmp/out")"
sed -n 2p "$tmp/out" | grep -q "error connecting" || fail "auth none: $(cat "$tmp/out")"
_stop_server "$tmp/pq"
# The namespace in the file name: rbd:pool/namespace/image.
start_server "$tmp/s6" "$tmp/p6" -t -f raw "rbd:rbd/ns1/c:conf=$conf"
qemu-io -f raw -c 'write -P 0x66 1M 64k' "$(uri "$tmp/s6")" >/dev/null || fail "write to rbd/ns1/c"
_stop_server "$tmp/p6"
rbd export rbd/ns1/c "$tmp/c.raw" >/dev/null 2>&1 || fail "rbd export rbd/ns1/c"
qemu-io -f raw -c 'read -P 0x66 1M 64k' -c 'read -P 0 0 1M' "$tmp/c.raw" >"$tmp/out" &&
    ! grep -q "verification failed" "$tmp/out" ||
    fail "rbd export of rbd/ns1/c lacks what snapnbd wrote: $(cat "$tmp/out")"
echo "$0: ok"
