-- spec/fixes8_spec.lua — defects left open by session 7 (inherited thread handles in a forked
-- child, pool messages, objects whose module the parent never loaded, oversize results, spare
-- thread stacks' pages): each case failed before its fix.
local strand = require "strand"
local process = require "strand.process"
local thread = require "strand.thread"
local sync = require "strand.sync"
local H = require "support.helper"

describe("fixes 8: a forked child's copies of its parent's threads", function()
  H.guard()

  -- A thread that runs until go is set, and a child (allow_threads) running fn(t) in the child.
  local function with_running_thread(fn)
    local go = sync.event()
    local t = thread.start(function(ev) assert(ev:wait(60)); return "parent's" end, go)
    local p = process.new{ allow_threads = true, fn = fn, args = { t } }
    assert.is_truthy(p:start())
    local r = table.pack(p:join(H.TIMEOUT))
    if r[1] == nil then p:kill(); p:join(H.TIMEOUT) end
    go:set()
    assert.equal("parent's", t:result(H.TIMEOUT))   -- the parent's thread is untouched
    return r
  end

  it("join, result and is_alive fail at once instead of waiting for ever", function()
    local r = with_running_thread(function(t)
      local ok, err = t:join()                       -- no timeout: waited for ever before
      local rok, rerr = pcall(t.result, t)
      return ok, err, rok, rerr, t:is_alive(), (t:join(0)), tostring(t)
    end)
    assert.equal(true, r[1])
    assert.equal(false, r[2])
    assert.matches("^thread Thread%-%d+ belongs to the parent process", r[3])
    assert.equal(false, r[4])
    assert.matches("^thread Thread%-%d+ belongs to the parent process", r[5])
    assert.equal(false, r[6])
    assert.equal(false, r[7])
    assert.matches("^strand%.thread Thread%-%d+ %(the parent process's%)$", r[8])
  end)

  it("strand.joinall, strand.wait and strand.as_completed count it done at once", function()
    local r = with_running_thread(function(t)
      local s = require "strand"
      local done1 = s.joinall({ t })
      local done2 = s.wait({ t }, { mode = "any" })
      local done3 = s.wait({ t })
      local n = 0
      for x in s.as_completed({ t }) do n = n + (x == t and 1 or 0) end
      return #done1, #done2, #done3, n
    end)
    assert.same({ true, 1, 1, 1, 1, n = 5 }, r)
  end)

  it("a child that closes its state does not wait for its parent's threads", function()
    -- os.exit(n, true) closes the state, whose exit guard waited for every non-daemon thread
    local go = sync.event()
    local t = thread.start(function(ev) assert(ev:wait(60)) end, go)
    local p = process.new{ allow_threads = true, fn = function() os.exit(7, true) end }
    assert.is_truthy(p:start())
    local ok, err = p:join(H.TIMEOUT)
    if ok == nil then p:kill(); p:join(H.TIMEOUT) end
    go:set()
    t:join(H.TIMEOUT)
    assert.equal(false, ok)
    assert.equal("process exited with code 7", err)
  end)

  it("a thread the parent joined before the fork still gives its results", function()
    local t = thread.start(function() return 6, "x" end)
    assert.same({ true, 6, "x", n = 3 }, table.pack(t:join(H.TIMEOUT)))
    local p = process.new{ allow_threads = true, fn = function() return t:join() end }
    assert.is_truthy(p:start())
    assert.same({ true, true, 6, "x", n = 4 }, table.pack(p:join(H.TIMEOUT)))
  end)

  it("a child joining a sibling that still runs is told it is the parent's (not 'code 255')", function()
    local go = sync.event()
    local p1 = process.start(function(ev) assert(ev:wait(60)); return "p1" end, go)
    local p2 = process.start(function()
      local ok, err = p1:join()
      return ok, err, p1:is_alive()
    end)
    local r = table.pack(p2:join(H.TIMEOUT))
    go:set()
    assert.same({ true, "p1", n = 2 }, table.pack(p1:join(H.TIMEOUT)))
    assert.equal(true, r[1]); assert.equal(false, r[2])
    assert.matches("^process Process%-%d+ belongs to the parent process", r[3])
    assert.equal(false, r[4])
  end)

  it("a thread the child starts itself is joined as usual", function()
    local p = process.start(function()
      local th = require "strand.thread"
      return th.start(function(a) return a + 1 end, 1):result(10)
    end)
    assert.same({ true, 2, n = 2 }, table.pack(p:join(H.TIMEOUT)))
  end)
end)

describe("fixes 8: pool messages name the function and the argument, for both kinds", function()
  H.guard()
  local pool = require "strand.pool"
  local id = function(x) return x end

  for _, kind in ipairs { "process", "thread" } do
    it(kind .. " pool: map, imap, apply and submit of a value that cannot be copied", function()
      local p <close> = pool.new{ size = 1, kind = kind }
      local co = coroutine.create(print)
      local function err_of(f, ...)
        local ok, err = pcall(f, ...)
        assert.is_false(ok)
        return (err:gsub("^[^ ]-:%d+: ", ""))          -- (a position, when raised from Lua)
      end
      for _, cs in ipairs { 1, 2, 100 } do             -- the list index, whatever the chunk
        assert.equal("bad argument #2 to 'map' (value[3]: cannot copy a coroutine)",
          err_of(p.map, p, id, { 1, 2, co, 4 }, cs))
      end
      assert.equal("bad argument #2 to 'imap' (value[3].x: cannot copy a coroutine)",
        err_of(function() for _ in p:imap(id, { 1, 2, { x = co } }) do end end))
      assert.equal("bad argument #3 to 'apply' (value: cannot copy a coroutine)",
        err_of(p.apply, p, id, 1, co))
      assert.equal("bad argument #2 to 'submit' (value.a[1]: cannot copy a coroutine)",
        err_of(p.submit, p, id, { a = { co } }))
      assert.equal("bad argument #1 to 'apply' (value.<upvalue co>: cannot copy a coroutine)",
        err_of(p.apply, p, function() return co end))
      assert.equal("bad argument #2 to 'submit' (value: cannot copy a userdata (FILE*))",
        err_of(p.submit, p, id, io.stdout))
      -- and the pool still works
      assert.same({ 1, 2, 3 }, p:map(id, { 1, 2, 3 }))
      assert.equal(5, p:apply(id, 5))
    end)
  end

  it("pool.new{kind='process'} while strand threads run names pool.new and the opt-in", function()
    local go = sync.event()
    local t = thread.start(function(ev) assert(ev:wait(60)) end, go)
    local ok, err = pcall(pool.new, { size = 1, kind = "process" })
    local ok2, p2 = pcall(pool.new, { size = 1, kind = "process", allow_threads = true })
    go:set()
    t:join(H.TIMEOUT)
    assert.is_false(ok)
    assert.matches("^pool.new: 1 strand thread%(s%) run in this process", err)
    assert.matches("pass allow_threads=true to fork anyway, or use kind=\"thread\"", err, 1, true)
    assert.is_true(ok2, p2)
    assert.equal(4, p2:apply(function(x) return x * 2 end, 2))
    p2:close(); p2:join()
  end)
end)

describe("fixes 8: a strand object back from a worker whose module the parent never loaded", function()
  H.guard()

  it("comes back usable (its area opens on decoding, as require would)", function()
    -- a fresh lua5.4 that loads only strand.pool and strand.process: no state of it has opened
    -- strand.sync, strand.queue or strand.shared (it failed as "malformed result: bad object reference")
    local out, ok = H.lua([[
      package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
      local pool = require "strand.pool"
      local process = require "strand.process"
      local p <close> = pool.new{ size = 1 }
      local l, q, d = p:apply(function()
        local q = require("strand.queue").new()
        q:put("from the worker")
        local d = require("strand.shared").dict()
        d.k = "v"
        return require("strand.sync").lock(), q, d
      end)
      assert(l:acquire()); l:release()
      print(tostring(l):match("^strand%.lock") ~= nil, q:get(5), d.k)
      local r = p:map(function(i) return require("strand.sync").event() end, { 1, 2, 3 })
      r[3]:set()
      print(#r, r[3]:is_set(), r[1]:is_set())
      local ok2, ev = process.start(function()
        local e = require("strand.sync").semaphore(2); return e
      end):join(10)
      print(ok2, ev:acquire(0) ~= nil, ev:acquire(0) ~= nil, (ev:acquire(0)))
    ]])
    assert.is_true(ok, out)
    assert.equal("true\tfrom the worker\tv\n3\ttrue\tfalse\ntrue\ttrue\ttrue\tnil\n", out)
  end)
end)

describe("fixes 8: a result too large for a frame fails its job, not the worker", function()
  H.guard()
  local pool = require "strand.pool"

  it("apply, a plain chunk, a chunk of tables and a chunk with shared tables (limit lowered)", function()
    -- the frame's limit is 4 GiB - 8 (its 4-byte length); the test hook lowers it for the
    -- workers forked after it, so the real path runs without encoding 4 GiB
    assert.equal(1000, pool._test_result_max(1000))
    local ok, p = pcall(pool.new, { size = 1 })
    pool._test_result_max()
    assert.is_true(ok, p)
    local pid = p:pids()[1]
    local function fails(f, ...)
      local okc, err = pcall(f, ...)
      assert.is_false(okc)
      assert.matches("^strand%.pool: result too large: %d+ bytes encoded %(a frame holds at most 1000%)$", err)
    end
    local list = {}
    for i = 1, 12 do list[i] = i end
    fails(p.apply, p, function() return ("x"):rep(2000) end)
    fails(p.map, p, function() return ("x"):rep(100) end, list, 12)        -- written in C
    fails(p.map, p, function() return { ("x"):rep(100) } end, list, 12)    -- a table of results
    local shared = {}
    for i = 1, 12 do shared[i] = { i } end
    shared[13] = shared[1]                                                   -- decoded whole
    fails(p.map, p, function() return ("x"):rep(100) end, shared, 13)
    local f = p:submit(function() return ("y"):rep(5000) end)
    assert.is_false((f:join(H.TIMEOUT)))
    -- the same worker serves on, and results under the limit pass
    assert.equal("still", p:apply(function() return "still" end))
    assert.same({ 1, 2, 3 }, p:map(function(x) return x end, { 1, 2, 3 }))
    assert.equal(pid, p:pids()[1])
    p:close(); p:join()
  end)
end)

describe("fixes 8: the pages a thread touched deep in its stack", function()
  H.guard()

  it("are given back when it ends (its stack kept for the next start, or as a spare)", function()
    local HOT, SLACK = 128 * 1024, 8 * 1024        -- the top kept (thread.c STACK_HOT), probe page
    for _, idle in ipairs { true, false } do        -- the OS thread waits for a start / exits
      local out, ok = H.lua([[
        package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
        local thread = require "strand.thread"
        -- recursion through gsub: each level a C frame with a luaL_Buffer (~2 KiB of stack)
        local during = thread.start(function(depth)
          local th = require "strand.thread"
          local at_bottom
          local function down(n)
            if n == 0 then at_bottom = th._test_stack_resident(); return "" end
            return (("x"):gsub("x", function() return down(n - 1) end))
          end
          down(depth)
          return at_bottom
        end, 170):result(30)
        local after, n = thread._test_stack_resident()
        print(during, after, n)
      ]], idle and "" or "STRAND_THREAD_IDLE=0")
      assert.is_true(ok, out)
      local during, after, n = out:match("^(%d+)\t(%d+)\t(%d+)\n$")
      during, after, n = tonumber(during), tonumber(after), tonumber(n)
      assert.is_truthy(during, out)
      assert.is_true(during > HOT + 128 * 1024, out)                   -- it went deep
      assert.is_true(n >= 1 and after <= n * (HOT + SLACK), out)      -- back to the top
    end
  end)
end)

describe("fixes 8: a forked child's copy of its parent's pool", function()
  H.guard()
  local pool = require "strand.pool"

  for _, kind in ipairs { "process", "thread" } do
    it(kind .. " pool: using it raises at once, and the parent's workers are left alone", function()
      local p = pool.new{ size = 1, kind = kind }
      assert.equal("before", p:apply(function() return "before" end))
      local pids = p:pids()
      local c = process.new{ allow_threads = true, fn = function()
        local out = {}
        for _, call in ipairs {
          function() return p:submit(function() return "child" end):join(5) end,   -- waited for ever
          function() return p:apply(function() return "child" end) end,
          function() return p:map(function(x) return x end, { 1, 2 }) end,
          function() return p:close() end,
          function() return p:terminate() end,                   -- stopped the parent's workers
        } do
          local ok, err = pcall(call)
          out[#out + 1] = ok and "returned" or err
        end
        do local _ <close> = p end                               -- __close leaves it alone
        return table.concat(out, "\n")
      end }
      assert.is_truthy(c:start())
      local ok, msgs = c:join(H.TIMEOUT)
      if ok == nil then c:kill(); c:join(H.TIMEOUT) end
      assert.is_true(ok, msgs)
      local n = 0
      for line in msgs:gmatch("[^\n]+") do
        n = n + 1
        assert.matches("^%S+: the pool belongs to the parent process %(this is a forked child%)$", line:gsub("^[^ ]-:%d+: ", ""))
      end
      assert.equal(5, n)
      assert.equal("after", p:apply(function() return "after" end))
      assert.same({ 1, 2, 3 }, p:map(function(x) return x end, { 1, 2, 3 }))
      assert.same(pids, p:pids())
      p:close(); p:join()
    end)
  end
end)

describe("fixes 8: siblings that copy values name the call and the argument too", function()
  H.guard()

  it("thread.start, a queue's put / put_nowait / put_many and a pipe's send", function()
    local co = coroutine.create(print)
    local function err_of(f, ...)
      local ok, err = pcall(f, ...)
      assert.is_false(ok)
      return err
    end
    assert.equal("bad argument #3 to 'start' (value: cannot copy a coroutine)",
      err_of(thread.start, function() end, 1, co))
    assert.equal("bad argument #1 to 'start' (value.<upvalue co>: cannot copy a coroutine)",
      err_of(thread.start, function() return co end))
    local q = require("strand.queue").new()
    local t = thread.start(function(qq) return qq ~= nil end, q)   -- (it crosses: values copied)
    assert.is_true(t:result(H.TIMEOUT))
    assert.equal("bad argument #1 to 'put' (value.x: cannot copy a coroutine)", err_of(q.put, q, { x = co }))
    assert.equal("bad argument #1 to 'put_nowait' (value: cannot copy a coroutine)", err_of(q.put_nowait, q, co))
    assert.equal("bad argument #1 to 'put_many' (item 2: value: cannot copy a coroutine; 1 put before it)",
      err_of(q.put_many, q, { 1, co }))
    assert.equal(1, q:get(0))
    local a, b = process.pipe()
    assert.equal("bad argument #1 to 'send' (value[1]: cannot copy a coroutine)", err_of(a.send, a, { co }))
    a:close(); b:close()
  end)

  it("shared dicts and lists: set, d[k] = v, append", function()
    local co = coroutine.create(print)
    local shared = require "strand.shared"
    local d, l = shared.dict(), shared.list()
    local function err_of(f) local ok, err = pcall(f); assert.is_false(ok); return err end
    assert.equal("bad argument #2 to 'set' (value.x: cannot copy a coroutine)",
      err_of(function() d:set("k", { x = co }) end))
    assert.equal("bad argument #2 to '__newindex' (value: cannot copy a coroutine)",
      err_of(function() d.k = co end))
    assert.equal("bad argument #2 to 'set' (value: cannot copy a coroutine)", err_of(function() l[1] = co end))
    assert.equal("bad argument #1 to 'append' (value[1]: cannot copy a coroutine)",
      err_of(function() l:append({ co }) end))
    assert.is_nil(d.k); assert.equal(0, #l)
  end)
end)
