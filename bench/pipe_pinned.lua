-- bench/pipe_pinned.lua — a process.pipe round trip (as bench/process_bench.lua's "worker pipe")
-- with the two processes pinned to two given CPUs (the child moves itself with taskset -p), so
-- that the scheduler cannot put them on one CPU: the cross-CPU case docs/uring.md 4.7 explains.
-- usage: lua5.4 bench/pipe_pinned.lua N CPU_PARENT CPU_CHILD   -> "us X"
local strand = require "strand"
local process = require "strand.process"
local n, ca, cb = tonumber(arg[1] or 5000), tonumber(arg[2] or 0), tonumber(arg[3] or 1)
assert(os.execute(("taskset -pc %d %d >/dev/null"):format(ca, process.pid())))
local x, y = process.pipe()
local child = process.start(function()
  assert(os.execute(("taskset -pc %d %d >/dev/null"):format(cb, process.pid())))
  y:send("pinned")
  while true do
    local v = y:recv()
    if v == nil or v == "stop" then
      local st = os.getenv("WATCH_STATS") and require("strand.core")._uring.stats()
      if st then io.stderr:write(("child watches %d hits %d\n"):format(st.watches, st.watch_hits)) end
      return
    end
    y:send(v)
  end
end)
assert(x:recv() == "pinned")
for i = 1, 200 do x:send(i); x:recv() end
local t0 = strand.now()
for i = 1, n do x:send(i); x:recv() end
local dt = strand.now() - t0
x:send("stop")
child:join()
print(("us %.3f"):format(dt / n * 1e6))
local st = os.getenv("WATCH_STATS") and require("strand.core")._uring.stats()
if st then io.stderr:write(("parent watches %d hits %d\n"):format(st.watches, st.watch_hits)) end
