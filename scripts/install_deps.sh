#!/usr/bin/env bash
# Installs the Debian 12 packages posttrain needs, if any are missing.
#   scripts/install_deps.sh [--with-data]
# --with-data adds dataset-fashion-mnist (for the example and benchmarks).
# chromium renders the report in tests/report_browser_test.cc (skipped
# without it).
set -euo pipefail

packages=(build-essential cmake ccache pkg-config libtorch-dev libabsl-dev
          libprotobuf-dev protobuf-compiler libgtest-dev libgmock-dev
          libbenchmark-dev libzstd-dev zlib1g-dev libopenblas0-openmp
          chromium)
if [[ "${1:-}" == "--with-data" ]]; then
  packages+=(dataset-fashion-mnist)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "Installing missing Debian packages: ${missing[*]}"
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
