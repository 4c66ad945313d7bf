-- A pool whose workers' initializer raises (or whose workers die at once): no loop of restarts,
-- jobs fail with "worker exited: <its error>"; a worker killed while running a job still replaced.
local strand = require "strand"
local pool = require "strand.pool"
local shared = require "strand.shared"
local H = require "support.helper"

-- Close p and wait for its workers: every worker started has run its initializer by then.
local function finish(p)
  p:close()
  assert.is_true(p:join())
end

for _, kind in ipairs { "process", "thread" } do
  describe(kind .. " pool whose initializer raises", function()
    H.guard()

    it("starts each worker once; queued and later jobs fail with \"worker exited: <its error>\"", function()
      local d = shared.dict()
      d.starts = 0
      local p = pool.new{ size = 2, kind = kind, initargs = { d },
        initializer = function(dd) dd:incr("starts"); error("no setup", 0) end }
      local f = p:submit(function() return 1 end)
      local ok, err = f:join(H.TIMEOUT)
      assert.is_false(ok)
      -- the initializer's error with the worker's traceback, as a thread's join gives it
      assert.matches("^worker exited: no setup\nstack traceback:\n", err)
      assert.matches("in function 'error'", err)
      if kind == "process" then
        -- no worker left, none started again while the pool is open
        assert.is_true(H.wait_until(function() return #p:pids() == 0 end))
      end
      local ok2, err2 = p:submit(function() return 2 end):join(H.TIMEOUT)   -- and the jobs after it
      assert.is_false(ok2)
      assert.equal(err, err2)
      local ok3, err3 = pcall(p.apply, p, function() return 3 end)
      assert.is_false(ok3)
      assert.equal(err, err3)
      local ok4, err4 = pcall(p.map, p, function(x) return x end, { 1, 2, 3 })
      assert.is_false(ok4)
      assert.equal(err, err4)
      finish(p)
      assert.equal(2, d.starts)                        -- each worker once
    end)

    it("one worker's initializer raising leaves the others serving; it is not replaced", function()
      local d = shared.dict()
      d.starts = 0
      local p = pool.new{ size = 2, kind = kind, initargs = { d },
        initializer = function(dd) if dd:incr("starts") == 1 then error("first fails", 0) end end }
      local fs = {}
      for i = 1, 8 do fs[i] = p:submit(function(x) return x * 2 end, i) end
      for i = 1, 8 do assert.same({ true, 2 * i }, { fs[i]:join(H.TIMEOUT) }) end
      assert.same({ 2, 4, 6 }, p:map(function(x) return x * 2 end, { 1, 2, 3 }, 1))
      if kind == "process" then
        assert.is_true(H.wait_until(function() return #p:pids() == 1 end))
        -- a worker killed while running a job fails that job and is replaced, as before
        local victim = p:submit(function() require("strand").sleep(30) end)
        assert.is_true(H.wait_until(function() return victim:status() == "running" end))
        os.execute("kill -9 " .. p:pids()[1])
        assert.same({ false, "worker exited: signal 9" }, { victim:join(H.TIMEOUT) })
        assert.equal(5, p:apply(function() return 5 end))
        assert.equal(1, #p:pids())
        finish(p)
        assert.equal(3, d.starts)                      -- the two, then the killed one's replacement
      else
        finish(p)
        assert.equal(2, d.starts)
      end
    end)
  end)
end

describe("process pool whose workers die at once", function()
  H.guard()

  -- an initializer that exits (not a raise: as a worker killed at start, out of memory) gets no
  -- error to the parent: such a worker is replaced when jobs are queued, each new one taking a
  -- job and failing it, never in a loop while the pool is idle
  it("is restarted only for queued jobs, each failing \"worker exited: code 3\"", function()
    local d = shared.dict()
    d.starts = 0
    local p = pool.new{ size = 1, initargs = { d },
      initializer = function(dd) dd:incr("starts"); os.exit(3) end }
    local fs = {}
    for i = 1, 3 do fs[i] = p:submit(function(x) return x end, i) end
    for i = 1, 3 do assert.same({ false, "worker exited: code 3" }, { fs[i]:join(H.TIMEOUT) }) end
    assert.is_true(H.wait_until(function() return #p:pids() == 0 end))   -- idle: none started
    finish(p)
    assert.is_true(d.starts <= 3, "workers started: " .. tostring(d.starts))   -- one per job at most
  end)

  -- a fork that keeps failing while a worker runs (refused here: a strand thread runs) is tried
  -- again after a wait doubled each time up to 1 s, not for every job queued and result read
  it("a replacement that cannot be started is tried again after a growing wait", function()
    local thread = require "strand.thread"
    local sync = require "strand.sync"
    local process = require "strand.process"
    local p <close> = pool.new{ size = 2 }
    assert.equal(2, #p:pids())
    local gate = sync.event()
    local t = thread.start(function(ev) return ev:wait(30) end, gate)   -- forking is refused now
    local real, forks = process._fork, 0
    process._fork = function(...) forks = forks + 1; return real(...) end   -- counted, then real
    local ok, err = pcall(function()
      local victim = p:submit(function() require("strand").sleep(30) end)
      assert.is_true(H.wait_until(function() return victim:status() == "running" end))
      local t0 = strand.now()
      os.execute("kill -9 " .. p:pids()[1])   -- (jobs go out in order)
      assert.same({ false, "worker exited: signal 9" }, { victim:join(H.TIMEOUT) })
      local fs = {}
      for i = 1, 200 do fs[i] = p:submit(function(x) return x end, i) end   -- on the one left
      for i = 1, 200 do assert.same({ true, i }, { fs[i]:join(H.TIMEOUT) }) end
      local elapsed = strand.now() - t0
      -- waits of 0.05, 0.1, 0.2, 0.4, 0.8, then 1 s: at most 6 tries in the first 1.55 s
      assert.is_true(forks <= 6 + elapsed, ("%d forks tried in %.2f s"):format(forks, elapsed))
      assert.equal(1, #p:pids())
    end)
    process._fork = real
    gate:set()
    assert.is_true(t:result(H.TIMEOUT))
    assert(ok, err)
    assert.same({ true, 3 }, { p:submit(function() return 3 end):join(H.TIMEOUT) })
  end)
end)
