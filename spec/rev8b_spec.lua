-- spec/rev8b_spec.lua — review 8b: defects found in this session's merged work (each fails
-- before its fix): the relay thread's lazy start in a forked child; a forked child's join of
-- its parent's other child.
local H = require "support.helper"
local process = require "strand.process"
local sync = require "strand.sync"

describe("review 8b: a forked child's relay", function()
  H.guard()

  -- The child inherits the count of the parent's tasks asleep on shared objects (the parent's
  -- loop it abandons): counted, the child's first fork started a relay though nothing of the
  -- child slept. The child's own sleeper still starts it, and is woken by a grandchild.
  it("starts at the child's fork only if a task of the child sleeps; a later sleeper starts it", function()
    local code = H.RELAYS .. [[
      local strand = require "strand"
      local process = require "strand.process"
      local sync = require "strand.sync"
      local ev, ev2 = sync.event(), sync.event()
      strand.run(function()
        local sleeper = strand.spawn(function() return ev:wait(30) end)
        strand.sleep(0)                                   -- asleep: this fork starts the relay
        local p = process.start(function()
          local before = relays()
          assert(process.start(function() return 1 end):join(30))
          local after = relays()
          -- a grandchild sets ev2 once the child sleeps on it: only the child's relay carries it
          local g = process.start(function() strand.sleep(0.2); ev2:set(); return 1 end)
          local woken = ev2:wait(30) and ev2:is_set()
          assert(g:join(30))
          print(("child relays %d %d %d woken %s"):format(before, after, relays(), tostring(woken)))
          return 0
        end)
        assert(p:join(60))
        print("parent relays " .. relays())
        ev:set()
        assert(sleeper:join(30))
      end)
    ]]
    local out, ok = H.lua(code)
    assert.is_true(ok, out)
    assert.matches("child relays 0 0 1 woken true", out, 1, true)
    assert.matches("parent relays 1", out, 1, true)
  end)
end)

describe("review 8b: a forked child's copy of its parent's process handle", function()
  H.guard()

  -- join's first wait skipped the look (waitpid) when the handle has a pidfd: in a child the
  -- inherited pidfd of a sibling that still runs then waited for that sibling to end, instead
  -- of the look's "not a child of this process" (foreign) at once. The sibling here ends only
  -- after the child's join returned (a fresh program: the spec runner's own state hid it).
  it("join of a sibling that still runs fails at once, naming the parent", function()
    local code = [[
      local process = require "strand.process"
      local sync = require "strand.sync"
      local go = sync.event()
      local p1 = process.start(function(ev) assert(ev:wait(60)); return "p1" end, go)
      local p2 = process.start(function()
        local r = table.pack(p1:join(JOIN))
        return r[1], r[2], p1:is_alive()
      end)
      local r = table.pack(p2:join(60))
      local alive = p1:is_alive()
      go:set()
      local r1 = table.pack(p1:join(60))
      print(("child %s %s %s %s sibling %s %s %s"):format(tostring(r[1]), tostring(r[2]),
        tostring(r[3]), tostring(r[4]), tostring(alive), tostring(r1[1]), tostring(r1[2])))
    ]]
    for _, join in ipairs({ "nil", "30" }) do
      local out, ok = H.lua((code:gsub("JOIN", join)))
      assert.is_true(ok, out)
      assert.matches("child true false process Process%-%d+ belongs to the parent process %(this is a forked child%) false sibling true true p1", out)
    end
  end)
end)
