#!/bin/sh
# bench/queue_paths.sh — where bench/queue_bench.lua's 1P/1C items go (issue 14's queue row): a
# build with queue.c's path counters (-DSTRAND_QUEUE_STATS, in BUILD_DIR/qstats) runs
# bench/queue_strand.lua for each row (int / 100 B, maxsize 1000 / unbounded) and prints how
# many puts went into the ring lock-free or locked (and then into the ring or the overflow), how
# many items moves carried from the overflow to the ring (by putters, by getters), the gets of
# each path, wake-ups, sleeps and spins; then, with strace when it is installed, the system
# calls per item of a plain build. Counts cover both rounds (the warm-up's ITEMS/4 and ITEMS).
# They follow the two threads' relative speed: measured on a loaded machine they describe that
# machine (say so).
# usage: sh bench/queue_paths.sh [BUILD_DIR] [ITEMS]
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
items=${2:-1000000}
. bench/lib.sh
make -s BUILD="$build/qstats" OPT="-O2 -g -DSTRAND_QUEUE_STATS" all >/dev/null
lua_env "$build"
pin=""
command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ] && pin="taskset -c 0,1"
total=$(( items + items / 4 ))
for kind in int str; do
  for max in 1000 0; do
    echo "== 1P/1C $kind maxsize $max ($total items in both rounds)"
    STRAND_QUEUE_STATS=1 LUA_CPATH="$build/qstats/?.so;;" $pin lua5.4 bench/queue_strand.lua 1 1 "$items" "$max" "$kind" 2>&1 |
      awk -v n="$total" '/^qstat/ { c = $NF; $1 = ""; $NF = ""; printf "  %-66s %9d  %.4f per item\n", $0, c, c / n; next } { print "  " $0 }'
    if command -v strace >/dev/null 2>&1; then
      out=$(mktemp)
      strace -f -c -o "$out" $pin lua5.4 bench/queue_strand.lua 1 1 "$items" "$max" "$kind" >/dev/null
      awk -v n="$total" '$NF ~ /^(futex|read|write|io_uring_enter|sched_yield|epoll_wait|poll|ppoll|total)$/ {
          printf "  syscalls: %-16s %8d  %.5f per item\n", $NF, $4, $4 / n }' "$out"
      rm -f "$out"
    fi
  done
done
