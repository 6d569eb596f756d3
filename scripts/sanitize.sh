#!/usr/bin/env bash
# Builds the tests lean (no benchmarks or examples) under a sanitizer and
# runs them; .ci/run calls it after the README's test command.
#   scripts/sanitize.sh asan   AddressSanitizer + UndefinedBehaviorSanitizer,
#                              every unit test (build/asan)
#   scripts/sanitize.sh tsan   ThreadSanitizer, the history and hooks tests
#                              (build/tsan)
# Suppressions (.ci/sanitizers/) cover only the uninstrumented LibTorch and
# libgomp; each is commented there. Exits non-zero on any report.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: scripts/sanitize.sh asan|tsan}
jobs=${JOBS:-$(nproc)}
supp="$PWD/.ci/sanitizers"
case "$mode" in
  asan)
    flags="address,undefined"
    targets=()  # everything the lean configuration builds
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=0"
    export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.supp"
    ;;
  tsan)
    flags="thread"
    targets=(--target history_test hooks_test)
    export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$supp/tsan.supp"
    ;;
  *)
    echo "unknown mode '$mode' (asan or tsan)" >&2
    exit 2
    ;;
esac
build="build/$mode"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DPOSTTRAIN_SANITIZE="$flags" \
  -DPOSTTRAIN_BUILD_TESTS=ON -DPOSTTRAIN_BUILD_BENCH=OFF \
  -DPOSTTRAIN_BUILD_TOOLS=ON >/dev/null
cmake --build "$build" -j "$jobs" "${targets[@]}"
cd "$build"
# One intra-op thread keeps the runs short and the reports readable; the
# TSan run gives the tests' own threads (async writer, callbacks) to check.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [[ $mode == tsan ]]; then
  # The two binaries directly: the lean build has no other test binaries
  # for ctest to find.
  tests/history_test
  tests/hooks_test
else
  ctest --output-on-failure -j "$jobs"
fi
