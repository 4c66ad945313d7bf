-- strand — coroutine concurrency and networking for Lua 5.4.
-- This file owns the top-level module: the task API from C, and lazy access to the Lua-level
-- task helpers (strand._tasks) and to every area module.
local core = require "strand.core"

local M = {}

M.spawn = core.spawn
M.sleep = core.sleep
M.sleep_until = core.sleep_until
M.now = core.now
M.current = core.current
M.run = core.run
M.is_cancelled = core.is_cancelled

-- The task helpers (timeout, joinall, wait, as_completed, group: strand._tasks) and the areas
-- (strand.socket, strand.thread, ...) load on first use, so that a thread whose function only
-- uses strand.now loads just this file (docs/thread.md).
local helpers = { timeout = true, joinall = true, wait = true, as_completed = true, group = true }
local areas = {
  socket = true, selector = true, serial = true, thread = true, sync = true,
  queue = true, shared = true, process = true, pool = true, server = true, ssh = true,
  luasocket = true,
}

setmetatable(M, {
  __index = function(t, k)
    if areas[k] then
      local m = require("strand." .. k)
      rawset(t, k, m)
      return m
    end
    if helpers[k] then
      local m = require "strand._tasks"
      for name in pairs(helpers) do rawset(t, name, m[name]) end
      return m[k]
    end
    if k == "select" then
      local sel = require "strand.selector"
      rawset(t, k, sel.select)
      return sel.select
    end
  end,
})

return M
