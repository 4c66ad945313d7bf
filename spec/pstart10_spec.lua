-- process.start's cheaper path (session 10): a child's pidfd opened only by a wait that finds it
-- running, signals before any wait, joiners while the child runs (one cancelled), the child on a
-- coroutine of its own (process.name, nested starts, a child closing its state), Process-N.
local strand = require "strand"
local process = require "strand.process"
local sync = require "strand.sync"
local H = require "support.helper"

-- pidfds open in this process (none under valgrind: a thread and an eventfd stand in for them)
local function pidfds()
  local n = 0
  for _, target in pairs((H.fds())) do
    if target:find("pidfd", 1, true) then n = n + 1 end
  end
  return n
end

local function state(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local s = f:read("a"); f:close()
  return s:match("^%d+ %b() (%a)")
end

describe("process.start, session 10", function()
  H.guard()

  it("a child has no pidfd until a wait finds it running; the wait opens it, the reap closes it", function()
    local ev = sync.event()
    local p = process.start(function() return ev:wait(H.TIMEOUT) end)
    if not H.VALGRIND then assert.equal(0, pidfds()) end
    assert.same({ nil, "timeout" }, { p:join(0.05) })      -- running: waited through its pidfd
    if not H.VALGRIND then assert.equal(1, pidfds()) end
    assert.is_true(p:is_alive())
    ev:set()
    assert.same({ true, true }, { p:join(H.TIMEOUT) })
    assert.equal(0, p.exitcode)
    assert.equal(0, pidfds())
  end)

  it("a join that finds the child exited (a zombie) reaps it without waiting", function()
    local p = process.start(function() return "done", 42 end)
    assert.truthy(H.wait_until(function() return state(p.pid) == "Z" end))
    assert.same({ true, "done", 42 }, { p:join(0) })
    assert.is_nil(state(p.pid))
    assert.equal(0, p.exitcode)
  end)

  it("terminate, kill and signal before any wait reach the child (no pidfd yet)", function()
    local ev = sync.event()
    local a = process.start(function() return ev:wait(H.TIMEOUT) end)
    local b = process.start(function() return ev:wait(H.TIMEOUT) end)
    local c = process.start(function() return ev:wait(H.TIMEOUT) end)
    assert.is_true(a:terminate())
    assert.is_true(b:kill())
    assert.is_true(c:signal(10))                           -- SIGUSR1: its default kills
    assert.same({ false, "process killed by signal 15" }, { a:join(H.TIMEOUT) })
    assert.same({ false, "process killed by signal 9" }, { b:join(H.TIMEOUT) })
    assert.same({ false, "process killed by signal 10" }, { c:join(H.TIMEOUT) })
    assert.equal(-15, a.exitcode); assert.equal(-9, b.exitcode); assert.equal(-10, c.exitcode)
    assert.is_true(a:terminate())                          -- ended: nothing to do, as Python
  end)

  it("several joiners while the child runs, the first one cancelled: the others get the results", function()
    strand.run(function()
      local ev = sync.event()
      local p = process.start(function() ev:wait(H.TIMEOUT); return "r", 7 end)
      local first = strand.spawn(function() return p:join(H.TIMEOUT) end)
      strand.sleep(0.02)                                   -- it waits on the pidfd
      local others = {}
      for i = 1, 3 do others[i] = strand.spawn(function() return p:join(H.TIMEOUT) end) end
      strand.sleep(0.02)                                   -- they wait for its word
      first:cancel("stop")
      local ok, err = first:join(H.TIMEOUT)
      assert.is_false(ok); assert.is_true(strand.is_cancelled(err))
      ev:set()
      for i = 1, 3 do
        assert.same({ true, true, "r", 7 }, { others[i]:join(H.TIMEOUT) })
      end
      assert.same({ true, "r", 7 }, { p:join(0) })
      assert.equal(0, p.exitcode)
    end)
  end)

  it("process.name() in a child and a grandchild; Process-N in the order processes are made", function()
    assert.equal("MainProcess", process.name())
    local q = process.new{ fn = function() end }
    local n = tonumber(q.name:match("^Process%-(%d+)$"))
    assert.is_number(n)
    local p = process.start(function()
      local g = process.start(function() return process.name() end)
      local _, gname = g:join(H.TIMEOUT)
      return process.name(), gname, g.name
    end)
    assert.equal("Process-" .. (n + 1), p.name)
    local ok, name, gname, gobj = p:join(H.TIMEOUT)
    assert.is_true(ok)
    assert.equal(p.name, name)
    assert.equal(gobj, gname)
    assert.are_not.equal(name, gname)
    assert.equal("Process-" .. (n + 2), process.new{ fn = function() end }.name)
    assert.equal("MainProcess", process.name())
  end)

  it("a child that closes its state (os.exit(n, true)) exits with n", function()
    local p = process.start(function() os.exit(5, true) end)
    assert.same({ false, "process exited with code 5" }, { p:join(H.TIMEOUT) })
    assert.equal(5, p.exitcode)
  end)

  it("a start from a task and from a child's task; results, errors and arguments come back", function()
    strand.run(function()
      local p = process.start(function(a, b)
        local t = strand.spawn(function() return a * b end)
        local q = process.start(function(x) error("deep " .. x, 0) end, a)
        local _, err = q:join(H.TIMEOUT)
        return (select(2, t:join())), err
      end, 6, 7)
      local ok, v, err = p:join(H.TIMEOUT)
      assert.is_true(ok); assert.equal(42, v)
      assert.matches("^deep 6\nstack traceback:", err)  -- (the grandchild's traceback with it)
    end)
  end)
end)
