#!/usr/bin/env bash
# Configures, builds and installs posttrain into build/install, then builds
# the examples (Fashion-MNIST; with everything, also adult_fairness)
# against the installed package, as a user would.
#   scripts/build.sh          everything: library, tools, tests, benchmarks
#   scripts/build.sh --main   only what the main job runs: the library and
#                             the example (no tests, benchmarks or tools)
#   scripts/build.sh --nightly  the library, the posttrain tool and the
#                             example (examples/nightly.sh)
# Environment: BUILD_DIR (default build), JOBS (default: nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}
prefix="$PWD/$build_dir/install"
all=ON
tools=ON
if [[ "${1:-}" == "--main" ]]; then
  all=OFF
  tools=OFF
elif [[ "${1:-}" == "--nightly" ]]; then
  all=OFF
fi

cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$prefix" -DPOSTTRAIN_BUILD_TESTS=$all \
  -DPOSTTRAIN_BUILD_BENCH=$all -DPOSTTRAIN_BUILD_TOOLS=$tools >/dev/null
cmake --build "$build_dir" -j "$jobs"
cmake --install "$build_dir" >/dev/null

cmake -S examples/fashion_mnist -B "$build_dir/example" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$build_dir/example" -j "$jobs"
if [[ $all == ON ]]; then
  tabular=$(sed -n 's/^POSTTRAIN_TABULAR_DIR:PATH=//p' "$build_dir/CMakeCache.txt")
  cmake -S examples/adult_fairness -B "$build_dir/adult_fairness" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
    -DPOSTTRAIN_TABULAR_DIR="$tabular" >/dev/null
  cmake --build "$build_dir/adult_fairness" -j "$jobs"
fi
