#!/usr/bin/env bash
# systemd socket activation (LISTEN_PID/LISTEN_FDS, the socket at fd 3), as
# libnbd's tools start a server: nbdinfo/nbdcopy/nbdsh -- [ snapnbd ... ].
# The passed socket is served, whether unix or TCP, listening or only
# bound; data written through it is in the image.  A LISTEN_PID of another
# process is not activation.  The options that cannot go with it are
# refused in qemu-nbd 7.2's words (its name aside), checked against it.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img qemu-nbd nbdinfo nbdcopy nbdsh

# activated N CMD...: runs CMD as the process that LISTEN_PID names, told
# that N sockets start at fd 3.
activated() {
    local n=$1; shift
    bash -c 'export LISTEN_PID=$$ LISTEN_FDS='"$n"'; exec "$@"' _ "$@"
}

# pass_socket KIND ADDR PORTFILE CMD...: runs CMD in the background,
# activated with a socket made here: KIND is unix (ADDR a path) or tcp
# (ADDR a host; the port the kernel chose goes to PORTFILE); a "bound-"
# prefix leaves it bound but not listening.
pass_socket() {
    /usr/bin/python3 - "$@" <<'EOF' &
import os, socket, sys
kind, addr, portfile, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
bound = kind.startswith("bound-")
if kind.endswith("unix"):
    s = socket.socket(socket.AF_UNIX)
    s.bind(addr)
else:
    s = socket.socket(socket.AF_INET)
    s.bind((addr, 0))
    open(portfile, "w").write(str(s.getsockname()[1]))
if not bound:
    s.listen()
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execvp(argv[0], argv)
EOF
}

# wait_gone PIDFILE: the server must end by itself after its one client
# (not persistent), with status 0 when we are its parent.
wait_gone() {
    local pid
    pid=$(cat "$1")
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    fail "server $pid still runs after its client left"
}

qemu-img create -q -f qcow2 "$tmp/disk.qcow2" 64M
qemu-io -f qcow2 -c "write -P 0x5a 1M 2M" "$tmp/disk.qcow2" >/dev/null
truncate -s 64M "$tmp/want.raw"
qemu-io -f raw -c "write -P 0x5a 1M 2M" "$tmp/want.raw" >/dev/null

# nbdinfo -- [ ... ]: the size and read-only flag, as qemu-nbd gives them
for server in qemu-nbd "$SNAPNBD"; do
    timeout 20 nbdinfo --json -- [ "$server" -r -f qcow2 "$tmp/disk.qcow2" ] \
        >"$tmp/info" 2>&1 || fail "nbdinfo -- [ $server ]: $(cat "$tmp/info")"
    tr -d ' \n' <"$tmp/info" | grep -o '"export-size":[0-9]*,\|"is_read_only":[a-z]*' \
        >"$tmp/info-$(basename "$server")"
done
grep -q '"export-size":67108864' "$tmp/info-snapnbd" || fail "size: $(cat "$tmp/info")"
cmp -s "$tmp/info-qemu-nbd" "$tmp/info-snapnbd" ||
    fail "nbdinfo differs from qemu-nbd: $(diff "$tmp/info-qemu-nbd" "$tmp/info-snapnbd")"

# nbdcopy -- [ ... ]: the whole image, read through the passed socket
timeout 30 nbdcopy -- [ "$SNAPNBD" -r -f qcow2 "$tmp/disk.qcow2" ] "$tmp/copy.raw" ||
    fail "nbdcopy -- [ snapnbd ] failed"
qemu-img compare -q -f raw -F raw "$tmp/want.raw" "$tmp/copy.raw" ||
    fail "nbdcopy's copy differs from the image"

# nbdsh: writes through the passed socket reach the image
timeout 30 nbdsh -c - >"$tmp/nbdsh" 2>&1 <<EOF || fail "nbdsh: $(cat "$tmp/nbdsh")"
h.connect_systemd_socket_activation(["$SNAPNBD", "-f", "qcow2", "$tmp/disk.qcow2"])
assert h.can_flush() and not h.is_read_only()
h.pwrite(b"\x17" * 65536, 8 * 1024 * 1024)
h.flush()
assert h.pread(4096, 1024 * 1024) == b"\x5a" * 4096
h.shutdown()
EOF
qemu-io -f raw -c "write -P 0x17 8M 64k" "$tmp/want.raw" >/dev/null
qemu-img check -q "$tmp/disk.qcow2" || fail "qemu-img check after writes"
qemu-img compare -q -f qcow2 -F raw "$tmp/disk.qcow2" "$tmp/want.raw" ||
    fail "the image lacks what nbdsh wrote"

# A TCP socket, and a unix socket only bound: both are served.
pass_socket tcp 127.0.0.1 "$tmp/port" "$SNAPNBD" --pid-file="$tmp/pid-tcp" \
    -r -f qcow2 "$tmp/disk.qcow2"
tcp_launcher=$!
for _ in $(seq 100); do [ -s "$tmp/pid-tcp" ] && break; sleep 0.1; done
[ -s "$tmp/pid-tcp" ] || fail "activated on a TCP socket, snapnbd did not start"
cleanup_fn "kill $(cat "$tmp/pid-tcp") 2>/dev/null"
size=$(timeout 10 nbdinfo --size "nbd://127.0.0.1:$(cat "$tmp/port")") ||
    fail "nbdinfo over the passed TCP socket failed"
[ "$size" = 67108864 ] || fail "TCP: size $size"
wait_gone "$tmp/pid-tcp"
wait "$tcp_launcher" || fail "activated on TCP, snapnbd exited with $?"

pass_socket bound-unix "$tmp/bound.sock" - "$SNAPNBD" --pid-file="$tmp/pid-unix" \
    -r -f qcow2 "$tmp/disk.qcow2"
unix_launcher=$!
for _ in $(seq 100); do [ -s "$tmp/pid-unix" ] && break; sleep 0.1; done
[ -s "$tmp/pid-unix" ] || fail "activated on a bound unix socket, snapnbd did not start"
cleanup_fn "kill $(cat "$tmp/pid-unix") 2>/dev/null"
timeout 10 nbdcopy "nbd+unix:///?socket=$tmp/bound.sock" "$tmp/copy2.raw" ||
    fail "nbdcopy over the passed bound socket failed"
qemu-img compare -q -f raw -F raw "$tmp/want.raw" "$tmp/copy2.raw" ||
    fail "the copy over the bound socket differs"
wait_gone "$tmp/pid-unix"
wait "$unix_launcher" || fail "activated on a bound socket, snapnbd exited with $?"

# LISTEN_PID naming another process: no activation, -k is used
LISTEN_PID=1 LISTEN_FDS=1 start_server "$tmp/plain.sock" "$tmp/pid-plain" \
    -r -f qcow2 "$tmp/disk.qcow2" 3</dev/null
[ "$(nbdinfo --size "nbd+unix:///?socket=$tmp/plain.sock")" = 67108864 ] ||
    fail "with LISTEN_PID of another process, -k was not served"

# Refusals, in qemu-nbd's words
same_refusal() { # same_refusal N FD3 ARGS...
    local n=$1 fd3=$2; shift 2
    activated "$n" qemu-nbd "$@" 3<"$fd3" 2>&1 >/dev/null |
        sed 's/qemu-nbd/snapnbd/g' >"$tmp/want.err"
    activated "$n" "$SNAPNBD" "$@" 3<"$fd3" >"$tmp/got.err" 2>&1 &&
        fail "snapnbd accepted $* under activation"
    [ -s "$tmp/want.err" ] || fail "qemu-nbd said nothing for $*"
    cmp -s "$tmp/want.err" "$tmp/got.err" ||
        fail "refusal of $* differs: $(diff "$tmp/want.err" "$tmp/got.err")"
}
same_refusal 1 /dev/null -k "$tmp/x.sock" -f qcow2 "$tmp/disk.qcow2"
same_refusal 1 /dev/null -b 127.0.0.1 -f qcow2 "$tmp/disk.qcow2"
same_refusal 1 /dev/null -p 10999 -f qcow2 "$tmp/disk.qcow2"
same_refusal 1 /dev/null --selinux-label=x -f qcow2 "$tmp/disk.qcow2"
same_refusal 1 /dev/null -c /dev/nbd0 "$tmp/disk.qcow2"
same_refusal 1 /dev/null -L
same_refusal 2 /dev/null -f qcow2 "$tmp/disk.qcow2"
# fd 4 is not open: activation fails before any socket is used
same_refusal 2 "$tmp/disk.qcow2" -f qcow2 "$tmp/disk.qcow2"
# fd 3 not a socket: qemu-nbd and snapnbd word it differently
activated 1 "$SNAPNBD" -f qcow2 "$tmp/disk.qcow2" 3<"$tmp/disk.qcow2" >"$tmp/err" 2>&1 &&
    fail "snapnbd served a regular file as a socket"
grep -q "^snapnbd: Failed to use socket activation: fd 3 is not a socket" "$tmp/err" ||
    fail "fd 3 not a socket: $(cat "$tmp/err")"
qemu-img check -q "$tmp/disk.qcow2" || fail "qemu-img check at the end"
exit 0
