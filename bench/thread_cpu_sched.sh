#!/bin/sh
# bench/thread_cpu_sched.sh — where the CPU-bound pair's time goes (threads_bench.lua `run cpu`),
# strand's threads against the two-process floor, from the kernel's scheduler events (CPU time and
# counts are exact on a loaded machine; waits are split by who held the CPU) — the table's columns
# are explained in bench/thread_cpu_sched.lua. Each of REPS processes (one pair each: one after
# the other, two at once) runs after waiting for an idle machine (bench/lib.sh wait_idle).
# usage: sh bench/thread_cpu_sched.sh [BUILD_DIR] [ITERATIONS] [REPS] [VARIANTS]
#   VARIANTS: any of procs strand strand_cold strand_noyield strand_epoll (default: procs strand
#   strand_cold); needs perf and root (tracepoints on every CPU).
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
iters=${2:-1e7}
reps=${3:-5}
variants=${4:-"procs strand strand_cold"}
. bench/lib.sh
lua_env "$build"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
for v in $variants; do
  case $v in
    procs) env="" impl=procs ;;
    strand) env="" impl=strand ;;
    strand_cold) env="STRAND_THREAD_IDLE=0" impl=strand ;;
    strand_noyield) env="STRAND_THREAD_YIELD=0" impl=strand ;;
    strand_epoll) env="STRAND_POLLER=epoll" impl=strand ;;
    *) echo "unknown variant $v" >&2; exit 2 ;;
  esac
  files="" loaded=0 load=""
  i=0
  while [ "$i" -lt "$reps" ]; do
    i=$((i + 1))
    [ "$(wait_idle)" = idle ] || loaded=$((loaded + 1))
    load="$load $(cut -d' ' -f1 /proc/loadavg)"
    perf record -q -a -k mono -e sched:sched_switch -e sched:sched_wakeup -e sched:sched_wakeup_new \
      -e sched:sched_migrate_task -e sched:sched_process_fork -e sched:sched_process_exit \
      -e sched:sched_process_exec -e tlb:tlb_flush -o "$tmp/p.data" -- env THREADS_MARK=1 $env \
      lua5.4 bench/threads_bench.lua run cpu "$impl" "$iters" 1 "$hz" >"$tmp/out$i" 2>&1
    perf script -F comm,pid,tid,cpu,time,event,trace -i "$tmp/p.data" >"$tmp/s$i" 2>/dev/null
    files="$files $tmp/s$i $tmp/out$i"
  done
  lua5.4 bench/thread_cpu_sched.lua "$v ($reps processes, $loaded not on an idle machine; load$load)" $files
  cat "$tmp"/out* | grep '^speedup' | sed 's/^/    /'
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP/$v"; cp "$tmp"/out* "$tmp"/s* "$KEEP/$v/"; fi
  rm -f "$tmp"/out* "$tmp"/s*
done
