-- The loop itself: pollers, driving from the main chunk, memory per task, process-level behaviour.
local strand = require "strand"
local core = require "strand.core"
local H = require "support.helper"

describe("event loop", function()
  it("uses the poller STRAND_POLLER names (epoll by default)", function()
    local want = os.getenv("STRAND_POLLER")
    if want == nil or want == "" then want = "epoll" end
    assert.equal(want, core.backend())
  end)

  for _, poller in ipairs { "epoll", "poll" } do
    it("runs tasks, timers and cancellation with the " .. poller .. " poller", function()
      local out = H.lua(([[
        assert(require("strand.core").backend() == %q)
        local strand = require "strand"
        local order = {}
        for _, d in ipairs { 0.03, 0.01, 0.02 } do
          strand.spawn(function() strand.sleep(d); order[#order + 1] = d end)
        end
        local t = strand.spawn(strand.sleep, 10)
        strand.sleep(0.05)
        t:cancel()
        assert(t:join() == false)
        print(table.concat(order, ","))
      ]]):format(poller), "STRAND_POLLER=" .. poller)
      assert.matches("0.01,0.02,0.03", out)
    end)
  end

  it("refuses an unknown poller name with a clear error", function()
    local f = os.tmpname()
    local h = io.open(f, "w")
    h:write('local ok, err = pcall(function() require("strand").sleep(0) end) print(ok, err)')
    h:close()
    local p = io.popen("STRAND_POLLER=kqueue lua5.4 " .. f .. " 2>&1")
    local out = p:read("a"); p:close(); os.remove(f)
    assert.matches("unknown STRAND_POLLER 'kqueue'", out)
  end)

  it("a blocking call in the main chunk runs the other tasks meanwhile", function()
    local n = 0
    for _ = 1, 100 do strand.spawn(function() strand.sleep(0.01); n = n + 1 end) end
    assert.equal(0, n)                       -- spawned, none run yet
    -- only the main chunk's sleeps drive the loop. Bounded, not timed: one sleep(0.05) was
    -- shorter than starting 100 tasks under valgrind (their timers then came after it)
    assert.is_true(H.wait_until(function() return n == 100 end, H.TIMEOUT, 0.05))
    assert.equal(100, n)
  end)

  it("100,000 waiting tasks cost well under 1 KiB each beyond their coroutine", function()
    local N = H.work(100000, 10000)          -- 100,000 took 220 s under valgrind
    collectgarbage(); collectgarbage()
    local base = collectgarbage("count")
    local cos = {}
    for i = 1, N do
      local co = coroutine.create(function() coroutine.yield() end); coroutine.resume(co); cos[i] = co
    end
    collectgarbage(); collectgarbage()
    local per_co = (collectgarbage("count") - base) * 1024 / N
    cos = nil
    collectgarbage(); collectgarbage()
    base = collectgarbage("count")
    local tasks = {}
    for i = 1, N do tasks[i] = strand.spawn(strand.sleep, 3600) end
    strand.sleep(0)
    collectgarbage(); collectgarbage()
    local per_task = (collectgarbage("count") - base) * 1024 / N - 16   -- minus the tasks table slot
    assert.is_true(per_task - per_co < 1024, ("%.0f B beyond the coroutine"):format(per_task - per_co))
    for i = 1, N do tasks[i]:cancel() end
    strand.run()
    for i = 1, N do assert.equal("cancelled", tasks[i]:status()) end
  end)

  it("thousands of random timers wake in deadline order (heap)", function()
    local order, N = {}, 2000
    math.randomseed(7)
    -- absolute deadlines from a common base in the future, set when the first task runs (not
    -- before the 2000 spawns): a deadline already past when its task calls sleep_until only
    -- "lets others run" (no heap), which a loaded machine made happen for the tiniest random
    -- delays, and make test-valgrind beside other work for some even 0.5 s ahead. Such a task is
    -- no timer: the order is checked over the tasks whose deadline was still 0.25 s ahead just
    -- before their call (all of them but on a very slow machine; at least half, or it says so).
    local base, late = nil, 0
    local MARGIN = H.work(0.5, 3)
    for _ = 1, N do
      local d = math.random() * 0.05
      strand.spawn(function()
        base = base or strand.now() + MARGIN
        local deadline = base + d
        local ahead = strand.now() + 0.25 < deadline
        strand.sleep_until(deadline)
        assert(strand.now() >= deadline)
        if ahead then order[#order + 1] = deadline else late = late + 1 end
      end)
    end
    strand.run()
    assert.equal(N, #order + late)
    assert.is_true(late < N / 2, late .. " of " .. N .. " deadlines already past at their sleep_until")
    for i = 2, #order do assert.is_true(order[i - 1] <= order[i], "out of order at " .. i) end
  end)
end)
