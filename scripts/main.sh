#!/usr/bin/env bash
# The main job: installs what is missing, builds the library and the example
# (only those: no tests or benchmarks), and trains the Fashion-MNIST example
# end to end with Dare, leaving a history store, the profile and the reports
# in runs/fashion_mnist/history.
# Extra arguments go to the example (e.g. --epochs=3 --train_size=5000).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install_deps.sh --with-data
scripts/build.sh --main
rm -rf runs/fashion_mnist/history
exec "${BUILD_DIR:-build}/example/fashion_mnist" "$@"
