#!/usr/bin/env bash
# A short slice of the qcow2 image fuzzer (tests/qcow2-image-fuzz.py):
# 50 sound images with one to three metadata fields damaged, each served
# writable, written and read back.  Every one must be refused with a
# one-line message or served without a crash, a hang, or an acknowledged
# write that reads back wrong.  The long run is one command away:
#   SNAPNBD=build/snapnbd tests/qcow2-image-fuzz.py --count 1000
# (SNAPNBD_SEED replays a run.)
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires qemu-img qemu-io

seed=${SNAPNBD_SEED:-$(( (RANDOM << 15) | RANDOM ))}
$PYTHON "$srcdir/qcow2-image-fuzz.py" --count 50 --seed "$seed" \
    --server "$SNAPNBD" --keep "$tmp/bad" ||
    fail "the image fuzzer found a problem (seed $seed)"
