#!/usr/bin/env bash
# TLS refusals not covered by the other test-tls-*.sh: the server's and the
# client's certificate checks each fail with a specific error, quickly, and
# the server goes on serving good clients afterwards.
#   - the client trusts another CA than the one that signed the server's
#     certificate: libnbd (over TCP: libnbd 1.14 checks the server only
#     there) and QEMU (qemu-img, qemu-io) refuse the server;
#   - the server's certificate has expired: the server refuses to start
#     (qemu-nbd's default sanity check refuses to start with it; snapnbd
#     starts, and if it learns to refuse, that passes too);
#   - the client's certificate has expired: the server refuses the client
#     and logs why.
# Covered elsewhere: a client certificate not in the authz list, another
# CA's client certificate and no client certificate (test-tls-authz.sh,
# test-tls-x509.sh, test-tls-required.sh), a wrong PSK key and an unknown
# PSK user (test-tls-psk.sh), plain clients against a TLS server
# (test-tls-required.sh), qemu-img/qemu-io served and refused
# (test-tls-x509.sh, test-tls-authz.sh).
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/tls-functions.sh"
requires qemu-img qemu-io nbdinfo nbdsh

tls_ca ca
tls_ca otherca
tls_server_dir ca "$tmp/server"
tls_client_dir ca "$tmp/good" client1
# A certificate of ca, but trusting only otherca (what libnbd checks).
tls_client_dir ca "$tmp/wrongtrust" client1 otherca
# All of otherca: QEMU checks its own certificate against the CA it trusts,
# so that the refusal comes from the server's certificate, not its own.
tls_client_dir otherca "$tmp/otherca-client" client1
# Certificates valid in 2020 only.
expire() {  # expire INFO
    sed -i '/^expiration_days/d' "$1"
    printf '%s\n' 'activation_date = "2020-01-01 00:00:00"' \
        'expiration_date = "2020-01-02 00:00:00"' >>"$1"
}
cp -r "$tmp/server" "$tmp/expired-server"
expire "$tmp/expired-server/server.info"
_tls_cert "$tmp/ca" "$tmp/expired-server/server-key.pem" \
    "$tmp/expired-server/server.info" "$tmp/expired-server/server-cert.pem"
cp -r "$tmp/good" "$tmp/expired-client"
expire "$tmp/expired-client/client.info"
_tls_cert "$tmp/ca" "$tmp/expired-client/client-key.pem" \
    "$tmp/expired-client/client.info" "$tmp/expired-client/client-cert.pem"
certtool -i --infile "$tmp/expired-server/server-cert.pem" 2>/dev/null |
    grep -q "Not After: .* 2020" || fail "certtool made no expired certificate"

img=$tmp/disk.img
truncate -s 4M "$img"
pidf=$tmp/pid
cleanup_fn "_stop_server '$pidf'"

# start_tcp SERVERDIR LOG: snapnbd with these credentials on 127.0.0.1:$port
# and on nothing else.
start_tcp() {
    local dir=$1 log=$2 attempt i pid started=
    _stop_server "$pidf"
    for attempt in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 40000))
        rm -f "$pidf"
        "$SNAPNBD" -f raw -t -e 0 -b 127.0.0.1 -p $port --pid-file="$pidf" \
            --object "tls-creds-x509,id=tls0,endpoint=server,dir=$dir" \
            --tls-creds tls0 "$img" 2>"$log" &
        pid=$!
        for i in $(seq 100); do
            kill -0 $pid 2>/dev/null || break
            [ -s "$pidf" ] && { started=yes; break; }
            sleep 0.05
        done
        [ -n "$started" ] && return 0
        kill -0 $pid 2>/dev/null && fail "server did not start on port $port"
        grep -qi 'in use' "$log" && continue
        # Refusing an expired certificate at startup (as QEMU's default
        # sanity check does) is fine too: the caller decides.
        grep -qi 'expired' "$log" && return 1
        fail "server failed: $(cat "$log")"
    done
    fail "no free port found"
}
nbds() {  # nbds CLIENTDIR: libnbd's URI, checking the server's name
    echo "nbds://localhost:$port/?tls-certificates=$tmp/$1"
}
qemu() {  # qemu CLIENTDIR CMD...: CMD with TLS, the output in $tmp/out
    local dir=$1
    shift
    timeout 10 "$@" \
        --object "tls-creds-x509,id=tls0,endpoint=client,dir=$tmp/$dir" \
        --image-opts "driver=nbd,host=127.0.0.1,port=$port,tls-creds=tls0,tls-hostname=localhost" \
        >"$tmp/out" 2>&1
}
# refused PATTERN CMD...: CMD fails (not by timeout), saying PATTERN.
refused() {
    local pattern=$1 rc=0
    shift
    "$@" || rc=$?
    [ $rc -ne 0 ] || fail "served: $*: $(cat "$tmp/out")"
    [ $rc -ne 124 ] || fail "hung: $*"
    grep -Eqi -- "$pattern" "$tmp/out" ||
        fail "$*: error does not match '$pattern': $(cat "$tmp/out")"
}
nbdinfo_to() { timeout 10 nbdinfo --size "$1" >"$tmp/out" 2>&1; }
# still_serving: a good client still gets served, data and all.
n=0
still_serving() {
    n=$((n + 1))
    timeout 10 nbdinfo --is tls "$(nbds good)" ||
        fail "a good libnbd client is no longer served ($*)"
    qemu good qemu-io -c "write -P $n 0 64k" -c "read -P $n 0 64k" ||
        fail "a good qemu-io is no longer served ($*): $(cat "$tmp/out")"
    grep -q 'Pattern verification failed' "$tmp/out" &&
        fail "qemu-io: pattern mismatch ($*)"
    return 0
}

# --- the client does not trust the server's CA
start_tcp "$tmp/server" "$tmp/log"
still_serving "at start"
# libnbd: the certificate verification of the server fails.
refused "certificate verification" nbdinfo_to "$(nbds wrongtrust)"
# QEMU: the server's certificate "hasn't got a known issuer".
refused "known issuer" qemu otherca-client qemu-img info
refused "known issuer" qemu otherca-client qemu-io -c "read 0 4k"
still_serving "after clients that trust another CA"

# --- the client's certificate has expired: the server says so.
# (libnbd, unlike QEMU, does not check its own certificate first.)  With
# TLS 1.3 the refusal reaches the client after its handshake: a fatal alert
# or a connection closed under it, depending on timing.  The server's log
# says which check failed.
refused "gnutls_" nbdinfo_to "$(nbds expired-client)"
grep -Eq "TLS client certificate refused: .*expired" "$tmp/log" ||
    fail "no expired client certificate in the log: $(cat "$tmp/log")"
still_serving "after expired client certificates"
kill -0 "$(cat "$pidf")" || fail "the server died: $(cat "$tmp/log")"

# --- the server's certificate has expired: snapnbd refuses to start with
# it, as qemu-nbd does, naming the file.
if start_tcp "$tmp/expired-server" "$tmp/log2"; then
    fail "started with an expired server certificate"
fi
grep -q "The server certificate $tmp/expired-server/server-cert.pem has expired" \
    "$tmp/log2" || fail "unclear message: $(cat "$tmp/log2")"
true
