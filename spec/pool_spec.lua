-- Pools of processes and threads, futures, the finishing protocol on futures, dead workers.
local strand = require "strand"
local pool = require "strand.pool"
local H = require "support.helper"

for _, kind in ipairs { "process", "thread" } do
  describe(kind .. " pool", function()
    H.guard()

    it("apply, submit -> future, join/result/done", function()
      local p <close> = pool.new{ size = 2, kind = kind }
      assert.equal(5, p:apply(function(a, b) return a + b end, 2, 3))
      local f = p:submit(function(x) return x * 2, "two" end, 21)
      local ok, v, s = f:join(H.TIMEOUT)
      assert.is_true(ok); assert.equal(42, v); assert.equal("two", s)
      assert.is_true(f:done())
      assert.equal(42, (f:result()))
      local k = 10
      assert.equal(15, p:apply(function(x) return x + k end, 5))    -- closure copied
    end)

    it("arguments and results with nil holes cross as they are (count kept)", function()
      local p <close> = pool.new{ size = 1, kind = kind }
      local f = p:submit(function(a, b, c) return select("#", a, b, c), a, b, c, nil end, nil, 2, nil)
      local r = table.pack(f:result(H.TIMEOUT))
      assert.equal(5, r.n)
      assert.equal(3, r[1]); assert.is_nil(r[2]); assert.equal(2, r[3]); assert.is_nil(r[4])
      assert.equal(0, p:apply(function(...) return select("#", ...) end))
      assert.error_matches(function() f:result(-1) end, "bad argument #2 to 'result'")
    end)

    it("a job's error comes back with the worker's traceback; apply raises it", function()
      local p <close> = pool.new{ size = 1, kind = kind }
      local f = p:submit(function() local t; return t.x end)
      local ok, err = f:join(H.TIMEOUT)
      assert.is_false(ok)
      assert.matches("attempt to index", err)
      assert.matches("stack traceback", err)
      local ok2, err2 = pcall(p.apply, p, function() error("boom") end)
      assert.is_false(ok2); assert.matches("boom", err2)
      assert.equal(1, p:apply(function() return 1 end))   -- the worker goes on
    end)

    it("map keeps order (with and without chunksize); imap and imap_unordered", function()
      local p <close> = pool.new{ size = 2, kind = kind }
      local list = {}
      for i = 1, 50 do list[i] = i end
      local sq = function(x) return x * x end
      local r = p:map(sq, list)
      for i = 1, 50 do assert.equal(i * i, r[i]) end
      local r2 = p:map(sq, list, 7)
      for i = 1, 50 do assert.equal(i * i, r2[i]) end
      assert.same({}, p:map(sq, {}))
      local seq = {}
      for i, v in p:imap(sq, { 1, 2, 3, 4 }) do seq[#seq + 1] = { i, v } end
      assert.same({ { 1, 1 }, { 2, 4 }, { 3, 9 }, { 4, 16 } }, seq)
      local seen = {}
      for i, v in p:imap_unordered(sq, { 1, 2, 3, 4, 5 }, 2) do seen[i] = v end
      assert.same({ 1, 4, 9, 16, 25 }, seen)
    end)

    it("futures with strand.wait, as_completed and joinall, mixed with tasks", function()
      local p <close> = pool.new{ size = 2, kind = kind }
      H.run(function()
        local fs = {}
        for i = 1, 6 do fs[i] = p:submit(function(n) require("strand").sleep(0.01 * n); return n end, i) end
        local t = strand.spawn(function() return "task" end)
        local list = { t }
        for i = 1, 6 do list[#list + 1] = fs[i] end
        local n = 0
        for x in strand.as_completed(list, H.TIMEOUT) do n = n + 1; assert.is_true(x:join(0)) end
        assert.equal(7, n)
        local done, pending = strand.wait(list, { timeout = H.TIMEOUT })
        assert.equal(7, #done); assert.equal(0, #pending)
        local d2 = strand.joinall(fs, H.TIMEOUT)
        assert.equal(6, #d2)
      end)
    end)

    it("on_done runs in the submitter's loop; cancel before start; timeout", function()
      local p <close> = pool.new{ size = 1, kind = kind }
      local got = {}
      local blocker = p:submit(function() require("strand").sleep(0.3); return "b" end)
      local f = p:submit(function() return 1 end)
      local g = p:submit(function() return 2 end)
      local h = p:submit(function() return 3 end)
      f:on_done(function(x) got[#got + 1] = x:result() end)
      assert.same({ nil, "timeout" }, { blocker:join(0.01) })
      local ok, err = pcall(blocker.result, blocker, 0)
      assert.is_false(ok); assert.equal("timeout", err)
      assert.is_true(h:cancel())
      assert.is_true(h:cancelled())
      local ok2, err2 = pcall(h.result, h)
      assert.is_false(ok2); assert.equal("cancelled", err2)
      assert.equal("b", blocker:result(H.TIMEOUT))
      assert.equal(2, g:result(H.TIMEOUT))
      assert.same({ 1 }, got)
      assert.is_false(f:cancel())
      local later = {}
      f:on_done(function() later[1] = true end)
      assert.is_true(later[1])
    end)

    it("several tasks join one future, one of them timing out first; all see its outcome", function()
      local p <close> = pool.new{ size = 1, kind = kind }
      local gate = p:submit(function() require("strand").sleep(0.2); return "g" end)
      local seen = {}
      local joiners = {}
      for i = 1, 3 do
        joiners[i] = strand.spawn(function()
          if i == 2 then seen.t = { gate:join(0.01) } end      -- leaves the waiters first
          seen[i] = { gate:join(H.TIMEOUT) }
          return true
        end)
      end
      strand.sleep(0.02)
      local late = strand.spawn(function() return gate:result(H.TIMEOUT) end)
      for i = 1, 3 do assert.is_true(joiners[i]:join(H.TIMEOUT)) end
      assert.same({ true, "g" }, { late:join(H.TIMEOUT) })
      for i = 1, 3 do assert.same({ true, "g" }, seen[i]) end
      assert.same({ nil, "timeout" }, seen.t)
      assert.same({ true, "g" }, { gate:join(0) })
      local alone = p:submit(function() return 7 end)    -- a single joiner, then a timeout alone
      assert.same({ true, 7 }, { alone:join(H.TIMEOUT) })
      local slow = p:submit(function() require("strand").sleep(0.1); return 8 end)
      assert.same({ nil, "timeout" }, { slow:join(0.001) })
      assert.same({ true, 8 }, { slow:join(H.TIMEOUT) })
    end)

    it("initializer with initargs runs in each worker; maxtasksperchild replaces workers", function()
      local p <close> = pool.new{ size = 2, kind = kind,
        initializer = function(tag) package.loaded.pool_spec_tag = tag end, initargs = { "init-ok" } }
      assert.equal("init-ok", p:apply(function() return package.loaded.pool_spec_tag end))
      if kind == "process" then
        local q <close> = pool.new{ size = 1, kind = kind, maxtasksperchild = 2 }
        local pids = {}
        for i = 1, 6 do pids[q:apply(function() return require("strand.process").pid() end)] = true end
        local n = 0
        for _ in pairs(pids) do n = n + 1 end
        assert.equal(3, n)
      end
    end)

    it("submit to a closed pool raises; close + join finishes the queued jobs; misuse raises", function()
      local p = pool.new{ size = 2, kind = kind }
      local fs = {}
      for i = 1, 10 do fs[i] = p:submit(function(x) return x end, i) end
      p:close()
      assert.has_error(function() p:submit(function() end) end, "submit: the pool is closed")
      assert.has_error(function() p:apply(function() end) end, "apply: the pool is closed")
      assert.is_true(p:join())
      for i = 1, 10 do assert.equal(i, fs[i]:result(0)) end
      assert.has_error(function() pool.new{ size = 0 } end,
        "bad argument #1 to 'new' (size must be an integer >= 1)")
      assert.has_error(function() pool.new{ kind = "fiber" } end,
        "bad argument #1 to 'new' (kind must be \"process\" or \"thread\")")
      local q <close> = pool.new{ size = 1, kind = kind }
      assert.has_error(function() q:submit(5) end, "bad argument #1 to 'submit' (function expected, got number)")
      assert.has_error(function() q:map(print, 5) end, "bad argument #2 to 'map' (table expected, got number)")
      assert.has_error(function() q:join() end, "join: close or terminate the pool first")
    end)

    it("terminate fails what is not finished", function()
      local p = pool.new{ size = 1, kind = kind }
      local slow = p:submit(function() require("strand").sleep(kind == "process" and 30 or 0.2) end)
      local queued = p:submit(function() return 1 end)
      if kind == "process" then
        assert.is_true(H.wait_until(function() return slow:status() == "running" end))
      end
      p:terminate()
      assert.same({ false, "pool terminated" }, { queued:join(H.TIMEOUT) })
      if kind == "process" then assert.same({ false, "pool terminated" }, { slow:join(H.TIMEOUT) }) end
    end)

    -- API.md: "worker exited: signal 9"; a process says how it ended (code, signal), a thread
    -- (one whose initializer raised: no worker left) its error as join gives it, with its
    -- traceback; neither with a prefix.
    it("a worker that ends fails its job with \"worker exited: <how>\"", function()
      if kind == "process" then
        local p <close> = pool.new{ size = 1 }
        assert.same({ false, "worker exited: code 1" }, { p:submit(function() os.exit(1) end):join(H.TIMEOUT) })
      else
        local p = pool.new{ size = 1, kind = "thread", initializer = function() error("no setup", 0) end }
        local ok, err = p:submit(function() return 1 end):join(H.TIMEOUT)
        assert.is_false(ok)
        assert.matches("^worker exited: no setup\nstack traceback:\n", err)   -- the thread's error
        local ok2, err2 = p:submit(function() return 2 end):join(H.TIMEOUT)   -- and the jobs after it
        assert.is_false(ok2)
        assert.equal(err, err2)
        p:close(); p:join()
      end
    end)
  end)
end

describe("process pool workers dying", function()
  H.guard()

  it("a short map is shared out evenly: 8 tasks on 2 workers run 4 on each", function()
    local process = require "strand.process"
    local p <close> = pool.new{ size = 2 }
    local pids = p:map(function() return process.pid() end, { 1, 2, 3, 4, 5, 6, 7, 8 }, 1)
    local count, n = {}, 0
    for _, pid in ipairs(pids) do
      if count[pid] == nil then n = n + 1 end
      count[pid] = (count[pid] or 0) + 1
    end
    assert.equal(2, n)
    for _, c in pairs(count) do assert.equal(4, c) end
  end)

  it("a worker killed with SIGKILL fails only its job and is replaced", function()
    local p <close> = pool.new{ size = 2 }
    local victim = p:submit(function() require("strand").sleep(30) end)
    local others = {}
    for i = 1, 8 do others[i] = p:submit(function(x) return x end, i) end
    assert.is_true(H.wait_until(function() return victim:status() == "running" end))
    -- the worker running the victim is the first one (jobs go out in order)
    local pid = p:pids()[1]
    os.execute("kill -9 " .. pid)
    assert.same({ false, "worker exited: signal 9" }, { victim:join(H.TIMEOUT) })
    for i = 1, 8 do assert.equal(i, others[i]:result(H.TIMEOUT)) end
    assert.equal("still serving", p:apply(function() return "still serving" end))
    assert.equal(2, #p:pids())
    assert.is_nil(require("strand.process")._none)
  end)

  -- review 7b: a reader task that raised left its worker in the pool's list (join and terminate
  -- waited for it for ever) and the job it had taken unsettled (map waited for ever)
  for _, ending in ipairs { "join", "terminate" } do
    it("a worker's reader that raises (test hook): its jobs fail, it is replaced, " .. ending .. " ends", function()
      local p = pool.new{ size = 1 }
      local hits = 0
      finally(function() pool._test_reader_fault(nil) end)
      pool._test_reader_fault(function()
        hits = hits + 1
        if hits == 2 then error("forced reader fault") end
      end)
      H.run(function()
        -- six chunks of one item on one worker: the second answer raises, the others in flight
        local t = strand.spawn(function()
          return pcall(p.map, p, function(x) return x * 2 end, { 1, 2, 3, 4, 5, 6 }, 1)
        end)
        local ok, mok, err = t:join(H.TIMEOUT)
        assert.is_true(ok)
        assert.is_false(mok)
        assert.matches("strand.pool: a worker's results could not be read: .*forced reader fault", err)
        pool._test_reader_fault(nil)
        assert.same({ 2, 4, 6 }, p:map(function(x) return x * 2 end, { 1, 2, 3 }))   -- replaced
        assert.equal(1, #p:pids())
        local e = strand.spawn(function()
          if ending == "join" then p:close(); return p:join() end
          return p:terminate()
        end)
        assert.same({ true, true }, { e:join(H.TIMEOUT) })
        assert.equal(0, #p:pids())
      end)
    end)
  end

  it("a job that exits its worker fails with the exit code", function()
    local p <close> = pool.new{ size = 1 }
    assert.same({ false, "worker exited: code 3" }, { p:submit(function() os.exit(3) end):join(H.TIMEOUT) })
    assert.equal(7, p:apply(function() return 7 end))
  end)

  it("many tasks submitting at once with big arguments: every result right", function()
    local p <close> = pool.new{ size = 2 }
    H.run(function()
      local blob = string.rep("y", 300000)        -- larger than a socket buffer: sends wait
      local ts = {}
      for t = 1, 6 do
        ts[t] = strand.spawn(function()
          local fs = {}
          for i = 1, 10 do fs[i] = p:submit(function(s, k) return #s + k end, blob, t * 100 + i) end
          for i = 1, 10 do assert(fs[i]:result() == #blob + t * 100 + i) end
          return true
        end)
      end
      for t = 1, 6 do assert.is_true(ts[t]:result()) end
    end)
  end)

  it("workers die with the program that made the pool, even when it is SIGKILLed", function()
    local f = os.tmpname()
    local out = H.lua(([[
      package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
      package.cpath = "%s/?.so;" .. package.cpath
      local pool = require "strand.pool"
      local p = pool.new{ size = 2 }
      p:apply(function() end)
      local h = io.open(%q, "w"); h:write(table.concat(p:pids(), " ")); h:close()
      os.execute("kill -9 " .. require("strand.process").pid())
    ]]):format(os.getenv("STRAND_TEST_BUILD") or "build", f))
    local h = io.open(f); local s = h:read("a"); h:close()
    os.remove(f)
    local pids = {}
    for pid in s:gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
    assert.equal(2, #pids, out)
    for _, pid in ipairs(pids) do
      assert.is_true(H.wait_until(function()
        local st = io.open("/proc/" .. pid .. "/stat")
        if not st then return true end
        local line = st:read("a"); st:close()
        return line:match("^%d+ %b() [ZX]") ~= nil
      end), "worker " .. pid .. " survived")
    end
  end)

  it("a value that cannot be copied raises naming submit or map, and nothing of that map stays queued", function()
    local p <close> = pool.new{ size = 1 }
    local co = coroutine.create(print)
    assert.has_error(function() p:submit(function() return co end) end)
    local ok, err = pcall(p.map, p, function(x) return x end, { 1, 2, co }, 1)
    assert.is_false(ok)
    assert.matches("^bad argument #2 to 'map' %(value%[3%]: cannot copy a coroutine%)$", err)
    -- review 7b: named by its index in the list, not in its chunk (it said value[1])
    assert.matches("value%[3%]: cannot copy a coroutine", err)
    assert.equal(0, p._jt - p._jh + 1)               -- nothing left queued
    ok, err = pcall(p.map, p, function(x) return x end, { 1, 2, 3, 4, 5, 6, co, 8 }, 3)
    assert.is_false(ok)
    assert.matches("value%[7%]: cannot copy a coroutine", err)
    assert.same({ 4, 5 }, p:map(function(x) return x end, { 4, 5 }, 1))
  end)

  it("results that cannot be copied fail only their job; the worker goes on", function()
    local p <close> = pool.new{ size = 1 }
    local pid = p:pids()[1]
    for _, chunksize in ipairs { 1, 100 } do        -- bare values and a list
      local ok, err = pcall(p.map, p, function(x) return x == 2 and coroutine.create(print) or x end,
        { 1, 2, 3 }, chunksize)
      assert.is_false(ok)
      assert.matches("the job's results cannot be copied: .*coroutine", err)
    end
    local f = p:submit(function() return coroutine.create(print) end)
    local ok, err = f:join(H.TIMEOUT)
    assert.is_false(ok); assert.matches("cannot be copied: .*coroutine", err)
    assert.equal(3, p:apply(function() return 3 end))
    assert.equal(pid, p:pids()[1])                   -- the same worker
  end)

  it("big map chunks (lists, results placed straight into map's table) keep every value", function()
    local p <close> = pool.new{ size = 2 }
    local shared = { "s" }
    local list = {}
    for i = 1, 600 do
      local k = i % 6
      list[i] = k == 0 and i or k == 1 and -i * 1000003 or k == 2 and i + 0.5 or k == 3 and ("v" .. i)
        or k == 4 and { i, t = { i } } or shared
    end
    list[7] = ("L"):rep(100)
    local id = function(x) return x end
    for _, chunksize in ipairs { 100, 599, false } do       -- a remainder chunk; the default
      local r = p:map(id, list, chunksize or nil)
      assert.equal(600, #r)
      for i = 1, 600 do
        if type(list[i]) == "table" and list[i] ~= shared then assert.same(list[i], r[i])
        elseif list[i] == shared then assert.same(shared, r[i])
        else assert.equal(list[i], r[i]); assert.equal(math.type(list[i]), math.type(r[i])) end
      end
      assert.equal(r[6], r[600] ~= nil and r[6] or nil)
      assert.is_nil(r.n)
    end
    -- nil results leave holes; an error in one chunk raises from map
    local nums = {}
    for i = 1, 600 do nums[i] = i end
    local r = p:map(function(x) if x % 2 == 0 then return x end end, nums, 150)
    assert.is_nil(r[1]); assert.equal(6, r[6]); assert.is_nil(r[599]); assert.equal(600, r[600])
    local ok, err = pcall(p.map, p, function(x) if x == 450 then error("at 450") end return x end,
      nums, 150)
    assert.is_false(ok); assert.matches("at 450", err)
    -- a list read through __index (as table.move read it)
    local proxy = setmetatable({}, { __index = function(_, i) return i * 2 end, __len = function() return 200 end })
    local r2 = p:map(id, proxy, 100)
    assert.equal(400, r2[200]); assert.equal(2, r2[1])
    -- imap_unordered over big chunks still gets lists
    local seen = 0
    for i, v in p:imap_unordered(function(x) return x + 1 end, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, 100) do
      assert.equal(i + 1, v); seen = seen + 1
    end
    assert.equal(10, seen)
  end)

  it("map chunks run in the worker's C loop: mixed values, a table among them, yields, an error in the middle", function()
    local p <close> = pool.new{ size = 2 }
    local list, n = {}, 1000
    for i = 1, n do
      local k = i % 7
      list[i] = k == 0 and i * 100003 or k == 1 and -i or k == 2 and i + 0.25 or k == 3 and i * 1.0
        or k == 4 and ("s" .. i) or k == 5 and (i % 2 == 0) or nil     -- k == 6: a nil hole
    end
    list[n] = ("B"):rep(200000)                      -- a large string, last
    local id = function(x) return x end
    for _, chunksize in ipairs { 100, 333, false } do   -- over 64 items: lists; the default
      local r = p:map(id, list, chunksize or nil)
      for i = 1, n do
        assert.equal(list[i], r[i]); assert.equal(math.type(list[i]), math.type(r[i]))
      end
    end
    -- one result in a chunk is a table: the rest of that chunk too keeps its order
    local r = p:map(function(x) if x == 150 then return { x } end return x * 2 end,
      (function() local t = {} for i = 1, 400 do t[i] = i end return t end)(), 100)
    assert.same({ 150 }, r[150]); assert.equal(298, r[149]); assert.equal(302, r[151]); assert.equal(800, r[400])
    -- a chunk whose calls sleep (the worker's loop runs between them)
    local slept = p:map(function(x) if x % 50 == 0 then require("strand").sleep(0.001) end return -x end,
      (function() local t = {} for i = 1, 200 do t[i] = i end return t end)(), 100)
    assert.equal(-1, slept[1]); assert.equal(-200, slept[200]); assert.equal(200, #slept)
    -- an error in the middle of a chunk fails the map with the job's traceback (not the loop's)
    local nums = {}
    for i = 1, 300 do nums[i] = i end
    local function failing(x) if x == 150 then error("bad item " .. x) end return x end
    local ok, err = pcall(p.map, p, failing, nums, 100)
    assert.is_false(ok)
    assert.matches("bad item 150", err)
    assert.matches("stack traceback", err)
    assert.matches("spec/pool_spec.lua:%d+: in function <spec/pool_spec.lua:%d+>", err)
    assert.is_nil(err:find("run_chunk", 1, true)); assert.is_nil(err:find("strand.pool chunk", 1, true))
    assert.is_nil(err:find("xpcall", 1, true))
    assert.equal(300, #p:map(id, nums, 100))         -- the pool goes on
    -- a plain job's traceback is cut at its caller too (busted runs this under an xpcall)
    local ok2, err2 = p:submit(failing, 150):join(H.TIMEOUT)
    assert.is_false(ok2); assert.matches("bad item 150", err2)
    assert.is_nil(err2:find("run_job", 1, true)); assert.is_nil(err2:find("xpcall", 1, true))
  end)

  it("a shared strand object goes to a process worker and comes back", function()
    local p <close> = pool.new{ size = 1 }
    local q = require("strand.queue").new()
    local back = p:submit(function() q:put("from the worker"); return q end):result(H.TIMEOUT)
    assert.equal("from the worker", q:get(H.TIMEOUT))
    q:put("again")
    assert.equal("again", back:get(H.TIMEOUT))
  end)
end)

describe("the loop under pool-style wake-ups", function()
  H.guard()
  local core = require "strand.core"
  local socket = require "strand.socket"

  -- A wait ended by a ready task skips its zero-timeout poll, but never for long: I/O waiting
  -- meanwhile is served while the main program ping-pongs with a task that never blocks on I/O.
  it("a ping-pong between the main program and a task does not starve waiting I/O", function()
    local a, b = socket.pair()
    local got
    local reader = strand.spawn(function() b:settimeout(H.TIMEOUT); got = b:recv(5) end)
    local ping, pong = core.notifier(), core.notifier()
    local stop = false
    local echo = strand.spawn(function()
      while not stop do
        ping:wait(H.TIMEOUT)
        pong:notify()
      end
    end)
    strand.sleep(0)                       -- both tasks start waiting
    assert.is_true(a:send("hello") == 5)
    local rounds = 0
    while got == nil and rounds < 1000 do
      ping:notify()
      pong:wait(H.TIMEOUT)
      rounds = rounds + 1
    end
    stop = true
    ping:notify()
    assert.equal("hello", got)
    assert.is_true(rounds < 1000)
    echo:join(H.TIMEOUT); reader:join(H.TIMEOUT)
    a:close(); b:close()
  end)
end)

describe("thread pool join", function()
  H.guard()
  local core = require "strand.core"
  local thread = require "strand.thread"
  local queue = require "strand.queue"
  local function live() collectgarbage(); collectgarbage(); return (queue._test_arena()) end

  -- A worker's join can see it finished a moment before its eventfd is written (the test hook
  -- widens that moment to 0.3 s), and the loop's last round may skip its poll: the task that
  -- watches each worker was then still waiting when join returned, holding the pool's queues
  -- and dict and the worker's handle with its eventfd (the loop never ran again: they stayed).
  it("returns with the pool's own tasks over: its queues, dict and workers' eventfds are freed", function()
    local base = live()
    do
      local p = pool.new{ size = 2, kind = "thread" }
      assert.equal(3, p:apply(function(x) return x + 1 end, 2))
      core.thread._test_done_delay(0.3)
      local ok, err = pcall(function()
        p:close()
        -- both workers publish their end before the join looks (bounded wait, no loop run)
        local deadline = core.now() + H.TIMEOUT
        while thread.active_count() > 1 and core.now() < deadline do os.execute("LD_PRELOAD= sleep 0.01") end
        assert.equal(1, thread.active_count())
        assert.is_true(p:join())
      end)
      core.thread._test_done_delay(0)
      assert(ok, err)
      p = nil
    end
    assert.equal(base, live())              -- no settling: join left nothing holding the pool
  end)                                      -- (and H.guard, which never runs the loop, the fds)
end)
