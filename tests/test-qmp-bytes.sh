#!/usr/bin/env bash
# QMP as a byte stream, beside qemu-storage-daemon 7.2 (tests/qmp_bytes.py):
# random mixes of commands, JSON fragments and random bytes on stdin; the
# transcripts must be the same byte for byte (JSON parse errors and the
# lexer's resynchronisation, which member QEMU names, member order, node
# lists).  Skipped without qemu-storage-daemon 7.2.
#
#   SNAPNBD_QMPBYTES_SEED=N    replay a seed (printed at every run)
#   SNAPNBD_QMPBYTES_CASES=N   cases (default 300); the long mode is
#                              ./run qmp-bytes N
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"
[ -n "$qmp_stdio_qsd" ] || {
    echo "$0: skipped: qemu-storage-daemon 7.2 is not installed"; exit 77; }
seed=${SNAPNBD_QMPBYTES_SEED:-$((RANDOM * 32768 + RANDOM))}
$PYTHON "$srcdir/qmp_bytes.py" "$SNAPNBD" "$seed" \
    "${SNAPNBD_QMPBYTES_CASES:-300}" || fail "seed $seed: the daemons differ"
