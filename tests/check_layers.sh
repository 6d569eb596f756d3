#!/bin/sh
# Checks ../shared/DESIGN.md's layering on the sources: a folder includes
# only folders of lower layers (and itself), and hooks/ never names a task
# (robustness/, fairness/), in its sources or its CMakeLists.txt.
#   check_layers.sh SOURCE_ROOT
set -eu
root=$1
status=0
# folder: the folders it may include besides itself
allowed() {
  case $1 in
    common) echo "" ;;
    history) echo "common" ;;
    slicer) echo "common" ;;
    tuner) echo "common history slicer" ;;
    hooks) echo "common history slicer tuner" ;;
    robustness|fairness) echo "common history slicer tuner hooks" ;;
  esac
}
for dir in common history slicer tuner hooks robustness fairness; do
  [ -d "$root/$dir" ] || continue
  ok="$dir $(allowed $dir)"
  for f in "$root/$dir"/*.h "$root/$dir"/*.cc; do
    [ -e "$f" ] || continue
    case $f in *_test.cc) continue ;; esac
    for inc in $(sed -n 's/^#include "\([a-z_]*\)\/.*"/\1/p' "$f" | sort -u); do
      case " common history slicer tuner hooks robustness fairness tools bench examples " in
        *" $inc "*) ;;
        *) continue ;;  # not a project folder (absl/, google/, ...)
      esac
      case " $ok " in
        *" $inc "*) ;;
        *) echo "layering: $f includes $inc/"; status=1 ;;
      esac
    done
  done
done
if grep -n "robustness\|fairness" "$root/hooks/CMakeLists.txt" | grep -v "^[0-9]*:#"; then
  echo "layering: hooks/CMakeLists.txt links a task"
  status=1
fi
[ $status -eq 0 ] && echo "layering: every folder includes only lower layers; hooks/ names no task"
exit $status
