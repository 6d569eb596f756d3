#!/usr/bin/env bash
# Downloads the UCI Adult and Statlog German credit files and checks their
# SHA-256 sums.
#
# Usage:
#   scripts/download_tabular.sh [DIR]             # download into DIR (default data/tabular)
#   scripts/download_tabular.sh --verify-only DIR # only check an existing DIR
#
# Layout of DIR:
#   adult/adult.data  adult/adult.test  adult/adult.names
#   german/german.data  german/german.doc
#
# Exits non-zero, naming the files, when a file is missing or its SHA-256
# differs from the pinned value. german.doc only gets a warning: no official
# checksum for it is known, so its upstream byte identity is unverified.
# Files that already exist with the right checksum are not downloaded again.
set -euo pipefail

readonly UCI_BASE="https://archive.ics.uci.edu/ml/machine-learning-databases"

# relative path | URL | SHA-256 | strict (1) or warn-only (0)
readonly FILES=(
  "adult/adult.data|${UCI_BASE}/adult/adult.data|5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d|1"
  "adult/adult.test|${UCI_BASE}/adult/adult.test|a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05|1"
  "adult/adult.names|${UCI_BASE}/adult/adult.names|c248284c0b5de30c9e1958d6cdd168a34a654758b620e68f46aefa83fc0a576a|1"
  "german/german.data|${UCI_BASE}/statlog/german/german.data|b21f3d81db8071257d5ff1deaeba1fd4303b62712e6fcc9715c7a86202cb5871|1"
  "german/german.doc|${UCI_BASE}/statlog/german/german.doc|69b92cb551111bc37098698288849c96f0fd87ce81a2e54451ff39aa1e53fe49|0"
)

usage() {
  cat <<'EOF'
Usage: download_tabular.sh [DIR]
       download_tabular.sh --verify-only DIR

Downloads the UCI Adult and German credit files into DIR (default
data/tabular) and verifies their SHA-256 sums. With --verify-only, downloads
nothing and only checks the files already in DIR.
EOF
}

die() {
  echo "download_tabular.sh: $*" >&2
  exit 1
}

require_sha256sum() {
  command -v sha256sum >/dev/null 2>&1 || die "sha256sum is required but was not found"
}

sha256_of() {
  local out
  out=$(sha256sum -- "$1")
  echo "${out%% *}"
}

# True (0) when $1 exists and has SHA-256 $2.
matches() {
  [[ -f "$1" ]] && [[ "$(sha256_of "$1")" == "$2" ]]
}

# Fetches URL $1 to path $2 through a temporary file in the same directory,
# so an interrupted download never leaves a partial file under the final name.
fetch() {
  local url="$1" dest="$2" tmp
  tmp="${dest}.part"
  rm -f -- "$tmp"
  if command -v curl >/dev/null 2>&1; then
    if ! curl --fail --silent --show-error --location --retry 3 \
        --output "$tmp" -- "$url"; then
      rm -f -- "$tmp"
      die "download failed: $url"
    fi
  elif command -v wget >/dev/null 2>&1; then
    if ! wget --quiet --tries=3 --output-document="$tmp" -- "$url"; then
      rm -f -- "$tmp"
      die "download failed: $url"
    fi
  else
    die "neither curl nor wget was found"
  fi
  mv -f -- "$tmp" "$dest"
}

# Checks every file under $1; prints one line per file and returns non-zero
# if any strict file is missing or differs.
verify() {
  local dir="$1" entry rel url sum strict path actual
  local -a bad=()
  for entry in "${FILES[@]}"; do
    IFS='|' read -r rel url sum strict <<<"$entry"
    path="${dir}/${rel}"
    if [[ ! -f "$path" ]]; then
      if [[ "$strict" == 1 ]]; then
        echo "MISSING  $rel" >&2
        bad+=("$rel (missing)")
      else
        echo "WARNING  $rel is missing (documentation only)" >&2
      fi
      continue
    fi
    actual=$(sha256_of "$path")
    if [[ "$actual" == "$sum" ]]; then
      echo "OK       $rel"
    elif [[ "$strict" == 1 ]]; then
      echo "MISMATCH $rel: sha256 $actual, expected $sum" >&2
      bad+=("$rel")
    else
      echo "WARNING  $rel: sha256 $actual differs from $sum" \
        "(its upstream identity is unverified; documentation only)" >&2
    fi
  done
  if ((${#bad[@]} > 0)); then
    echo "download_tabular.sh: checksum verification failed in '$dir' for:" \
      "${bad[*]}" >&2
    return 1
  fi
  echo "All required files in '$dir' match their pinned SHA-256."
}

download() {
  local dir="$1" entry rel url sum strict path
  for entry in "${FILES[@]}"; do
    IFS='|' read -r rel url sum strict <<<"$entry"
    path="${dir}/${rel}"
    mkdir -p -- "$(dirname -- "$path")"
    if matches "$path" "$sum"; then
      echo "present  $rel"
      continue
    fi
    echo "fetching $url" >&2
    fetch "$url" "$path"
  done
}

main() {
  local verify_only=0 dir="data/tabular"
  case "${1-}" in
    -h|--help)
      usage
      return 0
      ;;
    --verify-only)
      [[ $# -eq 2 ]] || { usage >&2; return 2; }
      verify_only=1
      dir="$2"
      ;;
    -*)
      usage >&2
      return 2
      ;;
    *)
      [[ $# -le 1 ]] || { usage >&2; return 2; }
      dir="${1:-data/tabular}"
      ;;
  esac
  require_sha256sum
  if ((verify_only)); then
    [[ -d "$dir" ]] || die "'$dir' is not a directory"
  else
    download "$dir"
  fi
  verify "$dir"
}

main "$@"
