# tests/tls-functions.sh - TLS credentials made at test time with certtool
# (gnutls-bin), sourced by the tests/test-tls-*.sh after functions.sh.
# Keys are ECDSA: generating them takes milliseconds.
#
#   tls_ca NAME                    a CA in $tmp/NAME (ca-cert.pem, ca-key.pem)
#   tls_server_dir CA DIR          DIR as tls-creds-x509,endpoint=server wants
#                                  it: ca-cert.pem of CA, server-cert.pem for
#                                  localhost signed by CA, server-key.pem
#   tls_client_dir CA DIR CN [TRUST]  DIR as libnbd and QEMU clients want it:
#                                  client-cert.pem (O=snapnbd test, CN=CN)
#                                  signed by CA, client-key.pem, and the
#                                  ca-cert.pem of TRUST (default CA)
#   tls_client_dn CN               that certificate's DN as QEMU prints it
#   tls_psk_file FILE USER         FILE gets "USER:HEXKEY", a fresh key
requires certtool

_tls_key() {
    certtool --generate-privkey --key-type=ecdsa --outfile "$1" 2>/dev/null ||
        fail "certtool cannot make a key"
}

_tls_cert() {
    # _tls_cert CA KEY TEMPLATE OUT
    certtool --generate-certificate --load-privkey "$2" \
        --load-ca-certificate "$1/ca-cert.pem" \
        --load-ca-privkey "$1/ca-key.pem" \
        --template "$3" --outfile "$4" >/dev/null 2>&1 ||
        fail "certtool cannot sign $4"
}

tls_ca() {
    local dir=$tmp/$1
    mkdir -p "$dir"
    printf 'cn = snapnbd test CA %s\nca\ncert_signing_key\n%s\n' "$1" \
        'expiration_days = 2' >"$dir/ca.info"
    _tls_key "$dir/ca-key.pem"
    certtool --generate-self-signed --load-privkey "$dir/ca-key.pem" \
        --template "$dir/ca.info" --outfile "$dir/ca-cert.pem" \
        >/dev/null 2>&1 || fail "certtool cannot make CA $1"
}

tls_server_dir() {
    local ca=$tmp/$1 dir=$2
    mkdir -p "$dir"
    cat >"$dir/server.info" <<EOF
organization = snapnbd test
cn = localhost
dns_name = localhost
ip_address = 127.0.0.1
tls_www_server
signing_key
encryption_key
expiration_days = 2
EOF
    cp "$ca/ca-cert.pem" "$dir/ca-cert.pem"
    _tls_key "$dir/server-key.pem"
    _tls_cert "$ca" "$dir/server-key.pem" "$dir/server.info" \
        "$dir/server-cert.pem"
}

tls_client_dir() {
    local ca=$tmp/$1 dir=$2 cn=$3 trust=$tmp/${4:-$1}
    mkdir -p "$dir"
    cat >"$dir/client.info" <<EOF
organization = snapnbd test
cn = $cn
tls_www_client
signing_key
encryption_key
expiration_days = 2
EOF
    cp "$trust/ca-cert.pem" "$dir/ca-cert.pem"
    _tls_key "$dir/client-key.pem"
    _tls_cert "$ca" "$dir/client-key.pem" "$dir/client.info" \
        "$dir/client-cert.pem"
}

tls_client_dn() {
    echo "O=snapnbd test,CN=$1"
}

tls_psk_file() {
    echo "$2:$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$1"
}

# startup_error PATTERN ARGS...: snapnbd with ARGS (on $sock, image $img)
# must fail with one line of error matching PATTERN and leave no socket.
startup_error() {
    local pattern=$1
    shift
    rm -f "$sock"
    timeout 10 "$SNAPNBD" -k "$sock" -f raw "$@" "$img" 2>"$tmp/err" &&
        fail "started: $*"
    [ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "not one line: $(cat "$tmp/err")"
    grep -Eq -- "$pattern" "$tmp/err" ||
        fail "error does not match '$pattern': $(cat "$tmp/err")"
    [ ! -S "$sock" ] || fail "left a socket behind: $*"
}
