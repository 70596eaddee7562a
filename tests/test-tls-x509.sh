#!/usr/bin/env bash
# TLS with x509 certificates (--object tls-creds-x509 --tls-creds): libnbd
# (nbdinfo, nbdsh) and QEMU (qemu-img, qemu-io) clients negotiate TLS,
# data written through TLS lands in the image and reads back; a client
# without a certificate is refused unless verify-peer=off; credential files
# that are missing or broken stop the server at startup with one line
# naming the file.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/tls-functions.sh"
requires qemu-io qemu-img nbdinfo nbdsh

tls_ca ca
tls_server_dir ca "$tmp/server"
tls_client_dir ca "$tmp/client" client1
mkdir "$tmp/nocert" && cp "$tmp/ca/ca-cert.pem" "$tmp/nocert/"
img=$tmp/disk.img
truncate -s 64M "$img"
sock=$tmp/sock
creds="tls-creds-x509,id=tls0,endpoint=server,dir=$tmp/server"
start_server "$sock" "$tmp/pid" -f raw -t -e 0 --object "$creds" \
    --tls-creds tls0 "$img"
tls_uri="nbds+unix:///?socket=$sock&tls-certificates=$tmp/client"

# libnbd: nbdinfo says TLS is on.
timeout 10 nbdinfo "$tls_uri" >"$tmp/out" 2>&1 ||
    fail "nbdinfo over TLS failed: $(cat "$tmp/out")"
grep -q "with TLS" "$tmp/out" || fail "nbdinfo: no TLS: $(cat "$tmp/out")"
timeout 10 nbdinfo --is tls "$tls_uri" || fail "nbdinfo --is tls: false"

# QEMU: writes through TLS land in the file; reads check them.
# Over a Unix socket QEMU wants tls-hostname to check the server's name.
qemu_opts=(--object "tls-creds-x509,id=tls0,endpoint=client,dir=$tmp/client"
           --image-opts
           "driver=nbd,path=$sock,tls-creds=tls0,tls-hostname=localhost")
timeout 20 qemu-io "${qemu_opts[@]}" -c 'write -P 0x5a 4096 4M' \
    -c 'write -P 0xa5 20M 512' -c 'read -P 0x5a 4096 4M' \
    -c 'read -P 0xa5 20M 512' -c 'read -P 0 0 4096' >"$tmp/out" 2>&1 ||
    fail "qemu-io over TLS failed: $(cat "$tmp/out")"
grep -q 'Pattern verification failed' "$tmp/out" && fail "pattern mismatch"
truncate -s 64M "$tmp/ref.img"
qemu-io -f raw -c 'write -P 0x5a 4096 4M' -c 'write -P 0xa5 20M 512' \
    "$tmp/ref.img" >/dev/null
qemu-img compare -f raw -F raw "$tmp/ref.img" "$img" ||
    fail "image differs from the reference"
json="json:{\"driver\":\"nbd\",\"path\":\"$sock\",\"tls-creds\":\"tls0\","
json+="\"tls-hostname\":\"localhost\"}"
timeout 10 qemu-img info --object \
    "tls-creds-x509,id=tls0,endpoint=client,dir=$tmp/client" "$json" \
    >"$tmp/out" 2>&1 || fail "qemu-img info (JSON) failed: $(cat "$tmp/out")"
grep -q "67108864 bytes" "$tmp/out" || fail "qemu-img info: $(cat "$tmp/out")"

# nbdsh: large reads and writes (many TLS records per reply, several
# requests in flight) and sparse structured reads.
export URI=$tls_uri
timeout 20 nbdsh -c '
import os
h.set_uri_allow_local_file(True)
h.connect_uri(os.environ["URI"])
assert h.get_tls_negotiated()
assert h.pread(4096, 20 << 20) == b"\xa5" * 512 + bytes(3584)
data = os.urandom(8 << 20)
h.pwrite(data, 32 << 20)
assert h.pread(8 << 20, 32 << 20) == data
bufs = [nbd.Buffer(1 << 20) for _ in range(8)]
cookies = [h.aio_pread(b, (32 << 20) + i * (1 << 20))
           for i, b in enumerate(bufs)]
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    assert h.aio_command_completed(c)
assert b"".join(b.to_bytearray() for b in bufs) == data
assert h.pread(1 << 20, 48 << 20) == bytes(1 << 20)
h.shutdown()
' >"$tmp/out" 2>&1 || fail "nbdsh over TLS failed: $(cat "$tmp/out")"

# nbdcopy: several connections, many requests in flight each way.
if command -v nbdcopy >/dev/null; then
    head -c 24M /dev/urandom >"$tmp/src.bin"
    timeout 30 nbdcopy --connections=4 --requests=32 "$tmp/src.bin" \
        "$tls_uri" || fail "nbdcopy to the TLS export failed"
    timeout 30 nbdcopy "$tls_uri" "$tmp/back.bin" || fail "nbdcopy back failed"
    cmp -n $((24 << 20)) "$tmp/src.bin" "$tmp/back.bin" ||
        fail "nbdcopy round trip differs"
fi

# A client without a certificate is refused (verify-peer=on by default).
export URI="nbds+unix:///?socket=$sock&tls-certificates=$tmp/nocert"
timeout 10 nbdinfo "$URI" >"$tmp/out" 2>&1 &&
    fail "a client without certificate was served"
_stop_server "$tmp/pid"

# ... but served with verify-peer=off.
start_server "$sock" "$tmp/pid" -f raw -r --object "$creds,verify-peer=off" \
    --tls-creds tls0 "$img"
timeout 10 nbdinfo --is tls "$URI" || fail "verify-peer=off: refused"
_stop_server "$tmp/pid"

# Startup errors name the problem (and nothing listens).
cp -r "$tmp/server" "$tmp/broken"
rm "$tmp/broken/server-key.pem"
startup_error "$tmp/broken/server-key.pem" --object \
    "tls-creds-x509,id=tls0,endpoint=server,dir=$tmp/broken" --tls-creds tls0
cp "$tmp/client/client-key.pem" "$tmp/broken/server-key.pem"
startup_error "server-key.pem.*do not match" --object \
    "tls-creds-x509,id=tls0,endpoint=server,dir=$tmp/broken" --tls-creds tls0
echo garbage >"$tmp/broken/ca-cert.pem"
startup_error "$tmp/broken/ca-cert.pem" --object \
    "tls-creds-x509,id=tls0,endpoint=server,dir=$tmp/broken" --tls-creds tls0
startup_error "server endpoint" --object \
    "tls-creds-x509,id=tls0,dir=$tmp/server" --tls-creds tls0
startup_error "Parameter 'endpoint' does not accept value 'sideways'" --object "$creds,endpoint=sideways"
startup_error "Parameter 'verify-peer' expects 'on' or 'off'" --object "$creds,verify-peer=maybe"
startup_error "priority 'BOGUS'" --object "$creds,priority=BOGUS" \
    --tls-creds tls0
# ... after the files, whose errors come first, as QEMU loads them first
startup_error "Unable to access credentials $tmp/nowhere/ca-cert.pem" \
    --object "tls-creds-x509,id=tls0,endpoint=server,dir=$tmp/nowhere,priority=BOGUS" \
    --tls-creds tls0
startup_error "'sanity-check' is not supported" \
    --object "$creds,sanity-check=off"
true
