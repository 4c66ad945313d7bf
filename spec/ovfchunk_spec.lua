-- spec/ovfchunk_spec.lua — an unbounded FIFO's overflow as a chain of chunks (queue.c): order
-- across chunk boundaries between threads, chunks given back as it drains, a closed queue's
-- overflow drained through the ring. (Holders killed mid-change: spec/ovfq_spec.lua.)
local queue = require "strand.queue"
local thread = require "strand.thread"
local sync = require "strand.sync"
local H = require "support.helper"

local CHUNK = 512                                  -- items per overflow chunk (queue.c)

-- item i, of every kind a ring slot holds: integers, floats, booleans, short and 100-byte
-- strings inline, 300-byte strings in arena blocks, tables serialized
local function val(i)
  local k = i % 7
  if k == 0 then return i
  elseif k == 1 then return i + 0.5
  elseif k == 2 then return i % 2 == 0
  elseif k == 3 then return "s" .. i
  elseif k == 4 then return string.format("%08d", i) .. ("m"):rep(92)
  elseif k == 5 then return string.format("%08d", i) .. ("L"):rep(292)
  else return { i = i, s = "t" .. i } end
end

describe("an unbounded queue's chunked overflow", function()
  H.guard()

  it("keeps FIFO order across many chunks between a producer and a consumer thread", function()
    local n = H.work(16 + 7 * CHUNK + 77, 16 + 2 * CHUNK + 7)
    local q, half = queue.new(), sync.event()
    local producer = thread.start(function(qq, ev, m, val_src)
      local v = load(val_src)
      for i = 1, m do
        assert(qq:put(v(i)))
        if i == m // 2 then ev:set() end          -- the consumer starts with chunks to walk
      end
      return true
    end, q, half, n, string.dump(val))
    local consumer = thread.start(function(qq, ev, m, val_src, timeout)
      local v = load(val_src)
      assert(ev:wait(timeout), "the producer never got halfway")
      for i = 1, m do
        local got, want = qq:get(timeout), v(i)
        if type(want) == "table" then
          if type(got) ~= "table" or got.i ~= want.i or got.s ~= want.s then return false, i end
        elseif got ~= want then
          return false, i, tostring(got)
        end
      end
      return true
    end, q, half, n, string.dump(val), H.TIMEOUT)
    assert.same({ true, true }, { producer:join(H.TIMEOUT) })
    local ok, good, at, got = consumer:join(H.TIMEOUT)
    assert.is_true(ok)
    assert.is_true(good, "item " .. tostring(at) .. " out of order or changed: " .. tostring(got))
    assert.equal(0, q:qsize())
    assert.same({ nil, "empty" }, { q:get_nowait() })
    local nb, _, chunks, rings = queue._test_blocks(q)
    assert.equal(1, chunks, "one chunk kept once drained")
    assert.is_true(rings >= 1, "the ring grew")
    assert.equal(rings + 1, nb, "the rings and that chunk: every item's block given back")
  end)

  it("gives its chunks back as it drains, and counts items and unfinished across them", function()
    local q = queue.new()
    local n = 16 + 10 * CHUNK
    for i = 1, n do assert.is_true(q:put_nowait(i)) end
    local nb, used_full, chunks = queue._test_blocks(q)
    assert.equal(10, chunks)
    assert.equal(n, q:qsize())
    for i = 1, n // 2 do assert.equal(i, q:get_nowait()); q:task_done() end
    local _, _, mid = queue._test_blocks(q)
    assert.is_true(mid >= 5 and mid <= 6, mid .. " chunks with half the items left")
    assert.equal(n - n // 2, q:qsize())
    assert.is_not_true(q:join(0))
    for i = n // 2 + 1, n do assert.equal(i, q:get_nowait()); q:task_done() end
    assert.is_true(q:join(0))
    local nb2, used_empty, left = queue._test_blocks(q)
    assert.equal(1, left)
    assert.equal(2, nb2)
    assert.is_true(nb - nb2 == 9 and used_full - used_empty >= 9 * CHUNK * 120,
      ("bytes in use %d full, %d drained"):format(used_full, used_empty))
    -- and the drained chain takes a new burst, in order
    for i = 1, 3 * CHUNK do assert.is_true(q:put_nowait(-i)) end
    for i = 1, 3 * CHUNK do assert.equal(-i, q:get_nowait()) end
    assert.same({ nil, "empty" }, { q:get_nowait() })
  end)

  it("drains a closed queue's overflow through the ring, in order, then says closed", function()
    local q = queue.new()
    local n = 16 + 5 * CHUNK + 3
    for i = 1, n do assert.is_true(q:put_nowait(val(i))) end
    q:close()
    assert.same({ nil, "closed" }, { q:put_nowait("late") })
    H.run(function()
      for i = 1, n do
        local got, want = q:get(H.TIMEOUT), val(i)
        if type(want) == "table" then assert.equal(want.i, got.i) else assert.equal(want, got) end
      end
      assert.same({ nil, "closed" }, { q:get(H.TIMEOUT) })
    end)
    assert.same({ nil, "closed" }, { q:get_nowait() })
    assert.equal(0, q:qsize())
    for _ = 1, n do q:task_done() end
    assert.is_true(q:join(0))
  end)
end)
