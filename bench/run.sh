#!/bin/sh
# `make bench`: every benchmark in bench/, one at a time, each figure gated on an idle machine
# (bench/lib.sh), then bench/results/latest.md (bench/report.lua) with the machine, versions,
# date, command and issue 14's table. QUICK=1: fewer reps and shorter runs (under 3 minutes).
# $1 = build dir. env: REPS, DURATION, CONNS, IDLE_BUSY/IDLE_PROBE/IDLE_WAIT (see bench/lib.sh)
set -u
cd "$(dirname "$0")/.."
build=${1:-build}
export LUA_PATH="lua/?.lua;lua/?/init.lua;bench/?.lua;;"
export LUA_CPATH="$build/?.so;;"
if [ "${QUICK:-}" = 1 ]; then
  export REPS="${REPS:-3}" DURATION="${DURATION:-1}" IDLE_PROBE="${IDLE_PROBE:-0.3}" IDLE_WAIT="${IDLE_WAIT:-1}" \
         GATE="${GATE:-rep}"
  cmd="QUICK=1 make bench"
else
  export REPS="${REPS:-5}" DURATION="${DURATION:-5}" IDLE_PROBE="${IDLE_PROBE:-1}" IDLE_WAIT="${IDLE_WAIT:-60}" \
         GATE="${GATE:-run}"
  cmd="make bench"
fi
export CONNS="${CONNS:-1000 10000}" QUICK="${QUICK:-}"
mkdir -p bench/results
RESULTS=$(mktemp); export RESULTS
trap 'rm -f "$RESULTS"' EXIT
t0=$(date +%s)

{
  echo "meta date $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "meta command $cmd (REPS=$REPS DURATION=$DURATION CONNS=\"$CONNS\"; strand $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo "meta nproc $(nproc)"
  echo "meta cpu $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "meta kernel $(uname -r)"
  echo "meta versions $(dpkg-query -W -f='${Package} ${Version}, ' lua5.4 lua-luv lua-cqueues lua-socket python3 python3-gevent 2>/dev/null | sed 's/, $//'); $(cc --version | head -1)"
  echo "meta method echo: one server at a time pinned to CPU 0, the load generator (bench/echo_client.c, its own process) on CPU 1, $DURATION s per run (active RSS per connection: the peak over one run of ${STEADY_TRIPS:-60} round trips per connection per server, bench/echo.sh's header); every other figure from its own process; each ${GATE} waits until the machine was under ${IDLE_BUSY:-10}% busy over ${IDLE_PROBE} s (at most ${IDLE_WAIT} s, else flagged loaded); medians of $REPS reps"
} >>"$RESULTS"

for step in "sh bench/echo.sh $build" "lua5.4 bench/tasks_bench.lua" "lua5.4 bench/threads_bench.lua $build" \
            "lua5.4 bench/queue_bench.lua"; do
  echo "### $step"
  $step || echo "($step failed)"
done
if [ "${QUICK:-}" != 1 ]; then
  echo "### bench/serial_bench.lua"
  lua5.4 bench/serial_bench.lua || echo "(bench/serial_bench.lua failed)"
fi
# the other areas' benches (each prints its own ratios; the report above covers issue 14's rows)
if [ "${QUICK:-}" != 1 ]; then
for env in WORK=0 WORK=3000 PIPELINE=32; do
  echo "### $env bench/server_bench.sh"
  env "$env" sh bench/server_bench.sh "$build" || echo "(bench/server_bench.sh failed)"
done
for b in bench/process_bench.lua bench/ssh_bench.lua; do
  echo "### $b"
  lua5.4 "$b" "$build" || echo "($b failed)"
done
if command -v valgrind >/dev/null 2>&1; then
  echo "### bench/process_cg.sh"
  sh bench/process_cg.sh "$build" || echo "(bench/process_cg.sh failed)"
fi
echo "### bench/socket_idle_memory.lua"
lua5.4 bench/socket_idle_memory.lua 10000 "$build" || echo "(bench/socket_idle_memory.lua failed)"
echo "### bench/object_memory.lua"
STRAND_BUILD="$build" lua5.4 bench/object_memory.lua || echo "(bench/object_memory.lua failed)"
fi
echo "meta notes Run time: $(( $(date +%s) - t0 )) s." >>"$RESULTS"
lua5.4 bench/report.lua "$RESULTS" >bench/results/latest.md
cp "$RESULTS" bench/results/latest.raw
echo "### bench/results/latest.md"
cat bench/results/latest.md
