-- examples/c2_sleepers.lua — scenario C2 (gevent.sleep): three tasks sleeping 2, 1 and 0 units
-- finish in the order 0, 1, 2 and the whole takes about 2 units; 10 tasks sleeping 1 unit take
-- about 1 unit, not 10. Run: ./strand-run examples/c2_sleepers.lua [unit_seconds=1]
local strand = require "strand"

local U = tonumber(arg and arg[1]) or 1

local order = {}
local t0 = strand.now()
local tasks = {}
for i, d in ipairs { 2, 1, 0 } do
  tasks[i] = strand.spawn(function()
    strand.sleep(d * U)
    order[#order + 1] = d
    print(("c2: task sleeping %g s done at %.2f s"):format(d * U, strand.now() - t0))
  end)
end
strand.joinall(tasks)
local three = strand.now() - t0
print(("c2: finish order %s; three sleepers took %.2f s (the longest sleep: %.2f s)")
  :format(table.concat(order, ", "), three, 2 * U))

t0 = strand.now()
tasks = {}
for i = 1, 10 do tasks[i] = strand.spawn(strand.sleep, U) end
strand.joinall(tasks)
local ten = strand.now() - t0
print(("c2: 10 tasks sleeping %.2f s took %.2f s (sequential: %.2f s)"):format(U, ten, 10 * U))
assert(table.concat(order, ",") == "0,1,2")
assert(ten < 5 * U, "the sleeps did not overlap")
print("c2: done")
