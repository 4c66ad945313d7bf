-- spec/ringgrow_spec.lua — an unbounded FIFO's ring growing again and again (queue.c r_grow:
-- 16 slots, 1024, then 16 times more each time producers are a whole ring ahead, within a
-- quarter of its storage): order and counts across growths between threads and processes, the
-- storage bound, a holder killed mid-growth, arena exhaustion while growing.
local process = require "strand.process"
local queue = require "strand.queue"
local thread = require "strand.thread"
local H = require "support.helper"

local BIG = 1024                                   -- the first ring it grows to (queue.c)
local GROW = 16                                    -- each later growth (queue.c)

local function rings(q) return select(4, queue._test_blocks(q)) end

-- put n items (i0 + 1 .. i0 + n) with no get between: the ring fills, then the overflow
local function put_run(q, i0, n)
  for i = i0 + 1, i0 + n do assert.is_true(q:put_nowait(i)) end
end
local function get_run(q, i0, n, what)
  for i = i0 + 1, i0 + n do assert.equal(i, q:get_nowait(), what .. ": item " .. i) end
end

-- q's rings grown to BIG (installed: a get drained the small one)
local function with_big_ring(q)
  put_run(q, 0, 40)
  get_run(q, 0, 40, "first growth")
  assert.equal(1, rings(q))
  return q
end

describe("an unbounded queue's ring growing", function()
  H.guard()

  it("grows once a whole ring ahead, keeps FIFO order and counts across each growth", function()
    local q = with_big_ring(queue.new())
    -- a whole big ring ahead (+1): the next put makes a ring 16 times bigger and retires the
    -- big one; items go to the overflow until getters drain it, then move into the new one
    put_run(q, 0, BIG + 1)
    assert.equal(2, rings(q))
    put_run(q, BIG + 1, 3000)
    assert.equal(BIG + 3001, q:qsize())
    assert.is_not_true(q:join(0))
    get_run(q, 0, BIG + 3001, "second growth")
    assert.same({ nil, "empty" }, { q:get_nowait() })
    assert.equal(0, q:qsize())
    for _ = 1, 40 + BIG + 3001 do q:task_done() end
    assert.is_true(q:join(0))
    assert.has_error(function() q:task_done() end)
    -- installed: the next BIG * GROW items fit in the ring (no chunk, no growth); past it, the
    -- overflow (RING_GROW_MAX: no third ring)
    local n = BIG * GROW
    put_run(q, 0, n)
    local _, used, chunks, r = queue._test_blocks(q)
    assert.equal(2, r)
    assert.equal(1, chunks, "the overflow's kept chunk, unused")
    assert.equal(n, q:qsize())
    put_run(q, n, 2000)
    local _, used2, chunks2 = queue._test_blocks(q)
    assert.equal(2, rings(q), "no third ring")
    assert.is_true(chunks2 >= 4 and used2 > used, chunks2 .. " chunks")
    get_run(q, 0, n + 2000, "past the largest ring")
    -- the rings stay with the queue (a put or get may still hold an old one); nothing else
    local nb = queue._test_blocks(q)
    assert.equal(2 + 1, nb, "two rings and the kept chunk")
  end)

  it("does not grow past a quarter of its storage", function()
    -- 4 MiB: a quarter holds 8192 slots: 1024 only (16384 would not fit)
    local q = with_big_ring(queue.new(0, { storage = 4 * 1024 * 1024 }))
    put_run(q, 0, 3 * BIG)
    assert.equal(1, rings(q))
    get_run(q, 0, 3 * BIG, "capped")
    -- 8 MiB: 16384 fits (the most it grows to)
    q = with_big_ring(queue.new(0, { storage = 8 * 1024 * 1024 }))
    put_run(q, 0, BIG + 1)
    get_run(q, 0, BIG + 1, "to 16384")
    put_run(q, 0, BIG * GROW + 100)
    assert.equal(2, rings(q))
    get_run(q, 0, BIG * GROW + 100, "capped at 16384")
    -- an empty unbounded queue stays small: its state and its 16 inline slots, no block
    local nb, used = queue._test_blocks(queue.new())
    assert.equal(0, nb)
    assert.equal(0, used)
  end)

  it("keeps each producer's order across growths, 3 producer and 3 consumer threads", function()
    local per = H.work(30000, 3000)
    local q = queue.new()
    local producers, consumers = {}, {}
    for c = 1, 3 do
      consumers[c] = thread.start(function(qq, timeout)
        local last, n, bad = {}, 0, nil
        while true do
          local v, err = qq:get(timeout)
          if v == nil then
            if err ~= "closed" then bad = bad or ("get: " .. tostring(err)) end
            break
          end
          local p, i = v // 1000000, v % 1000000
          if i <= (last[p] or 0) then bad = bad or ("producer " .. p .. ": " .. i .. " after " .. last[p]) end
          last[p] = i
          n = n + 1
        end
        return n, bad
      end, q, H.TIMEOUT)
    end
    for p = 1, 3 do
      producers[p] = thread.start(function(qq, id, m)
        for i = 1, m do assert(qq:put(id * 1000000 + i)) end
        return true
      end, q, p, per)
    end
    for p = 1, 3 do assert.same({ true, true }, { producers[p]:join(H.TIMEOUT * 3) }) end
    q:close()
    local total = 0
    for c = 1, 3 do
      local ok, n, bad = consumers[c]:join(H.TIMEOUT * 3)
      assert.is_true(ok, tostring(n))
      assert.is_nil(bad)
      total = total + n
    end
    assert.equal(3 * per, total)
    assert.equal(0, q:qsize())
    local nb, _, chunks, r = queue._test_blocks(q)
    assert.equal(r + chunks, nb, "every item's block given back (" .. r .. " rings)")
  end)

  it("keeps each producer's order across growths between processes", function()
    local per = H.work(20000, 2000)
    local q = queue.new()
    local kids = {}
    for p = 1, 2 do
      kids[p] = process.start(function()
        for i = 1, per do assert(q:put(p * 1000000 + i)) end
      end)
    end
    local cons = process.start(function()           -- a consumer process, taking half
      local last = {}
      for _ = 1, per do
        local v = assert(q:get(30))
        local p, i = v // 1000000, v % 1000000
        if i <= (last[p] or 0) then os.exit(3) end
        last[p] = i
      end
    end)
    local last, n = {}, 0
    for _ = 1, per do
      local v = q:get(H.TIMEOUT * 3)
      assert.is_truthy(v)
      local p, i = v // 1000000, v % 1000000
      assert.is_true(i > (last[p] or 0), "producer " .. p .. ": " .. i .. " after " .. tostring(last[p]))
      last[p] = i
      n = n + 1
    end
    for p = 1, 2 do assert.is_true(kids[p]:join(H.TIMEOUT * 3)); assert.equal(0, kids[p].exitcode) end
    assert.is_true(cons:join(H.TIMEOUT * 3))
    assert.equal(0, cons.exitcode, "the consumer process saw a producer's items out of order")
    assert.equal(per, n)
    assert.same({ nil, "empty" }, { q:get_nowait() })
    assert.is_true(rings(q) >= 1)
  end)

  -- queue._test_die("rgrow"): the grower dies after making the new ring, before retiring the
  -- old one: the next put that finds the ring full uses that ring (no second one made);
  -- "rinit": after retiring it, before initialising the new ring's slots: the install does;
  -- "install", "installed": the getter installing it dies (the next locker finishes it)
  it("a holder killed mid-growth leaves its ring for the next, every item once", function()
    for _, pt in ipairs({ { "rgrow", 1 }, { "rinit", 1 }, { "install", 1 }, { "installed", 1 } }) do
      local what = pt[1]
      local q = with_big_ring(queue.new())
      local p0 = process.start(function() end)     -- crossed: the child below shares it
      assert.is_true(p0:join(H.TIMEOUT))
      put_run(q, 0, BIG)                            -- the big ring full
      local p
      if what == "rgrow" or what == "rinit" then
        p = process.start(function()
          queue._test_die(what)
          q:put_nowait(BIG + 1)
          os.exit(9)
        end)
      else
        put_run(q, BIG, 100)                        -- retired: 100 in the overflow
        get_run(q, 0, BIG, what)                   -- the big ring drained: the next get installs
        p = process.start(function()
          queue._test_die(what)
          q:get_nowait()
          os.exit(9)
        end)
      end
      assert.is_true(p:join(H.TIMEOUT))
      assert.equal(0, p.exitcode, what .. ": the child did not die there")
      local nb, _, chunks, r = queue._test_blocks(q)   -- the repair runs
      assert.is_truthy(nb, what .. ": the block list is whole")
      assert.equal(2, r, what .. ": the new ring made once")
      assert.equal(r + chunks, nb, what .. ": storage blocks")
      if what == "rgrow" or what == "rinit" then
        assert.equal(BIG, q:qsize())
        put_run(q, BIG, 100)                        -- grows (the dead one's ring), overflow
        assert.equal(2, rings(q), what .. ": no other ring made")
        get_run(q, 0, BIG + 100, what)
      else
        assert.equal(100, q:qsize())
        get_run(q, BIG, 100, what)
      end
      assert.same({ nil, "empty" }, { q:get_nowait() })
      -- and the grown ring works: a run that fits it, no chunk used
      put_run(q, 0, 5000)
      get_run(q, 0, 5000, what .. " after")
      assert.equal(2, rings(q))
    end
  end)

  it("running out of storage while growing: no ring, the overflow until full, nothing lost", function()
    local q = with_big_ring(queue.new(0, { storage = 8 * 1024 * 1024 }))
    local p0 = process.start(function() end)       -- crossed: values are copied into blocks
    assert.is_true(p0:join(H.TIMEOUT))
    local huge = ("H"):rep(300 * 1024)
    for i = 1, 20 do assert.is_true(q:put_nowait(i .. huge)) end   -- 6 MiB in arena blocks
    put_run(q, 20, BIG - 20)                        -- the ring full
    local n, err, code = BIG, nil, nil
    for _ = 1, 100000 do
      local ok, e, c = q:put_nowait(n + 1)
      if not ok then err, code = e, c; break end
      n = n + 1
    end
    assert.equal("queue storage full", err)
    assert.equal("ENOSPC", code)
    assert.is_true(n > BIG + 512, n .. " items")   -- the overflow took some: no 2 MiB ring
    assert.equal(1, rings(q), "no ring made")
    assert.equal(n, q:qsize())
    for i = 1, 20 do assert.equal(i .. huge, q:get_nowait()) end
    get_run(q, 20, n - 20, "exhausted")
    assert.same({ nil, "empty" }, { q:get_nowait() })
    -- the storage back, the next burst a whole ring ahead grows it
    put_run(q, 0, BIG + 1)
    assert.equal(2, rings(q))
    get_run(q, 0, BIG + 1, "after")
  end)
end)
