-- T3: a lock makes 5000 increments from 20 threads come out exactly 5000; an rlock can be taken
-- again by its owner; two locks taken in opposite orders deadlock (shown with timeouts), and one
-- rlock taken by both paths fixes it. Usage: ./strand-run examples/t3_locks.lua
local thread = require "strand.thread"
local sync = require "strand.sync"
local shared = require "strand.shared"

-- 1. the counter
local lock, counter = sync.lock(), shared.dict()
counter.n = 0
local ts = {}
for i = 1, 20 do
  ts[i] = thread.start(function()
    for _ = 1, 250 do
      local held <close> = lock:acquire()
      counter.n = counter.n + 1
    end
  end)
end
for _, t in ipairs(ts) do assert(t:join()) end
print(("counter: 20 threads x 250 increments under a lock = %d"):format(counter.n))

-- 2. rlock: nested acquires by the same owner
local r = sync.rlock()
local function nested(depth)
  local held <close> = r:acquire()
  if depth > 1 then return nested(depth - 1) end
  return "reached the bottom holding the rlock 3 times"
end
print("rlock: " .. nested(3))

-- 3. deadlock: A then B in one thread, B then A in another; timeouts make it visible
local A, B = sync.lock(), sync.lock()
local gate, after = sync.barrier(2), sync.barrier(2)
local function cross(first, second, name)
  return thread.start(function()
    local one <close> = first:acquire()
    gate:wait(5)                              -- both hold their first lock now
    local two = second:acquire(0.3)
    after:wait(5)                             -- nobody lets go before both have tried
    if not two then return name .. ": could not get its second lock (deadlock)" end
    second:release()
    return name .. ": got both locks"
  end)
end
local x, y = cross(A, B, "thread 1"), cross(B, A, "thread 2")
print("two locks, opposite orders -> " .. x:result() .. "; " .. y:result())

-- 4. the fix: one rlock that both paths take (and may take again)
local R = sync.rlock()
local function both(name)
  return thread.start(function()
    local one <close> = R:acquire()
    local two <close> = R:acquire(0.3)
    return two and (name .. ": got both") or (name .. ": deadlock")
  end)
end
x, y = both("thread 1"), both("thread 2")
print("one rlock instead -> " .. x:result() .. "; " .. y:result())
print("t3: done")
