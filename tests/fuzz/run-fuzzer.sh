#!/usr/bin/env bash
# tests/fuzz/run-fuzzer.sh BUILD TARGET SECONDS: runs the libFuzzer target
# BUILD/tests/fuzz/fuzz-TARGET (built with --enable-fuzz) for SECONDS,
# from its committed corpus (tests/fuzz/corpus/TARGET, and the inputs of
# old crashes), keeping what it learns in BUILD/fuzz/corpus/TARGET.  Exit
# status 0 when it found nothing; otherwise the crash, leak or timeout is
# in BUILD/fuzz/artifacts/ (commit it to tests/fuzz/crashes/TARGET/ with
# the fix: the normal suite then replays it).  The last line is the count
# of executions.
set -euo pipefail
build=$1 target=$2 seconds=$3
src=$(cd "$(dirname "$0")" && pwd)
fuzzer=$build/tests/fuzz/fuzz-$target
[ -x "$fuzzer" ] || { echo "$fuzzer is not built (configure --enable-fuzz)" >&2; exit 1; }
build=$(cd "$build" && pwd)
work=$build/fuzz/corpus/$target
mkdir -p "$work" "$build/fuzz/artifacts"
dirs=("$work" "$src/corpus/$target")
[ -d "$src/crashes/$target" ] && dirs+=("$src/crashes/$target")
log=$build/fuzz/$target.log
status=0
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    "$fuzzer" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2560 \
    -max_len=65536 -print_final_stats=1 -close_fd_mask=2 \
    -artifact_prefix="$build/fuzz/artifacts/$target-" "${dirs[@]}" \
    >"$log" 2>&1 || status=$?
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
# A leak that its own input does not reproduce (three runs of it alone) is
# a leak of state that earlier inputs left behind, timing dependent: it is
# reported, not counted as found (the log keeps it for a look).
artifact=$(sed -n 's/.*Test unit written to //p' "$log" | tail -1)
if [ $status -ne 0 ] && grep -q "LeakSanitizer" "$log" && [ -f "$artifact" ] &&
   ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
       "$fuzzer" -runs=3 "$artifact" >"$log.replay" 2>&1; then
    echo "fuzz-$target: warning: a leak its input does not reproduce" \
         "(log: $log)" >&2
    mv "$artifact" "$artifact.unreproduced"
    status=0
fi
if [ $status -ne 0 ]; then
    grep -E "ERROR|SUMMARY|Test unit written|leak|timeout" "$log" | head -20 >&2
    # The run closed the target's stderr (-close_fd_mask=2): replayed
    # alone, the input says what went wrong in the target's own words.
    if [ -f "$artifact" ]; then
        "$fuzzer" -runs=1 "$artifact" 2>&1 | grep -v -E '^(INFO|    #)' |
            head -12 >&2 || true
    fi
    echo "fuzz-$target: FAILED after ${execs:-?} executions (log: $log)"
    exit 1
fi
echo "fuzz-$target: ${execs:-?} executions in $seconds s, nothing found"
