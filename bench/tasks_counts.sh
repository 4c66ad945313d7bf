#!/bin/sh
# bench/tasks_counts.sh — spawn+yield+finish against the bare-coroutine floor in counts a loaded
# machine does not distort: instructions (callgrind), heap bytes and blocks allocated (memcheck's
# "total heap usage") and page faults (perf stat), per task, each as a process doing N tasks
# minus one doing none (bench/tasks_bench.lua's own `run floor|strand N` processes).
# usage: sh bench/tasks_counts.sh [BUILD_DIR] [N] [N_FAULTS]   (needs valgrind; perf for faults)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
n=${2:-20000}
nf=${3:-200000}
. bench/lib.sh
lua_env "$build"
heap() {  # what N -> "bytes blocks"
  valgrind lua5.4 bench/tasks_bench.lua run "$1" "$2" 2>&1 |
    sed -n 's/.*total heap usage: \([0-9,]*\) allocs, [0-9,]* frees, \([0-9,]*\) bytes allocated.*/\2 \1/p' | tr -d ,
}
faults() {  # what N -> page faults
  perf stat -x, -e page-faults lua5.4 bench/tasks_bench.lua run "$1" "$2" 2>&1 >/dev/null | sed -n 's/^\([0-9]*\),.*page-faults.*/\1/p'
}
for what in floor strand; do
  i0=$(cg_count /dev/null bench/tasks_bench.lua run "$what" 0)
  i1=$(cg_count /dev/null bench/tasks_bench.lua run "$what" "$n")
  set -- $(heap "$what" 0) $(heap "$what" "$n")
  line=$(awk -v w="$what" -v n="$n" -v i0="$i0" -v i1="$i1" -v b0="$1" -v k0="$2" -v b1="$3" -v k1="$4" \
    'BEGIN { printf "%-7s %7.1f instructions, %7.1f heap bytes in %.2f blocks", w, (i1 - i0) / n, (b1 - b0) / n, (k1 - k0) / n }')
  if command -v perf >/dev/null 2>&1 && f0=$(faults "$what" 0) && f1=$(faults "$what" "$nf") && [ -n "$f0" ] && [ -n "$f1" ]; then
    line="$line, $(awk -v a="$f0" -v b="$f1" -v n="$nf" 'BEGIN { printf "%.3f page faults", (b - a) / n }')"
  fi
  echo "$line per task"
done
echo "($n tasks under callgrind and memcheck, $nf for page faults; each side alive at once, as in bench/tasks_bench.lua)"
