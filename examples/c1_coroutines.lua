-- examples/c1_coroutines.lua — scenario C1 (greenlet's yield-based producer/consumer): plain Lua
-- coroutines hand items over with yield/resume, inside strand tasks that run concurrently.
-- Run: ./strand-run examples/c1_coroutines.lua [items=5]
local strand = require "strand"

local N = tonumber(arg and arg[1]) or 5

-- A plain Lua producer: yields each item; the consumer resumes it for the next one.
local function producer(name)
  return coroutine.wrap(function()
    for i = 1, N do
      coroutine.yield(("%s item %d"):format(name, i))
    end
  end)
end

local function consumer(name, produce)
  local got = {}
  for item in produce do
    got[#got + 1] = item
    print(("c1: %s consumed %q"):format(name, item))
    strand.sleep(0.01)                -- a strand wait between two plain resumes: other tasks run
  end
  return got
end

-- Two producer/consumer pairs in two tasks: their plain coroutines never mix, and strand's waits
-- inside the consumers interleave the two pairs.
local a = strand.spawn(consumer, "consumer A", producer("A"))
local b = strand.spawn(consumer, "consumer B", producer("B"))
local function in_order(got, name)
  for i = 1, N do
    if got[i] ~= ("%s item %d"):format(name, i) then return false end
  end
  return #got == N
end
local _, ga = a:join()
local _, gb = b:join()
print(("c1: consumer A got %d items in order: %s"):format(#ga, tostring(in_order(ga, "A"))))
print(("c1: consumer B got %d items in order: %s"):format(#gb, tostring(in_order(gb, "B"))))

-- The same hand-over between two tasks with strand's own queue (no plain coroutines).
local queue = require "strand.queue"
local q = queue.new(1)
local prod = strand.spawn(function()
  for i = 1, N do q:put(i) end
  q:put(false)
end)
local sum = 0
while true do
  local v = q:get()
  if not v then break end
  sum = sum + v
end
prod:join()
print(("c1: queue hand-over between tasks: sum %d (expected %d)"):format(sum, N * (N + 1) // 2))
print("c1: done")
