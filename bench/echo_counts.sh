#!/bin/sh
# bench/echo_counts.sh — exact per-round-trip counts of strand's echo server (bench/echo_server_strand.lua)
# by poller, which a loaded machine does not distort: user-space instructions (callgrind) and
# system calls (perf stat -e raw_syscalls:sys_enter), each as the difference between a run of
# T1 and one of T2 round trips over the same N connections, divided by the extra round trips
# (accepts, arming and closes cancel out). Server pinned to CPU 0, bench/echo_client.c on CPU 1.
# (No kernel instruction counts: this VM has no PMU; perf's instructions:k is "not supported".)
# The syscall runs also count the server's user and system CPU (perf's user_time and system_time,
# the same difference: provisional on a loaded machine, unlike the counts). With CACHE=1 callgrind
# simulates the caches too (--cache-sim=yes): D1 and LL misses (reads + writes) per round trip.
# KEV=EVENT,... adds kernel tracepoint counts per round trip to the syscall runs (exact, e.g.
# io_uring:io_uring_submit_req,io_uring:io_uring_poll_arm,io_uring:io_uring_cqe_overflow: the
# requests, poll arms and CQ overflows the kernel did), printed on a line of their own.
# Poller c-uring is the C io_uring server (bench/echo_c_uring.c -f c, multishot recv + SEND SQE).
# usage: sh bench/echo_counts.sh [BUILD_DIR]
#   env: CONNS="1000 10000", POLLERS="epoll uring" (uring-d: STRAND_URING_DEFER=1; c-uring), T1=5000,
#        T2=25000 (callgrind), S1=10000 S2=100000 (syscalls: the uring count is a few per
#        thousand round trips, so the runs are longer), CALLGRIND=1 (0: syscalls only), CACHE=0,
#        SYSCALLS=1 (0: callgrind only), CGOPT="..." (more callgrind options, e.g. a TLB's geometry
#        as a cache: --D1=262144,64,4096 --LL=6291456,12,4096 counts 4 KiB pages missing a 64-entry
#        and a 1,536-entry TLB as D1 and LL misses), CGKEEP=DIR (keep each callgrind profile as
#        DIR/POLLER.CONNS.TRIPS, for callgrind_annotate per function), LUA=lua5.4 (the interpreter:
#        one linked with /usr/lib/x86_64-linux-gnu/liblua5.4.a -Wl,-E names Lua's own functions)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
. bench/lib.sh
CONNS=${CONNS:-"1000 10000"}
POLLERS=${POLLERS:-"epoll uring"}
T1=${T1:-5000}; T2=${T2:-25000}; S1=${S1:-10000}; S2=${S2:-100000}
CALLGRIND=${CALLGRIND:-1}
CACHE=${CACHE:-0}
SYSCALLS=${SYSCALLS:-1}
CGOPT=${CGOPT:-}
CGKEEP=${CGKEEP:-}
LUA=${LUA:-lua5.4}
bin=$build/bench
cc_bench "$build" echo_client echo_c_uring
cgopt="$CGOPT"; [ "$CACHE" = 1 ] && cgopt="--cache-sim=yes $CGOPT"
lua_env "$build"
tmp=$(mktemp -d)
spid=""
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# one run: POLLER N TRIPS TOOL(cg|sys) -> "trips count"
run() {
  tool=$4; env=""; case $1 in uring-d) env="STRAND_URING_DEFER=1"; p=uring ;; *) p=$1 ;; esac
  srv="$LUA bench/echo_server_strand.lua 0 $2"
  [ "$1" = c-uring ] && srv="$bin/echo_c_uring -f c 0 $2"
  : >"$tmp/out"
  if [ "$tool" = cg ]; then
    # shellcheck disable=SC2086
    env STRAND_POLLER=$p $env $PIN_SERVER valgrind --tool=callgrind $cgopt --callgrind-out-file="$tmp/cg" \
      $srv >"$tmp/out" 2>"$tmp/err" &
  else
    # shellcheck disable=SC2086
    env STRAND_POLLER=$p $env $PIN_SERVER perf stat -x, -e raw_syscalls:sys_enter,user_time,system_time${KEV:+,$KEV} -o "$tmp/perf" \
      $srv >"$tmp/out" 2>"$tmp/err" &
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
  if [ "$tool" = cg ] && [ -n "$CGKEEP" ]; then mkdir -p "$CGKEEP"; cp "$tmp/cg" "$CGKEEP/$1.$2.$3"; fi
  set -- $res
  if [ "$tool" = cg ]; then
    # Ir, then (cache-sim) D1 misses and LL data misses, from the events: and summary: lines
    c=$(awk '/^events:/ { for (i = 2; i <= NF; i++) ix[$i] = i }
             /^summary:/ { d1 = ("D1mr" in ix) ? $ix["D1mr"] + $ix["D1mw"] : 0
                           ll = ("DLmr" in ix) ? $ix["DLmr"] + $ix["DLmw"] : 0
                           print $ix["Ir"], d1, ll }' "$tmp/cg")
  else
    c=$(awk -F, -v kev="${KEV:-}" 'BEGIN { nk = split(kev, ks, ",") }
                 /raw_syscalls/ { s = $1 } /user_time/ { u = $1 + 0 } /system_time/ { y = $1 + 0 }
                 { for (i = 1; i <= nk; i++) if ($3 == ks[i]) kc[i] = $1 + 0 }
                 END { printf "%s %s %s", s, u, y; for (i = 1; i <= nk; i++) printf " %s", kc[i] + 0; print "" }' "$tmp/perf")
  fi
  echo "$2 $c"
}
# per-trip difference of two runs' counts: A_TRIPS A_COUNT B_TRIPS B_COUNT SCALE FORMAT
per() { awk -v x="$1" -v a="$2" -v y="$3" -v b="$4" -v k="$5" -v f="$6" 'BEGIN { printf f, k * (b - a) / (y - x) }'; }

echo "echo_counts: 64-byte messages, T1=$T1 T2=$T2 (callgrind) S1=$S1 S2=$S2 (syscalls) round trips, load now: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-6s %-8s %11s %9s %9s %9s %9s %9s\n" conns poller "instr/trip" "D1m/trip" "LLm/trip" "sys/trip" \
  "usr_us" "sys_us"
for n in $CONNS; do
  for p in $POLLERS; do
    ir="n/a"; d1="n/a"; ll="n/a"
    if [ "$CALLGRIND" = 1 ]; then
      set -- $(run "$p" "$n" "$T1" cg); a_t=$1; a_c=$2; a_d=$3; a_l=$4
      set -- $(run "$p" "$n" "$T2" cg); b_t=$1; b_c=$2; b_d=$3; b_l=$4
      ir=$(per "$a_t" "$a_c" "$b_t" "$b_c" 1 "%.0f")
      if [ "$CACHE" = 1 ]; then
        d1=$(per "$a_t" "$a_d" "$b_t" "$b_d" 1 "%.1f"); ll=$(per "$a_t" "$a_l" "$b_t" "$b_l" 1 "%.1f")
      fi
    fi
    sy="n/a"; us="n/a"; ss="n/a"
    if [ "$SYSCALLS" = 1 ]; then
      ra=$(run "$p" "$n" "$S1" sys); rb=$(run "$p" "$n" "$S2" sys)
      set -- $ra; a_t=$1; a_c=$2; a_u=$3; a_s=$4
      set -- $rb; b_t=$1; b_c=$2; b_u=$3; b_s=$4
      sy=$(per "$a_t" "$a_c" "$b_t" "$b_c" 1 "%.3f")
      us=$(per "$a_t" "$a_u" "$b_t" "$b_u" 0.001 "%.2f"); ss=$(per "$a_t" "$a_s" "$b_t" "$b_s" 0.001 "%.2f")
    fi
    printf "%-6s %-8s %11s %9s %9s %9s %9s %9s\n" "$n" "$p" "$ir" "$d1" "$ll" "$sy" "$us" "$ss"
    if [ -n "${KEV:-}" ] && [ "$SYSCALLS" = 1 ]; then
      echo "$ra|$rb|$KEV" | awk -F'|' '{ na = split($1, a, " "); split($2, b, " "); split($3, k, ",")
        printf "         per trip:"; for (i = 5; i <= na; i++) printf " %s %.3f", k[i - 4], (b[i] - a[i]) / (b[1] - a[1]); print "" }'
    fi
  done
done
