-- Tasks: spawn, sleep, join, result, cancel, timeout, groups, joinall/wait/as_completed.
local strand = require "strand"
local H = require "support.helper"

describe("tasks", function()
  it("sleeps finish in deadline order, concurrently", function()
    local order = {}
    local t0 = strand.now()
    for _, d in ipairs { 0.2, 0.1, 0 } do
      strand.spawn(function() strand.sleep(d); order[#order + 1] = d end)
    end
    strand.run()
    local took = strand.now() - t0
    assert.same({ 0, 0.1, 0.2 }, order)
    assert.is_true(took >= 0.2 and took < 2, "took " .. took)   -- loose: loaded CI machines
  end)

  it("sleep_until wakes at an absolute monotonic time", function()
    local target = strand.now() + 0.02
    strand.sleep_until(target)
    assert.is_true(strand.now() >= target)
    strand.sleep_until(strand.now() - 1)   -- in the past: just lets others run
    assert.has_error(function() strand.sleep_until("soon") end)
  end)

  it("10 tasks sleeping 0.1 s take about 0.1 s, not 1 s", function()
    local t0 = strand.now()
    local ts = {}
    for i = 1, 10 do ts[i] = strand.spawn(strand.sleep, 0.1) end
    strand.joinall(ts)
    local took = strand.now() - t0
    assert.is_true(took < 0.9, "took " .. took)   -- loose (loaded CI), still below 10 x 0.1 s
  end)

  it("passes arguments and returns results through join and result", function()
    local t = strand.spawn(function(a, b) strand.sleep(0); return a + b, "x", nil end, 2, 3)
    local ok, s, x = t:join()
    assert.is_true(ok); assert.equal(5, s); assert.equal("x", x)
    assert.equal(5, (t:result()))
    assert.equal(3, select("#", t:result()))
    assert.equal("done", t:status())
    assert.is_true(t:done())
    assert.is_number(t.id)
    assert.matches("strand.task %d+", tostring(t))
  end)

  it("join with timeout returns nil, timeout and the task keeps running", function()
    local t = strand.spawn(strand.sleep, 0.2)
    local r, err = t:join(0.01)
    assert.is_nil(r); assert.equal("timeout", err)
    assert.equal("waiting", t:status())
    assert.is_true((t:join(2)))
  end)

  it("result re-raises the task's error with a traceback", function()
    local t = strand.spawn(function() error("boom") end)
    local ok, err = pcall(t.result, t)
    assert.is_false(ok)
    assert.matches("boom", err)
    assert.matches("stack traceback", err)
    local ok2, err2 = t:join()
    assert.is_false(ok2); assert.matches("boom", err2)
    assert.equal("failed", t:status())
  end)

  it("non-string errors are kept as they are", function()
    local e = { code = 7 }
    local t = strand.spawn(function() error(e) end)
    local ok, err = t:join()
    assert.is_false(ok); assert.equal(e, err)
  end)

  it("status reflects the life of a task", function()
    local t = strand.spawn(function() strand.sleep(60) end)
    assert.equal("ready", t:status())
    strand.sleep(0)                 -- one round: t runs until its sleep (no timing involved)
    assert.equal("waiting", t:status())
    local seen
    local u = strand.spawn(function() seen = strand.current():status() end)
    u:join()
    assert.equal("running", seen)
    assert.equal("done", u:status())
    t:cancel()
    t:join()
    assert.equal("cancelled", t:status())
  end)

  it("current is nil outside tasks and the task inside", function()
    assert.is_nil(strand.current())
    local inner
    local t = strand.spawn(function() inner = strand.current() end)
    t:join()
    assert.equal(t, inner)
  end)

  it("current names its own task as tasks finish and new ones reuse their places; nil in a coroutine a task made", function()
    local seen, tasks = {}, {}
    for round = 1, 3 do                       -- finished tasks free places the next round takes
      for i = 1, 20 do
        local k = round * 100 + i
        tasks[k] = strand.spawn(function()
          strand.sleep(0)                       -- current is asked again after a switch
          seen[k] = strand.current()
        end)
      end
      for i = 1, 20, 2 do tasks[round * 100 + i]:join() end
    end
    strand.run()
    for k, t in pairs(tasks) do assert.equal(t, seen[k]) end
    local inner, err
    strand.spawn(function()
      local co = coroutine.create(function() inner = strand.current() or false end)
      assert(coroutine.resume(co))
      local ok
      ok, err = coroutine.resume(coroutine.create(function() strand.sleep(0) end))
      assert.is_false(ok)
    end):join()
    assert.is_false(inner)
    assert.matches("coroutine that strand does not own", err)
  end)

  it("sleep(0) lets every other ready task run once (round robin)", function()
    local log = {}
    local function worker(name)
      for i = 1, 3 do log[#log + 1] = name .. i; strand.sleep(0) end
    end
    strand.spawn(worker, "a"); strand.spawn(worker, "b")
    strand.run()
    assert.same({ "a1", "b1", "a2", "b2", "a3", "b3" }, log)
  end)

  it("a bare coroutine.yield inside a task just lets others run", function()
    local log = {}
    strand.spawn(function() log[#log + 1] = 1; coroutine.yield(); log[#log + 1] = 3 end)
    strand.spawn(function() log[#log + 1] = 2 end)
    strand.run()
    assert.same({ 1, 2, 3 }, log)
  end)

  it("plain coroutines still work inside tasks", function()
    local r = H.run(function()
      local gen = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
      return gen() + gen() + gen()
    end)
    assert.equal(6, r)
  end)

  it("run returns the function's results and waits for every task", function()
    local late = false
    local a, b = strand.run(function()
      strand.spawn(function() strand.sleep(0.05); late = true end)
      return 1, 2
    end)
    assert.equal(1, a); assert.equal(2, b)
    assert.is_true(late)
  end)

  it("run raises the function's error at once, cancelling the tasks still running (they clean up)", function()
    local cleaned, waiter, other = false, nil, nil
    local ok, err = pcall(strand.run, function()
      waiter = strand.spawn(function()
        local _ <close> = setmetatable({}, { __close = function() cleaned = true end })
        strand.sleep(3600)                       -- would hold run for an hour
      end)
      other = strand.spawn(function() require("strand.sync").event():wait() end)   -- for ever
      strand.sleep(0)
      error("boom", 0)
    end)
    assert.is_false(ok)
    assert.matches("^boom", err)
    assert.is_true(cleaned)
    assert.equal("cancelled", waiter:status())
    assert.equal("cancelled", other:status())
    assert.equal(42, strand.run(function() return 42 end))   -- the loop is usable afterwards
  end)

  it("driving the loop from the main chunk runs other tasks", function()
    local ticks = 0
    local t = strand.spawn(function() for _ = 1, 5 do strand.sleep(0.01); ticks = ticks + 1 end end)
    -- the main chunk only sleeps (bounded), and the task's five sleeps complete meanwhile
    assert.is_true(H.wait_until(function() return ticks == 5 end, H.TIMEOUT, 0.02))
    strand.sleep(0)
    assert.equal("done", t:status())
  end)

  it("timers fire with sub-millisecond scheduling delay", function()
    local late = {}
    for i = 1, 51 do
      local a = strand.now()
      strand.sleep(0.002)
      late[i] = strand.now() - a - 0.002
    end
    table.sort(late)
    assert.is_true(late[1] >= 0, "a timer fired early")
    -- the 5th best of 51: robust to a loaded machine preempting most samples (the median was
    -- not: 2 ms under load), still fails for coarse (10 ms) timers
    assert.is_true(late[5] < 0.001, "5th smallest lateness " .. late[5])
  end)
end)

describe("cancellation", function()
  it("cancels a sleeping task at its wait point", function()
    local t = strand.spawn(strand.sleep, 10)
    strand.sleep(0)
    assert.is_true(t:cancel("stop"))
    local ok, err = t:join(1)
    assert.is_false(ok)
    assert.is_true(strand.is_cancelled(err))
    assert.equal("stop", err.reason)
    assert.equal("cancelled: stop", tostring(err))
    assert.equal("cancelled", t:status())
    assert.is_false(t:cancel())
  end)

  it("a task cancelled before it ran never runs", function()
    local ran = false
    local t = strand.spawn(function() ran = true end)
    t:cancel()
    strand.run()
    assert.is_false(ran)
    assert.equal("cancelled", t:status())
  end)

  it("runs <close> variables and pcall handlers of the cancelled task", function()
    local closed, caught = false, nil
    local t = strand.spawn(function()
      local guard <close> = setmetatable({}, { __close = function() closed = true end })
      local ok, err = pcall(function() strand.sleep(10) end)
      caught = err
      if not ok then error(err, 0) end
    end)
    strand.sleep(0.01)
    t:cancel()
    local ok, err = t:join(1)
    assert.is_false(ok)
    assert.is_true(strand.is_cancelled(err))
    assert.is_true(strand.is_cancelled(caught))
    assert.is_true(closed)
  end)

  it("cancels a task blocked in a nested pcall", function()
    local depth
    local t = strand.spawn(function()
      pcall(function()
        pcall(function() depth = 2; strand.sleep(10) end)
        depth = 1
        strand.sleep(10)
      end)
      depth = 0
    end)
    strand.sleep(0.01)
    t:cancel()   -- caught by the inner pcall: the task goes on to its next wait
    strand.sleep(0.01)
    assert.equal(1, depth)
    t:cancel()
    strand.sleep(0.01)
    assert.equal(0, depth)
    assert.is_true((t:join(1)))
  end)

  it("a task can cancel itself: delivered at its next wait", function()
    local t = strand.spawn(function()
      strand.current():cancel("me")
      strand.sleep(0)
      return "not reached"
    end)
    local ok, err = t:join(1)
    assert.is_false(ok); assert.equal("me", err.reason)
  end)

  it("a cancellation still pending when the body returns is dropped: the task is done", function()
    local seen = setmetatable({}, { __mode = "k" })
    local t = strand.spawn(function()
      local reason = {}
      seen[reason] = true
      strand.current():cancel(reason)
      return "finished", 2
    end)
    assert.same({ true, "finished", 2 }, { t:join(1) })
    collectgarbage(); collectgarbage()
    assert.is_nil(next(seen), "the dropped cancellation is still held")
    assert.equal("done", t:status())
    assert.same({ "finished", 2 }, { t:result() })
    t:cancel("after the end")                      -- a finished task ignores it
    assert.equal("done", t:status())
  end)

  it("an error in a <close> handler during cancellation replaces the error", function()
    local t = strand.spawn(function()
      local g <close> = setmetatable({}, { __close = function() error("close failed") end })
      strand.sleep(10)
    end)
    strand.sleep(0.01)
    t:cancel()
    local ok, err = t:join(1)
    assert.is_false(ok)
    assert.matches("close failed", tostring(err))
  end)
end)

describe("timeout", function()
  it("returns true and the results when fn finishes in time", function()
    assert.same({ true, 1, 2 }, { H.run(function()
      return strand.timeout(1, function() strand.sleep(0.01); return 1, 2 end)
    end) })
    assert.same({ true, 3 }, { strand.timeout(1, function() return 3 end) })
  end)

  it("cancels fn and returns nil, timeout (inside and outside tasks)", function()
    local cleaned = false
    local r, e = H.run(function()
      return strand.timeout(0.02, function()
        local g <close> = setmetatable({}, { __close = function() cleaned = true end })
        strand.sleep(5)
      end)
    end)
    assert.is_nil(r); assert.equal("timeout", e); assert.is_true(cleaned)
    local t0 = strand.now()
    r, e = strand.timeout(0.02, strand.sleep, 5)
    assert.is_nil(r); assert.equal("timeout", e)
    assert.is_true(strand.now() - t0 < 1)
  end)

  it("nested timeouts: the inner one fires first", function()
    local r = H.run(function()
      local ok, inner = strand.timeout(1, function()
        return strand.timeout(0.01, strand.sleep, 5)
      end)
      return ok, inner
    end)
    assert.is_true(r)
  end)

  it("a timeout that fires after fn finished does not leak into later waits", function()
    H.run(function()
      assert.is_true((strand.timeout(0.01, function()
        local t0 = strand.now()
        while strand.now() - t0 < 0.03 do end   -- busy: the timer fires meanwhile
      end) ~= nil))
      strand.sleep(0.01)   -- must not raise
    end)
  end)

  it("errors of fn propagate", function()
    local ok, err = pcall(strand.timeout, 1, function() error("bad", 0) end)
    assert.is_false(ok); assert.matches("^bad", err)
    ok, err = H.run(function() return pcall(strand.timeout, 1, function() error("bad2", 0) end) end)
    assert.is_false(ok); assert.equal("bad2", err)
  end)
end)

describe("groups and waiting for many", function()
  it("closing a group cancels what still runs and waits for it", function()
    local cleaned = 0
    H.run(function()
      do
        local g <close> = strand.group()
        for _ = 1, 3 do
          g:spawn(function()
            local c <close> = setmetatable({}, { __close = function() cleaned = cleaned + 1 end })
            strand.sleep(10)
          end)
        end
        strand.sleep(0.01)
      end
    end)
    assert.equal(3, cleaned)
  end)

  it("group wait returns true when every child is done and raises a child's failure", function()
    H.run(function()
      local g <close> = strand.group()
      g:spawn(strand.sleep, 0.01)
      assert.is_true(g:wait(1))
      g:spawn(function() error("child failed", 0) end)
      local ok, err = pcall(g.wait, g, 1)
      assert.is_false(ok); assert.matches("child failed", err)
      g:spawn(strand.sleep, 5)
      local r, e = g:wait(0.01)
      assert.is_nil(r); assert.equal("timeout", e)
    end)
  end)

  it("joinall, wait any/all and as_completed", function()
    H.run(function()
      -- the order of completion is set by gates the spec opens, not by sleeps (exact under load)
      local core = require "strand.core"
      local ts, gates = {}, {}
      for i = 1, 3 do
        gates[i] = core.notifier()
        ts[i] = strand.spawn(function() gates[i]:wait(); return i end)
      end
      gates[2]:notify()
      local done, pending = strand.wait(ts, { mode = "any" })
      assert.equal(1, #done); assert.equal(2, #pending); assert.equal(ts[2], done[1])
      local order = {}
      gates[3]:notify()
      for t in strand.as_completed(ts) do
        order[#order + 1] = t:result()
        if #order == 2 then gates[1]:notify() end
      end
      assert.same({ 2, 3, 1 }, order)
      done, pending = strand.joinall(ts)
      assert.equal(3, #done); assert.equal(0, #pending)
      local slow = strand.spawn(strand.sleep, 5)
      done, pending = strand.wait({ slow }, { timeout = 0.01 })
      assert.equal(0, #done); assert.equal(1, #pending)
      assert.has_error(function() for _ in strand.as_completed({ slow }, 0.01) do end end)
      slow:cancel()
    end)
  end)

  it("as_completed can stop early", function()
    H.run(function()
      local ts = {}
      for i = 1, 5 do ts[i] = strand.spawn(strand.sleep, i * 0.01) end
      local n = 0
      for _ in strand.as_completed(ts) do n = n + 1; if n == 2 then break end end
      assert.equal(2, n)
    end)
  end)
end)

describe("tasks: failure conditions", function()
  it("bad arguments raise naming the argument", function()
    assert.has_error(function() strand.spawn(42) end)
    assert.has_error(function() strand.sleep(-1) end)
    assert.has_error(function() strand.sleep("x") end)
    local t = strand.spawn(function() end)
    assert.has_error(function() t:join(-1) end)
    assert.has_error(function() t:join("soon") end)
    assert.has_error(function() strand.timeout(-1, print) end)
    assert.has_error(function() strand.timeout(1, 42) end)
    assert.has_error(function() strand.joinall(42) end)
    assert.has_error(function() strand.joinall({ 42 }) end)
    assert.has_error(function() strand.wait({}, { mode = "some" }) end)
    t:join()
  end)

  it("a task cannot join itself", function()
    local t = strand.spawn(function() return strand.current():join() end)
    local ok, err = t:join(1)
    assert.is_false(ok); assert.matches("cannot join itself", err)
  end)

  it("blocking in a foreign coroutine while the loop runs raises a clear error", function()
    local ok, err = H.run(function()
      return pcall(coroutine.wrap(function() strand.sleep(0.01) end))
    end)
    assert.is_false(ok)
    assert.matches("coroutine that strand does not own", err)
  end)

  it("a foreign coroutine may block when nobody drives the loop", function()
    local co = coroutine.wrap(function() strand.sleep(0.01); return "slept" end)
    assert.equal("slept", co())
  end)

  it("blocking across a non-yieldable C call raises instead of hanging", function()
    local ok, err = H.run(function()
      return pcall(table.sort, { 3, 2, 1 }, function(a, b) strand.sleep(0); return a < b end)
    end)
    assert.is_false(ok)
    assert.matches("cannot block here", err)
  end)

  it("a deadlock raises instead of hanging", function()
    local ok, err = pcall(function()
      local me
      local t = strand.spawn(function() strand.current():join() end)
      me = t
      strand.spawn(function() me:join() end)
      strand.run()
    end)
    -- the first task fails (join itself); the second joins it: no deadlock there
    assert.is_true(ok, err)
    local a, b
    ok, err = pcall(strand.run, function()
      a = strand.spawn(function() strand.sleep(0); b:join() end)
      b = strand.spawn(function() strand.sleep(0); a:join() end)
      a:join()
    end)
    assert.is_false(ok)
    assert.matches("deadlock", err)
    a:cancel(); b:cancel()
    strand.run()
    assert.equal("cancelled", a:status())
  end)

  it("an error in a task nobody joins is reported once on stderr, not fatal", function()
    local out, ok = H.lua([[
      local strand = require "strand"
      strand.spawn(function() error("lost in space") end)
      strand.run()
      collectgarbage(); collectgarbage()
      print("still alive")
    ]])
    assert.truthy(ok)
    assert.matches("still alive", out)
    local _, n = out:gsub("lost in space", "")
    assert.equal(1, n)
  end)

  it("a joined failure is not reported", function()
    local out = H.lua([[
      local strand = require "strand"
      local t = strand.spawn(function() error("seen") end)
      t:join()
      t = nil
      collectgarbage(); collectgarbage()
      print("end")
    ]])
    assert.not_matches("seen", out)
  end)

  it("a task resumed from outside strand raises instead of corrupting the loop", function()
    H.run(function()
      local victim_co
      local victim = strand.spawn(function() victim_co = coroutine.running(); strand.sleep(10) end)
      strand.sleep(0.01)
      local ok, err = coroutine.resume(victim_co)
      assert.is_false(ok)
      assert.matches("resumed by something other than its loop", err)
      victim:cancel()
      local jok = victim:join(1)
      assert.is_false(jok)
      strand.sleep(0.01)   -- the loop still works
    end)
  end)
end)

describe("exact errors (issue 10)", function()
  it("result() raises exactly 'timeout' and 'cancelled', as a method and under pcall", function()
    local slow = strand.spawn(strand.sleep, 5)
    local function as_method() return slow:result(0.01) end
    local ok, err = pcall(as_method)
    assert.is_false(ok); assert.equal("timeout", err)
    ok, err = pcall(slow.result, slow, 0.01)
    assert.is_false(ok); assert.equal("timeout", err)
    slow:cancel()
    ok, err = pcall(function() return slow:result(1) end)
    assert.is_false(ok); assert.equal("cancelled", err)
    ok, err = H.run(function()
      local slow2 = strand.spawn(strand.sleep, 5)
      local r = { pcall(function() return slow2:result(0.01) end) }
      slow2:cancel()
      return table.unpack(r)
    end)
    assert.is_false(ok); assert.equal("timeout", err)
    -- inside a task, a cancelled child's result is the string: the caller is not cancelled
    assert.equal("cancelled", H.run(function()
      local t = strand.spawn(strand.sleep, 5)
      strand.sleep(0); t:cancel("why")
      local ok2, e = pcall(function() return t:result() end)
      assert.is_false(ok2)
      return e
    end))
  end)

  it("thread result() raises exactly 'timeout'", function()
    local thread = require "strand.thread"
    local q = require("strand.queue").new()
    local th = thread.start(function(q) return q:get() end, q)
    local ok, err = pcall(function() return th:result(0.01) end)
    assert.is_false(ok); assert.equal("timeout", err)
    q:put("go")
    assert.equal("go", th:result(H.TIMEOUT))
  end)

  it("as_completed raises exactly 'timeout'", function()
    local slow = strand.spawn(strand.sleep, 5)
    local ok, err = pcall(function() for _ in strand.as_completed({ slow }, 0.01) do end end)
    assert.is_false(ok); assert.equal("timeout", err)
    ok, err = H.run(function()
      return pcall(function() for _ in strand.as_completed({ slow }, 0.01) do end end)
    end)
    assert.is_false(ok); assert.equal("timeout", err)
    slow:cancel(); slow:join()
  end)

  it("timeout(0, fn) behaves the same in the main program and in a task: fn runs until its first wait", function()
    local function probe()
      local log = {}
      local r1 = { strand.timeout(0, function() log[#log + 1] = "ran"; return 1 end) }
      local r2 = { strand.timeout(0, function()
        log[#log + 1] = "before wait"
        strand.sleep(1)
        log[#log + 1] = "after wait"
      end) }
      local r3 = { strand.timeout(0, function() log[#log + 1] = "sleep0"; strand.sleep(0); log[#log + 1] = "no" end) }
      return { r1, r2, r3, log }
    end
    local want = { { true, 1 }, { nil, "timeout" }, { nil, "timeout" }, { "ran", "before wait", "sleep0" } }
    assert.same(want, probe())
    assert.same(want, H.run(probe))
  end)

  it("cancel() without a reason: the error prints as 'cancelled' (it once held itself as reason)", function()
    local t = strand.spawn(strand.sleep, 5)
    strand.sleep(0)
    t:cancel()
    local ok, err = t:join(H.TIMEOUT)
    assert.is_false(ok)
    assert.is_nil(rawget(err, "reason"))
    assert.equal("cancelled", tostring(err))
  end)

  it("a non-daemon thread that fails unjoined reports its error on stderr at exit", function()
    local out, ok = H.lua([[
local thread = require "strand.thread"
thread.start(function() require("strand").sleep(0.05); error("thread boom") end)
local t2 = thread.start(function() error("joined boom") end)
assert(t2:join() == false)
thread.new{fn = function() error("never started") end}
print("main done")
]])
    assert.is_true(ok)
    assert.matches("^main done\nstrand: thread Thread%-%d+ failed and nobody joined it:\n[^\n]*: thread boom\nstack traceback:", out)
    assert.is_nil(out:find("joined boom", 1, true))
    assert.is_nil(out:find("never started", 1, true))
  end)

  it("a group dropped without closing cancels its children when collected", function()
    local t
    do
      local g = strand.group()
      t = g:spawn(strand.sleep, 10)
      strand.sleep(0)
    end
    collectgarbage(); collectgarbage()
    local ok, err = t:join(H.TIMEOUT)
    assert.is_false(ok); assert.is_true(strand.is_cancelled(err))
    assert.equal("cancelled", t:status())
  end)
end)

describe("the spawn / finish path (issue 14: fewer instructions per task)", function()
  it("a failure nobody joined is reported once when the task is collected, not when joined", function()
    local out, ok = H.lua([[
io.stdout:setvbuf("no")
local strand = require "strand"
strand.spawn(function() error("boom one") end)
local joined = strand.spawn(function() error("boom joined") end)
strand.spawn(function() error(setmetatable({}, { __tostring = function() return "boom table" end })) end)
local cancelled = strand.spawn(strand.sleep, 10)
local done = strand.spawn(function() return 1 end)
strand.sleep(0)
cancelled:cancel()
strand.run()
assert(joined:join() == false)
done = nil
collectgarbage(); collectgarbage()
print("collected")
local kept = strand.spawn(function() error("boom at exit") end)
strand.run()
print("main done")
]])
    assert.is_true(ok, out)
    local one = out:find("strand: task 1 failed and nobody joined it:\n[^\n]*: boom one\nstack traceback:")
    local tbl = out:find("strand: task 3 failed and nobody joined it:\nboom table\n", 1, false)
    local collected = out:find("collected\n", 1, true)
    local exit = out:find("main done\nstrand: task 6 failed and nobody joined it:\n[^\n]*: boom at exit\n")
    assert.truthy(one, out); assert.truthy(tbl, out); assert.truthy(collected, out); assert.truthy(exit, out)
    assert.is_true(one < collected and tbl < collected, out)
    assert.is_nil(out:find("boom joined", 1, true))
    assert.is_nil(out:find("task 4", 1, true))          -- a cancellation is not reported
    local _, n = out:gsub("nobody joined", "")
    assert.equal(3, n)
  end)

  it("a failed task's error stays the one join returns after the report is armed", function()
    local t = strand.spawn(function() error({ code = 7 }) end)
    strand.sleep(0)
    local ok, err = t:join()
    assert.is_false(ok); assert.equal(7, err.code)
    assert.equal(7, select(2, t:join()).code)                  -- again, the same value
    assert.equal("failed", t:status())
    local ok2, err2 = pcall(t.result, t)
    assert.is_false(ok2); assert.equal(7, err2.code)
  end)

  it("spawn passes many arguments (more than a new coroutine's first stack holds)", function()
    local args = {}
    for i = 1, 200 do args[i] = i end
    local t = strand.spawn(function(...) strand.sleep(0); return select("#", ...), (select(200, ...)) end,
      table.unpack(args))
    local n, last = t:result()
    assert.equal(200, n); assert.equal(200, last)
  end)

  it("sleep(0) in a task delivers a pending cancellation, and gives others a turn", function()
    local order = {}
    local a = strand.spawn(function() for i = 1, 3 do order[#order + 1] = "a" .. i; strand.sleep(0) end end)
    local b = strand.spawn(function() for i = 1, 3 do order[#order + 1] = "b" .. i; strand.sleep() end end)
    assert.is_true((a:join())); assert.is_true((b:join()))
    assert.same({ "a1", "b1", "a2", "b2", "a3", "b3" }, order)
    local reached = false
    local c = strand.spawn(function()
      strand.current():cancel("stop")
      strand.sleep(0)
      reached = true
    end)
    local ok, err = c:join()
    assert.is_false(ok); assert.is_true(strand.is_cancelled(err)); assert.equal("stop", err.reason)
    assert.is_false(reached)
    assert.has_error(function() strand.sleep(-1) end, "bad argument #1 to 'sleep' (seconds must be >= 0)")
    assert.has_error(function() strand.sleep("x") end)
    strand.sleep("0")                                      -- a numeric string, as before
  end)
end)
