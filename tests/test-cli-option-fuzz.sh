#!/usr/bin/env bash
# Option syntax against qemu-storage-daemon (cli_option_fuzz.py): random
# --nbd-server, --export, --blockdev, --object and --chardev (with
# --monitor) specs in QEMU's key=value syntax, help requests among them,
# given to both daemons; the same ones must fail, with the same message,
# and help print the same, apart from the differences docs/snapnbd.pod
# documents.  Seeded (printed);
#   SNAPNBD_CLIFUZZ_SEED=N    replay a seed
#   SNAPNBD_CLIFUZZ_MODES=L   which options (default
#                             server,export,blockdev,object,chardev)
#   SNAPNBD_CLIFUZZ_CASES=N   cases (default 200, 5 to 15 s); the long
#                             mode is ./run cli-fuzz N
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img qemu-storage-daemon

# qsd's startup errors quote the options as given, so tests/qsd-shim must
# not rename its sockets; no QMP client connects here anyway.
export QSD_SHIM=off
seed=${SNAPNBD_CLIFUZZ_SEED:-$(( (RANDOM << 15) | RANDOM ))}
echo "seed $seed"
python3 "$srcdir/cli_option_fuzz.py" "$SNAPNBD" "$tmp" "$seed" \
    "${SNAPNBD_CLIFUZZ_CASES:-200}" || fail "seed $seed: the daemons differ"
