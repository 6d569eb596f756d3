#!/usr/bin/env bash
# FMT over seeds with the fairness example (examples/adult_fairness): for
# each case, the original model and FMT (double) on the test split, then
# mean ± std over the seeds of accuracy, AAOD and |EOD|, before and after.
#   bench/fmt_seeds.sh [SEEDS] [CASES]     defaults: 10, "adult:sex german:sex"
# Needs build/adult_fairness (scripts/build.sh). Writes the RESULT lines to
# build/fmt_seeds/results.txt and prints the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-10}
cases=${2:-"adult:sex german:sex"}
bin=build/adult_fairness/adult_fairness
# The data directory the build chose (POSTTRAIN_TABULAR_DIR).
tabular=$(sed -n 's/^POSTTRAIN_TABULAR_DIR:PATH=//p' build/CMakeCache.txt)
out=build/fmt_seeds
mkdir -p "$out"
: > "$out/results.txt"
for c in $cases; do
  data=${c%%:*}
  attr=${c##*:}
  for seed in $(seq 1 "$seeds"); do
    rm -rf "$out/store"
    "$bin" --schema="fairness/schemas/$data.schema" \
      --data_dir="$tabular/$data" --protected_attribute="$attr" \
      --seed="$seed" --store="$out/store" | grep '^RESULT' >> "$out/results.txt"
  done
done
awk '
  function mean(a, n,   s, i) { s = 0; for (i = 1; i <= n; i++) s += a[i]; return s / n }
  function sd(a, n,   m, s, i) { m = mean(a, n); s = 0;
    for (i = 1; i <= n; i++) s += (a[i] - m) ^ 2; return n > 1 ? sqrt(s / (n - 1)) : 0 }
  {
    for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    k = v["data"] "-" v["protected"]; n[k]++; keys[k] = 1
    for (f in v) val[k, f, n[k]] = v[f]
  }
  END {
    printf "| case | seeds | accuracy before → after | AAOD before → after | |EOD| before → after | accepted | phase s |\n|---|---|---|---|---|---|---|\n"
    for (k in keys) {
      m = n[k]
      split("acc_before acc_after aaod_before aaod_after abs_eod_before abs_eod_after accepted phase_s", fs, " ")
      line = sprintf("| %s | %d |", k, m)
      for (j = 1; j <= 6; j += 2) {
        for (i = 1; i <= m; i++) { a[i] = val[k, fs[j], i]; b[i] = val[k, fs[j + 1], i] }
        line = line sprintf(" %.4f ± %.4f → %.4f ± %.4f |", mean(a, m), sd(a, m), mean(b, m), sd(b, m))
      }
      acc = 0; ph = 0
      for (i = 1; i <= m; i++) { acc += val[k, "accepted", i]; ph += val[k, "phase_s", i] }
      print line sprintf(" %d/%d | %.1f |", acc, m, ph / m)
    }
  }' "$out/results.txt"
