-- bench/queue_strand.lua — strand's side of bench/queue_bench.lua, in its own process (pinned by
-- the caller as the C floor is): PRODUCERS producer threads and CONSUMERS consumer threads move
-- ITEMS integers or 100-byte strings through a strand.queue(MAXSIZE) (0: unbounded). Timed as
-- bench/queue_c_baseline.c: the exchange runs twice, the first (a quarter of the items) as a
-- warm-up; the second from the first producer's first put to the last consumer's end (each
-- thread reads the clock itself: thread start is not in it).
-- usage: lua5.4 bench/queue_strand.lua PRODUCERS CONSUMERS ITEMS MAXSIZE int|str  -> "items/s N"
local strand = require "strand"
local thread = require "strand.thread"
local queue = require "strand.queue"

local np, nc, items, maxsize, kind = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3]),
  tonumber(arg[4]), arg[5]
assert(np and nc and items and maxsize and (kind == "int" or kind == "str"), "usage: P C ITEMS MAXSIZE int|str")
local TEXT = ("x"):rep(100)

local function round(n)
  local q = queue.new(maxsize)
  local per = n // np
  local consumers, producers = {}, {}
  for i = 1, nc do
    consumers[i] = thread.start(function(qq)
      local now = require("strand").now
      local k = 0
      while qq:get() ~= nil do k = k + 1 end
      return k, now()
    end, q)
  end
  for i = 1, np do
    producers[i] = thread.start(function(qq, m, ki, text)
      local t0 = require("strand").now()
      if ki == "int" then
        for v = 1, m do qq:put(v) end
      else
        for _ = 1, m do qq:put(text) end
      end
      return t0
    end, q, per, kind, TEXT)
  end
  local first, last, got = math.huge, 0, 0
  for i = 1, np do
    local ok, t0 = producers[i]:join()
    assert(ok, t0)
    first = math.min(first, t0)
  end
  q:close()
  for i = 1, nc do
    local ok, k, t1 = consumers[i]:join()
    assert(ok, k)
    got, last = got + k, math.max(last, t1)
  end
  assert(got == per * np, "lost items")
  return per * np / (last - first)
end

round(math.max(items // 4, np))                 -- the warm-up
print(("items/s %.0f"):format(round(items)))
