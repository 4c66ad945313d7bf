#!/bin/sh
# bench/pipe_rt.sh — a strand process.pipe round trip (bench/process_bench.lua worker pipe) under
# each poller, REPS rounds interleaved, median (min-max) us; CPUS is taskset's list (0,1: the two
# processes on two CPUs; 1: both on one). usage: sh bench/pipe_rt.sh [BUILD] [N] [REPS] [CPUS] [POLLERS]
set -eu
BUILD=${1:-build}; N=${2:-2000}; REPS=${3:-7}; CPUS=${4:-0,1}; POLLERS=${5:-uring epoll}
export LUA_PATH="lua/?.lua;lua/?/init.lua;bench/?.lua;;" LUA_CPATH="$BUILD/?.so;;"
tmp=$(mktemp)
r=0
while [ "$r" -lt "$REPS" ]; do
  for p in $POLLERS; do
    STRAND_POLLER=$p taskset -c "$CPUS" lua5.4 bench/process_bench.lua worker pipe "$N" | awk -v p="$p" '{ print p, $2 }' >>"$tmp"
  done
  r=$((r + 1))
done
for p in $POLLERS; do
  grep "^$p " "$tmp" | awk '{ print $2 }' | sort -n | awk -v p="$p" -v c="$CPUS" '{ v[NR] = $1 }
    END { printf "pipe round trip, CPUs %s, %-5s %7.1f us (%.1f-%.1f)\n", c, p, v[int((NR + 1) / 2)], v[1], v[NR] }'
done
rm -f "$tmp"
