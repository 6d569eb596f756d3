#!/usr/bin/env bash
# The main job: installs what is missing, builds, and trains the Fashion-MNIST
# example end to end, leaving a history store in runs/fashion_mnist/history.
# Extra arguments go to the example (e.g. --epochs=3 --train_size=5000).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install_deps.sh --with-data
scripts/build.sh
rm -rf runs/fashion_mnist/history
exec "${BUILD_DIR:-build}/example/fashion_mnist" "$@"
