#!/usr/bin/env bash
# LUKS images (driver=luks, key-secret=ID with --object secret) and
# LUKS-encrypted qcow2 (encrypt.format=luks, encrypt.key-secret=ID), with
# qemu-img as the peer both ways:
#  - an image qemu-img created and qemu-io wrote is read and written by
#    snapnbd (through NBD), and qemu-io reads snapnbd's writes back;
#  - images snapnbd creates (QMP blockdev-create, driver luks, and qcow2
#    with encrypt.format=luks) and writes are opened, checked and read by
#    qemu-img/qemu-io;
#  - a qcow2 image qemu-img created with encrypt.format=luks and qemu-io
#    wrote is read and written by snapnbd; qemu-io reads snapnbd's writes
#    and qemu-img check finds the image sound;
#  - a wrong password or a missing key-secret is refused with QEMU's words.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"
requires qemu-img qemu-io nbdinfo

sec="--object secret,id=s0,data=pass-w0rd"
luks() { echo "driver=luks,key-secret=s0,file.filename=$1"; }

img=$tmp/q.luks
qemu_img_create -q -f luks $sec -o key-secret=s0,iter-time=10 "$img" 8M
qemu-io $sec --image-opts -c 'write -P 0x5a 0 64k' -c 'write -P 0x33 3M 4k' \
    "$(luks "$img")" >/dev/null || fail "qemu-io could not write its own image"

start_server "$tmp/s1" "$tmp/p1" $sec -t --image-opts "$(luks "$img")"
u=$(uri "$tmp/s1")
nbdinfo --size "$u" | grep -qx 8388608 || fail "size: $(nbdinfo --size "$u")"
qemu-io -f raw -c 'read -P 0x5a 0 64k' -c 'read -P 0x33 3M 4k' \
    -c 'write -P 0x77 5M 1000' -c 'write -P 0x11 100 10' "$u" >"$tmp/out" 2>&1 ||
    fail "qemu-io over NBD: $(cat "$tmp/out")"
grep -q "verification failed" "$tmp/out" && fail "snapnbd reads differ: $(cat "$tmp/out")"
_stop_server "$tmp/p1"
qemu-io $sec --image-opts -c 'read -P 0x77 5M 1000' -c 'read -P 0x11 100 10' \
    -c 'read -P 0x5a 110 65426' -c 'read -P 0x33 3M 4k' "$(luks "$img")" >"$tmp/out" 2>&1 ||
    fail "qemu-io after snapnbd: $(cat "$tmp/out")"
grep -q "verification failed" "$tmp/out" && fail "qemu reads snapnbd's writes differently: $(cat "$tmp/out")"

# Refusals.
"$SNAPNBD" --object secret,id=s0,data=wrong -k "$tmp/s2" --image-opts "$(luks "$img")" \
    2>"$tmp/err" && fail "a wrong password opened the image"
grep -q "Invalid password, cannot unlock any keyslot" "$tmp/err" || fail "wrong password: $(cat "$tmp/err")"
"$SNAPNBD" -k "$tmp/s2" --image-opts "driver=luks,file.filename=$img" \
    2>"$tmp/err" && fail "no key-secret opened the image"
grep -q "Parameter 'key-secret' is required" "$tmp/err" || fail "no key-secret: $(cat "$tmp/err")"

# snapnbd creates, qemu reads.
new=$tmp/new.luks
start_qmp "$tmp/qmp" "$tmp/p3" $sec
Q() { qmp "$tmp/qmp" "$@" >"$tmp/out" || fail "qmp failed: $*"; grep -q '"error"' "$tmp/out" && fail "$*: $(cat "$tmp/out")"; }
create() { # create JOB OPTIONS
    Q '{"execute":"blockdev-create","arguments":{"job-id":"'"$1"'","options":'"$2"'}}'
    for _ in $(seq 200); do
        qmp "$tmp/qmp" '{"execute":"query-jobs"}' >"$tmp/jobs"
        grep -q '"concluded"' "$tmp/jobs" && break
        sleep 0.1
    done
    grep -q '"error"' "$tmp/jobs" && fail "$1: $(cat "$tmp/jobs")"
    Q '{"execute":"job-dismiss","arguments":{"id":"'"$1"'"}}'
}
create c1 '{"driver":"file","filename":"'"$new"'","size":0}'
Q '{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"f0","filename":"'"$new"'"}}'
create c2 '{"driver":"luks","file":"f0","size":4194304,"key-secret":"s0","iter-time":10}'
Q '{"execute":"blockdev-add","arguments":{"driver":"luks","node-name":"l0","file":"f0","key-secret":"s0"}}'
Q '{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix","data":{"path":"'"$tmp/s3"'"}}}}'
Q '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e0","node-name":"l0","writable":true}}'
qemu-io -f raw -c 'write -P 0x42 1M 64k' -c 'write -P 0x24 4190000 4304' "$(uri "$tmp/s3" l0)" >"$tmp/out" 2>&1 ||
    fail "writing the new image: $(cat "$tmp/out")"
# and an encrypted qcow2
newq=$tmp/new.qcow2
create c3 '{"driver":"file","filename":"'"$newq"'","size":0}'
Q '{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"f1","filename":"'"$newq"'"}}'
create c4 '{"driver":"qcow2","file":"f1","size":8388608,"encrypt":{"format":"luks","key-secret":"s0","iter-time":10}}'
Q '{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"q1","file":"f1","encrypt":{"format":"luks","key-secret":"s0"}}}'
Q '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e1","node-name":"q1","writable":true}}'
qemu-io -f raw -c 'write -P 0x42 1M 64k' -c 'write -P 0x24 8384000 4608' -c 'write -P 0x99 3M 1000' \
    "$(uri "$tmp/s3" q1)" >"$tmp/out" 2>&1 || fail "writing the new qcow2: $(cat "$tmp/out")"
_stop_server "$tmp/p3"
nq="driver=qcow2,file.filename=$newq,encrypt.key-secret=s0"
qemu-img info $sec --image-opts "$nq" >"$tmp/info" 2>&1 || fail "qemu-img info of snapnbd's qcow2: $(cat "$tmp/info")"
grep -q "encrypted: yes" "$tmp/info" || fail "qemu does not see an encrypted qcow2: $(cat "$tmp/info")"
qemu-img check -q $sec --image-opts "$nq" || fail "qemu-img check of snapnbd's encrypted qcow2"
qemu-io $sec --image-opts -c 'read -P 0x42 1M 64k' -c 'read -P 0x24 8384000 4608' -c 'read -P 0x99 3M 1000' \
    -c 'read -P 0 5M 64k' "$nq" >"$tmp/out" 2>&1 || fail "qemu-io on snapnbd's qcow2: $(cat "$tmp/out")"
grep -q "verification failed" "$tmp/out" && fail "qemu reads other data (qcow2): $(cat "$tmp/out")"
qemu-img info $sec --image-opts "$(luks "$new")" >"$tmp/info" 2>&1 ||
    fail "qemu-img info of snapnbd's image: $(cat "$tmp/info")"
grep -q "virtual size: 4 MiB" "$tmp/info" || fail "qemu sees another size: $(cat "$tmp/info")"
qemu-io $sec --image-opts -c 'read -P 0x42 1M 64k' -c 'read -P 0x24 4190000 4304' \
    "$(luks "$new")" >"$tmp/out" 2>&1 || fail "qemu-io on snapnbd's image: $(cat "$tmp/out")"
grep -q "verification failed" "$tmp/out" && fail "qemu reads other data: $(cat "$tmp/out")"
qemu-io --object secret,id=s0,data=nope --image-opts -c 'read 0 512' "$(luks "$new")" \
    >"$tmp/out" 2>&1 && fail "qemu opened snapnbd's image with a wrong password"
# qcow2 with encrypt.format=luks, made by qemu-img.
eq=$tmp/e.qcow2
qemu_img_create -q -f qcow2 $sec -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 \
    "$eq" 8M
qopts="driver=qcow2,file.filename=$eq,encrypt.key-secret=s0"
qemu-io $sec --image-opts -c 'write -P 0x5a 0 64k' -c 'write -P 0x33 3M 4k' "$qopts" >/dev/null ||
    fail "qemu-io could not write its encrypted qcow2"
start_server "$tmp/s4" "$tmp/p4" $sec -t --image-opts "$qopts"
u=$(uri "$tmp/s4")
qemu-io -f raw -c 'read -P 0x5a 0 64k' -c 'read -P 0x33 3M 4k' -c 'read -P 0 5M 64k' \
    -c 'write -P 0x77 2M 1000' -c 'write -P 0x11 100 10' -c 'write -P 0x66 7M 200k' \
    "$u" >"$tmp/out" 2>&1 || fail "qcow2+luks over NBD: $(cat "$tmp/out")"
grep -q "verification failed" "$tmp/out" && fail "qcow2+luks reads differ: $(cat "$tmp/out")"
_stop_server "$tmp/p4"
qemu-io $sec --image-opts -c 'read -P 0x77 2M 1000' -c 'read -P 0x11 100 10' \
    -c 'read -P 0x5a 110 65426' -c 'read -P 0x66 7M 200k' -c 'read -P 0 4M 1M' \
    "$qopts" >"$tmp/out" 2>&1 || fail "qemu-io after snapnbd (qcow2): $(cat "$tmp/out")"
grep -q "verification failed" "$tmp/out" && fail "qemu reads snapnbd's qcow2 writes differently: $(cat "$tmp/out")"
qemu-img check -q $sec --image-opts "$qopts" || fail "qemu-img check of the encrypted qcow2"
"$SNAPNBD" --object secret,id=s0,data=wrong -k "$tmp/s5" --image-opts "$qopts" \
    2>"$tmp/err" && fail "a wrong password opened the encrypted qcow2"
grep -q "Invalid password, cannot unlock any keyslot" "$tmp/err" || fail "qcow2 wrong password: $(cat "$tmp/err")"
exit 0
