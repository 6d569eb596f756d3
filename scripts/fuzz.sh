#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang and runs each for
# SECONDS (default 30) on a copy of its seed corpus (fuzz/corpus/<name>).
#   scripts/fuzz.sh [SECONDS]
# Installs clang and libclang-rt-14-dev when missing. Findings are written
# to build/fuzz/findings/<name>/; the script fails if any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
missing=()
for p in clang libclang-rt-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
    --no-install-recommends "${missing[@]}"
fi
cmake -S fuzz -B build/fuzz -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/fuzz -j "${JOBS:-$(nproc)}"
status=0
for target in build/fuzz/*_fuzzer; do
  name=$(basename "$target" _fuzzer)
  work=build/fuzz/corpus/$name
  findings=build/fuzz/findings/$name
  mkdir -p "$work" "$findings"
  cp -n fuzz/corpus/"$name"/* "$work"/ 2>/dev/null || true
  echo "fuzzing $name for ${seconds}s"
  if ! "$target" -max_total_time="$seconds" -max_len=65536 \
      -artifact_prefix="$findings/" -print_final_stats=1 "$work" \
      2> "build/fuzz/$name.log"; then
    echo "FINDING in $name: see build/fuzz/$name.log and $findings"
    status=1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" \
    "build/fuzz/$name.log" || true
done
exit $status
