#!/bin/sh
# bench/pipe_rt.sh — a strand process.pipe round trip under each poller, REPS rounds interleaved,
# median (min-max) us. CPUS: a taskset list for both processes (0,1: two CPUs, the scheduler
# places them; 1: both on one; bench/process_bench.lua worker pipe), or A/B: parent pinned to CPU
# A and child to CPU B (bench/pipe_pinned.lua). Pollers: uring, epoll, poll, and uring-nowatch
# (STRAND_URING_SPIN=0: io_uring without the watch before sleeping, docs/uring.md 4.7).
# usage: sh bench/pipe_rt.sh [BUILD] [N] [REPS] [CPUS] [POLLERS]
set -eu
BUILD=${1:-build}; N=${2:-2000}; REPS=${3:-7}; CPUS=${4:-0,1}; POLLERS=${5:-uring uring-nowatch epoll}
export LUA_PATH="lua/?.lua;lua/?/init.lua;bench/?.lua;;" LUA_CPATH="$BUILD/?.so;;"
tmp=$(mktemp)
one() {
  case $1 in uring-nowatch) p=uring; w=0 ;; *) p=$1; w=1 ;; esac
  case $CPUS in
    */*) STRAND_POLLER=$p STRAND_URING_SPIN=$w lua5.4 bench/pipe_pinned.lua "$N" "${CPUS%/*}" "${CPUS#*/}" ;;
    *) STRAND_POLLER=$p STRAND_URING_SPIN=$w taskset -c "$CPUS" lua5.4 bench/process_bench.lua worker pipe "$N" ;;
  esac
}
r=0
while [ "$r" -lt "$REPS" ]; do
  for p in $POLLERS; do one "$p" | awk -v p="$p" '{ print p, $2 }' >>"$tmp"; done
  r=$((r + 1))
done
for p in $POLLERS; do
  grep "^$p " "$tmp" | awk '{ print $2 }' | sort -n | awk -v p="$p" -v c="$CPUS" '{ v[NR] = $1 }
    END { printf "pipe round trip, CPUs %-4s %-13s %7.1f us (%.1f-%.1f)\n", c, p, v[int((NR + 1) / 2)], v[1], v[NR] }'
done
rm -f "$tmp"
