#!/bin/sh
# bench/echo_counts.sh — exact per-round-trip counts of strand's echo server (bench/echo_server_strand.lua)
# by poller, which a loaded machine does not distort: user-space instructions (callgrind) and
# system calls (perf stat -e raw_syscalls:sys_enter), each as the difference between a run of
# T1 and one of T2 round trips over the same N connections, divided by the extra round trips
# (accepts, arming and closes cancel out). Server pinned to CPU 0, bench/echo_client.c on CPU 1.
# (No kernel instruction counts: this VM has no PMU; perf's instructions:k is "not supported".)
# usage: sh bench/echo_counts.sh [BUILD_DIR]
#   env: CONNS="1000 10000", POLLERS="epoll uring" (uring-d: STRAND_URING_DEFER=1), T1=5000,
#        T2=25000 (callgrind), S1=10000 S2=100000 (syscalls: the uring count is a few per
#        thousand round trips, so the runs are longer), CALLGRIND=1 (0: syscalls only)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
. bench/lib.sh
CONNS=${CONNS:-"1000 10000"}
POLLERS=${POLLERS:-"epoll uring"}
T1=${T1:-5000}; T2=${T2:-25000}; S1=${S1:-10000}; S2=${S2:-100000}
CALLGRIND=${CALLGRIND:-1}
bin=$build/bench
cc_bench "$build" echo_client
lua_env "$build"
tmp=$(mktemp -d)
spid=""
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# one run: POLLER N TRIPS TOOL(cg|sys) -> "trips count"
run() {
  tool=$4; env=""; case $1 in uring-d) env="STRAND_URING_DEFER=1"; p=uring ;; *) p=$1 ;; esac
  : >"$tmp/out"
  if [ "$tool" = cg ]; then
    # shellcheck disable=SC2086
    env STRAND_POLLER=$p $env $PIN_SERVER valgrind --tool=callgrind --callgrind-out-file="$tmp/cg" \
      lua5.4 bench/echo_server_strand.lua 0 "$2" >"$tmp/out" 2>"$tmp/err" &
  else
    # shellcheck disable=SC2086
    env STRAND_POLLER=$p $env $PIN_SERVER perf stat -x, -e raw_syscalls:sys_enter -o "$tmp/perf" \
      lua5.4 bench/echo_server_strand.lua 0 "$2" >"$tmp/out" 2>"$tmp/err" &
  fi
  spid=$!
  i=0
  while ! grep -q '^PORT ' "$tmp/out" 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 600 ] && { echo "server did not start: $(cat "$tmp/err")" >&2; exit 1; }
    sleep 0.05
  done
  port=$(sed -n 's/^PORT //p' "$tmp/out")
  # shellcheck disable=SC2086
  res=$($PIN_LOAD "$bin/echo_client" -n "$3" -p "$spid" "$port" "$2" 600 64)
  i=0
  while kill -0 "$spid" 2>/dev/null; do          # it exits once every connection closed
    i=$((i + 1)); [ $i -gt 1200 ] && { kill "$spid"; echo "server did not exit" >&2; exit 1; }
    sleep 0.05
  done
  wait "$spid" 2>/dev/null || true; spid=""
  set -- $res
  if [ "$tool" = cg ]; then c=$(awk '/^summary:/ { print $2 }' "$tmp/cg")
  else c=$(awk -F, '/raw_syscalls/ { print $1; exit }' "$tmp/perf"); fi
  echo "$2 $c"
}

echo "echo_counts: 64-byte messages, T1=$T1 T2=$T2 (callgrind) S1=$S1 S2=$S2 (syscalls) round trips, load now: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-6s %-8s %14s %12s\n" conns poller "instr/trip" "sys/trip"
for n in $CONNS; do
  for p in $POLLERS; do
    ir="n/a"
    if [ "$CALLGRIND" = 1 ]; then
      set -- $(run "$p" "$n" "$T1" cg); a_t=$1; a_c=$2
      set -- $(run "$p" "$n" "$T2" cg); b_t=$1; b_c=$2
      ir=$(awk -v a="$a_c" -v b="$b_c" -v x="$a_t" -v y="$b_t" 'BEGIN { printf "%.0f", (b - a) / (y - x) }')
    fi
    set -- $(run "$p" "$n" "$S1" sys); a_t=$1; a_c=$2
    set -- $(run "$p" "$n" "$S2" sys); b_t=$1; b_c=$2
    sy=$(awk -v a="$a_c" -v b="$b_c" -v x="$a_t" -v y="$b_t" 'BEGIN { printf "%.3f", (b - a) / (y - x) }')
    printf "%-6s %-8s %14s %12s\n" "$n" "$p" "$ir" "$sy"
  done
done
