-- spec/ovfq_spec.lua — an unbounded FIFO's overflow (queue.new(): a ring plus an ordered overflow
-- in the arena) when a process dies holding the queue's mutex: every crash point of a move, an
-- append, the overflow's growth, a direct take and the ring's growth.
local process = require "strand.process"
local queue = require "strand.queue"
local H = require "support.helper"

-- item i: a short string, or (every third) a 200-byte one, which has its own arena block
local function val(i)
  if i % 3 == 0 then return string.format("%06d", i) .. ("L"):rep(194) end
  return "s" .. i
end
local function num(v) return v:sub(1, 1) == "s" and tonumber(v:sub(2)) or tonumber(v:sub(1, 6)) end
local function long(v) return #v > 112 end

-- queue._test_die(point, n): the child _exits the n-th time it reaches the crash point, the
-- queue's mutex held; the parent's next lock gets EOWNERDEAD and repairs the queue
local function dies_at(point, n, fn)
  local p = process.start(function() queue._test_die(point, n); fn(); error("no crash point reached") end)
  assert.is_true(p:join(H.TIMEOUT))
  assert.equal(0, p.exitcode, point .. " " .. n .. ": the child did not die there")
end

-- m items: the first 16 fill the small ring, the rest go to the overflow (the ring retired:
-- it grows once the small one is drained); `got` of them taken (and done) again. The queue has
-- crossed (a fork) first, so values are copied: the long ones into arena blocks.
local function setup(m, got)
  local q, items = queue.new(), {}
  local p = process.start(function() end)
  assert.is_true(p:join(H.TIMEOUT))
  for i = 1, m do
    items[i] = val(i)
    assert.is_true(q:put_nowait(items[i]))
  end
  for i = 1, got do
    assert.equal(items[1], q:get_nowait(), "setup get " .. i)
    table.remove(items, 1)
    q:task_done()
  end
  return q, items
end

local function blocks_of(items)
  local n = 0
  for _, v in ipairs(items) do if long(v) then n = n + 1 end end
  return n
end

-- The queue holds exactly `items` (each once, in order), its storage exactly their blocks plus
-- the rings it grew to and the overflow's chunks (+ `leaked`; as many chunks as its items need,
-- one more at most, one once drained), unfinished counts `unf`, and puts and gets go on
-- working (through the overflow again, the ring growing again) unless it is closed.
local CHUNK = 512                                  -- items per overflow chunk (queue.c)
local function check(q, items, leaked, unf, what, closed)
  local nb, _, chunks, rings = queue._test_blocks(q)   -- locks first: the repair runs
  -- blocks of the sizes of the queue's arrays taken from the arena: one released while the
  -- queue still used it would be overwritten now
  local junk = queue.lifo()
  local p = process.start(function() end)
  assert.is_true(p:join(H.TIMEOUT))
  for _, len in ipairs({ 4000, 6000, 8000, 8150, 12000, 16000, 16300, 32000 }) do
    for _ = 1, 2 do assert.is_true(junk:put_nowait(("Z"):rep(len))) end
  end
  assert.is_truthy(nb, what .. ": the block list is whole")
  assert.equal(#items, q:qsize(), what .. ": qsize")
  assert.is_true(chunks >= 1 and chunks <= #items // CHUNK + 2, what .. ": " .. chunks .. " chunks")
  assert.equal(1, rings, what .. ": the big ring")
  assert.equal(rings + chunks + blocks_of(items) + leaked, nb, what .. ": storage blocks")
  local got = {}
  for _ = 1, #items + 1 do
    local v = q:get_nowait()
    if v == nil then break end
    got[#got + 1] = v
  end
  assert.same(items, got, what .. ": the items, each once, in order")
  assert.equal(rings + 1 + leaked, (queue._test_blocks(q)), what .. ": storage blocks once drained")
  assert.equal(1, select(3, queue._test_blocks(q)), what .. ": one chunk kept once drained")
  if closed then
    assert.same({ nil, "closed" }, { q:get_nowait() })
  else
    assert.same({ nil, "empty" }, { q:get_nowait() })
    local more = {}
    for i = 1, 1100 do                           -- past the big ring: the overflow again,
      more[i] = val(i)                            -- and a bigger ring made (r_grow)
      assert.is_true(q:put_nowait(more[i]))
    end
    for i = 1, 1100 do assert.equal(more[i], q:get_nowait(), what .. ": more " .. i) end
    unf = unf + 1100
    -- (a ring grows to at most 1/64 of the arena: valgrind's is 32 MiB, where 16,384 slots do
    -- not fit that share and the 1,024-slot ring stays)
    assert.equal(H.VALGRIND and 1 or 2, select(4, queue._test_blocks(q)), what .. ": grew again")
  end
  local rings_now = select(4, queue._test_blocks(q))
  assert.is_not_true(q:join(0), what .. ": unfinished")
  for _ = 1, unf do q:task_done() end
  assert.is_true(q:join(0), what .. ": join")
  assert.has_error(function() q:task_done() end)
  assert.equal(rings_now + 1 + leaked, (queue._test_blocks(q)), what .. ": storage blocks at the end")
end

describe("an unbounded queue's overflow whose holder died", function()
  H.guard()

  -- a get finds the small ring empty and 84 items in the overflow: it installs the big ring
  -- and moves a batch of 64 into it; killed anywhere, the batch is moved whole or not at all
  -- and the get took nothing
  it("a get's move killed at any step leaves each item once, in order", function()
    for _, pt in ipairs({ { "install", 1 }, { "installed", 1 }, { "move", 1 }, { "move", 3 },
                          { "move", 64 }, { "moved", 1 } }) do
      local q, items = setup(100, 16)
      dies_at(pt[1], pt[2], function() q:get_nowait() end)
      check(q, items, 0, #items, "get died at " .. pt[1] .. " " .. pt[2])
    end
  end)

  -- a put finds items in the overflow and room in the (installed) big ring: it moves a batch
  -- first, then appends its own
  it("a put's move killed at any step leaves each item once, in order", function()
    for _, pt in ipairs({ { "move", 2 }, { "moved", 1 } }) do
      local q, items = setup(600, 16)
      assert.equal(items[1], q:get_nowait())      -- installs the big ring, moves 256
      table.remove(items, 1)
      q:task_done()
      dies_at(pt[1], pt[2], function() q:put_nowait("new") end)
      check(q, items, 0, #items, "put died at " .. pt[1] .. " " .. pt[2])
    end
  end)

  -- an append to the overflow (the small ring full): killed before it is counted, it is not put
  -- (its block given back); its two counts change together
  it("an append killed at any step is not half put", function()
    for _, pt in ipairs({ { "oput", 1 }, { "ocount", 1 } }) do
      for _, new in ipairs({ "new", val(999) }) do
        local q, items = setup(100, 0)
        dies_at(pt[1], pt[2], function() q:put_nowait(new) end)
        check(q, items, 0, #items, "append of " .. #new .. " B died at " .. pt[1])
      end
    end
  end)

  -- review 7b: put_many appends a run of items to the overflow under one lock: killed at the
  -- k-th append, the k-1 before it are in (each once, in order, after the others), the k-th
  -- not half put
  it("a put_many killed at its k-th append keeps the ones before it, each once, in order", function()
    for _, pt in ipairs({ { "oput", 1 }, { "oput", 3 }, { "ocount", 2 }, { "ocount", 5 } }) do
      local q, items = setup(100, 0)
      local batch = {}
      for i = 1, 6 do batch[i] = i % 2 == 0 and val(900 + i) or "b" .. i end
      dies_at(pt[1], pt[2], function() q:put_many(batch) end)
      for i = 1, pt[2] - 1 do items[#items + 1] = batch[i] end
      check(q, items, 0, #items, "put_many died at " .. pt[1] .. " " .. pt[2])
    end
  end)

  -- the overflow's chunk is full (512 items): the append links a second one; killed before
  -- it is linked for good, the new chunk is given back and the first one ends the chain
  it("the overflow's growth killed at any step keeps its chain, every item once", function()
    for _, point in ipairs({ "ogrow", "ogrown" }) do
      local q, items = setup(16 + CHUNK, 0)
      dies_at(point, 1, function() q:put_nowait("new") end)
      check(q, items, 0, #items, "grow died at " .. point)
    end
  end)

  -- closed: nothing moves any more, a get takes the overflow's oldest item directly
  it("a direct take from a closed queue's overflow killed midway gives the item back", function()
    local q, items = setup(100, 16)
    q:close()
    dies_at("otake", 1, function() q:get_nowait() end)
    check(q, items, 0, #items, "take died", true)
  end)

  -- each put moves a batch of 64 before it appends its own: a move killed, then an append
  it("the same crash points many times in a row", function()
    local q, items = setup(600, 16)
    for r = 1, 4 do
      dies_at("move", r * 5, function() q:put_nowait("m" .. r) end)
      dies_at("oput", 1, function() q:put_nowait(val(2000 + r)) end)
    end
    check(q, items, 0, #items, "repeated")
  end)

  -- the overflow is a chain of chunks: the growth killed when it links a later chunk (the
  -- first ones full, the head chunk's items partly gone) keeps the chain whole too
  it("a later chunk's link killed at any step keeps the chain, every item once", function()
    for _, point in ipairs({ "ogrow", "ogrown" }) do
      local q, items = setup(16 + 3 * CHUNK, 16)
      for _ = 1, 600 do                           -- moves of 256: the first chunk released,
        assert.equal(items[1], q:get_nowait())    -- the second half gone
        table.remove(items, 1)
        q:task_done()
      end
      assert.equal(2, select(3, queue._test_blocks(q)), point .. ": two chunks, the last full")
      dies_at(point, 1, function() q:put_nowait("new") end)
      check(q, items, 0, #items, "later grow died at " .. point)
    end
  end)

  -- a move that takes the last items of the head chunk releases it (ovf_head moved on first):
  -- killed in between, that chunk is lost (one block until the family ends), never released
  -- twice nor read again
  it("a drained chunk's release killed midway loses that chunk, nothing else", function()
    local q, items = setup(16 + 600, 16)
    dies_at("ofree", 1, function()
      for _ = 1, 257 do q:get_nowait() end       -- installs, moves 256, then the next 256
    end)
    for _ = 1, 256 do table.remove(items, 1) end  -- taken by the child before it died
    check(q, items, 1, #items + 256, "release died")
  end)

  -- closed, the overflow still drains through the ring (moves after close), in order; killed
  -- at any step of such a move, each item once, in order, and then "closed"
  it("a closed queue's move killed at any step leaves each item once, in order", function()
    for _, pt in ipairs({ { "move", 1 }, { "move", 40 }, { "moved", 1 } }) do
      local q, items = setup(16 + 600, 16)
      assert.equal(items[1], q:get_nowait())      -- installs the big ring, moves 256
      table.remove(items, 1)
      q:task_done()
      for _ = 1, 255 do                           -- the ring empty again, 344 in the overflow
        assert.equal(items[1], q:get_nowait())
        table.remove(items, 1)
        q:task_done()
      end
      q:close()
      dies_at(pt[1], pt[2], function() q:get_nowait() end)
      check(q, items, 0, #items, "closed move died at " .. pt[1] .. " " .. pt[2], true)
    end
  end)

  -- SIGKILL at random moments of a put/put/get loop (the overflow growing, moving, the ring
  -- growing): each item at most once, in order, the storage exactly their blocks plus the
  -- queue's own (the big ring, the overflow's array while it is not empty or small) plus at
  -- most the one in flight (a double release would show as a corrupt list or a count off)
  it("puts and gets SIGKILLed at random moments: each item once, in order, storage exact", function()
    local strand = require "strand"
    local sync = require "strand.sync"
    for round = 1, H.work(10, 2) do
      local q, ready = queue.new(), sync.event()
      local p = process.start(function()
        local i = 0
        while true do
          for _ = 1, 2 do i = i + 1; q:put_nowait(val(i)) end
          q:get_nowait()
          if i == 400 then ready:set() end
        end
      end)
      assert.is_true(ready:wait(H.TIMEOUT))
      strand.sleep(math.random() * 0.01)
      p:kill()
      p:join(H.TIMEOUT)
      assert.equal(-9, p.exitcode)
      local what = "round " .. round
      local nb, _, chunks, rings = queue._test_blocks(q)
      assert.is_truthy(nb, what .. ": the block list is whole")
      local n = q:qsize()
      local got = {}
      for k = 1, n do
        local v, err = q:get_nowait()
        if v == nil then
          -- killed between claiming the last position and publishing it: qsize counted it (a
          -- put in flight); get_nowait asked whether its claimer died, skipped it and found
          -- nothing behind it (reliability item 18): only the last, and nothing left counted
          assert.equal("empty", err, what)
          assert.equal(n, k, what .. ": a hole found before the end")
          assert.equal(0, q:qsize(), what .. ": qsize once get_nowait said empty")
          break
        end
        got[#got + 1] = v
      end
      assert.same({ nil, "empty" }, { q:get_nowait() })
      for i = 2, #got do
        assert.is_true(num(got[i]) > num(got[i - 1]), what .. ": " .. got[i] .. " after " .. got[i - 1])
      end
      local left = queue._test_blocks(q)
      local own = nb - blocks_of(got)              -- the rings, the chunks, the one in flight
      assert.is_true(own >= 1 and own <= rings + 1 + chunks and chunks <= n // CHUNK + 2,
        what .. ": " .. nb .. " blocks (" .. chunks .. " chunks) for " .. #got .. " items")
      assert.is_true(left >= 1 and left <= own, what .. ": " .. left .. " blocks once drained")
      assert.is_true(q:put_nowait("x")); assert.equal("x", q:get_nowait())
    end
  end)
end)

-- docs/reliability.md item 18: a producer process killed between claiming a ring position and
-- publishing it leaves a hole that qsize counts (a put in flight). get_nowait itself asks whether
-- the claimer died (r_skip_dead) before it answers "empty", and skips the hole: the items behind
-- it come out, and once it answered "empty" qsize is 0 -- no waiting get needed.
describe("a dead producer's unpublished claim", function()
  local sync = require "strand.sync"

  -- q as made by mk(); the child puts `before`, claims the next position and exits with it
  -- unpublished; the parent then puts `after`
  local function hole(q, before, after)
    local p = process.start(function()
      for _, v in ipairs(before) do assert(q:put_nowait(v)) end
      assert(queue._test_claim(q))
      os.exit(0, false)
    end)
    assert.is_true(p:join(H.TIMEOUT))
    assert.equal(0, p.exitcode)
    for _, v in ipairs(after) do assert.is_true(q:put_nowait(v)) end
  end

  local kinds = {
    { "a bounded ring", function() return queue.new(8) end },
    { "an unbounded queue's small ring", function() return queue.new() end },
    { "an unbounded queue's big ring", function()
      local q = queue.new()
      for i = 1, 40 do assert.is_true(q:put_nowait(i)) end     -- the overflow: the ring grows
      for i = 1, 40 do assert.equal(i, q:get_nowait()); q:task_done() end   -- via the big ring
      return q
    end },
  }
  for _, k in ipairs(kinds) do
    it("is skipped by get_nowait, last in " .. k[1] .. ": qsize 0 once it says empty", function()
      local q = k[2]()
      hole(q, { "a", "b" }, {})
      assert.equal(3, q:qsize())                    -- the hole counts until someone skips it
      assert.equal("a", q:get_nowait())
      assert.equal("b", q:get_nowait())
      assert.same({ nil, "empty" }, { q:get_nowait() })
      assert.equal(0, q:qsize())                    -- get_nowait skipped it: no waiting get
      assert.is_true(q:empty())
      assert.is_true(q:put_nowait("c"))
      assert.equal("c", q:get_nowait())
      for _ = 1, 3 do q:task_done() end             -- a, b, c; the skipped put counts as done
      assert.is_true(q:join(0))
    end)

    it("is skipped by get_nowait, amid items in " .. k[1], function()
      local q = k[2]()
      hole(q, { "a" }, { "c", "d" })
      assert.equal(4, q:qsize())
      assert.equal("a", q:get_nowait())
      assert.equal("c", q:get_nowait())             -- over the hole, in the same call
      assert.equal(1, q:qsize())
      assert.equal("d", q:get_nowait())
      assert.same({ nil, "empty" }, { q:get_nowait() })
      assert.equal(0, q:qsize())
    end)
  end

  it("a producer alive with its claim keeps get_nowait from skipping it", function()
    local q, ready, go = queue.new(8), sync.event(), sync.event()
    local p = process.start(function()
      assert(queue._test_claim(q))
      ready:set()
      go:wait(30)
    end)
    assert.is_true(ready:wait(H.TIMEOUT))
    assert.is_true(q:put_nowait("x"))
    assert.equal(2, q:qsize())
    assert.same({ nil, "empty" }, { q:get_nowait() })   -- it may still publish: not skipped
    assert.equal(2, q:qsize())
    go:set()
    assert.is_true(p:join(H.TIMEOUT))
    assert.equal("x", q:get_nowait())               -- its end (a thread's end clears nothing:
    assert.equal(0, q:qsize())                      -- the process is gone) frees the hole
  end)
end)
