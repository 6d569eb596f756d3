#!/usr/bin/env bash
# The test command: installs what is missing, builds everything (library,
# tools, tests, benchmarks, and the example against the installed package),
# then runs the test suite with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install_deps.sh --with-test
scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j "${JOBS:-$(nproc)}"
