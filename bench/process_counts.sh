#!/bin/sh
# bench/process_counts.sh — what one process.start(noop):join() costs the kernel, in counts a
# loaded machine does not distort: page faults of the parent alone and of the children, system
# calls of each side, beside two floors: a bare fork + _exit + waitpid from inside a lua5.4 process
# with strand loaded (process_floor.c: what the kernel charges for forking a process of this size)
# and from a small C program (process_c_baseline.c, the issue's peer).
# Each figure is per start: a run of N starts minus a run of N0, divided by N - N0.
# usage: sh bench/process_counts.sh [BUILD_DIR] [N0] [N]   (needs perf for faults, strace for calls)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
n0=${2:-100}
n=${3:-600}
. bench/lib.sh
lua_env "$build"
cc_bench "$build" process_c_baseline
c="$build/bench/process_c_baseline"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# the same fork + _exit + waitpid from inside a lua5.4 process with strand loaded (process_floor.c):
# the kernel's floor for forking a process of this size
cc -O2 -shared -fPIC $(pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4) \
  -o "$build/bench/process_floor.so" bench/process_floor.c
floor_lua="$tmp/floor.lua"
cat > "$floor_lua" <<'EOF'
package.cpath = arg[1] .. "/bench/?.so;" .. package.cpath
local process = require "strand.process"; require "strand.pool"
process.start(function() end):join()    -- as before a start: arena made, modules loaded
require("process_floor").run(tonumber(arg[2]))
EOF

# faults parent|all CMD...: page faults of CMD alone (perf stat -i: no inherit) or with its children
faults() {
  inh=""; [ "$1" = parent ] && inh="-i"
  shift
  perf stat $inh -x, -e page-faults -- "$@" 2>&1 >/dev/null | awk -F, '/page-faults/ { print $1 }'
}
per() { awk -v a="$1" -v b="$2" -v n="$((n - n0))" 'BEGIN { printf "%.1f", (b - a) / n }'; }

# calls OUT CMD...: strace -f of CMD, each line "pid syscall" (the first pid is the parent)
calls() {
  out=$1; shift
  strace -f -qq -o "$out.raw" "$@" >/dev/null 2>&1
  p0=$(awk 'NR == 1 { print $1 }' "$out.raw")
  awk -v p0="$p0" '{ c = $2; sub(/\(.*/, "", c); if (c ~ /^[a-z_0-9]+$/) print ($1 == p0 ? "parent" : "child"), c }' \
    "$out.raw" > "$out"
}
# syscalls per start of each side: SIDE name count, sorted
calls_per() {
  awk -v n="$((n - n0))" '
    FNR == 1 { f++ }
    { k = $1 " " $2; if (f == 1) a[k]++; else b[k]++ }
    END { for (k in b) { d = (b[k] - a[k]) / n; if (d >= 0.05) printf "%s %.2f\n", k, d } }' "$1" "$2" | sort
}

starts() { lua5.4 bench/process_bench.lua worker start "$1"; }

if command -v perf >/dev/null 2>&1 && [ -n "$(faults all true)" ]; then
  a0=$(faults all lua5.4 bench/process_bench.lua worker start "$n0")
  a1=$(faults all lua5.4 bench/process_bench.lua worker start "$n")
  p0=$(faults parent lua5.4 bench/process_bench.lua worker start "$n0")
  p1=$(faults parent lua5.4 bench/process_bench.lua worker start "$n")
  ca0=$(faults all "$c" fork "$n0"); ca1=$(faults all "$c" fork "$n")
  cp0=$(faults parent "$c" fork "$n0"); cp1=$(faults parent "$c" fork "$n")
  fa0=$(faults all lua5.4 "$floor_lua" "$build" "$n0"); fa1=$(faults all lua5.4 "$floor_lua" "$build" "$n")
  fp0=$(faults parent lua5.4 "$floor_lua" "$build" "$n0"); fp1=$(faults parent lua5.4 "$floor_lua" "$build" "$n")
  pf=$(per "$p0" "$p1"); af=$(per "$a0" "$a1")
  fpf=$(per "$fp0" "$fp1"); faf=$(per "$fa0" "$fa1")
  cpf=$(per "$cp0" "$cp1"); caf=$(per "$ca0" "$ca1")
  printf '%-34s %8s %8s %8s\n' "page faults per start" parent child all
  printf '%-34s %8s %8s %8s\n' "process.start(noop):join()" "$pf" \
    "$(awk -v a="$af" -v p="$pf" 'BEGIN { printf "%.1f", a - p }')" "$af"
  printf '%-34s %8s %8s %8s\n' "fork+_exit+waitpid in that process" "$fpf" \
    "$(awk -v a="$faf" -v p="$fpf" 'BEGIN { printf "%.1f", a - p }')" "$faf"
  printf '%-34s %8s %8s %8s\n' "C fork + _exit + waitpid" "$cpf" \
    "$(awk -v a="$caf" -v p="$cpf" 'BEGIN { printf "%.1f", a - p }')" "$caf"
  record process_faults "$pf $af $fpf $faf $cpf $caf"
else
  echo "page faults: skipped (no usable perf)"
fi

if command -v strace >/dev/null 2>&1; then
  calls "$tmp/s0" lua5.4 bench/process_bench.lua worker start "$n0"
  calls "$tmp/s1" lua5.4 bench/process_bench.lua worker start "$n"
  calls "$tmp/c0" "$c" fork "$n0"
  calls "$tmp/c1" "$c" fork "$n"
  echo "system calls per start (strace -f; exit_group included)"
  calls_per "$tmp/s0" "$tmp/s1" | awk '{ t[$1] += $3; printf "  strand %-6s %-16s %5s\n", $1, $2, $3 }
    END { printf "  strand total: parent %.2f child %.2f\n", t["parent"], t["child"] }'
  calls_per "$tmp/c0" "$tmp/c1" | awk '{ t[$1] += $3; printf "  C      %-6s %-16s %5s\n", $1, $2, $3 }
    END { printf "  C total:      parent %.2f child %.2f\n", t["parent"], t["child"] }'
else
  echo "system calls: skipped (no strace)"
fi
