-- spec/fixes9_spec.lua — defects left open by session 8 (a failed map's chunks kept running,
-- messages without a function's name, oversize pool arguments, the LuaSocket bridge's closed
-- objects): each case failed before its fix.
local strand = require "strand"
local pool = require "strand.pool"
local shared = require "strand.shared"
local sync = require "strand.sync"
local H = require "support.helper"

-- A pool of one worker whose jobs reach a shared counter (d.ran) and a gate (an event that
-- items other than the failing one wait on before counting themselves).
local function gated_pool(kind)
  local d, go = shared.dict(), sync.event()
  d.ran = 0
  local p = pool.new{ size = 1, kind = kind, initargs = { d, go },
    initializer = function(dd, gg) _G.F9D, _G.F9GO = dd, gg end }
  return p, d, go
end

-- An item: 1 raises; the others wait for the gate, then count themselves.
local function item(x)
  if x == 1 then error("item one fails", 0) end
  assert(_G.F9GO:wait(60), "gate never opened")
  _G.F9D:incr("ran")
  return x
end

for _, kind in ipairs { "thread", "process" } do
  describe("fixes 9: a failed map runs no more of its work (" .. kind .. " pool)", function()
    H.guard()

    it("an item that raises cancels the chunks not started (at most the one running ends)", function()
      H.run(function()
        local p, d, go = gated_pool(kind)
        local list = {}
        for i = 1, 40 do list[i] = i end
        local ok, err = pcall(p.map, p, item, list, 1)
        assert.is_false(ok)
        assert.matches("^item one fails", err)
        go:set()
        p:close(); p:join()
        -- the one worker may have taken item 2 before the cancel came; never more
        assert.is_true(d.ran <= 1, "items run after the map failed: " .. d.ran)
        -- the pool goes on working
      end)
    end)

    it("the pool serves the next map after one failed", function()
      H.run(function()
        local p, _, go = gated_pool(kind)
        go:set()
        assert.is_false((pcall(p.map, p, item, { 3, 1, 4, 5, 6, 7, 8, 9 }, 1)))
        assert.same({ 2, 3, 4, 5 }, p:map(function(x) return x + 1 end, { 1, 2, 3, 4 }, 1))
        p:close(); p:join()
      end)
    end)

    it("imap: a failure raised by the iterator cancels the rest", function()
      H.run(function()
        local p, d, go = gated_pool(kind)
        local list = {}
        for i = 1, 30 do list[i] = i end
        local it = p:imap(item, list, 1)
        local ok, err = pcall(it)
        assert.is_false(ok)
        assert.matches("^item one fails", err)
        go:set()
        p:close(); p:join()
        assert.is_true(d.ran <= 1, "items run after imap failed: " .. d.ran)
      end)
    end)

    it("an item that cannot be copied takes back the chunks queued before it", function()
      H.run(function()
        local p, d, go = gated_pool(kind)
        local list = {}
        for i = 2, 31 do list[#list + 1] = i end
        list[#list + 1] = coroutine.create(print)
        local ok, err = pcall(p.map, p, item, list, 1)
        assert.is_false(ok)
        assert.matches("bad argument #2 to 'map' %(value%[31%]: cannot copy a coroutine", err)
        go:set()
        p:close(); p:join()
        assert.is_true(d.ran <= 1, "items run after the map failed: " .. d.ran)
      end)
    end)
  end)
end

describe("fixes 9: a thread pool's f:cancel()", function()
  H.guard()

  it("a job cancelled while queued never runs; one a worker took is not cancelled", function()
    H.run(function()
      local p, d, go = gated_pool("thread")
      local blocker = p:submit(function() assert(_G.F9GO:wait(60)); _G.F9D.started = true; return "b" end)
      local f = p:submit(function() _G.F9D:incr("ran") end)
      assert.is_true(f:cancel())
      assert.equal("cancelled", f:status())
      go:set()
      assert.equal("b", blocker:result(H.TIMEOUT))
      -- a job taken by the worker: cancel says false and it runs to its end
      local gate2 = sync.event()
      d.gate2 = false
      local g = p:submit(function(ev) _G.F9D.gate2 = true; assert(ev:wait(60)); return "g" end, gate2)
      assert.is_truthy(H.wait_until(function() return d.gate2 end))
      assert.is_false(g:cancel())
      gate2:set()
      assert.equal("g", g:result(H.TIMEOUT))
      p:close(); p:join()
      assert.equal(0, d.ran)                       -- f never ran
    end)
  end)
end)

describe("fixes 9: refusals name the call and the argument", function()
  H.guard()
  local thread = require "strand.thread"
  local process = require "strand.process"
  local co = coroutine.create(print)

  local function err_of(f, ...)
    local ok, err = pcall(f, ...)
    assert.is_false(ok)
    return (tostring(err):gsub("^[^:]*:%d+: ", ""))
  end

  it("thread.new{args=...}: args[k] is the k-th of args, fn is named fn", function()
    local t = thread.new{ fn = function() end, args = { 1, co } }
    assert.equal("bad argument #1 to 'start' (the thread's args[2]: cannot copy a coroutine)",
      err_of(t.start, t))
    local t2 = thread.new{ fn = function() end, args = { { x = co } } }
    assert.equal("bad argument #1 to 'start' (the thread's args[1].x: cannot copy a coroutine)",
      err_of(t2.start, t2))
    local t3 = thread.new{ fn = function() return co end }
    assert.equal("bad argument #1 to 'start' (the thread's fn.<upvalue co>: cannot copy a coroutine)",
      err_of(t3.start, t3))
    local t4 = thread.new{ fn = function(a, b) return a + b end, args = { 1, 2 } }   -- still runs
    t4:start()
    assert.same({ true, 3 }, { t4:join(H.TIMEOUT) })
  end)

  it("a thread's results and error that cannot be copied say so", function()
    local t = thread.start(function() return 1, coroutine.create(print) end)
    assert.same({ false, "the thread's results cannot be copied: result #2: cannot copy a coroutine" },
      { t:join(H.TIMEOUT) })
    local t2 = thread.start(function() error({ coroutine.create(print) }) end)
    assert.same({ false, "the thread's error cannot be copied (value[1]: cannot copy a coroutine)" },
      { t2:join(H.TIMEOUT) })
  end)

  it("a process's results: result #k, not args[k+1]", function()
    H.run(function()
      local p = process.new{ fn = function() return 1, coroutine.create(print) end }
      assert.is_truthy(p:start())
      local ok, err = p:join(H.TIMEOUT)
      assert.is_false(ok)
      assert.matches(": cannot copy its results back: result #2: cannot copy a coroutine$", err)
    end)
  end)

  it("dict update: its function's result is named", function()
    local d = shared.dict()
    assert.equal("bad argument #2 to 'update' (its result: cannot copy a coroutine)",
      err_of(d.update, d, "k", function() return co end))
    assert.equal("bad argument #2 to 'update' (its result.x[1]: cannot copy a coroutine)",
      err_of(d.update, d, "k", function() return { x = { co } } end))
    assert.is_nil(d.k)
    assert.equal(1, d:update("k", function(v) return (v or 0) + 1 end))
  end)

  it("shared.list{...}: the item is named by its index; a hole too", function()
    assert.equal("bad argument #1 to 'list' (value[2]: cannot copy a coroutine)",
      err_of(shared.list, { 1, co }))
    assert.equal("bad argument #1 to 'list' (value[3].y: cannot copy a coroutine)",
      err_of(shared.list, { 1, 2, { y = co } }))
    assert.equal("bad argument #1 to 'list' (value[2] is nil: a shared list cannot hold nil)",
      err_of(shared.list, setmetatable({}, { __len = function() return 2 end, __index = { 1 } })))
    local l = shared.list{ 1, "a", { 2 } }
    assert.equal(3, #l)
    assert.equal(2, l[3][1])
  end)

  it("a list index out of range names the call", function()
    local l = shared.list{ 1 }
    assert.equal("bad argument #1 to 'set' (index 3 out of range: length 1)",
      err_of(function() l:set(3, 1) end))
    assert.equal("bad argument #1 to 'set' (index 0 out of range: length 1)",
      err_of(function() l[0] = 1 end))
  end)

  it("spawn on a closed group names spawn", function()
    H.run(function()
      local g = strand.group()
      g:close()
      assert.equal("spawn: the group is closed", err_of(function() g:spawn(function() end) end))
    end)
  end)
end)

describe("fixes 9: a process-pool job too large for its frame", function()
  H.guard()
  after_each(function() pool._test_args_max() end)

  local function err_of(f, ...)
    local ok, err = pcall(f, ...)
    assert.is_false(ok)
    return tostring(err)
  end

  it("raises naming the call and the argument (a test hook lowers the 4 GiB limit)", function()
    H.run(function()
      local p <close> = pool.new{ size = 1 }
      local function len(s) return #s end
      assert.equal(5, p:apply(len, "hello"))         -- the function is known to the worker
      pool._test_args_max(1000)
      local big = ("x"):rep(2000)
      assert.matches("^bad argument #2 to 'apply' %(arguments too large: 2006 bytes encoded, a "
        .. "job's frame holds at most %d+ beside the function's %d+%)$", err_of(p.apply, p, len, big))
      assert.matches("^bad argument #2 to 'submit' %(arguments too large: 2006 bytes encoded",
        err_of(p.submit, p, len, big))
      assert.matches("^bad argument #1 to 'apply' %(function too large: %d+ bytes encoded, a job's "
        .. "frame holds at most 975%)$", err_of(p.apply, p, function() return big end))
      assert.matches("^bad argument #2 to 'map' %(item 3 too large: %d+ bytes encoded",
        err_of(p.map, p, len, { "a", "b", big, "c" }, 1))
      assert.matches("^bad argument #2 to 'map' %(items 3%.%.4 too large: ",
        err_of(p.map, p, len, { "a", "b", big, "c" }, 2))
      -- below the limit, and once it is back, jobs run as before
      assert.equal(800, p:apply(len, ("y"):rep(800)))
      assert.same({ 1, 1, 3 }, p:map(len, { "a", "b", "ccc" }, 1))
      pool._test_args_max()
      assert.equal(2000, p:apply(len, big))
      assert.same({ 1, 2000 }, p:map(len, { "a", big }, 1))
    end)
  end)
end)
