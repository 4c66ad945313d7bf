-- T4: bounded_semaphore(3): of 20 threads, at most 3 are ever inside at once (measured with a
-- shared counter), and releasing more than acquired raises. Usage: ./strand-run examples/t4_semaphore.lua
local thread = require "strand.thread"
local sync = require "strand.sync"
local shared = require "strand.shared"

local sem, lock, stats = sync.bounded_semaphore(3), sync.lock(), shared.dict()
stats.inside, stats.max, stats.done = 0, 0, 0
local ts = {}
for i = 1, 20 do
  ts[i] = thread.start(function(n)
    local held <close> = sem:acquire()
    lock:with(function()
      stats.inside = stats.inside + 1
      if stats.inside > stats.max then stats.max = stats.inside end
    end)
    require("strand").sleep(0.02)
    lock:with(function()
      stats.inside = stats.inside - 1
      stats.done = stats.done + 1
    end)
    return n
  end, i)
end
for _, t in ipairs(ts) do assert(t:join()) end
print(("20 threads went through; at most %d were inside at once (limit 3)"):format(stats.max))
local ok, err = pcall(sem.release, sem)
print("releasing once more than acquired: " .. (ok and "allowed?!" or tostring(err)))
print("t4: done")
