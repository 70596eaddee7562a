#!/usr/bin/env bash
# SIGKILL of the server while a commit (intermediate or active, ready) or
# a stream copies (tests/chain_kill.py sets each up after writers wrote
# and flushed): every image of the chain is qemu-img check clean (leaked
# clusters allowed) and the chain reads exactly what was flushed.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-functions.sh"
requires qemu-img
requires_libnbd_python

for kind in commit active stream; do
    rm -rf "$tmp/$kind"; mkdir "$tmp/$kind"
    start_daemon --nbd-server "addr.type=unix,addr.path=$nbdsock"
    $PYTHON "$srcdir/chain_kill.py" "$qmp" "$nbdsock" "$tmp/$kind" \
        "$seed" "$kind" || fail "seed $seed: $kind: the set-up failed"
    kill -KILL "$(cat "$tmp/daemon.pid")"
    while kill -0 "$(cat "$tmp/daemon.pid")" 2>/dev/null; do sleep 0.05; done
    for f in k-0 k-1 k-2; do
        qemu-img check -q "$tmp/$kind/$f.qcow2"
        rc=$?
        # 0: clean; 3: leaked clusters only, which a kill may leave.
        [ $rc = 0 ] || [ $rc = 3 ] ||
            fail "seed $seed: $kind: $f.qcow2 is damaged (check: $rc)"
    done
    qemu-img compare -q -f qcow2 -F raw "$tmp/$kind/k-2.qcow2" \
        "$tmp/$kind/model.raw" ||
        fail "seed $seed: $kind: the chain does not read what was flushed"
done
