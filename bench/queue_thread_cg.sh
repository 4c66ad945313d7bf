#!/bin/sh
# bench/queue_thread_cg.sh — instructions (callgrind: exact on a loaded machine) per strand.queue
# operation inside a strand thread, where bench/queue_bench.lua's producer and consumer run (a
# thread's Lua state has its own allocator, thread.c): put and get on a ring, get_many(64) and
# put_many(64) per item, put into and get from an unbounded queue's overflow, next to Lua's own
# s:sub(2) (a method making a 100-byte string) in a thread. Each figure is (count(N) - count of
# the same script without the measured part) / N, for the thread alone.
# usage: sh bench/queue_thread_cg.sh [BUILD_DIR] [N]   (needs valgrind)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
n=${2:-16000}
. bench/lib.sh
lua_env "$build"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/ops.lua" <<'L'
-- ops.lua N KIND CASE: in a strand thread, N operations of CASE (after the ones it needs first)
local thread = require "strand.thread"
local N, kind, case = tonumber(arg[1]), arg[2], arg[3]
local t = thread.start(function(N, kind, case)
  local queue = require "strand.queue"
  local v = kind == "int" and 12345 or ("x"):rep(100)
  local function fill(q) for _ = 1, N do q:put(v) end end
  if case == "put" then fill(queue.new(16384))
  elseif case == "get" then local q = queue.new(16384); fill(q); for _ = 1, N do q:get() end
  elseif case == "many" then local q = queue.new(16384); fill(q); for _ = 1, N // 64 do q:get_many(64) end
  elseif case == "putmany0" then
    local b = {}; for k = 1, 64 do b[k] = v end
    local q = queue.new(16384); for _ = 1, N // 64 do q:put_many(b) end
  elseif case == "putmany" then
    local b = {}; for k = 1, 64 do b[k] = v end
    local q = queue.new(16384); for _ = 1, N // 64 do q:put_many(b) end; for _ = 1, N do q:get() end
  elseif case == "oput" then fill(queue.new(0))
  elseif case == "oget" then local q = queue.new(0); fill(q); for _ = 1, N do q:get() end
  elseif case == "sub" then local s = v .. "x"; for _ = 1, N do local x = s:sub(2) end
  end
end, N, kind, case)
assert(t:join())
L
count() {  # the thread's instructions (callgrind's second thread: the one strand started)
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$tmp/cg.%p" \
    lua5.4 "$tmp/ops.lua" "$@" >/dev/null 2>&1
  sed -n 's/^totals: *//p' "$tmp"/cg.*-02
  rm -f "$tmp"/cg.*
}
per() {  # label kind case minus-case|"": (count(n, case) - count(n, minus) or count(0, case)) / n
  b=$(count "$n" "$2" "$3")
  if [ -n "$4" ]; then a=$(count "$n" "$2" "$4"); else a=$(count 0 "$2" "$3"); fi
  printf '%-50s %6d instructions\n' "$1" $(( (b - a) / n ))
}
for kind in int str; do
  what=$([ "$kind" = int ] && echo "integer" || echo "100 B string")
  per "put, $what" "$kind" put ""
  per "get, $what" "$kind" get put
  per "get_many(64), $what, per item" "$kind" many put
  per "put_many(64), $what, per item" "$kind" putmany0 ""
done
per "put into the overflow, 100 B string" str oput ""
per "get from the overflow, 100 B string" str oget oput
per "Lua floor in a thread: s:sub(2)" str sub ""
