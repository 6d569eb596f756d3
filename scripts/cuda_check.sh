#!/usr/bin/env bash
# Builds posttrain against a CUDA LibTorch (a PyTorch 2.x wheel's) and runs
# the test suite, including the tests that need a GPU. For a machine with a
# GPU and `python3 -c 'import torch'`, but without Debian's packages: the
# .deb files of Abseil, Protobuf, zstd, zlib and GoogleTest are expected in
# .devdeps/ (see ../shared/device/README.md for how to fetch them).
set -euo pipefail
cd "$(dirname "$0")/.."
deps=/tmp/posttrain-deps
mkdir -p "$deps"
for f in .devdeps/*.deb; do dpkg -x "$f" "$deps"; done
export LD_LIBRARY_PATH=$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
torch_cmake=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
python3 -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
build=${BUILD_DIR:-/tmp/build-cuda}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DPOSTTRAIN_BUILD_BENCH=OFF \
  -DPOSTTRAIN_OPENMP_POOL=OFF \
  -DCMAKE_PREFIX_PATH="$torch_cmake;$deps/usr" \
  -DProtobuf_PROTOC_EXECUTABLE="$deps/usr/bin/protoc" "$@"
cmake --build "$build" -j"$(nproc)"
cd "$build" && ctest --output-on-failure -j8
