#!/usr/bin/env bash
# Command line errors: every qemu-nbd option snapnbd does not implement is
# refused (non-zero status, "not supported") rather than ignored; so are a
# missing or extra file name, a missing file (named in the message),
# writable qcow2 images (given with -f or probed: read-only only for now),
# other formats, bad option values and option conflicts.  Nothing is left
# listening.  -V prints a version.  A qcow2 image with -r is served.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img nbdinfo

img=$tmp/disk.img
truncate -s 1M "$img"
qemu-img create -f qcow2 "$tmp/disk.qcow2" 1M >/dev/null
sock=$tmp/sock

refused() {
    # refused PATTERN ARGS...: snapnbd ARGS must exit non-zero with an
    # error matching PATTERN (extended regexp) and never listen.
    local pattern=$1 pid i rc
    shift
    rm -f "$sock"
    "$SNAPNBD" "$@" </dev/null >"$tmp/out" 2>"$tmp/err" &
    pid=$!
    for i in $(seq 100); do
        kill -0 $pid 2>/dev/null || break
        [ -S "$sock" ] && break
        sleep 0.05
    done
    if kill -0 $pid 2>/dev/null; then
        kill $pid
        wait $pid
        fail "accepted (still running): snapnbd $*"
    fi
    wait $pid && rc=0 || rc=$?
    [ $rc -ne 0 ] || fail "exit status 0: snapnbd $*"
    grep -Eq -- "$pattern" "$tmp/err" ||
        fail "snapnbd $*: error does not match '$pattern': $(cat "$tmp/err")"
    [ ! -S "$sock" ] || fail "snapnbd $*: left a socket behind"
}

# qemu-nbd options that are not implemented.
refused "not supported" -k "$sock" --tls-hostname h "$img"
refused "not supported" -k "$sock" -P 1 "$img"
refused "not supported" -k "$sock" --handshake-limit 5 "$img"
# An unsupported option is refused wherever it stands.
refused "'-P' is not supported" -k "$sock" -f raw -t "$img" -P 1

# -l needs a qcow2 image node, and only knows QEMU's snapshot.* keys;
# --image-opts replaces -f (qemu-nbd's messages).
refused "Failed to load snapshot: Block format 'raw' used by device '' does not support temporarily loading internal snapshots" \
    -k "$sock" -l snap1 "$img"
refused "Failed to load snapshot: Block format 'raw'" -k "$sock" \
    --load-snapshot=snap1 -o 512 "$tmp/disk.qcow2"
refused "Failed in parsing snapshot param .snapshot.id=1,bogus=2.: Invalid parameter 'bogus'" \
    -k "$sock" -l snapshot.id=1,bogus=2 "$tmp/disk.qcow2"
refused "--image-opts and -f are mutually exclusive" -k "$sock" -f raw \
    --image-opts "driver=raw,file.filename=$img"
# -B names a dirty bitmap of the image (qemu-nbd's message).
refused "Bitmap 'bitmap0' is not found" -k "$sock" -B bitmap0 "$img"

# --object makes secrets and the TLS objects (test-objects.sh); --tls-creds and --tls-authz must name
# objects of the right kind (qemu-nbd's messages).
refused "Parameter 'qom-type' does not accept value 'x'" -k "$sock" --object x "$img"
refused "type 'tls-creds-anon' is not supported" -k "$sock" \
    --object tls-creds-anon,id=tls0,endpoint=server "$img"
refused "Parameter 'bogus' is unexpected" -k "$sock" \
    --object authz-simple,id=a0,identity=x,bogus=1 "$img"
refused "'id' is missing" -k "$sock" --object authz-simple,identity=x "$img"
refused "'identity' is missing" -k "$sock" --object authz-simple,id=a0 "$img"
refused "attempt to add duplicate property 'a0' to object \(type 'container'\)" -k "$sock" \
    --object authz-simple,id=a0,identity=x \
    --object authz-simple,id=a0,identity=y "$img"
refused "No TLS credentials with id 'x'" -k "$sock" --tls-creds x "$img"
refused "Not TLS credentials.*'a0'" -k "$sock" \
    --object authz-simple,id=a0,identity=x --tls-creds a0 "$img"
refused "tls-authz is not permitted without --tls-creds" -k "$sock" \
    --object authz-simple,id=a0,identity=x --tls-authz a0 "$img"
refused "Missing 'dir' property value" -k "$sock" \
    --object tls-creds-x509,id=tls0,endpoint=server "$img"
refused "$tmp/nocerts/ca-cert.pem" -k "$sock" \
    --object "tls-creds-x509,id=tls0,endpoint=server,dir=$tmp/nocerts" "$img"
refused "$tmp/nocerts/keys.psk" -k "$sock" \
    --object "tls-creds-psk,id=tls0,endpoint=server,dir=$tmp/nocerts" "$img"

# File names.
refused "file name|FILENAME|filename" -k "$sock" -f raw
refused "file name|FILENAME|filename" -k "$sock" -f raw "$img" "$img"
refused "$tmp/missing.img" -k "$sock" -f raw "$tmp/missing.img"
refused "$tmp/missing.img" -k "$sock" "$tmp/missing.img"
refused "$tmp/missing.img" -k "$sock" --cache=none "$tmp/missing.img"

# Formats.
# An image marked corrupt (incompatible feature bit 1) is served only -r.
cp "$tmp/disk.qcow2" "$tmp/corrupt.qcow2"
printf '\002' | dd of="$tmp/corrupt.qcow2" bs=1 seek=79 conv=notrunc 2>/dev/null
refused "corrupt\.qcow2.*marked corrupt.*read-only" -k "$sock" "$tmp/corrupt.qcow2"
refused "$img.*bad magic" -k "$sock" -r -f qcow2 "$img"
refused "vmdk" -k "$sock" -f vmdk "$img"

# Option values.
refused "bogus" -k "$sock" -f raw --cache=bogus "$img"
refused "bogus" -k "$sock" -f raw --aio=bogus "$img"
refused "bogus" -k "$sock" -f raw --discard=bogus "$img"
refused "bogus" -k "$sock" -f raw --detect-zeroes=bogus "$img"
refused "-1|shared" -k "$sock" -f raw -e -1 "$img"
refused "abc|shared" -k "$sock" -f raw -e abc "$img"
refused "offset|-o" -k "$sock" -f raw -o -512 "$img"
refused "offset|-o" -k "$sock" -f raw -o abc "$img"
refused "2M" -k "$sock" -f raw -o 2M "$img"
refused "[Oo]ffset.*(beyond|greater)" -k "$sock" -f raw -o 2097152 "$img"
refused "[Uu]nknown option|bogus" -k "$sock" --bogus-option "$img"
refused "socket|port|bind" -k "$sock" -p 10809 -f raw "$img"
refused "socket|port|bind" -k "$sock" -b 127.0.0.1 -f raw "$img"

# The qcow2 image was not touched by the refusal.
qemu-img check -q "$tmp/disk.qcow2" || fail "qcow2 image damaged"

# With -r a qcow2 image is served, given with -f or probed (no warning).
for f in "-f qcow2" ""; do
    start_server "$sock" "$tmp/pid${#f}" -r $f "$tmp/disk.qcow2" 2>"$tmp/err"
    size=$(nbdinfo --size "$(uri "$sock")") || fail "-r $f: nbdinfo failed"
    [ "$size" = 1048576 ] || fail "-r $f: size $size"
    _stop_server "$tmp/pid${#f}"
    ! grep -q WARNING "$tmp/err" || fail "-r $f: $(cat "$tmp/err")"
done

# -V / --version: a version, status 0, and no server.
for v in -V --version; do
    out=$(timeout 10 "$SNAPNBD" $v) || fail "$v failed"
    [[ "$out" =~ [0-9]+\.[0-9]+ ]] || fail "$v printed no version: $out"
done
# --help works and mentions the options.
timeout 10 "$SNAPNBD" --help >"$tmp/help" || fail "--help failed"
grep -q -- '--discard' "$tmp/help" || fail "--help lacks --discard"
true
