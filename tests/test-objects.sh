#!/usr/bin/env bash
# qemu-nbd's options for things snapnbd does not do are refused in one
# line naming them, never ignored: --selinux-label (with the words of a
# qemu-nbd built without SELinux), -c/-d (kernel NBD devices), and every
# --object type `qemu-nbd --object help` lists except those snapnbd makes.
# --object secret is parsed and kept: data= or file=, raw or base64, with
# QEMU's messages for what is wrong.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img nbdinfo

img=$tmp/disk.img sock=$tmp/sock
qemu-img create -q -f raw "$img" 1M

refused() { # refused PATTERN ARGS...: one line matching PATTERN, no socket
    local pattern=$1; shift
    rm -f "$sock"
    timeout 10 "$SNAPNBD" -k "$sock" "$@" </dev/null >"$tmp/out" 2>"$tmp/err" &&
        fail "snapnbd $* started"
    [ "$(wc -l <"$tmp/err")" = 1 ] || fail "snapnbd $*: not one line: $(cat "$tmp/err")"
    grep -Eq -- "$pattern" "$tmp/err" ||
        fail "snapnbd $*: error does not match '$pattern': $(cat "$tmp/err")"
    [ ! -S "$sock" ] || fail "snapnbd $*: left a socket"
}
serves() { # serves ARGS...: starts, serves one client, exits
    local n=$RANDOM
    start_server "$sock.$n" "$tmp/pid.$n" "$@" 2>"$tmp/err"
    nbdinfo --size "$(uri "$sock.$n")" >/dev/null || fail "snapnbd $*: no export"
    _stop_server "$tmp/pid.$n"
}

refused "^snapnbd: SELinux support not enabled in this binary$" \
    --selinux-label system_u:object_r:svirt_image_t:s0 -f raw "$img"

# -c/-d: a device that does not exist gets qemu-nbd's message; an existing
# one is refused as unsupported (only where the nbd module is loaded).
refused "^snapnbd: Failed to open $tmp/nbd0: No such file or directory$" \
    -c "$tmp/nbd0" -f raw "$img"
refused "^snapnbd: Cannot open $tmp/nbd0: No such file or directory$" -d "$tmp/nbd0"
if [ -e /dev/nbd0 ]; then
    refused "-c /dev/nbd0: kernel NBD devices are not supported" -c /dev/nbd0 -f raw "$img"
else
    echo "$0: /dev/nbd0 is absent (no nbd module): its refusal is not checked"
fi

# Secrets.
printf 'c2VjcmV0' >"$tmp/key.b64"
printf 'secret' >"$tmp/key"
serves --object secret,id=s0,data=letmein -f raw "$img"
serves --object "secret,id=s1,file=$tmp/key" --object "secret,id=s2,file=$tmp/key.b64,format=base64" \
    --object secret,id=s3,data=c2VjcmV0,format=base64 -f raw "$img"
refused "Either 'file' or 'data' must be provided" --object secret,id=s0 -f raw "$img"
refused "'file' and 'data' are mutually exclusive" \
    --object "secret,id=s0,data=x,file=$tmp/key" -f raw "$img"
refused "Unable to read $tmp/missing" --object "secret,id=s0,file=$tmp/missing" -f raw "$img"
refused "Parameter 'format' does not accept value 'hex'" \
    --object secret,id=s0,data=x,format=hex -f raw "$img"
refused "'keyid' is not supported \(encrypted secrets\)" \
    --object secret,id=s0,data=x,keyid=s1,iv=AAAA -f raw "$img"
refused "duplicate property 's0'" --object secret,id=s0,data=x \
    --object secret,id=s0,data=y -f raw "$img"
refused "Parameter 'id' is missing" --object secret,data=x -f raw "$img"

# Every type qemu-nbd makes: snapnbd makes it or refuses it by name.
made=" secret iothread throttle-group tls-creds-x509 tls-creds-psk authz-simple authz-list "
types=$(qemu-nbd --object help 2>/dev/null | sed -n 's/^  //p')
[ -n "$types" ] || types="authz-list authz-list-file iothread main-loop
    pr-manager-helper secret_keyring thread-context throttle-group
    tls-cipher-suites tls-creds-anon"
for t in $types; do
    [[ $made = *" $t "* ]] && continue
    refused "type '$t' is not supported" --object "$t,id=o1" -f raw "$img"
done
refused "Parameter 'qom-type' does not accept value 'bogus'" --object bogus,id=o1 -f raw "$img"

# Option syntax is QEMU's keyval typed by the schema, and the message is
# qemu-nbd's word for word (without the option's name, which
# qemu-storage-daemon adds).
for spec in secret,id=s0,data=x,bogus=1 iothread,id=t0,poll-max-ns=-1 \
    secret,id=s0,data=x,loaded=on secret,data=x,id.0=s0 \
    authz-list,id=a0,rules.0.policy=allow tls-creds-x509,id=t0,endpoint=server; do
    refused '' --object "$spec" -f raw "$img"
    if command -v qemu-nbd >/dev/null; then
        timeout 10 qemu-nbd -k "$sock" --object "$spec" -f raw "$img" \
            </dev/null >/dev/null 2>"$tmp/qemu-err" && fail "qemu-nbd --object $spec started"
        [ "$(sed 's/^snapnbd: //' "$tmp/err")" = "$(sed 's/^qemu-nbd: //' "$tmp/qemu-err")" ] ||
            fail "--object $spec: $(cat "$tmp/err") / $(cat "$tmp/qemu-err")"
    fi
done
