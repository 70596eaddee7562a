#!/usr/bin/env bash
# TLS for the nbd client node (tls-creds naming an --object with
# endpoint=client): against a snapnbd that requires TLS, with pre-shared
# keys (tls-creds-psk, username) and with x509 certificates over TCP to
# 127.0.0.1 (tls-hostname equal to the host), the node reads the remote's
# data and writes reach it.  Refused: no tls-creds against a TLS-only
# server, a wrong key, server-endpoint credentials, an unknown id.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
source "$srcdir/tls-functions.sh"
requires qemu-img qemu-io
requires_libnbd_python

qemu-img create -q -f raw "$tmp/disk.img" 8M
qemu-io -f raw -c "write -P 0x5c 0 8M" "$tmp/disk.img" >/dev/null

mkdir "$tmp/psk" "$tmp/wrong"
tls_psk_file "$tmp/psk/keys.psk" alice
tls_psk_file "$tmp/wrong/keys.psk" alice
tls_ca ca
tls_server_dir ca "$tmp/x509-server"
tls_client_dir ca "$tmp/x509-client" client

asock=$tmp/a.sock
start_server "$asock" "$tmp/a.pid" -t -e 8 -f raw -x disk \
    --object "tls-creds-psk,id=s0,endpoint=server,dir=$tmp/psk" \
    --tls-creds s0 "$tmp/disk.img"
started=
for attempt in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    rm -f "$tmp/b.pid"
    "$SNAPNBD" -t -e 8 -b 127.0.0.1 -p $port -f raw -x disk \
        --object "tls-creds-x509,id=s1,endpoint=server,dir=$tmp/x509-server" \
        --tls-creds s1 --pid-file="$tmp/b.pid" "$tmp/disk.img" \
        2>"$tmp/err" &
    pid=$!
    for i in $(seq 100); do
        kill -0 $pid 2>/dev/null || break
        [ -s "$tmp/b.pid" ] && { started=yes; break; }
        sleep 0.05
    done
    [ -n "$started" ] && break
done
[ -n "$started" ] || fail "no TLS server on TCP: $(cat "$tmp/err")"
cleanup_fn "_stop_server '$tmp/b.pid'"

start_daemon --nbd-server "addr.type=unix,addr.path=$nbdsock" \
    --object "tls-creds-psk,id=c0,endpoint=client,dir=$tmp/psk,username=alice" \
    --object "tls-creds-psk,id=bad,endpoint=client,dir=$tmp/wrong,username=alice" \
    --object "tls-creds-x509,id=c1,endpoint=client,dir=$tmp/x509-client" \
    --object "tls-creds-psk,id=srv,endpoint=server,dir=$tmp/psk"

$PYTHON - "$qmp" "$asock" "$port" "$srcdir" <<'EOF' || fail "TLS"
import sys
sys.path.insert(0, sys.argv[4])
from jobs_qmp import QMP
q = QMP(sys.argv[1])
unix = {'type': 'unix', 'path': sys.argv[2]}
inet = {'type': 'inet', 'host': '127.0.0.1', 'port': sys.argv[3]}

def add(name, server, **kw):
    args = {'driver': 'nbd', 'node-name': name, 'server': server,
            'export': 'disk'}
    args.update(kw)
    return q.execute('blockdev-add', args)

def refused(why, pattern, server, **kw):
    r = add('x', server, **kw)
    assert 'error' in r, f"{why}: accepted"
    assert pattern in r['error']['desc'], f"{why}: {r['error']['desc']}"

refused("no tls-creds", "Failed to connect", unix)
refused("wrong key", "Failed to connect", unix, **{'tls-creds': 'bad'})
refused("server creds", "Expecting TLS credentials with a client endpoint",
        unix, **{'tls-creds': 'srv'})
refused("unknown id", "No TLS credentials with id 'nope'", unix,
        **{'tls-creds': 'nope'})

for name, server, creds, extra in [
        ('p', unix, 'c0', {}),
        ('x', inet, 'c1', {'tls-hostname': '127.0.0.1'})]:
    r = add(name, server, **{'tls-creds': creds}, **extra)
    assert 'return' in r, f"{name}: {r}"
    q.cmd('block-export-add', {'type': 'nbd', 'id': name, 'node-name': name,
                               'name': name, 'writable': True})
print("added")
EOF

# reads IMAGE-ARGS... -- qemu-io -c commands: every read is whole and
# matches its pattern.
reads() {
    local out
    out=$(qemu-io -f raw "$@" 2>&1) || return 1
    echo "$out" | grep -q "^read " &&
        ! echo "$out" | grep -q "Pattern verification failed"
}

for e in p x; do
    reads -c "read -P 0x5c 0 1M" "$(uri "$nbdsock" $e)" ||
        fail "$e: does not read the remote"
done
qemu-io -f raw -c "write -P 0x6a 2M 64k" "$(uri "$nbdsock" p)" >/dev/null ||
    fail "psk: write failed"
reads -c "read -P 0x6a 2M 64k" "$(uri "$nbdsock" x)" ||
    fail "x509: does not read psk's write"
reads -r -U -c "read -P 0x6a 2M 64k" "$tmp/disk.img" ||
    fail "the remote lacks the write"
