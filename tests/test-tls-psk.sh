#!/usr/bin/env bash
# TLS with pre-shared keys (--object tls-creds-psk, DIR/keys.psk in QEMU's
# "username:hexkey" format): libnbd (tls-psk-file=) and QEMU clients with the
# right key are served and their data reads back; a wrong key or an unknown
# user is refused; with --tls-authz only the named PSK user gets in; a
# missing or malformed keys.psk stops the server at startup.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/tls-functions.sh"
requires qemu-io nbdinfo nbdsh

mkdir "$tmp/psk" "$tmp/bob"
tls_psk_file "$tmp/psk/keys.psk" alice
tls_psk_file "$tmp/bob/keys.psk" bob
cat "$tmp/bob/keys.psk" >>"$tmp/psk/keys.psk"  # the server knows both
tls_psk_file "$tmp/wrong.psk" alice            # alice, another key
img=$tmp/disk.img
truncate -s 16M "$img"
sock=$tmp/sock
creds="tls-creds-psk,id=tls0,endpoint=server,dir=$tmp/psk"
start_server "$sock" "$tmp/pid" -f raw -t -e 0 --object "$creds" \
    --tls-creds tls0 "$img"
psk_uri() {  # psk_uri USER FILE
    echo "nbds+unix://$1@/?socket=$sock&tls-psk-file=$2"
}

timeout 10 nbdinfo --is tls "$(psk_uri alice "$tmp/psk/keys.psk")" ||
    fail "alice with her key was refused"
timeout 10 nbdinfo --is tls "$(psk_uri bob "$tmp/psk/keys.psk")" ||
    fail "bob with his key was refused"
timeout 10 nbdinfo "$(psk_uri alice "$tmp/wrong.psk")" >"$tmp/out" 2>&1 &&
    fail "a wrong key was accepted"
echo "carol:$(cut -d: -f2 "$tmp/bob/keys.psk")" >"$tmp/carol.psk"
timeout 10 nbdinfo "$(psk_uri carol "$tmp/carol.psk")" >"$tmp/out" 2>&1 &&
    fail "an unknown user was accepted"

# QEMU writes, libnbd reads back.
timeout 20 qemu-io --object \
    "tls-creds-psk,id=tls0,endpoint=client,dir=$tmp/psk,username=alice" \
    --image-opts "driver=nbd,path=$sock,tls-creds=tls0" \
    -c 'write -P 0x3c 1M 2M' -c 'read -P 0x3c 1M 2M' >"$tmp/out" 2>&1 ||
    fail "qemu-io over PSK failed: $(cat "$tmp/out")"
grep -q 'Pattern verification failed' "$tmp/out" && fail "pattern mismatch"
export URI=$(psk_uri alice "$tmp/psk/keys.psk")
timeout 20 nbdsh -c '
import os
h.set_uri_allow_local_file(True)
h.connect_uri(os.environ["URI"])
assert h.get_tls_negotiated()
assert h.pread(3 << 20, 0) == bytes(1 << 20) + b"\x3c" * (2 << 20)
h.shutdown()
' >"$tmp/out" 2>&1 || fail "nbdsh over PSK failed: $(cat "$tmp/out")"
_stop_server "$tmp/pid"

# --tls-authz with PSK checks the username.
start_server "$sock" "$tmp/pid" -f raw -t -e 0 --object "$creds" \
    --object authz-simple,id=auth0,identity=alice --tls-creds tls0 \
    --tls-authz auth0 "$img"
timeout 10 nbdinfo --is tls "$(psk_uri alice "$tmp/psk/keys.psk")" ||
    fail "authz: alice was refused"
timeout 10 nbdinfo "$(psk_uri bob "$tmp/psk/keys.psk")" >"$tmp/out" 2>&1 &&
    fail "authz: bob was let in"
_stop_server "$tmp/pid"

# Startup errors name the file.
mkdir "$tmp/empty" "$tmp/bad"
startup_error "$tmp/empty/keys.psk" --tls-creds tls0 \
    --object "tls-creds-psk,id=tls0,endpoint=server,dir=$tmp/empty"
printf 'alice:00112233\nbob-without-key\n' >"$tmp/bad/keys.psk"
startup_error "$tmp/bad/keys.psk:2" --tls-creds tls0 \
    --object "tls-creds-psk,id=tls0,endpoint=server,dir=$tmp/bad"
printf 'alice:0g\n' >"$tmp/bad/keys.psk"
startup_error "$tmp/bad/keys.psk:1" --tls-creds tls0 \
    --object "tls-creds-psk,id=tls0,endpoint=server,dir=$tmp/bad"
true
