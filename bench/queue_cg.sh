#!/bin/sh
# bench/queue_cg.sh — instructions (callgrind: exact and repeatable on a loaded machine) per
# strand.queue operation, for issue 14's queue row: a put and a get alone (a ring of 16384), a
# put+get loop (bounded 1000 and unbounded), a put into and a get from an unbounded queue's
# overflow, next to Lua's own floor for the same call shapes (s:len(): a method returning a
# number; s:sub(2): a method returning a new 100-byte string); then the two threads of the
# 1P/1C bench, 100-byte strings and integers (callgrind runs them one at a time: spin and sleep
# counts are not the real ones).
# usage: sh bench/queue_cg.sh [BUILD_DIR] [N]   (needs valgrind)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
n=${2:-10000}
. bench/lib.sh
lua_env "$build"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/ops.lua" <<'L'
-- ops.lua N KIND CASE: N operations of CASE on values of KIND ("int" or "str": 100 bytes)
local queue = require "strand.queue"
local N, kind, case = tonumber(arg[1]), arg[2], arg[3]
local v = kind == "int" and 12345 or ("x"):rep(100)
if case == "put" or case == "get" or case == "many" then   -- N puts (then N gets) on a ring
  local q = queue.new(16384)
  for _ = 1, N do q:put(v) end
  if case == "get" then for _ = 1, N do q:get() end end
  if case == "many" then for _ = 1, N // 64 do q:get_many(64) end end
elseif case == "loop1000" or case == "loop0" then   -- N put+get pairs
  local q = queue.new(case == "loop1000" and 1000 or 0)
  for _ = 1, N do q:put(v); q:get() end
elseif case == "oput" or case == "oget" then        -- through an unbounded queue's overflow
  local q = queue.new(0)
  for _ = 1, N do q:put(v) end
  if case == "oget" then for _ = 1, N do q:get() end end
elseif case == "len" then
  for _ = 1, N do local x = v:len() end
elseif case == "sub" then
  local s = v .. "x"
  for _ = 1, N do local x = s:sub(2) end
end
L
cat >"$tmp/two.lua" <<'L'
-- two.lua N MAXSIZE [int]: bench/queue_bench.lua's 1P/1C case with 100-byte strings (integers)
local thread = require "strand.thread"
local queue = require "strand.queue"
local N, max = tonumber(arg[1]), tonumber(arg[2])
local q = queue.new(max)
local c = thread.start(function(qq) local k = 0; while qq:get() ~= nil do k = k + 1 end; return k end, q)
local p = thread.start(function(qq, k, v)
  if v then for _ = 1, k do qq:put(v) end else for i = 1, k do qq:put(i) end end
end, q, N, arg[3] ~= "int" and ("x"):rep(100) or nil)
assert(p:join()); q:close()
local ok, k = c:join(); assert(ok and k == N)
L
count() { cg_count /dev/null "$tmp/ops.lua" "$@"; }
per() {  # label kind case [minus-case]: (count(n) - count(0 or n of minus)) / n
  label=$1 kind=$2 case=$3 minus=${4:-}
  b=$(count "$n" "$kind" "$case")
  if [ -n "$minus" ]; then a=$(count "$n" "$kind" "$minus"); else a=$(count 0 "$kind" "$case"); fi
  printf '%-52s %6d instructions\n' "$label" $(( (b - a) / n ))
}
for kind in int str; do
  what=$([ "$kind" = int ] && echo "integer" || echo "100 B string")
  per "put, $what (the loop's own share included)" "$kind" put
  per "get, $what" "$kind" get put
  per "get_many(64), $what, per item" "$kind" many put
  per "put+get, $what, maxsize 1000" "$kind" loop1000
  per "put+get, $what, unbounded" "$kind" loop0
done
per "put into the overflow, 100 B string" str oput
per "get from the overflow, 100 B string" str oget oput
per "Lua floor: s:len() (a method returning a number)" str len
per "Lua floor: s:sub(2) (a method making a 100 B string)" str sub
# (callgrind runs the threads one at a time: the producer gets far ahead, so an unbounded queue's
# figures are those of a queue whose producer stays ahead: its grown ring, then its overflow)
for kind in str int; do
  for max in 1000 0; do
    items=$(( n * 10 ))
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$tmp/cg.%p" \
      lua5.4 "$tmp/two.lua" "$items" "$max" "$kind" >/dev/null 2>&1
    # the threads in start order: main, the consumer (-02), the producer (-03)
    c=$(sed -n 's/^totals: *//p' "$tmp"/cg.*-02); p=$(sed -n 's/^totals: *//p' "$tmp"/cg.*-03)
    printf '1P/1C threads, %-5s maxsize %-4s: consumer %d per get, producer %d per put\n' \
      "$([ "$kind" = int ] && echo int, || echo 100 B,)" "$max" $(( c / items )) $(( p / items ))
    rm -f "$tmp"/cg.*
  done
done
