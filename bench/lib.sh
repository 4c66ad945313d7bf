# bench/lib.sh — what every bench/*.sh shares: Debian's python3, CPU pinning, the wait for an
# idle machine before each measurement, the results file, lua5.4's paths, compiling the C
# peers, callgrind counts (sourced, not run).

# Debian's own python3 (a pyenv or venv one may come first on PATH and lack gevent).
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

# Server on CPU 0, load on CPU 1 (when there are two CPUs and taskset).
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER="taskset -c 0"; PIN_LOAD="taskset -c 1"
else
  PIN_SERVER=""; PIN_LOAD=""
fi

# wait_idle: waits until the whole machine was busy less than IDLE_BUSY percent (10) over
# IDLE_PROBE seconds (1), at most IDLE_WAIT seconds (30) in all; prints "idle" or, if it never
# got there, "loaded" (the figure measured next is then flagged).
IDLE_BUSY=${IDLE_BUSY:-10}
IDLE_PROBE=${IDLE_PROBE:-1}
IDLE_WAIT=${IDLE_WAIT:-30}
cpu_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6; exit }' /proc/stat; }
wait_idle() {
  [ -r /proc/stat ] || { echo idle; return; }
  start=$(date +%s.%N)
  while :; do
    set -- $(cpu_ticks); t0=$1; i0=$2
    sleep "$IDLE_PROBE"
    set -- $(cpu_ticks); t1=$1; i1=$2
    busy=$(awk -v t="$((t1 - t0))" -v i="$((i1 - i0))" 'BEGIN { print (t > 0 ? int(100 * (t - i) / t) : 0) }')
    if [ "$busy" -lt "$IDLE_BUSY" ]; then echo idle; return; fi
    if awk -v a="$start" -v b="$(date +%s.%N)" -v w="$IDLE_WAIT" 'BEGIN { exit !(b - a >= w) }'; then
      echo loaded; return
    fi
  done
}

# record KEY VALUE...: one line of the results file bench/report.lua turns into latest.md.
record() { [ -n "${RESULTS:-}" ] && echo "$*" >>"$RESULTS"; return 0; }

# lua_env BUILD: lua5.4 finds the tree's modules, bench/'s Lua helpers and BUILD's core.so
# (built first when it is missing).
lua_env() {
  [ -f "$1/strand/core.so" ] || make -s BUILD="$1"
  export LUA_PATH="lua/?.lua;lua/?/init.lua;bench/?.lua;;"
  export LUA_CPATH="$1/?.so;;"
}

# cc_bench BUILD NAME...: compiles each bench/NAME.c into BUILD/bench/NAME.
cc_bench() {
  cc_dir=$1/bench; shift
  mkdir -p "$cc_dir"
  for cc_name in "$@"; do cc -O2 -o "$cc_dir/$cc_name" "bench/$cc_name.c"; done
}

# cg_count OUT ARGS...: the instructions `lua5.4 ARGS` runs as callgrind counts them (exact and
# repeatable on a loaded machine); its profile goes to OUT (/dev/null: none). Needs valgrind.
cg_count() {
  cg_out=$1; shift
  valgrind --tool=callgrind --callgrind-out-file="$cg_out" lua5.4 "$@" 2>&1 | sed -n 's/.*Collected : *//p'
}
