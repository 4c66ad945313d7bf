-- bench/gc_enter_gen.lua — Lua 5.4.4's generational pacing on entering the mode with a large
-- heap (docs/internals.md "Active connections and the collector"): ~18 MB live, then the switch
-- (pause 110, generational), then 400,000 strings of garbage; prints the heap's peak over live.
-- usage: lua5.4 bench/gc_enter_gen.lua [switch|step|full]
--   switch: only the switch; step: collectgarbage("step", 0) right after it; full: the switch
--   at start (small heap), then a full collectgarbage() with the 18 MB live
local how = arg[1] or "switch"
assert(how == "switch" or how == "step" or how == "full", "switch, step or full")
local function garbage()
  local peak = 0
  for i = 1, 400000 do
    local _ = ("x"):rep(64) .. i
    local k = collectgarbage("count")
    if k > peak then peak = k end
  end
  return peak
end
local function gen()
  collectgarbage("incremental", 110)
  collectgarbage("generational")
end
if how == "full" then gen() end
local keep = {}
for i = 1, 200000 do keep[i] = { i } end
collectgarbage(); collectgarbage()
local live = collectgarbage("count")
if how ~= "full" then gen() end
if how == "step" then collectgarbage("step", 0) end
print(("%-6s peak / live = %.2f (%.1f MB live, %s)"):format(how, garbage() / live, live / 1024, _VERSION))
