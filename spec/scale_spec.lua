-- spec/scale_spec.lua — locks, events, semaphores, conditions, barriers, queues and shared dicts
-- cost bytes in the shared arena, not descriptors nor mappings (issue 11 §1); running out is
-- nil, message from a constructor; waiting on many objects adds no descriptor either.
local strand = require "strand"
local sync = require "strand.sync"
local queue = require "strand.queue"
local shared = require "strand.shared"
local H = require "support.helper"

local gates = require "support.gates"
local thread = gates.thread   -- nil when this build has no threads

local function nmaps()
  local n = 0
  for _ in io.lines("/proc/self/maps") do n = n + 1 end
  return n
end

local function presized(n)
  local t = {}
  for i = 1, n do t[i] = false end           -- big arrays are malloc'd mappings: before counting
  return t
end

local function lua_child(code, prefix)
  local f = os.tmpname()
  local h = io.open(f, "w"); h:write(code); h:close()
  local build = os.getenv("STRAND_TEST_BUILD") or "build"
  local p = io.popen(("%s LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s/?.so;;' lua5.4 %s 2>&1")
    :format(prefix, build, f))
  local out = p:read("a")
  local ok = p:close()
  os.remove(f)
  return out, ok
end

describe("shared objects at scale", function()
  H.guard()

  it("100,000 locks + 100,000 events + 100,000 queues(10) + 10,000 unbounded queues: no new fd or mapping", function()
    local N, U = H.work(100000, 5000), H.work(10000, 500)   -- 2.2 KiB of arena per N, 2.6 per U
    local locks, events, bqs, uqs = presized(N), presized(N), presized(N), presized(U)
    collectgarbage(); collectgarbage()
    local _, fds0 = H.fds()
    local maps0 = nmaps()
    for i = 1, N do
      locks[i] = assert(sync.lock())
      events[i] = assert(sync.event())
      bqs[i] = assert(queue.new(10))
    end
    for i = 1, U do uqs[i] = assert(queue.new()) end
    local _, fds1 = H.fds()
    local maps1 = nmaps()
    assert.equal(fds0, fds1)
    assert.is_true(maps1 - maps0 <= 8, ("mappings grew by %d"):format(maps1 - maps0))
    -- every one of them works, and they are distinct
    for i = 1, N, 997 do
      assert.equal(locks[i], locks[i]:acquire(0))
      assert.is_nil((locks[i]:acquire(0)))
      if i > 1 then assert.is_false(locks[i - 1]:locked()) end
      locks[i]:release()
      events[i]:set()
      assert.is_true(events[i]:wait(0))
      if i > 1 then assert.is_false(events[i - 1]:is_set()) end
      assert.is_true(bqs[i]:put_nowait(i))
      assert.equal(1, bqs[i]:qsize())
      assert.equal(i, bqs[i]:get_nowait())
    end
    for i = 1, U, 101 do
      for k = 1, 40 do uqs[i]:put(k) end           -- through the overflow and back
      for k = 1, 40 do assert.equal(k, uqs[i]:get()) end
    end
    locks, events, bqs, uqs = nil, nil, nil, nil
    collectgarbage(); collectgarbage()
  end)

  it("conditions, barriers, semaphores, dicts and lists: no new fd", function()
    local N = H.work(20000, 2000)
    local keep = presized(5 * N)
    collectgarbage()
    local _, fds0 = H.fds()
    for i = 1, N do
      keep[5 * i - 4] = assert(sync.condition())
      keep[5 * i - 3] = assert(sync.barrier(2))
      keep[5 * i - 2] = assert(sync.semaphore(3))
      keep[5 * i - 1] = assert(shared.dict())
      keep[5 * i] = assert(shared.list())
    end
    local _, fds1 = H.fds()
    assert.equal(fds0, fds1)
    local d = keep[5 * N - 1]
    d.x = "y"
    assert.equal("y", d.x)
    keep = nil
    collectgarbage(); collectgarbage()
  end)

  it("2,000 tasks asleep on 2,000 events, locks and queues hold no descriptor", function()
    local N = H.work(2000, 500)
    local events, locks, qs = {}, {}, {}
    for i = 1, N do
      events[i] = sync.event(); locks[i] = sync.lock(); qs[i] = queue.new(1)
      locks[i]:acquire()
    end
    local _, fds0 = H.fds()
    local done = 0
    H.run(function()
      local ts = {}
      for i = 1, N do
        ts[#ts + 1] = strand.spawn(function() assert.is_true(events[i]:wait(H.TIMEOUT)); done = done + 1 end)
        ts[#ts + 1] = strand.spawn(function() assert(locks[i]:acquire(H.TIMEOUT)); locks[i]:release(); done = done + 1 end)
        ts[#ts + 1] = strand.spawn(function() assert.equal(i, qs[i]:get(H.TIMEOUT)); done = done + 1 end)
      end
      strand.sleep(0)
      local _, fds1 = H.fds()
      assert.equal(fds0, fds1)                  -- while they all sleep
      assert.equal(0, done)
      for i = N, 1, -1 do events[i]:set(); locks[i]:release(); qs[i]:put(i) end
      for _, t in ipairs(ts) do assert.is_true((t:join())) end
    end)
    assert.equal(3 * N, done)
  end)

  gates.with_threads("a thread asleep on 300 objects in turn adds the descriptors of one loop, not of the objects", function()
    local N = 300
    local evs = {}
    for i = 1, N do evs[i] = sync.event() end
    local back = sync.event()
    local _, fds0 = H.fds()
    local th = thread.start(function(es, b, timeout)
      for i = 1, #es do
        if not es[i]:wait(timeout) then return false end
        b:set()
      end
      return true
    end, evs, back, H.TIMEOUT)
    local maxgrowth = 0
    for i = 1, N do
      if i % 50 == 1 then
        local _, n = H.fds()
        maxgrowth = math.max(maxgrowth, n - fds0)
      end
      evs[i]:set()
      assert.is_true(back:wait(H.TIMEOUT))
      back:clear()
    end
    local ok, r = th:join()
    assert.is_true(ok); assert.is_true(r)
    assert.is_true(maxgrowth <= 3, ("the thread held %d descriptors"):format(maxgrowth))
  end)

  it("across fork: events, a queue, a lock and a dict wake and serve both processes (relay threads); objects made after the fork cross too", function()
    -- spec/support/forkrun.c forks; the child runs in a fresh Lua state (a fresh loop)
    local bin = os.tmpname()
    local cc = io.popen("cc -O1 -I/usr/include/lua5.4 -o " .. bin .. " spec/support/forkrun.c -llua5.4 2>&1")
    local ccout = cc:read("a")
    assert.is_true(cc:close(), ccout)
    local script = os.tmpname()
    local h = io.open(script, "w")
    h:write([==[
      local strand, sync = require "strand", require "strand.sync"
      local queue, shared, serial = require "strand.queue", require "strand.shared", require "strand.serial"
      local go, back, lock, q, d = sync.event(), sync.event(), sync.lock(), queue.new(1), shared.dict()
      d.n = 0
      local pid = forkrun([[
        local go, back, lock, q, d = table.unpack((...))
        if not go:wait(10) then return false end      -- asleep in the child, woken by the parent
        back:set()
        for i = 1, 1000 do assert(q:get(10) == i) end
        for _ = 1, 2000 do lock:acquire(); d.n = d.n + 1; lock:release() end
        -- objects the parent made after the fork, passed through the queue made before it
        local late = q:get(10)
        assert(late, "nothing came")
        late.q:put("from the child")
        late.cond:acquire(); late.ready.v = true; late.cond:notify(); late.cond:release()
        late.ev:set()
        return true
      ]], serial.encode({ go, back, lock, q, d }))
      strand.sleep(0.05)
      go:set()
      assert(back:wait(10), "the parent was not woken by the child")
      for i = 1, 1000 do assert(q:put(i, 10)) end        -- maxsize 1: every put waits for the child
      for _ = 1, 2000 do lock:acquire(); d.n = d.n + 1; lock:release() end
      local late = { q = queue.new(), ev = sync.event(), cond = sync.condition(), ready = shared.dict() }
      assert(q:put(late, 10))
      assert(late.ev:wait(10), "the late event was not set by the child")
      assert(late.q:get(10) == "from the child")
      late.cond:acquire()
      assert(late.cond:wait_for(function() return late.ready.v end, 10))
      late.cond:release()
      assert(waitpid(pid) == 0, "the child failed")
      assert(d.n == 4000, "counter " .. tostring(d.n))
      print("fork ok")
    ]==])
    h:close()
    local build = os.getenv("STRAND_TEST_BUILD") or "build"
    local p = io.popen(("LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s/?.so;;' timeout 60 %s %s 2>&1")
      :format(build, bin, script))
    local out = p:read("a")
    local ok = p:close()
    os.remove(bin); os.remove(script)
    assert.is_true(ok, out)
    assert.equal("fork ok\n", out)
  end)

  it("running out of memory: constructors return nil, message, ENOMEM (arena cannot grow)", function()
    -- the arena grows with fallocate; a file size limit makes that fail (SIGXFSZ ignored)
    local out, ok = lua_child([[
      local sync, queue, shared = require "strand.sync", require "strand.queue", require "strand.shared"
      local keep, n = {}, 0
      local made = { sync.lock, sync.event, sync.semaphore, sync.rlock, sync.condition,
                     function() return sync.barrier(2) end, queue.new, shared.dict, shared.list }
      while true do
        local o, err, code = made[n % #made + 1]()
        if not o then
          assert(err:match("^cannot create a strand%.%a+: out of memory$"), err)
          assert(code == "ENOMEM", code)
          break
        end
        n = n + 1; keep[n] = o
        assert(n < 1000000, "never ran out")
      end
      keep = nil; collectgarbage(); collectgarbage()
      -- freed blocks serve their size class again (no coalescing: see docs/internals.md)
      for i = 1, #made do assert(made[i](), "freed objects are reused") end
      local q = assert(queue.new())
      q:put("still works"); assert(q:get() == "still works")
      print("ran out after " .. n)
    ]], "trap '' XFSZ; ulimit -f 4096;")
    assert.is_true(ok, out)
    assert.truthy(out:match("ran out after %d+"), out)
  end)

  -- (the sanitizers' shadow memory cannot live under an address-space limit)
  local under_asan = (os.getenv("STRAND_PRELOAD") or ""):find("asan") ~= nil
  local it_no_asan = under_asan and pending or it
  it_no_asan("no arena at all (address space limited): nil, message from every constructor, no raise", function()
    local out, ok = lua_child([[
      local sync, queue, shared = require "strand.sync", require "strand.queue", require "strand.shared"
      for _, f in ipairs{ sync.lock, sync.rlock, sync.event, sync.semaphore, sync.bounded_semaphore,
                          sync.condition, function() return sync.barrier(2) end, queue.new,
                          queue.lifo, queue.priority, shared.dict, shared.list } do
        local o, err, code = f()
        assert(o == nil and err:match("^cannot create a strand%.%a+: out of memory$") and code == "ENOMEM",
               tostring(err))
      end
      print("all nil")
    ]], "ulimit -v 400000;")
    assert.is_true(ok, out)
    assert.truthy(out:match("all nil"), out)
  end)
end)
