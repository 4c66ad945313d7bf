-- spec/review8_spec.lua — defects found in session 8's hostile review of the servers, the
-- LuaSocket bridge, selectors and the examples: each case failed before its fix.
local strand = require "strand"
local socket = require "strand.socket"
local server = require "strand.server"
local H = require "support.helper"

-- A program in a fresh lua5.4 (nothing loaded or pinned by earlier specs), bounded by timeout(1).
local function fresh(code, env)
  local out, ok = H.lua('package.path = "lua/?.lua;lua/?/init.lua;" .. package.path\n' .. code,
    "timeout -k 5 60 " .. (env or ""))
  assert.is_true(ok, out)
  return out
end

describe("review 8: the loop", function()
  H.guard()

  it("a wait whose only deadline is huge (1e300 s) waits, not 'epoll wait failed: Invalid argument'", function()
    -- the nearest deadline went to the poller as a timespec: (time_t)1e300 overflows
    local out = fresh([[
      local strand = require "strand"
      local thread = require "strand.thread"
      local q = require("strand.queue").new()
      local t = thread.start(function(q) require("strand").sleep(0.2); q:put("woken") end, q)
      print(q:get(1e300))
      assert(t:join(30))
    ]])
    assert.equal("woken\n", out)
  end)
end)
