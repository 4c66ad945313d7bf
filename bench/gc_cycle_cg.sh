#!/bin/sh
# bench/gc_cycle_cg.sh — instructions per waiting task of one Lua collection, minor (generational
# mode) and full (incremental mode), counted by callgrind (exact on a loaded machine): the floor
# of what any GC pacing costs a server whose live heap is its connections' tasks (docs/internals.md
# "Active connections and the collector").
# usage: sh bench/gc_cycle_cg.sh [BUILD_DIR] [N tasks, 10000] [K collections, 20]
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}; N=${2:-10000}; K=${3:-20}
. bench/lib.sh
lua_env "$build"
command -v valgrind >/dev/null || { echo "needs valgrind" >&2; exit 1; }
for kind in minor full; do
  a=$(cg_count /dev/null bench/gc_cycle_cost.lua "$N" 0 "$kind" | tr -d ,)
  b=$(cg_count /dev/null bench/gc_cycle_cost.lua "$N" "$K" "$kind" | tr -d ,)
  awk -v k="$kind" -v a="$a" -v b="$b" -v n="$N" -v c="$K" 'BEGIN {
    printf "%-5s collection: %.0f instructions per waiting task (%d tasks, %d collections: %.0f each)\n",
      k, (b - a) / c / n, n, c, (b - a) / c }'
done
