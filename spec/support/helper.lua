-- spec/support/helper.lua — shared by every spec: bounded waits, running code as a task with
-- errors rethrown with their traceback, fd-leak and zombie checks.
local H = {}

H.TIMEOUT = tonumber(os.getenv("STRAND_TEST_TIMEOUT")) or 10

--- Run fn as a task with a bound on the whole run; rethrows the task's error (with traceback).
function H.run(fn, ...)
  local strand = require "strand"
  local args = table.pack(...)
  local r = table.pack(strand.run(function()
    local res = table.pack(strand.timeout(H.TIMEOUT, fn, table.unpack(args, 1, args.n)))
    if res[1] == nil then error("spec task timed out after " .. H.TIMEOUT .. " s", 0) end
    return table.unpack(res, 2, res.n)
  end))
  return table.unpack(r, 1, r.n)
end

--- Open file descriptors of this process.
function H.fd_count()
  local p = io.popen("LD_PRELOAD= ls /proc/" .. H.pid() .. "/fd | wc -l")
  local n = tonumber(p:read("a"))
  p:close()
  return n - 1   -- the pipe popen itself opened is counted once in the listing
end

function H.pid()
  local f = io.open("/proc/self/stat")
  local pid = f:read("n")
  f:close()
  return pid
end

--- Children of this process that are zombies.
function H.zombies()
  local p = io.popen("LD_PRELOAD= ps -o stat= --ppid " .. H.pid() .. " 2>/dev/null")
  local n = 0
  for line in p:lines() do if line:match("^Z") then n = n + 1 end end
  p:close()
  return n
end

--- Wrap a spec body: fails if it leaks an fd or leaves a zombie.
function H.no_leaks(fn)
  return function(...)
    collectgarbage()
    local before = H.fd_count()
    fn(...)
    collectgarbage(); collectgarbage()
    local after = H.fd_count()
    assert(after <= before, ("leaked %d file descriptor(s)"):format(after - before))
    assert(H.zombies() == 0, "left a zombie child")
  end
end

--- Run a Lua snippet in a fresh lua5.4 process (env: optional "VAR=value ..." prefix);
--- returns stdout+stderr, exit ok.
function H.lua(code, env)
  local f = os.tmpname()
  local h = io.open(f, "w"); h:write(code); h:close()
  local p = io.popen((env and env .. " " or "") .. "lua5.4 " .. f .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  os.remove(f)
  return out, ok
end

return H
