#!/bin/sh
# bench/echo.sh — echo round trips per second at 1000 and 10000 connections: a strand server (one
# task per connection) against a plain C epoll server (the floor) and the peers installed (Python
# selectors, luv, cqueues, LuaSocket's select loop, gevent), with the load generator
# (bench/echo_client.c) in its own process. One server at a time, pinned to CPU 0, the load on
# CPU 1; each rep waits for an idle machine (bench/lib.sh) and runs every server once, so a
# rep's ratios to C are taken side by side. Also the server's CPU per round trip, and (once per
# server, at the largest count) its RSS per active and per idle connection.
# "c_uring" is a second C line beside the floor (which stays the epoll server, as issue 14 defines
# it): bench/echo_c_uring.c's strongest variant (multishot recv into a provided-buffer ring, a
# SEND SQE per echo, IORING_SETUP_COOP_TASKRUN, one io_uring_enter per loop turn); its variants
# side by side: bench/echo_uring.sh. Its RSS figures are its fixed 32 MB of provided buffers
# (16384 x 2 KB, cycled FIFO by the kernel), not a per-connection cost.
# Active RSS is the peak in steady state: the server's VmRSS sampled every 0.1 s (by the load
# generator) through a run of STEADY_TRIPS round trips per connection (60: 600,000 at 10,000
# connections), its largest value minus the VmRSS before the first connection, per connection.
# A run of a fixed time would understate it: the servers with a collector keep garbage between
# cycles (Lua's default incremental GC lets the heap double), and at 10,000 connections reach
# their peak only after some round trips per connection: strand ~25 (~3 s; 60 round trips are
# ~10 of its GC cycles), cqueues 36-47 (its second cycle under load), luv anywhere from ~10 to
# ~85 (its RSS also falls as glibc trims the heap: its peak varies by up to a third between
# runs), gevent creeps up ~2% over the run, selectors and C are flat. A 1 s run sees none of that and a loaded machine does fewer trips per second,
# hence a window of round trips, not of seconds. Every server is run as a user runs it (no GC
# setting). "rss end" (VmRSS at the end of each timed run) is shown but not reported.
# Per idle connection: all connections accepted and quiet, 0.5 s later.
# usage: sh bench/echo.sh [BUILD_DIR]
#   env: DURATION=5 (s per run), CONNS="1000 10000", MSGSIZE=64, REPS=5, STEADY_TRIPS=50 (round
#        trips per connection in the active-RSS run; 0: none), STEADY_MAX=60 (s, its bound),
#        SERVERS="c c_uring strand selectors luv cqueues luasocket gevent" (those installed are run),
#        GATE=run|rep (wait for idle before every run / every rep), RESULTS=file (lines for
#        bench/report.lua), IDLE_* (bench/lib.sh)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
. bench/lib.sh
DURATION=${DURATION:-5}
CONNS=${CONNS:-"1000 10000"}
MSGSIZE=${MSGSIZE:-64}
REPS=${REPS:-5}
SERVERS=${SERVERS:-"c c_uring strand selectors luv cqueues luasocket gevent"}
GATE=${GATE:-run}          # wait for an idle machine before each server's run, or each rep's
STEADY_TRIPS=${STEADY_TRIPS:-60}
STEADY_MAX=${STEADY_MAX:-60}
bin=$build/bench
cc_bench "$build" echo_client echo_c_epoll
cc_bench "$build" echo_c_uring 2>/dev/null || true    # needs <linux/io_uring.h> of 5.19+
lua_env "$build"

tmp=$(mktemp -d)
spid=""; cpid=""; starts=0
cleanup() {
  [ -n "$cpid" ] && kill "$cpid" 2>/dev/null
  [ -n "$spid" ] && kill "$spid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The command of server NAME, or nothing when it is not installed.
server_cmd() {
  case $1 in
    c) echo "$bin/echo_c_epoll" ;;
    c_uring) [ -x "$bin/echo_c_uring" ] && "$bin/echo_c_uring" -t 2>/dev/null && echo "$bin/echo_c_uring -r multi -f c" ;;
    strand) echo "lua5.4 bench/echo_server_strand.lua" ;;
    selectors) "$PY" -c 'import selectors' 2>/dev/null && echo "$PY bench/echo_selectors.py" ;;
    luv) lua5.4 -e 'require "luv"' 2>/dev/null && echo "lua5.4 bench/echo_luv.lua" ;;
    cqueues) lua5.4 -e 'require "cqueues"' 2>/dev/null && echo "lua5.4 bench/echo_cqueues.lua" ;;
    luasocket) lua5.4 -e 'require "socket"' 2>/dev/null && echo "lua5.4 bench/echo_luasocket.lua" ;;
    gevent) "$PY" -c 'import gevent' 2>/dev/null && echo "$PY bench/echo_gevent.py" ;;
  esac
  return 0
}

# Whether server NAME can hold N connections (LuaSocket's select(2) stops at FD_SETSIZE).
fits() { [ "$1" != luasocket ] || [ "$2" -le 1000 ]; }

# start NAME: starts it pinned; sets spid and port (empty port: it did not start).
start() {
  port=""
  starts=$((starts + 1)); out="$tmp/out.$starts"   # a fresh file: no stale PORT line
  # shellcheck disable=SC2086
  $PIN_SERVER $(server_cmd "$1") >"$out" 2>"$tmp/err" &
  spid=$!
  i=0
  while ! grep -q '^PORT ' "$out" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 200 ] || ! kill -0 "$spid" 2>/dev/null; then
      echo "$1 did not start:" >&2; cat "$tmp/err" >&2; stop; return 0
    fi
    sleep 0.05
  done
  port=$(sed -n 's/^PORT //p' "$out")
}
stop() { if [ -n "$spid" ]; then kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; fi; spid=""; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
nfds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }

names=""
for s in $SERVERS; do [ -n "$(server_cmd "$s")" ] && names="$names $s"; done
echo "echo: ${MSGSIZE}-byte messages, ${DURATION} s per run, $REPS reps; servers:$names"
echo "pinning: server '${PIN_SERVER:-none}', load '${PIN_LOAD:-none}'"
printf "%-6s %-4s %-10s %10s %12s %14s %7s %s\n" conns rep server "trips/s" "cpu/trip us" "rss end B/conn" "vs C" machine

for n in $CONNS; do
  r=0
  while [ $r -lt "$REPS" ]; do
    r=$((r + 1))
    cval=""
    [ "$GATE" = rep ] && flag=$(wait_idle)
    for name in $names; do
      fits "$name" "$n" || continue
      [ "$GATE" = rep ] || flag=$(wait_idle)
      start "$name"
      [ -n "$port" ] || continue
      base=$(rss_kib "$spid")
      # shellcheck disable=SC2086
      res=$($PIN_LOAD "$bin/echo_client" -p "$spid" "$port" "$n" "$DURATION" "$MSGSIZE" 2>"$tmp/cerr") || res=""
      stop
      if [ -z "$res" ]; then echo "$name: client failed: $(head -c 300 "$tmp/cerr")" >&2; continue; fi
      set -- $res        # trips/s trips seconds cpu rss peak trips_at_peak peak_before_last_fifth
      rate=$1; cpu_us=$(awk -v c="$4" -v t="$2" 'BEGIN { if (c >= 0 && t > 0) printf "%.3f", c / t * 1e6; else print "n/a" }')
      rss_b=$(awk -v a="$5" -v b="$base" -v n="$n" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }')
      [ "$name" = c ] && cval=$rate
      vs=$(awk -v a="$rate" -v b="$cval" 'BEGIN { if (b + 0 > 0) printf "%.3f", a / b; else print "n/a" }')
      printf "%-6s %-4s %-10s %10s %12s %14s %7s %s\n" "$n" "$r" "$name" "$rate" "$cpu_us" "$rss_b" "$vs" "$flag"
      record "echo $n $name $r $rate $cpu_us $rss_b $flag"
      echo "$n $name $r $rate $cpu_us $rss_b" >>"$tmp/rows"
    done
  done
done

# Summary: per connection count and server, the median (min-max) over reps of round trips/s and
# of the per-rep ratios to C (the same rep's C run), and the median CPU per round trip.
[ -f "$tmp/rows" ] && lua5.4 - "$tmp/rows" <<'LUA'
local rows, order = {}, {}
for line in io.lines(arg[1]) do
  local n, name, rep, rate, cpu = line:match("^(%d+) (%S+) (%d+) (%S+) (%S+)")
  n, rep = tonumber(n), tonumber(rep)
  local key = n .. " " .. name
  if not rows[key] then rows[key] = { n = n, name = name, reps = {} }; order[#order + 1] = key end
  rows[key].reps[rep] = { rate = tonumber(rate), cpu = tonumber(cpu) }
end
local function med(t)
  table.sort(t)
  if #t == 0 then return nil end
  return #t % 2 == 1 and t[(#t + 1) // 2] or (t[#t // 2] + t[#t // 2 + 1]) / 2
end
print("summary: median (min-max) over reps; ratios to C taken per rep")
print(("%-6s %-10s %22s %22s %12s"):format("conns", "server", "trips/s", "vs C", "cpu/trip us"))
for _, key in ipairs(order) do
  local r, c = rows[key], rows[rows[key].n .. " c"]
  local rates, ratios, cpus = {}, {}, {}
  for rep, x in pairs(r.reps) do
    rates[#rates + 1] = x.rate
    if x.cpu then cpus[#cpus + 1] = x.cpu end
    local y = c and c.reps[rep]
    if y and y.rate > 0 then ratios[#ratios + 1] = x.rate / y.rate end
  end
  local function mm(t, f)
    if #t == 0 then return "n/a" end
    local lo, hi = math.min(table.unpack(t)), math.max(table.unpack(t))
    return (f .. " (" .. f .. "-" .. f .. ")"):format(med(t), lo, hi)
  end
  print(("%-6d %-10s %22s %22s %12s"):format(r.n, r.name, mm(rates, "%.0f"), mm(ratios, "%.2f"),
    #cpus > 0 and ("%.2f"):format(med(cpus)) or "n/a"))
end
LUA

n=$(for c in $CONNS; do echo "$c"; done | sort -n | tail -1)

# Active connections, steady state: the peak RSS per connection over STEADY_TRIPS round trips per
# connection (one run per server; see the header). "short": STEADY_MAX came first; "peak at":
# round trips per connection done when the peak was first sampled; "last fifth": how much of the
# peak (over the baseline) came in the run's last fifth (above 2%: flagged as still rising);
# "hwm": VmHWM at the end, the kernel's own peak (the accept ramp included), a check on sampling.
if [ "$STEADY_TRIPS" -gt 0 ]; then
  echo "active connections: $n, peak RSS per connection over $STEADY_TRIPS round trips per connection (one run per server)"
  printf "%-10s %12s %10s %8s %16s %11s %9s %s\n" server "B/conn peak" "trips/s" "s" "peak at trips/c" "last fifth" "hwm" machine
  for name in $names; do
    fits "$name" "$n" || continue
    flag=$(wait_idle)
    start "$name"
    [ -n "$port" ] || continue
    base=$(rss_kib "$spid")
    # shellcheck disable=SC2086
    res=$($PIN_LOAD "$bin/echo_client" -p "$spid" -n $((STEADY_TRIPS * n)) "$port" "$n" "$STEADY_MAX" "$MSGSIZE" \
          2>"$tmp/cerr") || res=""
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$spid/status" 2>/dev/null || echo 0)
    stop
    if [ -z "$res" ]; then echo "$name: client failed: $(head -c 300 "$tmp/cerr")" >&2; continue; fi
    hwm=$(awk -v h="${hwm:-0}" -v b="$base" -v n="$n" 'BEGIN { printf "%.0f", (h - b) * 1024 / n }')
    set -- $res
    [ "$2" -ge $((STEADY_TRIPS * n)) ] && full=full || full=short
    set -- $(awk -v r="$1" -v t="$2" -v s="$3" -v pk="$6" -v pt="$7" -v p45="$8" -v b="$base" -v n="$n" \
      'BEGIN { printf "%.0f %.0f %.1f %.1f %.1f", (pk - b) * 1024 / n, r, s, pt / n,
               (pk > b ? 100 * (pk - p45) / (pk - b) : 0) }')
    printf "%-10s %12s %10s %8s %16s %10s%% %9s %s%s\n" "$name" "$1" "$2" "$3" "$4" "$5" "$hwm" "$flag" \
      "$([ "$full" = full ] || echo ", short: ${STEADY_MAX} s came first")"
    record "echo_active $n $name $STEADY_TRIPS $1 $4 $3 $full $5 $flag"
  done
fi

# Idle connections: RSS per connection once they are all accepted and quiet (one run each).
echo "idle connections: $n, RSS per connection (one run per server)"
for name in $names; do
  fits "$name" "$n" || continue
  flag=$(wait_idle)
  start "$name"
  [ -n "$port" ] || continue
  base=$(rss_kib "$spid"); fd0=$(nfds "$spid")
  # shellcheck disable=SC2086
  $PIN_LOAD "$bin/echo_client" -i "$port" "$n" 60 >/dev/null 2>&1 &
  cpid=$!
  i=0
  while [ "$(nfds "$spid")" -lt $((fd0 + n)) ] && [ $i -lt 400 ]; do i=$((i + 1)); sleep 0.05; done
  sleep 0.5
  rss=$(rss_kib "$spid"); got=$(( $(nfds "$spid") - fd0 ))
  kill "$cpid" 2>/dev/null || true; wait "$cpid" 2>/dev/null || true; cpid=""
  stop
  if [ "$got" -lt "$n" ]; then echo "$name: only $got of $n connections accepted" >&2; continue; fi
  rss_b=$(awk -v a="$rss" -v b="$base" -v n="$n" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }')
  printf "%-10s %8s B per idle connection %s\n" "$name" "$rss_b" "$flag"
  record "echo_idle $n $name 1 $rss_b $flag"
done
