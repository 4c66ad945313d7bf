#!/bin/sh
# bench/process_wall.sh — where the wall time of one start+join goes, phase by phase, beside the
# same cycle of a small C program (fork + _exit + waitpid, process_c_baseline.c) and of a bare
# fork from inside a lua5.4 with strand loaded (process_floor.c): a system-wide `perf record` of
# scheduler and fork/exit tracepoints (timestamps, not totals: a loaded machine stretches some
# cycles, the medians and minima of 300 hold), read by bench/process_wall.lua. Each program runs
# pinned to CPUS (default "0,1", as process_bench.lua; "0" puts both sides on one CPU, where the
# phases add up), after waiting for an idle machine. Also prints what a page fault of each kind
# costs here (process_faultcost.c): the phases are mostly faults.
# usage: sh bench/process_wall.sh [BUILD_DIR] [N] [CPUS...]   (needs perf with tracepoints)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
n=${2:-300}
shift 2 2>/dev/null || shift $#
cpus=${*:-"0,1 0"}
. bench/lib.sh
lua_env "$build"
cc_bench "$build" process_c_baseline process_faultcost
cc -O2 -shared -fPIC $(pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4) \
  -o "$build/bench/process_floor.so" bench/process_floor.c
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/floor.lua" <<'EOF'
package.cpath = arg[1] .. "/bench/?.so;" .. package.cpath
local process = require "strand.process"; require "strand.pool"
process.start(function() end):join()    -- as before a start: arena made, modules loaded
print(("us %.3f"):format(require("process_floor").run(tonumber(arg[2]))))
EOF
ev=syscalls:sys_enter_clone,syscalls:sys_exit_clone,syscalls:sys_enter_exit_group
ev=$ev,sched:sched_switch,sched:sched_wakeup,sched:sched_wakeup_new,sched:sched_process_exit
if ! perf record -q -a -o "$tmp/probe.data" -e "$ev" -- true >/dev/null 2>&1; then
  echo "process_wall: perf cannot record these tracepoints here (root or perf_event_paranoid)"
  exit 0
fi

# wall LABEL CPUS CMD...: the cycle phases of CMD (the first process that forks is the parent)
wall() {
  label=$1; set_cpus=$2; shift 2
  state=$(wait_idle)
  # (the traced program's own pid: sh execs taskset, which execs it; the whole machine is traced)
  out=$(perf record -q -a -o "$tmp/w.data" -e "$ev" -- \
    sh -c 'echo $$ > "$0"; exec taskset -c "$@"' "$tmp/pid" "$set_cpus" "$@" 2>/dev/null)
  pid=$(cat "$tmp/pid")
  echo "== $label, CPUs $set_cpus ($state; its own figure, traced: $(echo "$out" | awk '/^us/ { print $2 }') us)"
  perf script -i "$tmp/w.data" 2>/dev/null | lua5.4 bench/process_wall.lua "$pid" "$label"
}

echo "page fault costs here, us each (min of 7): $("$build/bench/process_faultcost" 7)"
for c in $cpus; do
  wall "C fork+_exit+waitpid" "$c" "$build/bench/process_c_baseline" fork "$n"
  wall "bare fork in lua5.4+strand" "$c" lua5.4 "$tmp/floor.lua" "$build" "$n"
  wall "process.start(noop):join()" "$c" lua5.4 bench/process_bench.lua worker start "$n"
done
