#!/bin/sh
# bench/echo_uring.sh — issue 14's kernel question: the C epoll echo floor (bench/echo_c_epoll.c)
# against the C io_uring variants of bench/echo_c_uring.c (and strand), as bench/echo.sh runs them:
# one server at a time pinned to CPU 0, bench/echo_client.c on CPU 1, 64 B messages, every server
# once per rep (ratios to epoll taken per rep), medians of REPS. Then, once per server and count,
# system calls per round trip: perf stat -e raw_syscalls:sys_enter on the server through a run,
# minus the same count through an idle run of as many connections (accepts, arming, closes),
# divided by the round trips.
# usage: sh bench/echo_uring.sh [BUILD_DIR]
#   env: DURATION=3, CONNS="1000 10000", REPS=3, SYSCALLS=1 (0: skip the perf runs),
#        VARIANTS="epoll multi multi:dr single single:dr multi-sys single-sys poll" (NAME[:FLAGS],
#        epoll = the floor, strand = bench/echo_server_strand.lua (strand-uring: with the prototype
#        STRAND_POLLER=uring of docs/uring.md; strand-uring-d: its SINGLE_ISSUER | DEFER_TASKRUN
#        experiment, STRAND_URING_DEFER=1), multi/single/poll = -r, -sys =
#        -s sys, FLAGS = echo_c_uring's -f letters), GATE=rep|none (wait for an idle machine)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
. bench/lib.sh
DURATION=${DURATION:-3}
CONNS=${CONNS:-"1000 10000"}
REPS=${REPS:-3}
SYSCALLS=${SYSCALLS:-1}
GATE=${GATE:-rep}
VARIANTS=${VARIANTS:-"epoll multi multi:dr single single:dr multi-sys single-sys poll"}
bin=$build/bench
cc_bench "$build" echo_client echo_c_epoll echo_c_uring
lua_env "$build"
tmp=$(mktemp -d)
spid=""; ppid_=""
cleanup() {
  [ -n "$ppid_" ] && kill "$ppid_" 2>/dev/null
  [ -n "$spid" ] && kill "$spid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cmd_of() {
  name=${1%%:*}; flags=""
  case $1 in *:*) flags="-f ${1#*:}" ;; esac
  case $name in
    epoll) echo "$bin/echo_c_epoll" ;;
    strand) echo "env STRAND_POLLER=epoll lua5.4 bench/echo_server_strand.lua" ;;
    strand-uring) echo "env STRAND_POLLER=uring lua5.4 bench/echo_server_strand.lua" ;;
    strand-uring-d) echo "env STRAND_POLLER=uring STRAND_URING_DEFER=1 lua5.4 bench/echo_server_strand.lua" ;;
    *-sys) echo "$bin/echo_c_uring -r ${name%-sys} -s sys $flags" ;;
    *) echo "$bin/echo_c_uring -r $name $flags" ;;
  esac
}
starts=0
start() {
  port=""; starts=$((starts + 1)); out="$tmp/out.$starts"
  # shellcheck disable=SC2086
  $PIN_SERVER $(cmd_of "$1") >"$out" 2>"$tmp/err" &
  spid=$!
  i=0
  while ! grep -q '^PORT ' "$out" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 200 ] || ! kill -0 "$spid" 2>/dev/null; then echo "$1 did not start: $(cat "$tmp/err")" >&2; stop; return 0; fi
    sleep 0.05
  done
  port=$(sed -n 's/^PORT //p' "$out")
}
stop() { if [ -n "$spid" ]; then kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; fi; spid=""; }

echo "echo_uring: 64-byte messages, $DURATION s per run, $REPS reps, load now: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-6s %-4s %-12s %10s %12s %8s %8s %s\n" conns rep server "trips/s" "cpu/trip us" "vs epoll" "cpu x" "machine"
for n in $CONNS; do
  r=0
  while [ $r -lt "$REPS" ]; do
    r=$((r + 1)); erate=""; ecpu=""
    flag=-; [ "$GATE" = rep ] && flag=$(wait_idle)
    for v in $VARIANTS; do
      start "$v"; [ -n "$port" ] || continue
      # shellcheck disable=SC2086
      res=$($PIN_LOAD "$bin/echo_client" -p "$spid" "$port" "$n" "$DURATION" 64 2>"$tmp/cerr") || res=""
      stop
      [ -n "$res" ] || { echo "$v: client failed: $(head -c 300 "$tmp/cerr")" >&2; continue; }
      set -- $res
      rate=$1; cpu=$(awk -v c="$4" -v t="$2" 'BEGIN { printf "%.3f", c / t * 1e6 }')
      [ "$v" = epoll ] && { erate=$rate; ecpu=$cpu; }
      set -- $(awk -v a="$rate" -v b="$erate" -v c="$cpu" -v d="$ecpu" \
        'BEGIN { if (b + 0 > 0) printf "%.3f %.3f", a / b, c / d; else print "n/a n/a" }')
      printf "%-6s %-4s %-12s %10s %12s %8s %8s %s load %s\n" "$n" "$r" "$v" "$rate" "$cpu" "$1" "$2" "$flag" \
        "$(cut -d' ' -f1 /proc/loadavg)"
      echo "$n $v $r $rate $cpu" >>"$tmp/rows"
    done
  done
done

# perf stat on the server, through `echo_client ARGS`; prints the syscall count.
count_syscalls() {
  perf stat -x, -e raw_syscalls:sys_enter -p "$spid" -o "$tmp/perf" 2>/dev/null &
  ppid_=$!
  sleep 0.3
  # shellcheck disable=SC2086
  $PIN_LOAD "$bin/echo_client" "$@" >"$tmp/cres" 2>/dev/null || true
  sleep 0.3
  kill -INT "$ppid_" 2>/dev/null; wait "$ppid_" 2>/dev/null || true; ppid_=""
  awk -F, '/raw_syscalls/ { print $1; exit }' "$tmp/perf"
}
if [ "$SYSCALLS" = 1 ] && perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1; then
  for n in $CONNS; do
    for v in $VARIANTS; do
      start "$v"; [ -n "$port" ] || continue
      s_idle=$(count_syscalls -i "$port" "$n" 1)
      stop; start "$v"; [ -n "$port" ] || continue
      s_run=$(count_syscalls -p "$spid" "$port" "$n" "$DURATION" 64)
      trips=$(awk '{ print $2 }' "$tmp/cres")
      stop
      echo "$n $v $(awk -v a="$s_run" -v b="$s_idle" -v t="$trips" 'BEGIN { printf "%.3f", (a - b) / t }')" >>"$tmp/sys"
    done
  done
fi

lua5.4 - "$tmp/rows" "$tmp/sys" <<'LUA'
local rows, order, sys = {}, {}, {}
for line in io.lines(arg[1]) do
  local n, v, rep, rate, cpu = line:match("^(%d+) (%S+) (%d+) (%S+) (%S+)")
  local k = n .. " " .. v
  if not rows[k] then rows[k] = { n = n, v = v, reps = {} }; order[#order + 1] = k end
  rows[k].reps[tonumber(rep)] = { rate = tonumber(rate), cpu = tonumber(cpu) }
end
local f = io.open(arg[2])
if f then for line in f:lines() do local n, v, s = line:match("^(%d+) (%S+) (%S+)"); sys[n .. " " .. v] = s end f:close() end
local function med(t) table.sort(t); local m = #t; if m == 0 then return nil end
  return m % 2 == 1 and t[(m + 1) // 2] or (t[m // 2] + t[m // 2 + 1]) / 2 end
local function mm(t) if #t == 0 then return "n/a" end
  return ("%.2f (%.2f-%.2f)"):format(med(t), math.min(table.unpack(t)), math.max(table.unpack(t))) end
print("summary: median (min-max) over reps of the per-rep ratios to the C epoll floor")
print(("%-6s %-12s %10s %18s %12s %18s %10s"):format("conns", "server", "trips/s", "trips vs epoll", "cpu/trip us", "cpu vs epoll", "sys/trip"))
for _, k in ipairs(order) do
  local r, e = rows[k], rows[rows[k].n .. " epoll"]
  local rates, cpus, rr, cr = {}, {}, {}, {}
  for rep, x in pairs(r.reps) do
    rates[#rates + 1] = x.rate; cpus[#cpus + 1] = x.cpu
    local y = e and e.reps[rep]
    if y then rr[#rr + 1] = x.rate / y.rate; cr[#cr + 1] = x.cpu / y.cpu end
  end
  print(("%-6s %-12s %10.0f %18s %12.2f %18s %10s"):format(r.n, r.v, med(rates), mm(rr), med(cpus), mm(cr), sys[k] or "n/a"))
end
LUA
