-- strand._finish — the finishing protocol's shared pieces for the Lua-level handles (processes,
-- futures): result() over join()'s outcome, timeout argument checks and deadlines.
local now = require("strand.core").now

local M = {}

--- outcome(join(...)) -> the results after `true` | raises the error | raises exactly "timeout"
--- (join's three outcomes: true, ... / false, err / nil, "timeout"), as task:result() does.
function M.outcome(ok, ...)
  if ok then return ... end
  if ok == nil then error("timeout", 0) end
  error((...), 0)
end

--- check_timeout(t, arg, fname): raises "bad argument #arg to 'fname'" unless t is nil or >= 0
--- (reported at the caller of the function that checks).
function M.check_timeout(t, arg, fname)
  if t ~= nil and (type(t) ~= "number" or t < 0 or t ~= t) then
    error(("bad argument #%d to '%s' (timeout must be a number >= 0 or nil)"):format(arg, fname), 3)
  end
end

--- remaining(deadline) -> seconds left (>= 0), or nil for no deadline
function M.remaining(deadline)
  if deadline == nil then return nil end
  local r = deadline - now()
  return r > 0 and r or 0
end

return M
