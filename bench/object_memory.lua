-- bench/object_memory.lua — what one lock, event, semaphore, condition, barrier, queue, dict
-- and list costs: N of one kind are made in a fresh lua5.4 process, alive at once, and the
-- growth of its resident set (VmRSS, which counts the touched pages of the shared arena), of
-- its open descriptors and of its mappings is divided by N. Each kind runs alone.
-- env: STRAND_BENCH_OBJECTS (100000; unbounded queues: a tenth), STRAND_BUILD (build)
-- Goals (issue 11): lock/event/semaphore <= 256 B, condition/barrier <= 512 B,
-- bounded queue(10) <= 2 KiB, unbounded queue <= 4 KiB, no descriptor nor mapping per object.
local N = tonumber(os.getenv("STRAND_BENCH_OBJECTS")) or 100000
local BUILD = os.getenv("STRAND_BUILD") or "build"

local kinds = {
  { "lock", "sync.lock()", N, 256 },
  { "event", "sync.event()", N, 256 },
  { "semaphore", "sync.semaphore(1)", N, 256 },
  { "condition", "sync.condition()", N, 512 },
  { "barrier", "sync.barrier(2)", N, 512 },
  { "bounded queue(10)", "queue.new(10)", N, 2048 },
  { "unbounded queue", "queue.new()", N // 10, 4096 },
  { "shared dict", "shared.dict()", N // 10, nil },
  { "shared list", "shared.list()", N // 10, nil },
}

-- the child: make n objects with expr, keep them, print rss/fds/maps growth per object
local child = [[
local sync, queue, shared = require "strand.sync", require "strand.queue", require "strand.shared"
local n = tonumber(arg[1])
local make = assert(load("local sync, queue, shared = ... return " .. arg[2]))
local function status(key)
  local f = io.open("/proc/self/status"); local s = f:read("a"); f:close()
  return tonumber(s:match(key .. ":%s*(%d+)"))
end
local pid = (function() local f = io.open("/proc/self/stat"); local p = f:read("n"); f:close(); return p end)()
local function count(path, pat)
  local c = 0
  if pat then
    for _ in io.lines(path) do c = c + 1 end
  else                                         -- this process's fds (not the shell's), but
    collectgarbage()                           -- not the pipes popen makes to look at them
    local p = io.popen("ls -l /proc/" .. pid .. "/fd | grep -v -c 'pipe:'")
    c = tonumber(p:read("a")); p:close()
  end
  return c
end
local first = make(sync, queue, shared)       -- the first one makes what is made once
local keep = {}
for i = 1, n do keep[i] = false end            -- the array that holds them is not theirs
collectgarbage(); collectgarbage()
local rss0, fds0, maps0 = status("VmRSS"), count("/proc/self/fd"), count("/proc/self/maps", true)
for i = 1, n do
  local o, err = make(sync, queue, shared)
  if not o then print("FAILED at " .. i .. ": " .. tostring(err)); os.exit(1) end
  keep[i] = o
end
collectgarbage(); collectgarbage()
local rss1, fds1, maps1 = status("VmRSS"), count("/proc/self/fd"), count("/proc/self/maps", true)
print(string.format("%d %.1f %d %d", n, (rss1 - rss0) * 1024 / n, fds1 - fds0, maps1 - maps0))
assert(first)
]]

local f = os.tmpname()
local h = assert(io.open(f, "w")); h:write(child); h:close()

print(("strand objects, %d alive at once (%s), per object:"):format(N, BUILD))
print(("%-20s %8s %10s %8s %8s %6s"):format("kind", "count", "RSS bytes", "fds", "maps", "goal"))
local failed = false
for _, k in ipairs(kinds) do
  local name, expr, n, goal = k[1], k[2], k[3], k[4]
  local cmd = ("LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s/?.so;;' lua5.4 %s %d '%s' 2>&1")
    :format(BUILD, f, n, expr)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  local cnt, bytes, fds, maps = out:match("^(%d+) ([%d%.]+) (%-?%d+) (%-?%d+)")
  if cnt then
    local ok = goal == nil or (tonumber(bytes) <= goal and tonumber(fds) <= 0)
    if not ok then failed = true end
    print(("%-20s %8s %10s %8s %8s %6s %s"):format(name, cnt, bytes, fds, maps,
      goal and tostring(goal) or "-", ok and "" or "OVER"))
  else
    failed = true
    print(("%-20s %s"):format(name, (out:gsub("\n", " "))))
  end
end
os.remove(f)
print(failed and "some goals missed" or "all goals met")
