-- Shared objects (locks, events, queues...) that cross pool jobs, process results and pipes are
-- freed once every holder lets them go: counted with queue._test_arena (the family's live objects).
local strand = require "strand"
local pool = require "strand.pool"
local process = require "strand.process"
local queue = require "strand.queue"
local sync = require "strand.sync"
local H = require "support.helper"

-- The family's objects not freed yet, after collecting what this state dropped.
local function live()
  collectgarbage(); collectgarbage()
  return (queue._test_arena())
end

local N = H.work(20, 4)

describe("object references across processes and pools", function()
  H.guard()

  it("the test hook counts objects and arena bytes, and sees them freed", function()
    local base = live()
    local _, bytes = queue._test_arena()
    assert.is_true(math.type(base) == "integer" and base >= 0)
    assert.is_true(select(2, queue._test_arena()) > 0)
    do
      local q, l, e = queue.new(), sync.lock(), sync.event()
      assert.equal(base + 3, live())
      local n2, b2 = queue._test_arena()
      assert.equal(base + 3, n2); assert.is_true(b2 > bytes)
      q:put(l); q:put(e)                   -- values by reference: no serial
      assert.equal(base + 3, live())
    end
    assert.equal(base, live())
  end)

  for _, kind in ipairs { "process", "thread" } do
    it(kind .. " pool: objects passed to and returned by jobs are freed once dropped", function()
      local base = live()
      do
        local p = pool.new{ size = 2, kind = kind }
        local l, q = sync.lock(), queue.new()
        for i = 1, N do
          local l2, q2 = p:apply(function(a, b) return a, b end, l, q)
          assert.is_true(l2 == l and q2 == q)
          q2:put(i)
          assert.equal(i, q:get(H.TIMEOUT))
        end
        for i = 1, N do                     -- made in the worker, returned
          local q3 = p:apply(function(x)
            local nq = require("strand.queue").new()
            nq:put(x)
            return nq
          end, i)
          assert.equal(i, q3:get(H.TIMEOUT))
        end
        local locks = {}
        for i = 1, N do locks[i] = sync.lock() end
        local back = p:map(function(x) return x end, locks)
        for i = 1, N do assert.is_true(back[i] == locks[i]) end
        local fs = {}
        for i = 1, N do fs[i] = p:submit(function(e) return e end, sync.event()) end
        for i = 1, N do assert.is_true(fs[i]:join(H.TIMEOUT)) end
        p:close(); p:join()
        p = nil
        assert.equal(base + 2 + 2 * N, live())   -- l, q, locks, the events the futures hold
      end
      assert.equal(base, live())
    end)
  end

  it("process pool: map chunks decoded straight into map's table release their references", function()
    local base = live()
    do
      local p = pool.new{ size = 2 }
      local evs = {}
      for i = 1, 100 do evs[i] = sync.event() end
      local back = p:map(function(e) return e end, evs, 100)   -- one chunk of 100: a list
      assert.equal(100, #back)
      back[1]:set(); assert.is_true(evs[1]:is_set())   -- the same event
      local made = p:map(function() return require("strand.queue").new() end, evs, 100)
      assert.equal(100, #made)
      p:close(); p:join()
      back, made = nil, nil
      assert.equal(base + 100, live())
    end
    assert.equal(base, live())
  end)

  it("process pool: a function's upvalues cross once per job or map, and are released once", function()
    local base = live()
    do
      local p = pool.new{ size = 2 }
      local l, q = sync.lock(), queue.new()
      local nums = {}
      for i = 1, 40 do nums[i] = i end
      for _ = 1, 3 do                     -- 20 chunks sharing the function's string
        local r = p:map(function(x) q:put(x); return l:locked() and -x or x end, nums, 2)
        assert.equal(40, #r); assert.equal(40, r[40])
        for _ = 1, 40 do assert.is_truthy(q:get(H.TIMEOUT)) end
      end
      for i = 1, N do assert.equal(i, p:apply(function() q:put(i); return i end)) end
      for i = 1, N do assert.equal(i, q:get(H.TIMEOUT)) end
      local ok, err = pcall(p.map, p, function(x) return l, x end, { 1, 2, io.stdout }, 1)
      assert.is_false(ok); assert.matches("cannot copy", err)   -- taken back: none was sent...
      ok, err = pcall(p.map, p, function(x) return l, x end, { io.stdout }, 1)
      assert.is_false(ok); assert.matches("cannot copy", err)   -- ...or none was made
      ok, err = pcall(p.apply, p, function(x) return l, x end, io.stdout)
      assert.is_false(ok); assert.matches("cannot copy", err)
      p:close(); p:join()
      assert.equal(base + 2, live())
      assert.equal(l, (l:acquire(0))); l:release()            -- still there, still the same
      q:put("still"); assert.equal("still", q:get(0))
    end
    assert.equal(base, live())
  end)

  it("process pool: a job given back by a dead worker is decoded again, its objects freed once", function()
    local base = live()
    do
      local p = pool.new{ size = 1 }
      local l = sync.lock()
      local f1 = p:submit(function() require("strand.core").process._exit(3) end)
      local f2 = p:submit(function(x) return x end, l)       -- in flight on the same worker
      local ok, err = f1:join(H.TIMEOUT)
      assert.is_false(ok); assert.matches("worker exited: code 3", err)
      local ok2, l2 = f2:join(H.TIMEOUT)
      assert.is_true(ok2); assert.is_true(l2 == l)
      l2 = nil
      p:close(); p:join()
      f1, f2 = nil, nil
      assert.equal(base + 1, live())     -- l: still there, and usable
      assert.equal(l, (l:acquire(H.TIMEOUT))); l:release()
    end
    assert.equal(base, live())
  end)

  it("process pool: cancelled jobs release their objects", function()
    local base = live()
    do
      local p = pool.new{ size = 1 }
      local ev = sync.event()
      local first = p:submit(function(e) return e:wait(H.TIMEOUT) end, ev)  -- holds the worker
      local fs = {}
      for i = 1, N do fs[i] = p:submit(function(x) return x end, sync.lock()) end
      for i = 2, N do assert.is_true(fs[i]:cancel()) end   -- fs[1] is in flight already
      assert.equal(base + 1 + N, live())
      ev:set()
      local ok, r = first:join(H.TIMEOUT)
      assert.is_true(ok); assert.is_true(r)
      assert.is_true((fs[1]:join(H.TIMEOUT)))
      p:close(); p:join()
      fs[1] = nil
      assert.equal(base + 1, live())      -- ev
    end
    assert.equal(base, live())
  end)

  it("process pool: jobs dropped at terminate release their objects", function()
    local base = live()
    do
      local p = pool.new{ size = 1 }
      local first = p:submit(function() require("strand").sleep(60) end)   -- holds the worker
      local fs = {}
      for i = 1, N do fs[i] = p:submit(function(x) return x end, sync.lock()) end
      assert.equal(base + N, live())
      p:terminate()
      for i = 1, N do
        local ok, err = fs[i]:join(H.TIMEOUT)
        assert.is_false(ok); assert.equal("pool terminated", err)
      end
      assert.is_false((first:join(H.TIMEOUT)))
    end
    assert.equal(base, live())
  end)

  it("process pool: a result that fails to decode half way releases what it held", function()
    local base = live()
    do
      local p = pool.new{ size = 1 }
      local l = sync.lock()
      local ok, err = pcall(p.apply, p, function(x)
        local C = {}                      -- a class only the worker has: decoding fails on it
        package.loaded["refleak_only_here"] = C
        return setmetatable({ x, require("strand.queue").new() }, C)
      end, l)
      assert.is_false(ok); assert.matches("refleak_only_here", err)
      p:close(); p:join()
      assert.equal(base + 1, live())
    end
    assert.equal(base, live())
  end)

  it("process.start: arguments and results (objects made before and in the child) are freed", function()
    local base = live()
    do
      local l = sync.lock()
      local p = process.start(function(x)
        local q = require("strand.queue").new()
        q:put("made here")
        return x, q
      end, l)
      local ok, l2, q = p:join(H.TIMEOUT)
      assert.is_true(ok)
      assert.is_truthy(l2:acquire(0)); assert.is_true(l:locked()); l2:release()   -- the same lock
      assert.equal("made here", q:get(H.TIMEOUT))
    end
    assert.equal(base, live())
    do                                     -- never joined: the result nobody took is dropped
      local p = process.start(function() return require("strand.sync").event() end)
      assert.is_true(H.wait_until(function() return not p:is_alive() end, H.TIMEOUT))
      p = nil
    end
    assert.equal(base, live())
  end)

  it("pipes: objects sent both ways are freed; a bad message and one taken by poll too", function()
    local base = live()
    do
      local a, b = process.pipe()
      local p = process.start(function()
        local got = b:recv(H.TIMEOUT)
        b:send(got)
        b:send(require("strand.queue").new())
        local C = {}
        package.loaded["refleak_pipe_only"] = C
        b:send(setmetatable({ got }, C))   -- fails to decode in the parent
        return b:recv(H.TIMEOUT)
      end)
      local l = sync.lock()                -- made after the fork
      assert.is_true(a:send(l))
      assert.is_true(a:recv(H.TIMEOUT) == l)
      local q = a:recv(H.TIMEOUT)
      assert.equal(0, q:qsize())
      local v, err = a:recv(H.TIMEOUT)
      assert.is_nil(v); assert.matches("refleak_pipe_only", err)
      assert.is_true(a:send("done"))
      assert.equal("done", p:result(H.TIMEOUT))
      a:close(); b:close()
    end
    assert.equal(base, live())
    do
      local a, b = process.pipe()
      assert.is_true(a:send({ sync.event(), queue.new() }))
      assert.is_true(b:poll(H.TIMEOUT))    -- taken off the socket, never received
      a:close(); b:close()
    end
    assert.equal(base, live())
  end)
end)
