-- P2: no zombie remains (every child is reaped by join, exitcode or the next start); a daemon
-- child ends with its parent, even when the parent is killed with SIGKILL.
-- Usage: ./strand-run examples/p2_zombies.lua
local strand = require "strand"
local process = require "strand.process"

local function zombies()
  local n = 0
  local me = process.pid()
  local p = io.popen("cat /proc/[0-9]*/stat 2>/dev/null")
  for line in p:lines() do
    local state, ppid = line:match("^%d+ %b() (%S) (%d+)")
    if tonumber(ppid) == me and state == "Z" then n = n + 1 end
  end
  p:close()
  return n
end

local kids = {}
for i = 1, 5 do kids[i] = process.start(function() return i end) end
strand.sleep(0.2)
print(("5 children ended, not joined yet: %d zombie(s) until they are reaped (each start reaps the ended ones)"):format(zombies()))
for i = 1, 5 do assert(kids[i]:join()) end
print(("after join: %d zombie(s)"):format(zombies()))

local k = process.start(function() strand.sleep(60) end)
k:kill()
while k:is_alive() do strand.sleep(0.01) end
print(("killed child: exitcode %d, %d zombie(s)"):format(k.exitcode, zombies()))

-- a daemon grandchild dies with its parent, even when that parent is SIGKILLed
local pidfile = os.tmpname()
local parent = process.start(function()
  local d = process.new{ fn = function() strand.sleep(60) end, daemon = true }
  d:start()
  local f = io.open(pidfile, "w"); f:write(d.pid); f:close()
  strand.sleep(60)
end)
local daemon_pid
while not daemon_pid do
  strand.sleep(0.01)
  local f = io.open(pidfile); daemon_pid = f and tonumber(f:read("a")); if f then f:close() end
end
parent:kill()
parent:join()
local gone = false
for _ = 1, 200 do
  local f = io.open("/proc/" .. daemon_pid .. "/stat")
  local st = f and f:read("a"); if f then f:close() end
  if not st or st:match("^%d+ %b() [ZX]") then gone = true; break end
  strand.sleep(0.01)
end
os.remove(pidfile)
print(("parent SIGKILLed (exitcode %d): its daemon child %s"):format(parent.exitcode, gone and "ended too" or "SURVIVED"))
print("p2: done")
