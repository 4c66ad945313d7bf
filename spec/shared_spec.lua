-- spec/shared_spec.lua — strand.shared: Manager-style dict and list shared by tasks and threads.
local strand = require "strand"
local shared = require "strand.shared"
local sync = require "strand.sync"
local H = require "support.helper"

local gates = require "support.gates"
local thread = gates.thread   -- nil when this build has no threads

-- Run fn(i) for i = 1..n in n tasks at once (in H.run); every one must finish without error.
local function in_tasks(n, fn)
  H.run(function()
    local ts = {}
    for i = 1, n do ts[i] = strand.spawn(fn, i) end
    for i = 1, n do assert.is_true((ts[i]:join())) end
  end)
end

describe("strand.shared", function()
  H.guard()

  describe("dict", function()
    it("stores and reads values by copy; nil removes", function()
      local d = shared.dict()
      d.name = "x"; d[1] = { 1, 2, { 3 } }; d[2.5] = 2.5; d[true] = false
      assert.equal("x", d.name)
      assert.same({ 1, 2, { 3 } }, d[1])
      assert.equal(2.5, d[2.5]); assert.equal(false, d[true])
      assert.equal(4, d:len()); assert.equal(4, #d)
      local t = d[1]; t[1] = 99
      assert.equal(1, d[1][1])                 -- a copy
      d.name = nil
      assert.is_nil(d.name); assert.equal(3, #d)
      d.missing = nil                          -- removing what is not there: fine
      assert.equal(3, #d)
    end)

    it("keys follow Lua's rules: 1 and 1.0 are one key; integers stay integers", function()
      local d = shared.dict()
      d[1] = "a"; d[1.0] = "b"
      assert.equal(1, #d); assert.equal("b", d[1])
      d[2 ^ 53] = "big"
      assert.equal("big", d[2 ^ 53]); assert.equal("big", d[math.tointeger(2 ^ 53)])
      local ks = d:keys()
      for _, k in ipairs(ks) do assert.equal("integer", math.type(k)) end
      d.n = 7
      assert.equal("integer", math.type(d.n))
      d.f = 7.0
      assert.equal("float", math.type(d.f))
    end)

    it("keys(), items() and pairs() are snapshots", function()
      local d = shared.dict()
      for i = 1, 100 do d["k" .. i] = i end
      local ks = d:keys()
      assert.equal(100, #ks)
      local items = d:items()
      local n, sum = 0, 0
      for k, v in pairs(items) do n = n + 1; sum = sum + v; assert.equal("k" .. v, k) end
      assert.equal(100, n); assert.equal(5050, sum)
      n = 0
      for k, v in pairs(d) do n = n + 1; assert.equal(d[k], v) end
      assert.equal(100, n)
    end)

    it("method names win over keys; get/set reach any key", function()
      local d = shared.dict()
      d:set("keys", 1)
      assert.equal("function", type(d.keys))
      assert.equal(1, d:get("keys"))
      assert.same({ "keys" }, d:keys())
    end)

    it("grows to many entries", function()
      local d = shared.dict()
      for i = 1, 20000 do d[i] = i * 2 end
      assert.equal(20000, #d)
      for i = 1, 20000, 997 do assert.equal(i * 2, d[i]) end
      for i = 1, 20000, 2 do d[i] = nil end
      assert.equal(10000, #d)
      assert.is_nil(d[1]); assert.equal(4, d[2])
    end)

    it("incr is atomic and keeps integers integers", function()
      local d = shared.dict()
      assert.equal(1, d:incr("n"))
      assert.equal(11, d:incr("n", 10))
      assert.equal(10.5, d:incr("n", -0.5))
      assert.equal("float", math.type(d.n))
      assert.equal(-3, d:incr("m", -3))
      in_tasks(10, function() for _ = 1, 100 do d:incr("c"); strand.sleep(0) end end)
      assert.equal(1000, d.c)
    end)

    it("update is atomic even when fn yields, and returns the new value", function()
      local d = shared.dict()
      in_tasks(10, function()
        for _ = 1, 30 do
          d:update("total", function(v)
            strand.sleep(0)                     -- others write meanwhile: retried
            return (v or 0) + 1
          end)
        end
      end)
      assert.equal(300, d.total)
      assert.equal(301, d:update("total", function(v) return v + 1 end))
      assert.is_nil(d:update("total", function() return nil end))   -- nil removes
      assert.is_nil(d.total)
    end)

    it("holds strand objects by reference", function()
      local d = shared.dict()
      local lock = sync.lock()
      d.lock = lock
      assert.is_true(d.lock == lock)
      d.lock:acquire()
      assert.is_true(lock:locked())
      lock:release()
    end)

    it("a dict dropped with objects in it releases them", function()
      local before = H.snapshot()
      do
        local d = shared.dict()
        d.a = sync.lock(); d.b = { sync.event() }
        d.a = sync.lock()                       -- the replaced one goes too
      end
      assert.is_nil(H.leaks(before))
    end)
  end)

  describe("list", function()
    it("append, index, assign, len, items", function()
      local l = shared.list({ "a", "b" })
      assert.equal(2, #l)
      assert.equal(3, l:append({ x = 1 }))
      assert.equal("a", l[1]); assert.equal(1, l[3].x); assert.is_nil(l[4]); assert.is_nil(l[0])
      l[1] = "A"
      l[4] = "appended"                         -- len + 1 appends
      assert.equal(4, l:len())
      assert.same({ "A", "b", { x = 1 }, "appended" }, l:items())
      local seen = {}
      for i, v in ipairs(l) do seen[i] = v end
      assert.equal(4, #seen)
    end)

    it("many appends from many tasks are all there", function()
      local l = shared.list()
      in_tasks(10, function(i)
        for j = 1, 100 do l:append(i * 1000 + j); if j % 10 == 0 then strand.sleep(0) end end
      end)
      assert.equal(1000, #l)
      local seen = {}
      for _, v in ipairs(l:items()) do assert.is_nil(seen[v]); seen[v] = true end
    end)
  end)

  describe("across threads", function()
    gates.with_threads("dict and list changed by 5 threads: every change is there", function()
      local d, l = shared.dict(), shared.list()
      local ts = {}
      for w = 1, 5 do
        ts[w] = thread.start(function(dd, ll, me)
          for i = 1, 200 do
            dd:incr("count")
            dd["w" .. me .. "." .. i] = me
            ll:append(me * 1000 + i)
          end
          dd:update("workers", function(v) v = v or {}; v[#v + 1] = me; return v end)
        end, d, l, w)
      end
      for w = 1, 5 do assert.is_true((ts[w]:join(H.TIMEOUT))) end
      assert.equal(1000, d.count)
      assert.equal(1000 + 2, #d)
      assert.equal(1000, #l)
      local workers = d.workers
      table.sort(workers)
      assert.same({ 1, 2, 3, 4, 5 }, workers)
    end)
  end)

  describe("failure conditions", function()
    it("bad keys and values raise, naming the argument", function()
      local d = shared.dict()
      assert.has_error(function() d[{}] = 1 end)
      assert.has_error(function() d[0 / 0] = 1 end)
      assert.has_error(function() return d[print] end)
      assert.has_error(function() d.x = coroutine.create(print) end)
      assert.has_error(function() d:incr("k", "x") end)
      assert.has_error(function() d:update("k", 42) end, "bad argument #2 to 'update' (function expected, got number)")
      assert.has_error(function() shared.list(42) end)
      assert.has_error(function() d.keys(sync.lock()) end)
    end)

    it("incr of a non-number raises and leaves the value", function()
      local d = shared.dict()
      d.s = "text"
      assert.has_error(function() d:incr("s") end, "strand.dict: incr of a value that is not a number")
      assert.equal("text", d.s)
    end)

    it("list indexes out of range raise on assignment; nil cannot be stored", function()
      local l = shared.list({ 1 })
      assert.has_error(function() l[3] = 1 end)
      assert.has_error(function() l[0] = 1 end)
      assert.has_error(function() l[1] = nil end)
      assert.has_error(function() l:append(nil) end)
      assert.has_error(function() l.x = 1 end)
      assert.equal(1, #l)
    end)

    it("an error inside update's fn propagates and changes nothing", function()
      local d = shared.dict()
      d.v = 1
      assert.has_error(function() d:update("v", function() error("nope") end) end)
      assert.equal(1, d.v)
    end)
  end)
end)
