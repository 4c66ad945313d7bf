-- spec/sync_spec.lua — strand.sync: locks, rlocks, semaphores, events, conditions, barriers
-- between the tasks of one thread, and between threads when strand.thread is built.
local strand = require "strand"
local sync = require "strand.sync"
local H = require "support.helper"

local gates = require "support.gates"
local thread = gates.thread   -- nil when this build has no threads

describe("strand.sync", function()
  H.guard()

  describe("lock", function()
    it("acquire returns the lock; release; locked", function()
      local l = sync.lock()
      assert.is_false(l:locked())
      assert.equal(l, l:acquire())
      assert.is_true(l:locked())
      l:release()
      assert.is_false(l:locked())
    end)

    it("acquire with a timeout reports the timeout while held", function()
      local l = sync.lock()
      l:acquire()
      local t0 = strand.now()
      local r, err = l:acquire(0.05)
      assert.is_nil(r); assert.equal("timeout", err)
      assert.is_true(strand.now() - t0 >= 0.04)
      assert.same({ nil, "timeout" }, { l:acquire(0) })
      l:release()
      assert.equal(l, l:acquire(0))
      l:release()
    end)

    it("<close> releases, also on error", function()
      local l = sync.lock()
      do
        local held <close> = l:acquire()
        assert.is_true(l:locked())
      end
      assert.is_false(l:locked())
      local ok = pcall(function()
        local held <close> = l:acquire()
        error("boom")
      end)
      assert.is_false(ok)
      assert.is_false(l:locked())
    end)

    it("with(fn, ...) holds the lock around fn, returns its results, releases on error", function()
      local l = sync.lock()
      local a, b = l:with(function(x, y)
        assert.is_true(l:locked())
        return x + y, "ok"
      end, 1, 2)
      assert.equal(3, a); assert.equal("ok", b)
      assert.is_false(l:locked())
      local ok, err = pcall(l.with, l, function() error("inside") end)
      assert.is_false(ok); assert.matches("inside", err)
      assert.is_false(l:locked())
    end)

    it("many tasks contending: the counter is exact and nobody is inside twice", function()
      local l = sync.lock()
      local n, inside, worst = 0, 0, 0
      H.run(function()
        local ts = {}
        for i = 1, 30 do
          ts[i] = strand.spawn(function()
            for _ = 1, 40 do
              l:with(function()
                inside = inside + 1
                worst = math.max(worst, inside)
                local v = n
                strand.sleep(0)              -- let every other task try meanwhile
                n = v + 1
                inside = inside - 1
              end)
            end
          end)
        end
        for i = 1, 30 do assert.is_true((ts[i]:join())) end
      end)
      assert.equal(1200, n)
      assert.equal(1, worst)
      assert.is_false(l:locked())
    end)

    it("the main program waits for a lock a task holds, while tasks run", function()
      local l = sync.lock()
      local t = strand.spawn(function()
        l:acquire()
        strand.sleep(0.05)
        l:release()
      end)
      strand.sleep(0)                     -- the task takes the lock
      assert.is_true(l:locked())
      assert.equal(l, l:acquire(H.TIMEOUT))
      l:release()
      assert.is_true((t:join()))
    end)

    it("a lock can be released by another task (it has no owner)", function()
      local l = sync.lock()
      l:acquire()
      H.run(function() strand.spawn(function() l:release() end):join() end)
      assert.is_false(l:locked())
    end)

    it("boxes of one lock compare equal", function()
      local l = sync.lock()
      local q = require("strand.queue").new()
      if thread then                        -- shared with a thread: values are copied
        assert(thread.start(function(x) return x end, q):join())
      end
      q:put(l)
      local copy = q:get()
      if thread then assert.is_false(rawequal(l, copy)) end
      assert.is_true(l == copy)
      assert.is_false(l == sync.lock())
    end)
  end)

  describe("rlock", function()
    it("nests for its owner and is free after as many releases", function()
      local r = sync.rlock()
      r:acquire(); r:acquire(); r:acquire()
      r:release(); r:release()
      assert.is_true(r:locked())
      r:release()
      assert.is_false(r:locked())
    end)

    it("belongs to a task: another task waits, and cannot release it", function()
      local r = sync.rlock()
      H.run(function()
        r:acquire()
        local other = strand.spawn(function()
          local ok, err = pcall(r.release, r)
          assert.is_false(ok); assert.matches("cannot release un%-acquired lock", err)
          return r:acquire(0.05)
        end)
        local ok, res, err = other:join()
        assert.is_true(ok); assert.is_nil(res); assert.equal("timeout", err)
        r:release()
      end)
    end)

    it("a function re-entering its own lock deadlocks with a lock, works with an rlock", function()
      local function run_with(lk)
        local function helper()
          local got = lk:acquire(0.05)         -- the same task takes it again
          if not got then return "deadlock" end
          lk:release()
          return "ok"
        end
        lk:acquire()
        local r = helper()
        lk:release()
        return r
      end
      assert.equal("deadlock", run_with(sync.lock()))
      assert.equal("ok", run_with(sync.rlock()))
    end)
  end)

  describe("semaphore", function()
    it("semaphore(3) never admits a fourth task", function()
      local sem = sync.semaphore(3)
      local inside, worst, done = 0, 0, 0
      H.run(function()
        local ts = {}
        for i = 1, 20 do
          ts[i] = strand.spawn(function()
            for _ = 1, 3 do
              local held <close> = sem:acquire()
              inside = inside + 1
              worst = math.max(worst, inside)
              strand.sleep(0.002)
              inside = inside - 1
            end
            done = done + 1
          end)
        end
        for i = 1, 20 do assert.is_true((ts[i]:join())) end
      end)
      assert.equal(3, worst)
      assert.equal(20, done)
    end)

    it("release(n) lets n waiters in at once", function()
      local sem = sync.semaphore(0)
      local got = 0
      H.run(function()
        local ts = {}
        for i = 1, 5 do ts[i] = strand.spawn(function() sem:acquire(); got = got + 1 end) end
        strand.sleep(0.01)
        assert.equal(0, got)
        sem:release(3)
        strand.sleep(0.01)
        assert.equal(3, got)
        sem:release(2)
        for i = 1, 5 do ts[i]:join() end
      end)
      assert.equal(5, got)
    end)

    it("bounded_semaphore raises when released more than acquired", function()
      local b = sync.bounded_semaphore(2)
      b:acquire()
      b:release()
      assert.has_error(function() b:release() end, "semaphore released too many times")
      local s = sync.semaphore(1)
      s:release(); s:release()                 -- unbounded: fine
      assert.equal(s, s:acquire(0)); assert.equal(s, s:acquire(0)); assert.equal(s, s:acquire(0))
      assert.is_nil((s:acquire(0)))
    end)
  end)

  describe("event", function()
    it("wait returns true once set, false on timeout", function()
      local ev = sync.event()
      assert.is_false(ev:is_set())
      assert.is_false(ev:wait(0.02))
      ev:set()
      assert.is_true(ev:is_set())
      assert.is_true(ev:wait())
      ev:clear()
      assert.is_false(ev:wait(0))
    end)

    it("traffic light: cars wait for green, a light task sets and clears", function()
      local light = sync.event()
      local passed, log = 0, {}
      H.run(function()
        local cars = {}
        for i = 1, 6 do
          cars[i] = strand.spawn(function()
            strand.sleep(0.01 * i)
            while not light:is_set() do light:wait() end
            passed = passed + 1
            log[#log + 1] = light:is_set() and "green" or "red"
          end)
        end
        local lamp = strand.spawn(function()
          for _ = 1, 5 do
            light:clear(); strand.sleep(0.02)
            light:set(); strand.sleep(0.02)
          end
          light:set()
        end)
        for i = 1, 6 do assert.is_true((cars[i]:join())) end
        lamp:join()
      end)
      assert.equal(6, passed)
      for _, c in ipairs(log) do assert.equal("green", c) end
    end)

    it("set wakes everybody waiting at the time, even if cleared at once", function()
      local ev = sync.event()
      H.run(function()
        local ts = {}
        for i = 1, 5 do ts[i] = strand.spawn(function() return ev:wait(H.TIMEOUT) end) end
        strand.sleep(0.01)
        ev:set(); ev:clear()
        for i = 1, 5 do
          local ok, r = ts[i]:join()
          assert.is_true(ok); assert.is_true(r)
        end
        assert.is_false(ev:wait(0.01))
      end)
    end)
  end)

  describe("condition", function()
    it("producer/consumer: every item consumed once, in order", function()
      local cond = sync.condition()
      local items, got = {}, {}
      H.run(function()
        local consumers = {}
        for c = 1, 3 do
          consumers[c] = strand.spawn(function()
            for _ = 1, 10 do
              cond:with(function()
                assert.is_true(cond:wait_for(function() return #items > 0 end, H.TIMEOUT))
                got[#got + 1] = table.remove(items, 1)
              end)
            end
          end)
        end
        for i = 1, 30 do
          cond:with(function()
            items[#items + 1] = i
            cond:notify()
          end)
          if i % 7 == 0 then strand.sleep(0.001) end
        end
        for c = 1, 3 do assert.is_true((consumers[c]:join())) end
      end)
      assert.equal(30, #got)
      for i = 1, 30 do assert.equal(i, got[i]) end
    end)

    it("wait releases the lock while waiting and holds it again after", function()
      local cond = sync.condition(sync.lock())
      H.run(function()
        local waiter = strand.spawn(function()
          cond:acquire()
          local r = cond:wait(H.TIMEOUT)
          local held = cond:locked()
          cond:release()
          return r, held
        end)
        strand.sleep(0.01)
        assert.is_false(cond:locked())          -- the waiter let it go
        cond:acquire(); cond:notify(); cond:release()
        local ok, r, held = waiter:join()
        assert.is_true(ok); assert.is_true(r); assert.is_true(held)
      end)
    end)

    it("an rlock held several times is given back at the same depth", function()
      local r = sync.rlock()
      local cond = sync.condition(r)
      H.run(function()
        local waiter = strand.spawn(function()
          r:acquire(); r:acquire()
          assert.is_false(cond:wait(0.02))
          r:release()
          local still = r:locked()
          r:release()
          return still
        end)
        local ok, still = waiter:join()
        assert.is_true(ok); assert.is_true(still)
        assert.is_false(r:locked())
      end)
    end)

    it("notify(n) wakes n waiters, notify_all the rest", function()
      local cond = sync.condition()
      local woke = 0
      H.run(function()
        local ts = {}
        for i = 1, 5 do
          ts[i] = strand.spawn(function()
            cond:with(function() if cond:wait(H.TIMEOUT) then woke = woke + 1 end end)
          end)
        end
        strand.sleep(0.01)
        cond:with(function() cond:notify(2) end)
        strand.sleep(0.01)
        assert.equal(2, woke)
        cond:with(function() cond:notify_all() end)
        for i = 1, 5 do ts[i]:join() end
      end)
      assert.equal(5, woke)
    end)

    it("a waiter that comes after a notify is not woken by it", function()
      local cond = sync.condition()
      H.run(function()
        local first = strand.spawn(function() return cond:with(function() return cond:wait(H.TIMEOUT) end) end)
        strand.sleep(0.01)
        cond:acquire()
        cond:notify()
        local late = strand.spawn(function() return cond:with(function() return cond:wait(0.05) end) end)
        cond:release()
        assert.same({ true, true }, { first:join() })
        assert.same({ true, false }, { late:join() })
      end)
    end)

    it("wait_for returns the predicate's value, or its last value on timeout", function()
      local cond = sync.condition()
      cond:acquire()
      assert.equal(7, cond:wait_for(function() return 7 end))
      assert.is_false(cond:wait_for(function() return false end, 0.02))
      cond:release()
    end)

    it("a cancelled waiter gives the lock back and leaves the others notifiable", function()
      local cond = sync.condition()
      H.run(function()
        local victim = strand.spawn(function() cond:with(function() cond:wait() end) end)
        local other = strand.spawn(function() return cond:with(function() return cond:wait(H.TIMEOUT) end) end)
        strand.sleep(0.01)
        victim:cancel()
        local ok, err = victim:join()
        assert.is_false(ok); assert.is_true(strand.is_cancelled(err))
        assert.is_false(cond:locked())
        cond:with(function() cond:notify() end)
        assert.same({ true, true }, { other:join() })
      end)
    end)
  end)

  describe("condition: how a wait ends (the lock is always taken back first)", function()
    local function until_(pred)                 -- a bounded wait for a state change
      local deadline = strand.now() + H.TIMEOUT
      while not pred() do
        assert(strand.now() < deadline, "state not reached")
        strand.sleep(0.001)
      end
    end
    -- the condition's lock is an rlock: only its owner can release it, so a successful
    -- release proves the task held it again

    it("a cancelled waiter waits for the lock another task holds, then gets the cancellation", function()
      local r = sync.rlock()
      local cond = sync.condition(r)
      H.run(function()
        local back = false
        local victim = strand.spawn(function()
          r:acquire()
          local ok, err = pcall(cond.wait, cond)
          back = true
          return ok, strand.is_cancelled(err), (pcall(r.release, r))
        end)
        until_(function() return victim:status() == "waiting" and not r:locked() end)
        r:acquire()
        victim:cancel()
        strand.sleep(0.02)
        assert.is_false(back)                   -- still waiting for the lock main holds
        r:release()
        assert.same({ true, false, true, true }, { victim:join() })
        assert.is_false(r:locked())
      end)
    end)

    it("a notified waiter waits for the lock the notifier still holds, then returns true", function()
      local r = sync.rlock()
      local cond = sync.condition(r)
      H.run(function()
        local back = false
        local waiter = strand.spawn(function()
          r:acquire()
          local got = cond:wait(H.TIMEOUT)
          back = true
          return got, (pcall(r.release, r))
        end)
        until_(function() return waiter:status() == "waiting" and not r:locked() end)
        r:acquire()
        cond:notify()
        strand.sleep(0.02)
        assert.is_false(back)
        r:release()
        assert.same({ true, true, true }, { waiter:join() })
      end)
    end)

    it("a task cancelled before it waits, or that cannot yield, raises and still holds the lock", function()
      local r = sync.rlock()
      local cond = sync.condition(r)
      H.run(function()
        local t = strand.spawn(function()
          r:acquire()
          local ok1, err1 = pcall(table.sort, { 1, 2, 3 }, function(a, b) cond:wait(0.01); return a < b end)
          local held1 = pcall(r.acquire, r, 0) and pcall(r.release, r)   -- depth 2, back to 1
          strand.current():cancel()
          local ok2, err2 = pcall(cond.wait, cond, 0.01)
          local held2 = pcall(r.release, r)
          return ok1, tostring(err1):match("cannot block here") ~= nil, held1, ok2,
                 strand.is_cancelled(err2), held2
        end)
        assert.same({ true, false, true, true, false, true, true }, { t:join() })
        assert.is_false(r:locked())
      end)
    end)

    it("wait and wait_for in a task: timeout, notify, and misuse at the caller's line", function()
      local cond = sync.condition()
      H.run(function()
        cond:acquire()
        assert.is_false(cond:wait(0.01))
        assert.is_true(cond:locked())
        assert.is_false(cond:wait_for(function() return false end, 0.01))
        local w = strand.spawn(function() return cond:with(function() return cond:wait(H.TIMEOUT) end) end)
        cond:release()
        until_(function() return w:status() == "waiting" and not cond:locked() end)
        cond:with(function() cond:notify() end)
        assert.same({ true, true }, { w:join() })
        local ok, err = pcall(function() cond:wait() end)
        assert.is_false(ok)
        assert.matches("^spec/sync_spec%.lua:%d+: cannot wait on un%-acquired lock$", err)
        cond:acquire()
        ok, err = pcall(function() cond:wait(-1) end)
        assert.is_false(ok)
        assert.matches("^spec/sync_spec%.lua:%d+: bad argument #1 to 'wait' %(timeout must be a number >= 0 or nil%)$", err)
        assert.is_true(cond:locked())
        cond:release()
      end)
    end)
  end)

  describe("barrier", function()
    it("releases the parties together and gives each an arrival index", function()
      local b = sync.barrier(3)
      assert.equal(3, b:parties())
      local after = {}
      H.run(function()
        local ts = {}
        for i = 1, 3 do
          ts[i] = strand.spawn(function()
            strand.sleep(0.01 * i)
            local idx = b:wait(H.TIMEOUT)
            after[#after + 1] = strand.now()
            return idx
          end)
        end
        local idx = {}
        for i = 1, 3 do local _, x = ts[i]:join(); idx[#idx + 1] = x end
        table.sort(idx)
        assert.same({ 1, 2, 3 }, idx)
      end)
      assert.is_true(after[3] - after[1] < 0.01)
    end)

    it("is reusable: several rounds in a row", function()
      local b = sync.barrier(4)
      local rounds = { 0, 0, 0, 0, 0 }
      H.run(function()
        local ts = {}
        for i = 1, 4 do
          ts[i] = strand.spawn(function()
            for r = 1, 5 do
              rounds[r] = rounds[r] + 1
              assert.truthy(b:wait(H.TIMEOUT))
              assert.equal(4, rounds[r])      -- nobody got through before all arrived
            end
          end)
        end
        for i = 1, 4 do assert.is_true((ts[i]:join())) end
      end)
    end)

    it("abort breaks the waiters; a timeout breaks it too; reset mends it", function()
      local b = sync.barrier(3)
      H.run(function()
        local w = strand.spawn(function() return b:wait() end)
        strand.sleep(0.01)
        assert.equal(1, b:n_waiting())
        b:abort()
        assert.same({ true, nil, "broken" }, { w:join() })
        assert.is_true(b:broken())
        assert.same({ nil, "broken" }, { b:wait() })
        b:reset()
        assert.is_false(b:broken())
        local w2 = strand.spawn(function() return b:wait() end)
        assert.same({ nil, "timeout" }, { b:wait(0.02) })
        assert.same({ true, nil, "broken" }, { w2:join() })
        b:reset()
        local w3 = strand.spawn(function() return b:wait() end)
        strand.sleep(0.01)
        b:reset()                              -- a waiting party gets "broken"
        assert.same({ true, nil, "broken" }, { w3:join() })
      end)
    end)
  end)

  describe("across threads", function()
    gates.with_threads("5000 increments from 20 threads under a lock give exactly 5000", function()
      local lock = sync.lock()
      local shared = require "strand.shared"
      local d = shared.dict()
      d.n = 0
      local ts = {}
      for i = 1, 20 do
        ts[i] = thread.start(function(lk, dict)
          for _ = 1, 250 do
            lk:acquire()
            local v = dict.n
            dict.n = v + 1
            lk:release()
          end
        end, lock, d)
      end
      for i = 1, 20 do assert.is_true((ts[i]:join(H.TIMEOUT))) end
      assert.equal(5000, d.n)
    end)

    gates.with_threads("two locks in opposite orders deadlock (timeouts show it)", function()
      local a, b = sync.lock(), sync.lock()
      local go = sync.barrier(2)
      local function worker(first, second, barrier, patience)
        first:acquire()
        barrier:wait()                          -- both hold their first lock now
        local got = second:acquire(patience)
        if got then second:release() end
        first:release()
        return got ~= nil
      end
      -- the impatient one gives up (the deadlock is real), which lets the other one through
      local t1 = thread.start(worker, a, b, go, 0.1)
      local t2 = thread.start(worker, b, a, go, H.TIMEOUT)
      assert.same({ true, false }, { t1:join(H.TIMEOUT) })
      assert.same({ true, true }, { t2:join(H.TIMEOUT) })
    end)

    gates.with_threads("an rlock is owned by its thread; nested use works", function()
      local r = sync.rlock()
      local ev = sync.event()
      r:acquire()
      local t = thread.start(function(lk)
        local ok = pcall(lk.release, lk)       -- not the owner
        return ok, lk:acquire(0.05) ~= nil
      end, r)
      assert.same({ true, false, false }, { t:join(H.TIMEOUT) })
      r:release()
      local t2 = thread.start(function(lk, e)
        lk:acquire(); lk:acquire(); lk:release()
        e:set()
        lk:release()
        return true
      end, r, ev)
      assert.is_true(ev:wait(H.TIMEOUT))
      assert.same({ true, true }, { t2:join(H.TIMEOUT) })
      assert.is_false(r:locked())
    end)

    gates.with_threads("bounded semaphore(3): at most 3 of 20 threads inside at once", function()
      local sem = sync.bounded_semaphore(3)
      local shared = require "strand.shared"
      local d = shared.dict()
      local ts = {}
      for i = 1, 20 do
        ts[i] = thread.start(function(s, dict)
          local st = require "strand"
          s:with(function()
            local now = dict:incr("inside")
            dict:update("worst", function(w) return math.max(w or 0, now) end)
            st.sleep(0.005)
            dict:incr("inside", -1)
          end)
        end, sem, d)
      end
      for i = 1, 20 do assert.is_true((ts[i]:join(H.TIMEOUT))) end
      assert.equal(0, d.inside)
      assert.is_true(d.worst <= 3)
    end)

    gates.with_threads("an event set in one thread wakes waiters in others", function()
      local ev = sync.event()
      local ts = {}
      for i = 1, 4 do ts[i] = thread.start(function(e) return e:wait(5) end, ev) end
      require("strand").sleep(0.05)
      ev:set()
      for i = 1, 4 do assert.same({ true, true }, { ts[i]:join(H.TIMEOUT) }) end
    end)

    gates.with_threads("condition producer/consumer across threads", function()
      local cond = sync.condition()
      local shared = require "strand.shared"
      local box = shared.list()
      local consumers = {}
      for c = 1, 3 do
        consumers[c] = thread.start(function(cv, l)
          local sum = 0
          for _ = 1, 20 do
            cv:with(function()
              cv:wait_for(function() return l:len() > 0 and l[l:len()] ~= false end, 5)
              local n = l:len()
              sum = sum + l[n]
              l[n] = false                       -- consumed (lists cannot shrink)
            end)
          end
          return sum
        end, cond, box)
      end
      local total = 0
      for i = 1, 60 do
        cond:with(function()
          while box:len() > 0 and box[box:len()] ~= false do cond:wait(0.01) end
          box:append(i); total = total + i
          cond:notify_all()
        end)
      end
      local got = 0
      for c = 1, 3 do
        local ok, s = consumers[c]:join(H.TIMEOUT)
        assert.is_true(ok); got = got + s
      end
      assert.equal(total, got)
    end)
  end)

  describe("failure conditions", function()
    it("release of an unlocked lock raises", function()
      assert.has_error(function() sync.lock():release() end, "cannot release un-acquired lock")
      assert.has_error(function() sync.rlock():release() end, "cannot release un-acquired lock")
    end)

    it("bad arguments name the argument", function()
      local l = sync.lock()
      assert.has_error(function() l:acquire("x") end)
      assert.has_error(function() l:acquire(-1) end)
      assert.has_error(function() sync.semaphore(-1) end)
      assert.has_error(function() sync.barrier(0) end)
      assert.has_error(function() sync.condition(42) end)
      assert.has_error(function() sync.lock().acquire(sync.event()) end)
      assert.has_error(function() l:with(42) end, "bad argument #1 to 'with' (function expected, got number)")
      local ok, err = pcall(sync.event().wait, sync.event(), "soon")
      assert.is_false(ok); assert.matches("number", err)
    end)

    it("waiting or notifying on a condition without its lock raises", function()
      local c = sync.condition()
      assert.has_error(function() c:wait(0) end, "cannot wait on un-acquired lock")
      assert.has_error(function() c:notify() end, "cannot notify on un-acquired lock")
    end)

    it("cond:wait() and wait_for() without the lock name the caller's line, not strand.sync's", function()
      local c = sync.condition()
      local ok, err = pcall(function() c:wait() end)
      assert.is_false(ok)
      assert.matches("^spec/sync_spec%.lua:%d+: cannot wait on un%-acquired lock$", err)
      ok, err = pcall(function() c:wait_for(function() return false end, 0.01) end)
      assert.is_false(ok)
      assert.matches("^spec/sync_spec%.lua:%d+: cannot wait on un%-acquired lock$", err)
      c:acquire()                                  -- and with it, wait works as before
      assert.is_false(c:wait(0.01))
      c:release()
    end)

    it("a cancelled waiter leaves the lock usable", function()
      local l = sync.lock()
      H.run(function()
        l:acquire()
        local w = strand.spawn(function() l:acquire() end)
        strand.sleep(0.01)
        w:cancel()
        local ok, err = w:join()
        assert.is_false(ok); assert.is_true(strand.is_cancelled(err))
        l:release()
        assert.equal(l, l:acquire(0))
        l:release()
      end)
    end)

    it("strand.timeout around a wait gives nil, 'timeout' and no lasting waiter", function()
      local l = sync.lock()
      l:acquire()
      H.run(function()
        assert.same({ nil, "timeout" }, { strand.timeout(0.02, function() l:acquire() end) })
      end)
      l:release()
      local got = 0
      H.run(function()
        local t = strand.spawn(function() l:acquire(); got = 1; l:release() end)
        t:join()
      end)
      assert.equal(1, got)
    end)

    it("a blocking wait where a task cannot yield raises clearly", function()
      local l = sync.lock()
      l:acquire()
      H.run(function()
        local ok, err = pcall(function()
          table.sort({ 1, 2, 3 }, function(a, b) l:acquire(); return a < b end)
        end)
        assert.is_false(ok); assert.matches("cannot block here", err)
      end)
      l:release()
      assert.equal(l, l:acquire(0))
    end)

    it("a barrier party cancelled while waiting breaks the barrier", function()
      local b = sync.barrier(3)
      H.run(function()
        local w1 = strand.spawn(function() return b:wait() end)
        local w2 = strand.spawn(function() return b:wait() end)
        strand.sleep(0.01)
        w1:cancel()
        assert.is_false((w1:join()))
        assert.same({ true, nil, "broken" }, { w2:join() })
      end)
    end)
  end)
end)
