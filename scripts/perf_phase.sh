#!/usr/bin/env bash
# Records the post-training phase of bench/dare_bench with Linux perf (the
# Debian package linux-perf), not the training before it: perf attaches once
# the benchmark has printed the original model's figures, which it does just
# before the first variant's phase.
#   scripts/perf_phase.sh OUT_DIR [dare_bench flags, e.g. --threads=1]
# Then: perf report -i OUT_DIR/perf.data --no-children --sort=dso --stdio -g none
set -euo pipefail
out=$1
shift
mkdir -p "$out"
stdbuf -oL "${BUILD_DIR:-build}"/bench/dare_bench --variants=dare "$@" \
  >"$out/stdout.json" 2>"$out/stderr.txt" &
pid=$!
while ! grep -q '"original"' "$out/stdout.json" 2>/dev/null; do
  sleep 0.1
  kill -0 "$pid" 2>/dev/null || break
done
perf record -F 999 -g -p "$pid" -o "$out/perf.data" >"$out/perf.log" 2>&1 &
perf_pid=$!
wait "$pid"
kill -INT "$perf_pid"
wait "$perf_pid" || true
cat "$out/stdout.json"
