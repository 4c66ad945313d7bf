-- strand._tasks — the Lua-level task helpers of the strand table: timeout, joinall, wait,
-- as_completed and group (loaded on first use of one of them: lua/strand/init.lua).
local core = require "strand.core"

local M = {}
local pack, unpack = table.pack, table.unpack

local spawn, current, is_cancelled, now = core.spawn, core.current, core.is_cancelled, core.now

local function check_timeout(t, arg, fname)
  if t ~= nil and (type(t) ~= "number" or t < 0 or t ~= t) then
    error(("bad argument #%d to '%s' (timeout must be a number >= 0 or nil)"):format(arg, fname), 3)
  end
end

local function remaining(deadline)
  if deadline == nil then return nil end
  local r = deadline - now()
  return r > 0 and r or 0
end

--- strand.timeout(seconds, fn, ...) -> true, ... | nil, "timeout" (fn is cancelled)
function M.timeout(seconds, fn, ...)
  if type(seconds) ~= "number" or seconds < 0 or seconds ~= seconds then
    error("bad argument #1 to 'timeout' (seconds must be a number >= 0)", 2)
  end
  if type(fn) ~= "function" then
    error("bad argument #2 to 'timeout' (function expected, got " .. type(fn) .. ")", 2)
  end
  if current() == nil then
    -- from the main program: the same thing inside a task, so that both behave alike (fn runs
    -- until its first wait even with seconds = 0, as Python's wait_for)
    local r = pack(spawn(M.timeout, seconds, fn, ...):join())
    if r[1] == false then error(r[2], 0) end
    return unpack(r, 2, r.n)
  end
  local token = setmetatable({}, { __tostring = function() return "timeout" end })
  local timer = core.cancel_after(seconds, token)
  local r = pack(pcall(fn, ...))
  timer:stop()
  if not r[1] then
    local err = r[2]
    if is_cancelled(err) and rawget(err, "reason") == token then return nil, "timeout" end
    error(err, 0)
  end
  return true, unpack(r, 2, r.n)
end

local function check_list(list, fname)
  if type(list) ~= "table" then
    error(("bad argument #1 to '%s' (table expected, got %s)"):format(fname, type(list)), 3)
  end
  for i = 1, #list do
    local x = list[i]
    local ok, join = pcall(function() return x.join end)
    if not ok or type(join) ~= "function" then
      error(("bad argument #1 to '%s' (element %d has no join method)"):format(fname, i), 3)
    end
  end
end

--- strand.joinall(list [, timeout]) -> done, pending
function M.joinall(list, timeout)
  check_list(list, "joinall")
  check_timeout(timeout, 2, "joinall")
  local deadline = timeout and now() + timeout
  local done, pending = {}, {}
  for i = 1, #list do
    local x = list[i]
    if x:join(remaining(deadline)) == nil then pending[#pending + 1] = x
    else done[#done + 1] = x end
  end
  return done, pending
end

-- Watcher tasks: one per item, each joins its item and reports to a shared notifier.
local function watch(items, on_done)
  local watchers = {}
  for i = 1, #items do
    local x = items[i]
    watchers[i] = spawn(function()
      if x:join() ~= nil then on_done(x) end
    end)
  end
  return watchers
end

local function stop(watchers)
  for _, w in ipairs(watchers) do w:cancel() end
end

local function finished(x)
  return x:join(0) ~= nil
end

--- strand.wait(list, {timeout=, mode="any"|"all"}) -> done, pending
function M.wait(list, opts)
  check_list(list, "wait")
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #2 to 'wait' (table expected)", 2) end
  check_timeout(opts.timeout, 2, "wait")
  local mode = opts.mode or "all"
  if mode == "all" then return M.joinall(list, opts.timeout) end
  if mode ~= "any" then error("bad argument #2 to 'wait' (mode must be \"any\" or \"all\")", 2) end
  local function split()
    local done, pending = {}, {}
    for i = 1, #list do
      local x = list[i]
      if finished(x) then done[#done + 1] = x else pending[#pending + 1] = x end
    end
    return done, pending
  end
  local done, pending = split()
  if #done > 0 or #pending == 0 then return done, pending end
  local n = core.notifier()
  local watchers = watch(pending, function() n:notify() end)
  do
    local _ <close> = setmetatable({}, { __close = function() stop(watchers) end })
    n:wait(opts.timeout)         -- a cancellation here still stops the watchers
  end
  return split()
end

--- for x in strand.as_completed(list [, timeout]) do ... end  (raises "timeout")
function M.as_completed(list, timeout)
  check_list(list, "as_completed")
  check_timeout(timeout, 2, "as_completed")
  local deadline = timeout and now() + timeout
  local ready, head, tail, total, given = {}, 1, 0, #list, 0
  local n = core.notifier()
  local watchers = watch(list, function(x)
    tail = tail + 1
    ready[tail] = x
    n:notify()
  end)
  local closer = setmetatable({}, { __close = function() stop(watchers) end })
  local function iter()
    if given == total then stop(watchers); return nil end
    while ready[head] == nil do
      local ok = n:wait(remaining(deadline))
      if not ok and ready[head] == nil then
        stop(watchers)
        error("timeout", 0)          -- exactly, as result(): err == "timeout" works
      end
    end
    local x = ready[head]
    ready[head] = nil
    head = head + 1
    given = given + 1
    return x
  end
  return iter, nil, nil, closer
end

--- local g <close> = strand.group(): children are cancelled and waited for on close
local Group = {}
Group.__index = Group

local function check_group(self, fname)
  if getmetatable(self) ~= Group then
    error(("bad argument #1 to '%s' (strand.group expected, got %s)"):format(fname, type(self)), 3)
  end
end

function Group:spawn(fn, ...)
  check_group(self, "spawn")
  if self.closed then error("spawn: the group is closed", 2) end
  local t = spawn(fn, ...)
  self.tasks[#self.tasks + 1] = t
  return t
end

--- g:wait([timeout]) -> true | nil, "timeout"; raises the first child failure (not cancellations)
function Group:wait(timeout)
  check_group(self, "wait")
  check_timeout(timeout, 1, "wait")
  local done, pending = M.joinall(self.tasks, timeout)
  if #pending > 0 then return nil, "timeout" end
  for _, t in ipairs(done) do
    local ok, err = t:join(0)
    if ok == false and not is_cancelled(err) then error(err, 0) end
  end
  return true
end

function Group:cancel(reason)
  check_group(self, "cancel")
  for _, t in ipairs(self.tasks) do t:cancel(reason) end
end

function Group:close()
  check_group(self, "close")
  if self.closed then return end
  self.closed = true
  self:cancel("group closed")
  for _, t in ipairs(self.tasks) do t:join() end
end
Group.__close = Group.close

-- A group dropped without closing: its children are cancelled (a finalizer cannot wait for them).
function Group:__gc()
  if self.closed then return end
  self.closed = true
  for _, t in ipairs(self.tasks) do t:cancel("group closed") end
end

function M.group()
  return setmetatable({ tasks = {} }, Group)
end

return M
