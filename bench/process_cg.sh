#!/bin/sh
# bench/process_cg.sh — what a process start+join, a pool apply and an item of a default-chunked
# map cost, in counts a loaded machine does not distort: instructions (callgrind) in the parent
# and in the children, and page faults (perf stat, software counter) in the parent alone and in
# parent + children; each per unit, as a run of N units minus a run of N0. The C floor (fork +
# _exit + waitpid) is measured the same way.
# usage: sh bench/process_cg.sh [BUILD_DIR]   (needs valgrind; faults need perf, else skipped)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
. bench/lib.sh
lua_env "$build"
# a pool's sides watch each other's counter before sleeping (csrc/poollink.c) when they run on
# different CPUs: under callgrind that would count spinning, not work
export STRAND_POOL_SPIN=0
cc_bench "$build" process_c_baseline
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# cg_split DIR ARGS...: callgrind over lua5.4 ARGS, one profile per process and thread in DIR
# (DIR/cg.PID-TID); a child's counts start at its fresh loop (--zero-before=strand_loop_forked:
# not what it inherited). Only main threads (-01) count: under valgrind, which lacks pidfd_open,
# a thread per child stands in for the pidfd (csrc/pidwait.c), and a child's copy of those.
cg_split() {
  d=$1; shift
  mkdir -p "$d"
  valgrind --tool=callgrind --separate-threads=yes --zero-before=strand_loop_forked \
    --callgrind-out-file="$d/cg.%p" lua5.4 "$@" >/dev/null 2>&1
}
# instructions of the parent or of all its children in a cg_split run. The parent is the profile
# with the most instructions (it counts from the start, a child only from its fresh loop on),
# not the lowest pid: pids wrap around (pid_max is 32768 here), and a child then has a lower one.
cg_pid0() {
  for x in "$1"/cg.*-01; do
    echo "$(sed -n 's/^totals: *//p' "$x") $x"
  done | sort -n | tail -1 | sed -n 's/.*cg\.\([0-9]*\)-01$/\1/p'
}
cg_parent() { sed -n 's/^totals: *//p' "$1/cg.$(cg_pid0 "$1")-01"; }
cg_children() {
  p0=$(cg_pid0 "$1")
  for x in "$1"/cg.*-01; do [ "$x" = "$1/cg.$p0-01" ] || sed -n 's/^totals: *//p' "$x"; done |
    awk '{ s += $1 } END { print s + 0 }'
}
# page faults of `lua5.4 ARGS`: $1 = "all" (children included) or "parent" (perf stat -i)
faults() {
  which=$1; shift
  inh=""; [ "$which" = parent ] && inh="-i"
  perf stat $inh -x, -e page-faults -- "$@" 2>&1 >/dev/null | awk -F, '/page-faults/ { print $1 }'
}
have_perf=0
if command -v perf >/dev/null 2>&1 && [ -n "$(faults all true)" ]; then have_perf=1; fi

# row LABEL UNITS N0 N ARGS-BEFORE-N [ARGS-AFTER-N]
row() {
  label=$1 n0=$2 n=$3 pre=$4 post=${5:-}
  cg_split "$tmp/a" bench/process_bench.lua worker $pre $n0 $post
  cg_split "$tmp/b" bench/process_bench.lua worker $pre $n $post
  pi=$(( ($(cg_parent "$tmp/b") - $(cg_parent "$tmp/a")) / (n - n0) ))
  ci=$(( ($(cg_children "$tmp/b") - $(cg_children "$tmp/a")) / (n - n0) ))
  rm -rf "$tmp/a" "$tmp/b"
  pf="-" af="-"
  if [ $have_perf = 1 ]; then
    a0=$(faults all lua5.4 bench/process_bench.lua worker $pre $n0 $post)
    a1=$(faults all lua5.4 bench/process_bench.lua worker $pre $n $post)
    p0=$(faults parent lua5.4 bench/process_bench.lua worker $pre $n0 $post)
    p1=$(faults parent lua5.4 bench/process_bench.lua worker $pre $n $post)
    af=$(awk -v a="$a0" -v b="$a1" -v n="$((n - n0))" 'BEGIN { printf "%.1f", (b - a) / n }')
    pf=$(awk -v a="$p0" -v b="$p1" -v n="$((n - n0))" 'BEGIN { printf "%.1f", (b - a) / n }')
  fi
  printf '%-40s %9d %9d %8s %8s\n' "$label" "$pi" "$ci" "$pf" "$af"
  record "cg_$(echo "$label" | tr -c 'a-z0-9\n' '_')" "$pi $ci $pf $af"
}

printf '%-40s %9s %9s %8s %8s\n' "per unit" "instr:par" "instr:chi" "flt:par" "flt:all"
row "process.start(noop):join()" 20 200 start
row "pool(1):apply(noop)" 200 2000 apply
row "map item, 2 workers, default chunks" 2000 20000 tiny 0
if [ $have_perf = 1 ]; then
  c="$build/bench/process_c_baseline"
  f0=$(perf stat -x, -e page-faults -- "$c" fork 100 2>&1 >/dev/null | awk -F, '/page-faults/ { print $1 }')
  f1=$(perf stat -x, -e page-faults -- "$c" fork 1100 2>&1 >/dev/null | awk -F, '/page-faults/ { print $1 }')
  printf '%-40s %9s %9s %8s %8s\n' "C fork + _exit + waitpid (floor)" "-" "-" "-" \
    "$(awk -v a="$f0" -v b="$f1" 'BEGIN { printf "%.1f", (b - a) / 1000 }')"
fi
