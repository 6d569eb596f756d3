#!/usr/bin/env bash
# Builds the tests lean (no benchmarks or examples) under a sanitizer and
# runs them; .ci/run calls it after the README's test command.
#   scripts/sanitize.sh asan   AddressSanitizer + UndefinedBehaviorSanitizer:
#                              the history (formats, codecs, crash and
#                              power-loss tests), common, slicer, tuner and
#                              fairness (readers, metrics, FMT) tests
#                              (build/asan)
#   scripts/sanitize.sh tsan   ThreadSanitizer: the history tests (the
#                              asynchronous writer, the store's threads) and
#                              the hooks tests (callbacks, profiler)
#                              (build/tsan)
# The lists keep CI within its hour on 2 cores: each instrumented LibTorch
# translation unit compiles in about a minute there. Other test binaries
# can be added with TESTS="a_test b_test".
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
    tests=(${TESTS:-history_test common_test slicer_test tuner_test fairness_test})
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=0"
    export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.supp"
    ;;
  tsan)
    flags="thread"
    tests=(${TESTS:-history_test hooks_test})
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
cmake --build "$build" -j "$jobs" --target "${tests[@]}"
cd "$build"
# One intra-op thread keeps the runs short and the reports readable; the
# TSan run gives the tests' own threads (async writer, callbacks) to check.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# The binaries directly: the lean build has no other test binaries for
# ctest to find.
for t in "${tests[@]}"; do
  echo "== $mode: $t"
  start=$(date +%s)
  "tests/$t" --gtest_brief=1
  echo "== $mode: $t passed in $(($(date +%s) - start)) s"
done
