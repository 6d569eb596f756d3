#!/usr/bin/env bash
# The lossy codec's settings sweep (issue 13, docs/BENCHMARKS.md): re-encodes
# one stored history with each setting and prints a Markdown row per setting
# (bytes per epoch, the ratio to torch::save, the recorded error bound, the
# share of validation predictions changed over every epoch).
#   bench/codec_sweep.sh STORE [SETTING...]
# A SETTING is K/D[/diffusion][/min_elements/small_bits], e.g. 7/6, 7/6/on,
# 6/5/off/5000/8 (tensors under 5 000 elements at 8 bits). Default: the
# table in docs/BENCHMARKS.md. Environment: BUILD_DIR (default build),
# HISTORY_BENCH_ARGS (more history_bench flags for every setting, e.g.
# --lossy_kernel_extra_bits=0 for the tables measured before that option).
set -euo pipefail
cd "$(dirname "$0")/.."
store=${1:?usage: bench/codec_sweep.sh STORE [SETTING...]}
shift
settings=("$@")
if [[ ${#settings[@]} -eq 0 ]]; then
  settings=(7/6 7/6/on 7/5 7/5/on 6/5 6/5/on 6/6/on
            7/6/off/5000/8 7/6/on/5000/8 6/5/off/5000/8 6/5/on/5000/8
            6/4/on/5000/8 5/4/on/5000/8)
fi
bench=${BUILD_DIR:-build}/bench/history_bench
echo "| K / D | diffusion | tensors < min at | bytes/epoch | x torch::save | max abs error | changed predictions |"
echo "|---|---|---|---|---|---|---|"
for s in "${settings[@]}"; do
  IFS=/ read -r k d diff min small <<<"$s"
  diff=${diff:-off}
  args=(--store="$store" --codecs=lossy --repeats=1 --validation_size=10000
        --lossy_keyframe_bits="$k" --lossy_delta_bits="$d"
        --lossy_diffusion="$([[ $diff == on ]] && echo true || echo false)"
        ${HISTORY_BENCH_ARGS:-})
  small_label="16 bits (< 1024)"
  if [[ -n ${min:-} ]]; then
    args+=(--lossy_min_elements="$min" --lossy_small_bits="$small")
    small_label="$small bits (< $min)"
  fi
  json=$(OMP_NUM_THREADS=1 "$bench" "${args[@]}" 2>/dev/null)
  /usr/bin/env python3 - "$k/$d" "$diff" "$small_label" <<PY
import json, sys
r = json.loads('''$json''')["codecs"][0]
print("| %s | %s | %s | %d | %.2f | %.2e | %.3f%% |" % (sys.argv[1], sys.argv[2],
      sys.argv[3], r["bytes_per_epoch"], r["smaller_than_torch_save"],
      r["max_abs_error"], 100 * r["changed_validation_predictions"]))
PY
done
