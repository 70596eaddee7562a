#!/usr/bin/env bash
# bench/all.sh - every row of issue 15's performance table in one
# interleaved run (snapnbd, qemu-nbd, nbdkit, qemu-storage-daemon): raw and
# qcow2 fio rows, the unix-socket limit, nbdcopy, server CPU per I/O,
# backup and fleecing under guest load, mirror.  Writes summary.md,
# results.json, samples.csv, plot.png and raw/ into
# bench/results/<date-time>/.  See bench/README.md.
#
#   bench/all.sh                    3 rounds: about 17 minutes
#   QUICK=1 bench/all.sh            1 round: about 5 minutes
#   bench/all.sh --replot DIR       redraw DIR/plot.png
#
# The plot needs matplotlib: the first of /usr/bin/python3 and python3
# that has it runs the script (python3-matplotlib from Debian); without it
# everything but the plot is written.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=
for p in /usr/bin/python3 python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import matplotlib' 2>/dev/null; then
        py=$p
        break
    fi
done
exec "${py:-python3}" "$here/all.py" "$@"
