#!/usr/bin/env bash
# Every fuzz target (tests/fuzz/) replays its committed seed corpus and
# every input that once crashed it (tests/fuzz/crashes/TARGET/) without a
# crash or a hang: the regression tests of what the fuzzers found.  Under
# the sanitizer build this also catches memory errors and leaks.
source "${srcdir:-$(dirname "$0")}/functions.sh"

bin=$(dirname "$SNAPNBD")/tests/fuzz
for t in qcow2 bitmap nbd qmp manifest; do
    [ -x "$bin/replay-$t" ] || fail "replay-$t is not built"
    dirs=("$srcdir/fuzz/corpus/$t")
    [ -d "$srcdir/fuzz/crashes/$t" ] && dirs+=("$srcdir/fuzz/crashes/$t")
    timeout 120 "$bin/replay-$t" "${dirs[@]}" >"$tmp/out" 2>"$tmp/err" ||
        fail "$t: $(tail -n 20 "$tmp/err")"
    grep -q "^replay: [1-9][0-9]* inputs" "$tmp/out" ||
        fail "$t: nothing replayed: $(cat "$tmp/out")"
done
