#!/bin/sh
# Acceptance check of the exports in Python: export_test writes a model
# (safetensors and TorchScript), inputs and the C++ predictions into WORKDIR,
# and scripts/check_exports.py reads both files back with Debian's
# python3-torch (the safetensors file with numpy, from its documented
# layout) and compares the predictions. Exit 77 (ctest: skipped) without
# python3-torch and python3-numpy; the C++ tests never need Python.
#   tests/check_exports_test.sh EXPORT_TEST SCRIPT WORKDIR
set -eu
py=/usr/bin/python3
if ! "$py" -c 'import torch, numpy' 2>/dev/null; then
  echo "SKIPPED: python3-torch and python3-numpy are not installed" \
    "(scripts/install_deps.sh --with-test adds them)"
  exit 77
fi
rm -rf "$3"
mkdir -p "$3"
POSTTRAIN_EXPORT_DIR="$3" "$1" --gtest_filter='ExportForPython.*' >/dev/null
"$py" "$2" "$3"
