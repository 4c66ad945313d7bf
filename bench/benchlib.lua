-- bench/benchlib.lua — what the Lua benches share (as bench/lib.sh for the shell ones): the wait
-- for an idle machine before each measurement, medians, Debian's python3, the results file.
local M = {}

M.PY = io.open("/usr/bin/python3") and "/usr/bin/python3" or "python3"   -- not a pyenv one
M.REPS = tonumber(os.getenv("REPS")) or 5
M.QUICK = os.getenv("QUICK") == "1"

local function run(cmd, redirect)
  local p = io.popen(cmd .. redirect)
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

-- sh(cmd): what cmd printed (stdout and stderr) and whether it succeeded.
function M.sh(cmd) return run(cmd, " 2>&1") end

-- stdout(cmd): what cmd printed on stdout (stderr dropped), or nil when it failed.
function M.stdout(cmd)
  local out, ok = run(cmd, " 2>/dev/null")
  return ok and out or nil
end

local function now()
  local p = io.open("/proc/uptime")
  if not p then return os.time() end
  local t = p:read("n"); p:close()
  return t
end

local function ticks()
  local f = io.open("/proc/stat")
  if not f then return nil end
  local line = f:read("l"); f:close()
  local total, i, k = 0, 0, 0
  for v in line:gmatch("%d+") do
    k = k + 1
    total = total + tonumber(v)
    if k == 4 or k == 5 then i = i + tonumber(v) end   -- idle, iowait
  end
  return total, i
end

-- Waits until the machine was busy less than IDLE_BUSY % over IDLE_PROBE s, at most IDLE_WAIT s;
-- returns "idle" or "loaded" (never got idle: the next figure is flagged).
function M.wait_idle()
  local busy_max = tonumber(os.getenv("IDLE_BUSY")) or 10
  local probe = tonumber(os.getenv("IDLE_PROBE")) or 1
  local limit = tonumber(os.getenv("IDLE_WAIT")) or 30
  local t0 = now()
  while true do
    local a, ai = ticks()
    if not a then return "idle" end
    os.execute(("sleep %s"):format(probe))
    local b, bi = ticks()
    local dt = b - a
    if dt <= 0 or 100 * (dt - (bi - ai)) / dt < busy_max then return "idle" end
    if now() - t0 >= limit then return "loaded" end
  end
end

-- The median of the numbers in t (a list, or a table with holes or false where a rep failed).
function M.median(t)
  local s = {}
  for _, v in pairs(t) do if v then s[#s + 1] = v end end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

-- record(fields...): one line of the results file (RESULTS) that bench/report.lua reads.
function M.record(...)
  local path = os.getenv("RESULTS")
  if not path or path == "" then return end
  local f = assert(io.open(path, "a"))
  local t = table.pack(...)
  for i = 1, t.n do t[i] = tostring(t[i]) end
  f:write(table.concat(t, " ", 1, t.n), "\n")
  f:close()
end

-- Runs cmd REPS times (each after wait_idle), parsing a number with pattern from its output.
-- Returns the list of values and whether any rep ran on a loaded machine.
function M.reps(cmd, pattern, reps)
  local vals, loaded = {}, false
  for _ = 1, reps or M.REPS do
    if M.wait_idle() == "loaded" then loaded = true end
    local out = M.sh(cmd)
    local v = tonumber(out:match(pattern))
    if not v then io.stderr:write(("bench: %s: no figure in: %s\n"):format(cmd, out:sub(1, 300))); return nil end
    vals[#vals + 1] = v
  end
  return vals, loaded
end

function M.range(vals)
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs(vals) do lo = math.min(lo, v); hi = math.max(hi, v) end
  return lo, hi
end

return M
