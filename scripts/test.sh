#!/usr/bin/env bash
# The test command: installs what is missing, builds everything (library,
# tools, tests, benchmarks, and the example against the installed package),
# then runs the test suite with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install_deps.sh --with-test
# The tabular data the fairness tests read: ../shared/data/tabular beside the
# checkout, else data/tabular, fetched here and checked against its SHA-256.
# Without network the tests that need it skip, naming the directory.
if [[ ! -f ../shared/data/tabular/german/german.data ]] &&
  ! scripts/download_tabular.sh --verify-only data/tabular >/dev/null 2>&1; then
  scripts/download_tabular.sh data/tabular ||
    echo "test.sh: no tabular data; the tests that read it will skip" >&2
fi
scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j "${JOBS:-$(nproc)}"
