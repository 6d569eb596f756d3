#!/usr/bin/env bash
# Installs the Debian 12 packages posttrain needs, if any are missing.
#   scripts/install_deps.sh [--with-data] [--with-test]
# --with-data adds dataset-fashion-mnist (for the example and benchmarks).
# --with-test adds what only tests use: chromium (tests/report_browser_test.cc
# renders the report) and python3-torch and python3-numpy
# (tests/check_exports_test.sh reads the exports back in Python). Those
# tests are skipped, with a message, where the packages are missing.
set -euo pipefail

packages=(build-essential cmake ccache pkg-config libtorch-dev libabsl-dev
          libprotobuf-dev protobuf-compiler libgtest-dev libgmock-dev
          libbenchmark-dev libzstd-dev zlib1g-dev libopenblas0-openmp)
for arg in "$@"; do
  case "$arg" in
    --with-data) packages+=(dataset-fashion-mnist) ;;
    --with-test) packages+=(chromium python3-torch python3-numpy) ;;
    *) echo "install_deps.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

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
