-- spec/queue_fastpath_spec.lua — the fast paths of strand.queue's ring (queue.c): how a put or
-- get knows its queue (the box's seal), the arguments it reads, the putter's batch spin and the
-- overflow's locked paths, between threads.
local queue = require "strand.queue"
local sync = require "strand.sync"
local H = require "support.helper"

local has_thread = require("strand.core").thread ~= nil
local thread = has_thread and require "strand.thread"
local pending_without_threads = has_thread and it or pending

describe("strand.queue fast paths", function()
  H.guard()

  describe("a method knows its queue", function()
    local function refused(fn, pattern)
      local ok, err = pcall(fn)
      assert.is_false(ok)
      assert.matches(pattern, tostring(err))
    end

    it("from another strand object, any other value, or none: bad argument #1", function()
      local q = queue.new(4)
      local lock = sync.lock()
      for _, name in ipairs { "put", "put_nowait", "get", "get_nowait" } do
        local m = q[name]
        refused(function() m(lock, 1) end, "bad argument #1 to '[^']*' %(strand.queue expected, got strand.lock%)")
        refused(function() m(io.stdout, 1) end, "strand.queue expected, got FILE%*")
        refused(function() m({}, 1) end, "strand.queue expected, got table")
        refused(function() m("q", 1) end, "strand.queue expected, got string")
        refused(function() m() end, "strand.queue expected, got no value")
      end
      refused(function() lock.acquire() end, "strand.lock expected, got no value")
      -- a queue of another kind (no ring) is still a queue
      local lifo = queue.lifo()
      assert.is_true(q.put(lifo, "x"))
      assert.equal("x", q.get(lifo))
      assert.equal(0, q:qsize())
    end)

    it("a box whose object was released says so", function()
      local q = queue.new()
      assert.is_true(q:put(1))
      getmetatable(q).__gc(q)                     -- what the collector does: the box lets go
      for _, name in ipairs { "put", "get", "get_nowait", "qsize" } do
        local ok, err = pcall(q[name], q, 2)
        assert.is_false(ok)
        assert.matches("bad argument #1 to '[^']*' %(object is closed%)", tostring(err))
      end
    end)
  end)

  describe("arguments", function()
    it("a timeout is checked even when the put or get need not wait", function()
      local q = queue.new(4)
      assert.has_error(function() q:put(1, -1) end, "bad argument #2 to 'put' (timeout must be >= 0)")
      assert.is_true(q:put(1))
      assert.has_error(function() q:get("soon") end)
      assert.equal(1, q:qsize())                  -- the failed get took nothing
      assert.has_error(function() q:put() end, "bad argument #1 to 'put' (value expected)")
      assert.has_error(function() q:put(nil, 1) end)
      assert.equal(1, q:get(5))
    end)

    it("nil timeouts, extra arguments: exactly the item comes back", function()
      for _, max in ipairs { 0, 3 } do
        local q = queue.new(max)
        assert.is_true(q:put("a", nil))
        assert.is_true(q:put(2.5, 1, "extra"))
        assert.is_true(q:put_nowait(true, "ignored"))
        assert.same({ "a" }, { q:get(nil) })
        assert.same({ 2.5 }, { q:get(1, "extra") })
        assert.same({ true }, { q:get_nowait("ignored") })
        assert.same({ nil, "empty" }, { q:get_nowait() })
      end
    end)

    pending_without_threads("a string up to 112 bytes goes into its slot, a longer one through the storage", function()
      local q = queue.new(16)
      thread.start(function(qq) return qq end, q):join()   -- crossed: values are copied
      local s = {}
      for _, n in ipairs { 0, 1, 40, 41, 100, 111, 112, 113, 1000 } do
        s[#s + 1] = ("%d:"):format(n) .. ("y"):rep(n)
      end
      for i = 1, #s do assert.is_true(q:put(s[i], H.TIMEOUT)) end
      for i = 1, #s do assert.equal(s[i], q:get_nowait()) end
      -- and while a put has to wait, the string it holds is its own copy
      local full = queue.new(1)
      thread.start(function(qq) return qq end, full):join()
      assert.is_true(full:put("first"))
      local t = thread.start(function(qq, timeout)
        local v = ("z"):rep(100)
        return qq:put(v, timeout)
      end, full, H.TIMEOUT)
      assert.equal("first", full:get(H.TIMEOUT))
      assert.same({ true, true }, { t:join(H.TIMEOUT) })
      assert.equal(("z"):rep(100), full:get(H.TIMEOUT))
    end)
  end)

  describe("between threads", function()
    -- A producer thread puts 1..n; the main program gets them: all of them, in order.
    local function through(maxsize, n, slow_getter)
      local q = queue.new(maxsize)
      local t = thread.start(function(qq, count, timeout)
        local text = ("p"):rep(90)
        for i = 1, count do
          local ok, err = qq:put(i % 3 == 0 and text .. i or i, timeout)
          if not ok then return false, err end
        end
        return true
      end, q, n, H.TIMEOUT)
      for i = 1, n do
        local v = q:get(H.TIMEOUT)
        assert.equal(i % 3 == 0 and ("p"):rep(90) .. i or i, v)
        if slow_getter and i % 97 == 0 then require("strand").sleep(0.001) end
      end
      assert.same({ true, true }, { t:join(H.TIMEOUT) })
      assert.same({ nil, "empty" }, { q:get_nowait() })
    end

    pending_without_threads("bounded rings of every small size: every item once, in order", function()
      for _, max in ipairs { 1, 2, 3, 4, 5, 7, 8, 63, 64, 65, 1000 } do
        through(max, H.work(3000, 400))
      end
    end)

    pending_without_threads("a slow getter: the putter waits for slots in batches", function()
      through(20, H.work(2000, 300), true)
      through(100, H.work(2000, 300), true)
    end)

    pending_without_threads("an unbounded ring through its overflow, then closed and drained", function()
      local n = H.work(5000, 2000)
      through(0, n)                                -- more than the grown ring's 1024 slots
      local q = queue.new(0)
      local t = thread.start(function(qq, count)
        for i = 1, count do assert(qq:put(i)) end
        qq:close()
        return true
      end, q, n)
      assert.same({ true, true }, { t:join(H.TIMEOUT) })   -- all put, closed: in the overflow
      for i = 1, n do assert.equal(i, q:get(H.TIMEOUT)) end
      assert.same({ nil, "closed" }, { q:get(H.TIMEOUT) })
    end)

    pending_without_threads("two producers, two consumers: each producer's order holds", function()
      for _, max in ipairs { 3, 0 } do
        local q, out = queue.new(max), queue.new()
        local n = H.work(2000, 300)
        local consumers = {}
        for c = 1, 2 do
          consumers[c] = thread.start(function(qq, o, timeout)
            local last, count = { 0, 0 }, 0
            while true do
              local v = qq:get(timeout)
              if v == nil then break end
              local p, i = v // 100000, v % 100000
              if i <= last[p] then return false, "out of order" end
              last[p] = i
              count = count + 1
            end
            o:put(count)
            return true
          end, q, out, H.TIMEOUT)
        end
        local producers = {}
        for p = 1, 2 do
          producers[p] = thread.start(function(qq, pp, count, timeout)
            for i = 1, count do assert(qq:put(pp * 100000 + i, timeout)) end
            return true
          end, q, p, n, H.TIMEOUT)
        end
        for p = 1, 2 do assert.same({ true, true }, { producers[p]:join(H.TIMEOUT) }) end
        q:close()
        for c = 1, 2 do assert.same({ true, true }, { consumers[c]:join(H.TIMEOUT) }) end
        assert.equal(2 * n, out:get_nowait() + out:get_nowait())
      end
    end)
  end)
end)
