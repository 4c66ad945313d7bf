-- bench/gc_cycle_cost.lua — what one garbage collection costs per waiting task: N tasks blocked
-- in strand.sleep, then K collections of one kind; run under callgrind for K=0 and K>0 by
-- bench/gc_cycle_cg.sh (the difference over K*N is instructions per collection per task).
-- usage: lua5.4 bench/gc_cycle_cost.lua N K minor|full
--   minor: generational mode, collectgarbage("step", 0) (a minor collection) K times
--   full:  incremental mode (Lua's default), collectgarbage("collect") K times
local strand = require "strand"
local N, K, kind = tonumber(arg[1]) or 10000, tonumber(arg[2]) or 0, arg[3] or "minor"
assert(kind == "minor" or kind == "full", "kind: minor or full")

strand.run(function()
  for _ = 1, N do strand.spawn(strand.sleep, 1e6) end
  strand.sleep(0)                              -- every task is now waiting
  collectgarbage()
  if kind == "minor" then collectgarbage("generational") end
  for _ = 1, K do
    for _ = 1, 100 do local _ = ("x"):rep(64) end   -- a little young garbage, as in a server
    if kind == "minor" then collectgarbage("step", 0) else collectgarbage() end
  end
  os.exit(0)
end)
