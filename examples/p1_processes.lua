-- P1: processes with arguments; pid and ppid; a child changing a global leaves the parent's
-- alone; start-all-then-join runs in parallel, start-join-start runs one after the other.
-- Usage: ./strand-run examples/p1_processes.lua [seconds per child (0.3)]
local strand = require "strand"
local process = require "strand.process"
local secs = tonumber(arg[1]) or 0.3

local p = process.start(function(name)
  return ("hello %s from pid %d, my parent is %d"):format(name, process.pid(), process.ppid())
end, "lua")
print(p:result())
print(("the parent is pid %d; child exitcode %d"):format(process.pid(), p.exitcode))

counter = 0
local c = process.start(function() counter = counter + 100; return counter end)
print(("child saw counter = %d, parent still has counter = %d (memory is copied, not shared)")
  :format(c:result(), counter))

local function nap(i) strand.sleep(secs); return i end
local t0 = strand.now()
local ps = {}
for i = 1, 4 do ps[i] = process.start(nap, i) end
for i = 1, 4 do ps[i]:join() end
local parallel = strand.now() - t0
t0 = strand.now()
for i = 1, 4 do process.start(nap, i):join() end
local serial = strand.now() - t0
print(("4 children of %.1f s: start-all-then-join %.2f s, start-join-start %.2f s"):format(secs, parallel, serial))
print(("parallel is faster: %s"):format(tostring(parallel < serial)))
print("p1: done")
