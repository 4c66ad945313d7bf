-- examples/demo.lua — `make demo`: a short tour of every area strand has, with real traffic on
-- loopback. Each section is skipped (and says so) when its area is not built yet.
local strand = require "strand"

local function section(name, fn)
  io.write(("\n== %s\n"):format(name))
  local ok, err = pcall(fn)
  if not ok then io.write("  FAILED: ", tostring(err), "\n"); os.exit(1) end
end

local function have(mod)
  local ok = pcall(require, mod)
  if not ok then io.write("  (", mod, " is not built yet: skipped)\n") end
  return ok
end

section("tasks: three sleepers finish in deadline order, concurrently", function()
  local t0, order = strand.now(), {}
  for _, d in ipairs { 0.2, 0.1, 0 } do
    strand.spawn(function() strand.sleep(d); order[#order + 1] = d end)
  end
  strand.run()
  print(("  order %s in %.3f s (sequential would be 0.3 s)"):format(table.concat(order, ", "), strand.now() - t0))
end)

section("timeout and cancellation", function()
  local ok, err = strand.timeout(0.05, strand.sleep, 10)
  print("  strand.timeout(0.05, sleep 10) ->", ok, err)
  local t = strand.spawn(function()
    local guard <close> = setmetatable({}, { __close = function() print("  <close> ran in the cancelled task") end })
    strand.sleep(10)
  end)
  strand.sleep(0.01)
  t:cancel("demo")
  print("  join ->", select(2, t:join()), "status:", t:status())
end)

local more = {}
local f = io.open("examples/demo_areas.lua")
if f then f:close(); more = dofile("examples/demo_areas.lua") end
for _, area in ipairs(more) do
  section(area.name, function() if have(area.module) then area.run(strand) end end)
end
print("\ndemo finished")
