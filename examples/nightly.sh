#!/usr/bin/env bash
# A nightly model-improvement job on the Fashion-MNIST example, through the
# posttrain command only:
#   1. reuse the history store of the main job (scripts/main.sh), or train
#      one (the example with --variant=none: history and profile, no phase);
#   2. posttrain improve: Dare from the stored history, into a dated run
#      directory (rerunning the same night resumes or reports it finished);
#   3. posttrain eval of the improved model (JSON), and its predictions;
#   4. posttrain report (report.md, report.html, report.json);
#   5. with python3-torch, scripts/check_exports.py on both exports.
# It fails loudly (exit 1, a line starting "NIGHTLY FAILED") when the
# accuracy guard kept the original model, and with the tool's code (2 bad
# input, 3 internal) on any other failure.
#   examples/nightly.sh [STORE] [RUN_DIR]
# Environment: BUILD_DIR (default build), DATA (the IDX directory).
set -euo pipefail
cd "$(dirname "$0")/.."
# Every failure says what failed (a damaged store, an export mismatch, ...).
trap 'rc=$?; echo "NIGHTLY FAILED: \"$BASH_COMMAND\" exited $rc" >&2' ERR

build=${BUILD_DIR:-build}
store=${1:-runs/fashion_mnist/history}
run=${2:-runs/nightly/$(date -u +%Y-%m-%d)}
data=${DATA:-/usr/share/datasets/fashion-mnist}
tool="$build/tools/posttrain"

scripts/install_deps.sh --with-data
scripts/build.sh --nightly

if [[ ! -f "$store/MANIFEST" ]]; then
  echo "== no store in $store: training one (history and profile only)"
  "$build/example/fashion_mnist" --store="$store" --variant=none
fi
"$tool" history ls "$store"
"$tool" history verify "$store"

echo "== posttrain improve"
mkdir -p "$(dirname "$run")"
set +e
trap - ERR
"$tool" improve --store="$store" --task=robustness --data="$data" \
  --mine_inputs=10000 --slice_inputs=10000 --lrs=1e-4 --tune_epochs=10 \
  --attacks=fgsm,pgd --epsilons=0.02,0.05,0.1 --attack_size=1000 \
  --threads=2 --out="$run"
code=$?
set -e
trap 'rc=$?; echo "NIGHTLY FAILED: \"$BASH_COMMAND\" exited $rc" >&2' ERR
if ((code != 0 && code != 1)); then
  echo "NIGHTLY FAILED: posttrain improve exited $code" >&2
  exit "$code"
fi

echo "== posttrain eval of the improved model"
test_set="$data/t10k-images-idx3-ubyte.gz,$data/t10k-labels-idx1-ubyte.gz"
"$tool" eval --model="$run" --data="$test_set" --attacks=fgsm \
  --epsilons=0.1 --attack_size=1000 --predictions="$run/predictions.txt" \
  --json >"$run/eval.json"
grep -m 2 -E '"(accuracy|robust_accuracy)"' "$run/eval.json" || true

echo "== posttrain report"
"$tool" report "$run"

if python3 -c 'import torch, numpy' 2>/dev/null; then
  python3 scripts/check_exports.py "$run" \
    --images="$data/t10k-images-idx3-ubyte.gz"
elif /usr/bin/python3 -c 'import torch, numpy' 2>/dev/null; then
  /usr/bin/python3 scripts/check_exports.py "$run" \
    --images="$data/t10k-images-idx3-ubyte.gz"
else
  echo "(python3-torch not installed: the exports are not checked in Python)"
fi

if ((code == 1)); then
  echo "NIGHTLY FAILED: the accuracy guard kept the original model;" \
    "see $run/report.md" >&2
  exit 1
fi
echo "nightly: improved model in $run/model.safetensors and model.pt"
