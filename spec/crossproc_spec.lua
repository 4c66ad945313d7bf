-- Cross-process wake-ups and recovery under hostile timing: the relay thread that carries
-- wake-ups into a process, close racing getters of other processes, processes SIGKILLed mid-op.
local strand = require "strand"
local process = require "strand.process"
local queue = require "strand.queue"
local sync = require "strand.sync"
local H = require "support.helper"

describe("cross-process wake-ups", function()
  H.guard()

  -- A fork made while a task of the parent sleeps on a shared object starts the parent's relay
  -- thread; the parent may fork again at once. A thread still starting holds locks of the C
  -- library or of an interposed allocator (ASan's has no atfork handler): a child forked then
  -- inherits them locked, its own relay hangs on them and no wake-up from another process
  -- reaches it (examples/p4_queue.lua hung so under ASan). So the fork returns only once the
  -- relay has run. Pinned to one CPU, a thread that was only created has not run yet when its
  -- creator goes on: its run time is 0.
  it("the fork that starts the relay returns only once the relay thread has run", function()
    local code = [[
      local strand = require "strand"
      local process = require "strand.process"
      local sync = require "strand.sync"
      local ev = sync.event()
      strand.run(function()
        local sleeper = strand.spawn(function() return ev:wait(10) end)
        strand.sleep(0)                                     -- the sleeper is asleep on ev
        local p = process.start(function() return 1 end)    -- a fork now: starts the relay
        local tid
        for t, name in pairs(require("strand.core")._proc.threads()) do
          if name == "strand-relay" then tid = t end
        end
        local f = tid and io.open("/proc/self/task/" .. tid .. "/schedstat")
        local ran = f and tonumber(f:read("a"):match("^(%d+)"))
        if f then f:close() end
        assert(p:join(10))
        ev:set()
        assert(sleeper:join(10))
        print("relay " .. tostring(tid) .. " ran " .. tostring(ran))
      end)
    ]]
    for _ = 1, 5 do
      local out, ok = H.lua(code, "taskset -c 0")
      assert.is_true(ok, out)
      local tid, ran = out:match("relay (%d+) ran (%d+)")
      assert.is_truthy(tid, out)
      assert.is_true(tonumber(ran) > 0, "the relay had not run yet: " .. out)
    end
  end)

  -- A relay makes the process multi-threaded, and glibc forks a multi-threaded process the slow
  -- way (every lock of the C library taken and reset): a fork starts it only when a task of
  -- this process sleeps on a shared object; a later sleeper starts it itself.
  it("a fork with no task asleep on a shared object starts no relay; the first sleeper does", function()
    local code = H.RELAYS .. [[
      local strand = require "strand"
      local process = require "strand.process"
      local queue = require "strand.queue"
      local q = queue.new(1)
      for _ = 1, 3 do assert(process.start(function() return 1 end):join(10)) end
      print("after forks " .. relays())
      -- the child puts once the parent sleeps in get: only the relay can carry that wake-up
      local p = process.start(function() strand.sleep(0.2); return q:put("hi", 10) end)
      local v, err = q:get(10)
      print("got " .. tostring(v or err) .. " relays " .. relays())
      assert(p:join(10))
    ]]
    local out, ok = H.lua(code)
    assert.is_true(ok, out)
    assert.matches("after forks 0", out)
    assert.matches("got hi relays 1", out)
  end)

  -- A task that went to sleep before the first fork: the fork must start the relay for it, or
  -- a child's wake-up never reaches it (the wait would end at its bound; event:wait returns
  -- true either way then, so the time tells: a loose bound, half the wait's, wider under
  -- valgrind).
  it("a task asleep on an event before the first fork is woken by the child", function()
    local bound = H.VALGRIND and 60 or 10                  -- a wake-up comes within it
    local code = ([[
      local strand = require "strand"
      local process = require "strand.process"
      local sync = require "strand.sync"
      local ev = sync.event()
      strand.run(function()
        local t0 = strand.now()
        local sleeper = strand.spawn(function() return ev:wait(2 * BOUND) end)
        strand.sleep(0)                                     -- asleep before any fork
        local p = process.start(function() ev:set(); return 1 end)
        local ok, woken = sleeper:join(3 * BOUND)
        print(("sleeper %s %s in %s"):format(ok, woken, strand.now() - t0 < BOUND and "time" or "vain"))
        assert(p:join(BOUND))
      end)
    ]]):gsub("BOUND", tostring(bound))
    for _ = 1, H.work(4, 1) do
      local out, ok = H.lua(code)
      assert.is_true(ok, out)
      assert.matches("sleeper true true in time", out)
    end
  end)

  -- The same race as a user meets it: fresh processes whose consumers are forked right after
  -- the first fork, each woken by puts and by close from the parent (bounded: a lost wake-up
  -- is a "timeout", not a hang).
  it("consumers forked right after the first fork are woken by puts and by close", function()
    local code = [[
      local process = require "strand.process"
      local queue = require "strand.queue"
      local q = queue.new(4)
      local first = process.start(function() return 0 end)   -- starts the relay
      local cs = {}
      for c = 1, 3 do
        cs[c] = process.start(function()
          local got = 0
          while true do
            local v, err = q:get(8)
            if v == nil then return got, err end
            got = got + 1
          end
        end)
      end
      for i = 1, 30 do assert(q:put(i, 8)) end
      q:close()
      local total = 0
      for c = 1, 3 do
        local got, err = cs[c]:result(10)
        assert(err == "closed", "consumer " .. c .. ": " .. tostring(err))
        total = total + got
      end
      assert(first:join(10))
      print("took " .. total)
    ]]
    for _ = 1, H.work(15, 2) do
      local out, ok = H.lua(code)
      assert.is_true(ok, out)
      assert.matches("took 30", out)
    end
  end)

  it("close racing getters of other processes going to sleep wakes every one of them", function()
    for round = 1, H.work(30, 3) do
      local kinds = { function() return queue.new(2) end, function() return queue.new() end,
                      function() return queue.lifo(2) end, function() return queue.priority() end }
      local q = kinds[round % 4 + 1]()                  -- rings, and the locked kinds
      local getters = {}
      for g = 1, 3 do
        getters[g] = process.start(function()
          local v, err = q:get(H.TIMEOUT)
          return v, err
        end)
      end
      -- close at a different moment each round: before, while and after they go to sleep
      if round % 3 == 1 then strand.sleep(0.001 * (round % 7)) end
      q:close()
      for g = 1, 3 do
        local v, err = getters[g]:result(H.TIMEOUT)      -- raises "timeout" if it hangs
        assert.same({ nil, "closed" }, { v, err }, "round " .. round)
      end
    end
  end)

  it("close racing putters of other processes asleep on a full ring wakes every one", function()
    for round = 1, H.work(20, 3) do
      local q = queue.new(1)
      assert.is_true(q:put(0))
      local putters = {}
      for g = 1, 3 do
        putters[g] = process.start(function() return q:put(g, H.TIMEOUT) end)
      end
      if round % 2 == 1 then strand.sleep(0.001 * (round % 5)) end
      q:close()
      for g = 1, 3 do
        local v, err = putters[g]:result(H.TIMEOUT)
        assert.same({ nil, "closed" }, { v, err }, "round " .. round)
      end
      assert.equal(0, q:get_nowait())
    end
  end)

  it("close racing joiners of other processes wakes every one", function()
    for round = 1, H.work(12, 2) do
      local q = round % 2 == 0 and queue.new(4) or queue.lifo(4)
      assert.is_true(q:put(1))                          -- unfinished: joiners wait
      local js = {}
      for g = 1, 2 do js[g] = process.start(function() return q:join(H.TIMEOUT) end) end
      if round % 3 == 1 then strand.sleep(0.001 * (round % 5)) end
      q:close()
      for g = 1, 2 do
        assert.same({ nil, "closed" }, { js[g]:result(H.TIMEOUT) }, "round " .. round)
      end
    end
  end)

  it("an event set racing waiters of other processes wakes every one", function()
    for round = 1, H.work(20, 3) do
      local ev = sync.event()
      local ws = {}
      for g = 1, 3 do ws[g] = process.start(function() return ev:wait(H.TIMEOUT) end) end
      if round % 2 == 1 then strand.sleep(0.001 * (round % 5)) end
      ev:set()
      for g = 1, 3 do
        local v = ws[g]:result(H.TIMEOUT)
        assert.is_true(v, "round " .. round)
      end
    end
  end)
end)

describe("a getter killed between taking a ring slot and freeing it", function()
  H.guard()

  it("puts go on past its slot once it is dead (a live one is waited for), FIFO kept", function()
    local q, ready = queue.new(3), sync.event()
    assert.is_true(q:put("a")); assert.is_true(q:put("b"))
    local p = process.start(function()
      assert(queue._test_take(q))         -- takes position 0 ("a"), never frees its slot
      ready:set()
      strand.sleep(30)
    end)
    assert.is_true(ready:wait(H.TIMEOUT))
    assert.equal("b", q:get(H.TIMEOUT))
    assert.is_true(q:put("c", H.TIMEOUT))               -- position 2: slot 2, free
    assert.same({ nil, "full" }, { q:put_nowait("d") })  -- position 3: slot 0, still taken
    assert.same({ nil, "timeout" }, { q:put("d", 0.12) })   -- its getter is alive: it may free it
    p:kill()
    p:join(H.TIMEOUT)
    assert.is_true(q:put("d", H.TIMEOUT))               -- the dead getter's slot is freed
    assert.equal("c", q:get(H.TIMEOUT))
    assert.equal("d", q:get(H.TIMEOUT))
    for i = 1, 6 do                                     -- and the ring wraps on as before
      assert.is_true(q:put_nowait(i)); assert.equal(i, q:get_nowait())
    end
    assert.equal(0, q:qsize())
  end)

  it("put_nowait frees a dead getter's slot at once; big items' storage is given back", function()
    local q = queue.new(1, { storage = 262144 })
    local big = ("x"):rep(150000)                       -- in an arena block: over half the storage
    assert.is_true(q:put(big))
    local p = process.start(function()
      assert(queue._test_take(q))
      os.exit(0, false)                                 -- gone, its record still naming the slot
    end)
    assert.is_true(p:join(H.TIMEOUT))
    assert.equal(0, p.exitcode)
    for i = 1, 3 do
      assert.is_true(q:put_nowait(i)); assert.equal(i, q:get_nowait())
    end
    assert.is_true(q:put(big, H.TIMEOUT))               -- the lost item's block was given back
    assert.equal(big, q:get(H.TIMEOUT))
  end)

  it("a putter asleep on the slot is woken when the getter dies", function()
    local q, ready = queue.new(1), sync.event()
    assert.is_true(q:put("a"))
    local p = process.start(function()
      assert(queue._test_take(q))
      ready:set()
      strand.sleep(30)
    end)
    assert.is_true(ready:wait(H.TIMEOUT))
    local putter = strand.spawn(function() return q:put("b", H.TIMEOUT) end)
    strand.sleep(0.02)
    assert.is_nil(putter:done() and true or nil)
    p:kill()
    assert.is_true(putter:result(H.TIMEOUT))
    assert.equal("b", q:get(H.TIMEOUT))
    p:join(H.TIMEOUT)
  end)

  it("getters SIGKILLed at random moments never stall the others (stress)", function()
    local q = queue.new(4)
    for round = 1, H.work(20, 3) do
      local p = process.start(function()
        while true do
          local v = q:get(H.TIMEOUT)
          if v == nil then return end
        end
      end)
      local deadline = strand.now() + 0.02 * (1 + round % 3)
      local i = 0
      while strand.now() < deadline do
        i = i + 1
        assert.is_true(q:put(i, H.TIMEOUT), "round " .. round .. ": put stalled")
      end
      p:kill()
      p:join(H.TIMEOUT)
      while q:get_nowait() do end
      for j = 1, 4 do assert.is_true(q:put(j, H.TIMEOUT), "round " .. round .. ": stalled") end
      for j = 1, 4 do assert.equal(j, q:get(H.TIMEOUT)) end
    end
  end)
end)

describe("processes SIGKILLed at random moments inside shared-object operations", function()
  H.guard()
  local shared = require "strand.shared"

  -- A victim loops over every kind of operation; it is SIGKILLed at a different moment each
  -- round. A survivor process does the same operations with bounded waits the whole time and
  -- must never stall; afterwards every object still works in the parent.
  it("locks, events, conditions, barriers, dicts, lists and queues stay usable", function()
    local lock, ev, cond = sync.lock(), sync.event(), sync.condition(sync.lock())
    local bar, d, l, q = sync.barrier(2), shared.dict(), shared.list(), queue.new(4)
    local stop, big = sync.event(), ("y"):rep(300)
    local function ops(i, wait)
      local got = lock:acquire(wait)
      if got then d:incr("n"); lock:release() elseif wait > 0.5 then error("lock stalled") end
      ev:set(); ev:clear()
      if cond:acquire(wait) then cond:notify_all(); cond:wait(0.001); cond:release()
      elseif wait > 0.5 then error("condition stalled") end
      d["k" .. (i % 40)] = i
      d["k" .. ((i + 20) % 40)] = nil                   -- churn: rehashes, deletes
      d:update("u", function(v) return (v or 0) + 1 end)
      if i % 8 == 0 then l:append(i) end
      q:put_nowait(i); q:get_nowait()
      q:put_nowait(big); q:get_nowait()                 -- an arena block: the allocator's mutex
    end
    -- daemons, and the survivor's loop bounded: a failing check never leaves them running
    local function daemon(fn) local p = process.new { fn = fn, daemon = true }; p:start(); return p end
    local survivor = daemon(function()
      local i, give_up = 0, strand.now() + 6 * H.TIMEOUT
      while not stop:is_set() and strand.now() < give_up do i = i + 1; ops(i, H.TIMEOUT) end
      return i
    end)
    for round = 1, H.work(12, 2) do
      local victim = daemon(function()
        local i = 0
        while true do i = i + 1; ops(i, 0.01) end
      end)
      strand.sleep(0.005 + 0.003 * (round % 7))
      victim:kill()
      victim:join(H.TIMEOUT)                            -- false, "process killed by signal 9"
      assert.equal(-9, victim.exitcode)
    end
    stop:set()
    assert.is_true(survivor:result(H.TIMEOUT) > 0)
    -- every object works in the parent
    local got = lock:acquire(H.TIMEOUT)
    assert.equal(lock, got)
    lock:release()
    assert.is_false(lock:locked())
    ev:set(); assert.is_true(ev:wait(0)); ev:clear(); assert.is_false(ev:wait(0.001))
    assert.equal(cond, (cond:acquire(H.TIMEOUT)))
    assert.is_false(cond:wait(0.001))
    cond:release()
    local n = d.n
    assert.equal(n + 1, d:incr("n"))
    d.fresh = "yes"
    assert.equal("yes", d.fresh)
    assert.equal(#d:keys(), #d)
    assert.equal(#l:items(), l:len())
    l:append("last"); assert.equal("last", l[l:len()])
    while q:get_nowait() do end
    assert.is_true(q:put(big, H.TIMEOUT)); assert.equal(big, q:get(H.TIMEOUT))
    for i = 1, 4 do assert.is_true(q:put(i, H.TIMEOUT)) end
    for i = 1, 4 do assert.equal(i, q:get(H.TIMEOUT)) end
    local b2 = process.start(function() return bar:wait(H.TIMEOUT) end)
    assert.is_truthy(bar:wait(H.TIMEOUT))
    assert.is_truthy(b2:result(H.TIMEOUT))
  end)

  it("a barrier party SIGKILLed while the others wait: abort releases them, never a hang", function()
    local bar, ready = sync.barrier(3), sync.event()
    local waiter = process.start(function() return bar:wait(H.TIMEOUT) end)
    local victim = process.start(function() ready:set(); bar:wait(30) end)
    assert.is_true(ready:wait(H.TIMEOUT))
    strand.sleep(0.01)
    victim:kill()
    victim:join(H.TIMEOUT)
    assert.equal(-9, victim.exitcode)
    bar:abort()
    local v, err = waiter:result(H.TIMEOUT)
    assert.is_nil(v)
    assert.is_string(err)
  end)

  it("an event's waiters in other processes are woken after a setter was SIGKILLed mid-loop", function()
    for round = 1, H.work(8, 2) do
      local ev = sync.event()
      local victim = process.new { fn = function() while true do ev:set(); ev:clear() end end,
                                   daemon = true }
      victim:start()
      local waiters = {}
      for w = 1, 2 do waiters[w] = process.start(function() return ev:wait(H.TIMEOUT) end) end
      strand.sleep(0.002 * (round % 4))
      victim:kill()
      victim:join(H.TIMEOUT)
      assert.equal(-9, victim.exitcode)
      ev:set()
      for w = 1, 2 do assert.is_true(waiters[w]:result(H.TIMEOUT), "round " .. round) end
    end
  end)
end)

describe("forking while another thread waits", function()
  H.guard()
  local thread = require "strand.thread"

  it("with allow_threads, a child forked while a thread sleeps on a queue works, and so does the thread", function()
    local q, back = queue.new(), queue.new()
    local t = thread.start(function() local v = q:get(10); back:put(v); return v end)
    strand.sleep(0.02)                                  -- the thread is asleep in get
    local p = process.new { fn = function() return q:put("from child", 5) end, allow_threads = true }
    p:start()
    assert.is_true(p:result(H.TIMEOUT))
    assert.equal("from child", back:get(H.TIMEOUT))
    assert.equal("from child", t:result(H.TIMEOUT))
  end)

  it("a child forked while a thread sleeps on an event wakes it, and is woken by it", function()
    local ev1, ev2, lock = sync.event(), sync.event(), sync.lock()
    local t = thread.start(function()
      local ok = ev1:wait(10)
      assert(lock:acquire(10)); lock:release()
      ev2:set()
      return ok
    end)
    strand.sleep(0.02)                                  -- the thread is asleep in wait
    assert.equal(lock, lock:acquire(H.TIMEOUT))          -- held across the fork: the child waits
    local p = process.new { fn = function()
      ev1:set()
      local got = lock:acquire(5)
      if got then lock:release() end
      return got ~= nil, ev2:wait(5)
    end, allow_threads = true }
    p:start()
    strand.sleep(0.02)
    lock:release()
    local a, b = p:result(H.TIMEOUT)
    assert.is_true(a)
    assert.is_true(b)
    assert.is_true(t:result(H.TIMEOUT))
  end)
end)

describe("a dead waiter's wake-up records", function()
  H.guard()
  local socket = require "strand.socket"

  -- A process SIGKILLed while asleep leaves its records on the object's wait lists. Once its
  -- pid is recycled by another process of the family, a wake-up must not take that process
  -- for the dead one and write 8 bytes into whatever its descriptor of that number now is.
  it("are not taken for the process that got its pid: nothing is written to its descriptor", function()
    local q, ready = queue.new(1), sync.event()
    local p = process.start(function() ready:set(); return q:get(30) end)
    assert.is_true(ready:wait(H.TIMEOUT))
    strand.sleep(0.05)                                  -- asleep in get: its record is armed
    p:kill()
    p:join(H.TIMEOUT)
    local a, b = assert(socket.pair())
    assert.is_true(queue._test_forge_homes(q, process.pid(), a:fileno()) >= 1)
    assert.is_true(q:put("x"))                          -- fires the dead getter's record
    b:settimeout(0.2)
    local data, err = b:recv(64)
    a:close(); b:close()
    assert.is_nil(data, "a wake-up was written into an unrelated descriptor")
    assert.equal("timeout", err)
    assert.equal("x", q:get(H.TIMEOUT))
  end)
end)

describe("a queue shared by a fork", function()
  H.guard()

  -- From the fork on, a queue made before it belongs to two processes, whether or not the
  -- child has been scheduled yet. The fork marked it crossed only in the child's fork handler,
  -- so a parent quicker than its child (a loaded machine) put its next value by reference,
  -- and the child's get returned nil, "cannot get a value put by reference in another
  -- process" (S4's client process, fed jobs through queues, then never answered).
  -- queue._test_hold_fork keeps the child in its fork handler while the parent puts.
  it("a put right after the fork is copied, even before the child has run", function()
    local jobs, answers = queue.new(), queue.new()
    assert.is_true(queue._test_hold_fork(true))
    local p
    finally(function() queue._test_hold_fork(false); if p then p:join(H.TIMEOUT) end end)
    p = assert(process.start(function()
      local job, err = jobs:get(10)
      answers:put(job and job.text or "get failed: " .. tostring(err))
      return true
    end))
    assert.is_true(jobs:put({ text = "a table" }))     -- the child is still in its fork handler
    local ok, err = pcall(jobs.put, jobs, coroutine.create(print))
    assert.is_false(ok, "a coroutine was put by reference into a queue another process holds")
    assert.matches("cannot copy a coroutine", err)
    assert.is_true(queue._test_hold_fork(false))       -- the child goes on
    assert.equal("a table", answers:get(H.TIMEOUT))
    assert.is_true(p:result(H.TIMEOUT))
  end)

  -- The child's family reference to each object it inherits was also counted in its fork
  -- handler: a parent that dropped its last view before the child ran freed the object's
  -- blocks under the child (and the parent's next object of that size took them).
  it("an object the parent drops right after the fork stays the child's", function()
    local holder = { queue.new() }
    holder[1]:put("the child's")
    local objects = queue._test_arena()
    assert.is_true(queue._test_hold_fork(true))
    local p
    finally(function() queue._test_hold_fork(false); if p then p:join(H.TIMEOUT) end end)
    p = assert(process.start(function() return holder[1]:get(5) end))
    holder[1] = nil                                     -- the parent's last view goes
    collectgarbage(); collectgarbage()
    assert.equal(objects, (queue._test_arena()), "the object was freed while the child holds it")
    local other = queue.new()                           -- would take the freed block
    other:put("the parent's")
    assert.is_true(queue._test_hold_fork(false))       -- the child goes on
    assert.equal("the child's", p:result(H.TIMEOUT))
    assert.equal("the parent's", other:get(0))
  end)

  -- The references counted for the child before the fork go back when no child was made. A
  -- fork fails here as user nobody limited to one process (root is not limited: setpriv).
  local can_fail_fork = os.execute("[ $(id -u) = 0 ] && command -v setpriv >/dev/null && command -v prlimit >/dev/null")
  ;(can_fail_fork and it or pending)("a fork that fails gives back the references counted for its child", function()
    local f = os.tmpname()
    local h = assert(io.open(f, "w"))
    h:write [[
      local queue, process = require "strand.queue", require "strand.process"
      local q = queue.new()
      local before = queue._test_arena()
      local p, err = process.start(function() return 1 end)
      q = nil; collectgarbage(); collectgarbage()
      print(p, err, before, (queue._test_arena()))
    ]]
    h:close()
    os.execute("chmod 644 " .. f)
    local p = io.popen("setpriv --reuid=65534 --regid=65534 --clear-groups prlimit --nproc=1 lua5.4 " .. f .. " 2>&1")
    local out = p:read("a")
    p:close()
    os.remove(f)
    assert.matches("^nil\tcannot fork: wouldblock\t1\t0\n$", out)
  end)
end)
