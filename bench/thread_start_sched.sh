#!/bin/sh
# bench/thread_start_sched.sh — where a cold thread start's time goes beyond instructions: for N
# start+join pairs with every start creating its OS thread (STRAND_THREAD_IDLE=0), and for C's
# pthread_create+join, the kernel's scheduler events (perf's sched tracepoints: counts, exact on a
# loaded machine): how many new OS threads were created while the previous one was still exiting
# (its sched_process_exit not yet seen), and how many the kernel placed on another CPU than the
# creator's (each then costs an idle CPU's wake-up for it and one for the creator's join).
# usage: sh bench/thread_start_sched.sh [BUILD_DIR] [N]   (needs perf and root or
#        perf_event_paranoid <= -1 for tracepoints)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
n=${2:-500}
. bench/lib.sh
lua_env "$build"
cc_bench "$build" thread_start_c 2>/dev/null || cc -O2 -pthread -o "$build/bench/thread_start_c" bench/thread_start_c.c
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%s\n' 'local thread = require "strand.thread"' \
  'for _ = 1, tonumber(arg[1]) do thread.start(function() return 1 end):result() end' >"$tmp/t.lua"
count() {  # label command...
  label=$1; shift
  perf record -q -e sched:sched_wakeup_new -e sched:sched_process_exit -o "$tmp/p.data" "$@" >/dev/null 2>&1
  perf script -i "$tmp/p.data" 2>/dev/null | awk -v label="$label" '
    /sched_wakeup_new/ {
      c = $3; gsub(/[\[\]]/, "", c); t = $0; sub(/.*target_cpu=/, "", t)
      p = $0; sub(/.*sched_wakeup_new: comm=[^ ]* pid=/, "", p); sub(/ .*/, "", p)
      n++; if (t + 0 != c + 0) other++
      if (last != "" && !(last in gone)) alive++
      last = p
    }
    /sched_process_exit/ { p = $0; sub(/.*pid=/, "", p); sub(/ .*/, "", p); gone[p] = 1 }
    END { printf "%-32s %5d new OS threads: %5.1f%% made while the previous one was still exiting, %5.1f%% placed on another CPU than the creator\n", label, n, 100 * alive / (n > 1 ? n - 1 : 1), 100 * other / (n ? n : 1) }'
}
count "strand, STRAND_THREAD_IDLE=0" env STRAND_THREAD_IDLE=0 lua5.4 "$tmp/t.lua" "$n"
count "C pthread_create+join" "$build/bench/thread_start_c" "$n"
