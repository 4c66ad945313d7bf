#!/bin/sh
# bench/pingpong_floor.sh — the kernel's floor for a one-in-flight exchange between two processes
# on two CPUs (docs/uring.md 4.7): bench/pingpong_c.c in each way of waiting, REPS rounds with the
# configurations interleaved (so that a burst of load hits all alike), median wall and CPU per
# round trip. usage: sh bench/pingpong_floor.sh [BUILD] [N] [REPS] [CPU_A CPU_B] [KIND]
set -eu
BUILD=${1:-build}; N=${2:-2000}; REPS=${3:-7}; CA=${4:-0}; CB=${5:-1}; KIND=${6:-pipe}
mkdir -p "$BUILD/bench"
cc -O2 -Wall -Wextra -o "$BUILD/bench/pingpong_c" "$(dirname "$0")/pingpong_c.c"
CONFIGS=${CONFIGS:-"block: epoll: poll: read: poll:c read:c poll:d read:d poll:f poll:ct poll:cr poll:ci read:ci epoll:s poll:cs poll:fs"}
tmp=$(mktemp)
r=0
while [ "$r" -lt "$REPS" ]; do
  for c in $CONFIGS; do
    w=${c%%:*}; f=${c#*:}
    "$BUILD/bench/pingpong_c" "$w" "$KIND" "$N" "$CA" "$CB" $f 2>/dev/null | awk -v c="$c" '{ print c, $5, $9, $11, $18 }' >>"$tmp" || true
  done
  r=$((r + 1))
done
echo "config wall_us_median (min-max) cpu_parent cpu_child same_cpu_%   [$KIND, CPUs $CA,$CB, $N x $REPS]"
med() { sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "%.1f %.1f %.1f", v[int((NR + 1) / 2)], v[1], v[NR] }'; }
for c in $CONFIGS; do
  set -- $(grep "^$c " "$tmp" | awk '{ print $2 }' | med) x x x
  w=$1; lo=$2; hi=$3
  set -- $(grep "^$c " "$tmp" | awk '{ print $3 }' | med) x
  p=$1
  set -- $(grep "^$c " "$tmp" | awk '{ print $4 }' | med) x
  q=$1
  set -- $(grep "^$c " "$tmp" | awk '{ print $5 }' | med) x
  printf "%-9s %7s (%s-%s) %6s %6s %5s\n" "$c" "$w" "$lo" "$hi" "$p" "$q" "$1"
done
rm -f "$tmp"
