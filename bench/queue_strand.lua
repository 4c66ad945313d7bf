-- bench/queue_strand.lua — strand's side of bench/queue_bench.lua, in its own process (pinned by
-- the caller as the C floor is): PRODUCERS producer threads and CONSUMERS consumer threads move
-- ITEMS integers or 100-byte strings through a strand.queue(MAXSIZE) (0: unbounded). Timed as
-- bench/queue_c_baseline.c: the exchange runs twice, the first (a quarter of the items) as a
-- warm-up; the second from the first producer's first put to the last consumer's end (each
-- thread reads the clock itself: thread start is not in it).
-- BATCH (optional, > 1): the producers put items with q:put_many (BATCH at a time) and the
-- consumers take them with q:get_many(BATCH) instead of q:put / q:get.
-- usage: lua5.4 bench/queue_strand.lua PRODUCERS CONSUMERS ITEMS MAXSIZE int|str [BATCH]
--        -> "items/s N"
local strand = require "strand"
local thread = require "strand.thread"
local queue = require "strand.queue"

local np, nc, items, maxsize, kind = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3]),
  tonumber(arg[4]), arg[5]
assert(np and nc and items and maxsize and (kind == "int" or kind == "str"), "usage: P C ITEMS MAXSIZE int|str")
local BATCH = tonumber(arg[6]) or 1
local TEXT = ("x"):rep(100)

local function round(n)
  local q = queue.new(maxsize)
  local per = n // np
  local consumers, producers = {}, {}
  for i = 1, nc do
    consumers[i] = thread.start(function(qq, batch)
      local now = require("strand").now
      local k = 0
      if batch > 1 then
        while true do
          local t = qq:get_many(batch)
          if t == nil then break end
          k = k + #t
        end
      else
        while qq:get() ~= nil do k = k + 1 end
      end
      return k, now()
    end, q, BATCH)
  end
  for i = 1, np do
    producers[i] = thread.start(function(qq, m, ki, text, batch)
      local t0 = require("strand").now()
      if batch > 1 then
        local b = {}
        for k = 1, batch do b[k] = ki == "int" and k or text end
        local v = 0
        while v + batch <= m do
          if ki == "int" then for k = 1, batch do b[k] = v + k end end
          qq:put_many(b)
          v = v + batch
        end
        for w = v + 1, m do qq:put(ki == "int" and w or text) end
      elseif ki == "int" then
        for v = 1, m do qq:put(v) end
      else
        for _ = 1, m do qq:put(text) end
      end
      return t0
    end, q, per, kind, TEXT, BATCH)
  end
  local first, last, got, failed = math.huge, 0, 0, nil
  for i = 1, np do
    local ok, t0 = producers[i]:join()
    if ok then first = math.min(first, t0) else failed = t0 end
  end
  q:close()                                     -- (first: a failed producer must not hang us)
  assert(not failed, failed)
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
