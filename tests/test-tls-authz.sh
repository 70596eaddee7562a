#!/usr/bin/env bash
# --tls-authz with an authz-simple object: a client whose certificate's
# distinguished name is the identity is served; another client of the same
# CA, a client whose certificate comes from another CA, and a client with
# no certificate are refused, and the server goes on serving.  The identity
# is written as in QEMU (",," for each comma of the DN).  --tls-authz with
# verify-peer=off or naming no authz object stops the server at startup.
# --object also takes JSON (authz-list with glob rules).
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/tls-functions.sh"
requires nbdinfo qemu-img

tls_ca ca
tls_ca otherca
tls_server_dir ca "$tmp/server"
tls_client_dir ca "$tmp/good" client1
tls_client_dir ca "$tmp/intruder" intruder
# Signed by otherca (trusting ca, to accept the server).
tls_client_dir otherca "$tmp/wrongca" client1 ca
mkdir "$tmp/nocert" && cp "$tmp/ca/ca-cert.pem" "$tmp/nocert/"
img=$tmp/disk.img
truncate -s 1M "$img"
sock=$tmp/sock
creds="tls-creds-x509,id=tls0,endpoint=server,dir=$tmp/server"
identity=$(tls_client_dn client1)
start_server "$sock" "$tmp/pid" -f raw -t -e 0 --object "$creds" \
    --object "authz-simple,id=auth0,identity=${identity//,/,,}" \
    --tls-creds tls0 --tls-authz auth0 "$img" 2>"$tmp/log"
uri() {
    echo "nbds+unix:///?socket=$sock&tls-certificates=$tmp/$1"
}

timeout 10 nbdinfo --is tls "$(uri good)" ||
    fail "the authorized client was refused: $(cat "$tmp/log")"
for who in intruder wrongca nocert; do
    timeout 10 nbdinfo "$(uri $who)" >"$tmp/out" 2>&1 &&
        fail "client '$who' was served"
done
grep -q "authz check for '$identity' is denied" "$tmp/log" &&
    fail "the authorized DN was denied"
grep -q "authz check for '.*CN=intruder.*' is denied" "$tmp/log" ||
    fail "no authz denial logged: $(cat "$tmp/log")"
# QEMU's client sees the refusal as an error, not a hang.
timeout 10 qemu-img info --object \
    "tls-creds-x509,id=tls0,endpoint=client,dir=$tmp/intruder" --image-opts \
    "driver=nbd,path=$sock,tls-creds=tls0,tls-hostname=localhost" \
    >"$tmp/out" 2>&1 && fail "qemu-img: the intruder was served"
[ $? -ne 124 ] || fail "qemu-img hung on a refused client"
timeout 10 qemu-img info --object \
    "tls-creds-x509,id=tls0,endpoint=client,dir=$tmp/good" --image-opts \
    "driver=nbd,path=$sock,tls-creds=tls0,tls-hostname=localhost" \
    >"$tmp/out" 2>&1 || fail "qemu-img: refused: $(cat "$tmp/out")"
_stop_server "$tmp/pid"

# Without --tls-authz any certificate of the CA is good, others are not.
start_server "$sock" "$tmp/pid" -f raw -t -e 0 --object "$creds" \
    --tls-creds tls0 "$img" 2>"$tmp/log"
timeout 10 nbdinfo --is tls "$(uri intruder)" ||
    fail "without authz, a client of the CA was refused"
timeout 10 nbdinfo "$(uri wrongca)" >"$tmp/out" 2>&1 &&
    fail "without authz, a client of another CA was served"
_stop_server "$tmp/pid"

# The JSON syntax of --object (as qemu-storage-daemon takes it), made as
# object-add makes it: credentials and an authz-list whose rules allow only
# client1's DN, as a glob.
start_server "$sock" "$tmp/pid" -f raw -t -e 0 \
    --object '{"qom-type": "tls-creds-x509", "id": "tls0", "endpoint": "server", "dir": "'"$tmp/server"'"}' \
    --object '{"qom-type": "authz-list", "id": "auth0", "policy": "deny", "rules": [{"match": "*CN=client1*", "policy": "allow", "format": "glob"}]}' \
    --tls-creds tls0 --tls-authz auth0 "$img" 2>"$tmp/log"
timeout 10 nbdinfo --is tls "$(uri good)" ||
    fail "JSON --object: the authorized client was refused: $(cat "$tmp/log")"
timeout 10 nbdinfo "$(uri intruder)" >"$tmp/out" 2>&1 &&
    fail "JSON --object: the intruder was served"
_stop_server "$tmp/pid"
timeout 10 "$SNAPNBD" -k "$sock" -f raw \
    --object '{"qom-type": "authz-list", "id": "a", "policy": "bogus"}' \
    "$img" 2>"$tmp/err" && fail "JSON --object with a bad policy started"
grep -qF "Parameter 'policy' does not accept value 'bogus'" "$tmp/err" ||
    fail "JSON --object error: $(cat "$tmp/err")"

refused() {
    local pattern=$1
    shift
    timeout 10 "$SNAPNBD" -k "$sock" -f raw "$@" "$img" 2>"$tmp/err" &&
        fail "started: $*"
    grep -Eq -- "$pattern" "$tmp/err" ||
        fail "error does not match '$pattern': $(cat "$tmp/err")"
}
refused "verify-peer=on" --object "$creds,verify-peer=off" \
    --object authz-simple,id=auth0,identity=x --tls-creds tls0 \
    --tls-authz auth0
refused "No authorization object with id 'auth1'" --object "$creds" \
    --object authz-simple,id=auth0,identity=x --tls-creds tls0 \
    --tls-authz auth1
refused "No authorization object with id 'tls0'" --object "$creds" \
    --tls-creds tls0 --tls-authz tls0
true
