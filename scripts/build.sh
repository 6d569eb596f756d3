#!/usr/bin/env bash
# Configures, builds and installs posttrain into build/install, then builds
# the Fashion-MNIST example against the installed package (as a user would).
# Environment: BUILD_DIR (default build), JOBS (default: nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}
prefix="$PWD/$build_dir/install"

cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
cmake --build "$build_dir" -j "$jobs"
cmake --install "$build_dir" >/dev/null

cmake -S examples/fashion_mnist -B "$build_dir/example" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$build_dir/example" -j "$jobs"
