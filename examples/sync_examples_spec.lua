-- examples/sync_examples_spec.lua — runs the lock, semaphore, event and queue scenarios
-- (T3-T6) as separate programs with a time bound and checks what they printed.
local H = require "support.helper"
local check = H.check_output

describe("sync examples", function()
  H.examples {
    { "T3: lock, rlock, deadlock shown and fixed", "t3_locks.lua", nil, {
      "20 threads x 250 increments under a lock = 5000",
      "reached the bottom holding the rlock 3 times",
      "thread 1: could not get its second lock %(deadlock%); thread 2: could not get its second lock %(deadlock%)",
      "one rlock instead %-> thread 1: got both; thread 2: got both",
      "t3: done",
    } },
    { "T6: queue full/empty, lifo, priority ties, producer/consumer", "t6_queue.lua", nil, {
      "qsize after 5 puts:%s+5%s+full:%s+true",
      "put on a full queue with timeout 0.1:%s+nil%s+timeout",
      "get_nowait on an empty queue:%s+nil%s+empty",
      "lifo order:%s+c%s+b%s+a",
      "priority order:%s+fix bug, second p1, lunch, write docs",
      "join %(every job task_done%):%s+true",
      "results:%s+10",
      "t6: done",
    } },
  }

  it("T4: bounded semaphore(3) admits at most 3", function()
    local out = H.example("t4_semaphore.lua")
    check(out, { "20 threads went through", "released too many times", "t4: done" })
    local max = tonumber(out:match("at most (%d+) were inside"))
    assert.is_true(max >= 1 and max <= 3, out)
  end)

  it("T5: cars wait for the green light", function()
    local out = H.example("t5_event.lua")
    check(out, { "light: green", "t5: done" })
    for i = 1, 3 do assert.matches("car " .. i .. ": drives through on green", out) end
    -- no car drives before the first green
    assert.is_true(out:find("light: green") < out:find("drives through"))
  end)
end)
