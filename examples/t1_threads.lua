-- T1: threads with arguments, start and join; 10 threads sleeping N seconds finish in about N
-- seconds, not 10*N. Usage: ./strand-run examples/t1_threads.lua [seconds]
local strand = require "strand"
local thread = require "strand.thread"
local secs = tonumber(arg[1]) or 3

local function greet(name, n)
  return ("hello %s, you are thread %s (#%d)"):format(name, require("strand.thread").name(), n)
end
local t = thread.start(greet, "lua", 1)
print(t:result())

local t0 = strand.now()
local ts = {}
for i = 1, 10 do
  ts[i] = thread.start(function(n)
    require("strand").sleep(secs)
    return n
  end, i)
end
local sum = 0
for i = 1, 10 do sum = sum + ts[i]:result() end
print(("10 threads slept %g s each in %.2f s total (sum of ids %d)"):format(secs, strand.now() - t0, sum))
print("t1: done")
