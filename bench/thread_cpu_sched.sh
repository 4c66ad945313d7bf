#!/bin/sh
# bench/thread_cpu_sched.sh — where the CPU-bound pair's time goes (threads_bench.lua `run cpu`),
# strand's threads against the two-process floor, from the kernel's scheduler events (CPU time and
# counts are exact on a loaded machine; waits are split by who held the CPU) — the table's columns
# are explained in bench/thread_cpu_sched.lua. REPS rounds, each running one process (one pair:
# one after the other, two at once) per variant in turn, each after waiting for an idle machine
# (bench/lib.sh wait_idle; IDLE_WAIT bounds the wait), so that the variants share the machine's
# drift.
# usage: sh bench/thread_cpu_sched.sh [BUILD_DIR] [ITERATIONS] [REPS] [VARIANTS]
#   VARIANTS: any of procs strand strand_cold strand_noyield strand_epoll (default: procs strand
#   strand_noyield strand_cold); KEEP=DIR keeps the traces; needs perf and root (tracepoints on
#   every CPU).
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
iters=${2:-1e7}
reps=${3:-5}
variants=${4:-"procs strand strand_noyield strand_cold"}
. bench/lib.sh
lua_env "$build"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
i=0
while [ "$i" -lt "$reps" ]; do
  i=$((i + 1))
  for v in $variants; do
    case $v in
      procs) env="" impl=procs ;;
      strand) env="" impl=strand ;;
      strand_cold) env="STRAND_THREAD_IDLE=0" impl=strand ;;
      strand_noyield) env="STRAND_THREAD_YIELD=0" impl=strand ;;
      strand_epoll) env="STRAND_POLLER=epoll" impl=strand ;;
      *) echo "unknown variant $v" >&2; exit 2 ;;
    esac
    mkdir -p "$tmp/$v"
    [ "$(wait_idle)" = idle ] || echo loaded >>"$tmp/$v/loaded"
    cut -d' ' -f1 /proc/loadavg >>"$tmp/$v/load"
    perf record -q -a -k mono -e sched:sched_switch -e sched:sched_wakeup -e sched:sched_wakeup_new \
      -e sched:sched_migrate_task -e sched:sched_process_fork -e sched:sched_process_exit \
      -e sched:sched_process_exec -e tlb:tlb_flush -o "$tmp/p.data" -- env THREADS_MARK=1 $env \
      lua5.4 bench/threads_bench.lua run cpu "$impl" "$iters" 1 "$hz" >"$tmp/$v/out$i" 2>&1
    perf script -F comm,pid,tid,cpu,time,event,trace -i "$tmp/p.data" >"$tmp/$v/s$i" 2>/dev/null
  done
done
for v in $variants; do
  files="" j=0
  while [ "$j" -lt "$reps" ]; do j=$((j + 1)); files="$files $tmp/$v/s$j $tmp/$v/out$j"; done
  loaded=$(cat "$tmp/$v/loaded" 2>/dev/null | wc -l)
  lua5.4 bench/thread_cpu_sched.lua "$v ($reps processes, $loaded not on an idle machine; load $(tr '\n' ' ' <"$tmp/$v/load"))" $files
  cat "$tmp/$v"/out* | grep '^speedup' | sed 's/^/    /'
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP/$v"; cp "$tmp/$v"/* "$KEEP/$v/"; fi
done
