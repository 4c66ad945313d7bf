-- P7: Pool(5): apply one at a time vs submit with callbacks (parallel); map; close and join; a
-- worker killed with SIGKILL fails only its task and the pool goes on.
-- Usage: ./strand-run examples/p7_pool.lua [seconds per task (0.2)]
local strand = require "strand"
local pool = require "strand.pool"
local process = require "strand.process"
local secs = tonumber(arg[1]) or 0.2

local p <close> = pool.new{ size = 5 }
local function work(i, s) require("strand").sleep(s); return i * i, require("strand.process").pid() end

local t0 = strand.now()
for i = 1, 5 do p:apply(work, i, secs) end
print(("apply x5 (one after the other): %.2f s"):format(strand.now() - t0))

t0 = strand.now()
local got, fs = {}, {}
for i = 1, 5 do
  fs[i] = p:submit(work, i, secs)
  fs[i]:on_done(function(f) local v, pid = f:result(); got[#got + 1] = ("%d@%d"):format(v, pid) end)
end
strand.joinall(fs)
print(("submit x5 with callbacks (parallel): %.2f s, callbacks saw %d results"):format(strand.now() - t0, #got))

print("map: " .. table.concat(p:map(function(x) return x * 10 end, { 1, 2, 3, 4, 5, 6 }), " "))

local victim = p:submit(function() require("strand").sleep(60) end)
while victim:status() ~= "running" do strand.sleep(0.01) end
local pid = p:pids()[1]
process.run({ "kill", "-9", tostring(pid) })
local ok, err = victim:join()
print(("worker %d killed: its task -> %s, %s"):format(pid, tostring(ok), err))
print(("the pool goes on: %s"):format(p:apply(function() return "still serving" end)))
p:close()
p:join()
print("p7: done")
