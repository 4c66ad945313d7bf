-- examples/process_examples_spec.lua — runs the process and pool scenarios (P1-P9) as separate
-- programs with a time bound and checks what they printed.
local H = require "support.helper"
local check = H.check_output

describe("process examples", function()
  it("P1: arguments, pid/ppid, isolated memory, parallel vs serial", function()
    local out = H.example("p1_processes.lua", "0.2")
    check(out, { "hello lua from pid %d+, my parent is %d+",
      "child saw counter = 100, parent still has counter = 0", "parallel is faster: true", "p1: done" })
  end)

  it("P2: no zombie after join; a daemon ends with its SIGKILLed parent", function()
    check(H.example("p2_zombies.lua"), { "after join: 0 zombie%(s%)", "killed child: exitcode %-9, 0 zombie",
      "its daemon child ended too", "p2: done" })
  end)

  it("P3: tickets under a process lock: exactly as many sold as there were", function()
    check(H.example("p3_tickets.lua", "15 4"), { "15 tickets, 15 sold, 0 left in the file", "p3: done" })
  end)

  it("P4: producer/consumer processes with a joinable queue", function()
    check(H.example("p4_queue.lua", "60"), { "producer: all 60 items processed",
      "60 items consumed, sum 1830 %(expected 1830%)", "p4: done" })
  end)

  it("P5: a pipe both ways", function()
    check(H.example("p5_pipe.lua"), { 'parent sent "hello", child %d+ answered "HELLO"',
      'answered "BYE"', "anything more waiting%? false", "child: parent closed", "p5: done" })
  end)

  it("P6: shared dict and list changed by 5 processes", function()
    check(H.example("p6_shared.lua"), { "dict keys: total worker1 worker2 worker3 worker4 worker5",
      "total = 500", "list: 1 4 9 16 25", "p6: done" })
  end)

  it("P7: pool apply vs submit, map, a SIGKILLed worker fails only its task", function()
    check(H.example("p7_pool.lua", "0.1"), { "callbacks saw 5 results", "map: 10 20 30 40 50 60",
      "its task %-> false, worker exited: signal 9", "the pool goes on: still serving", "p7: done" })
  end)

  it("P8: thread pool with as_completed, map, on_done", function()
    check(H.example("p8_threadpool.lua"), { "the first two results: %d+ and %d+",
      "map in order: 1 4 9 16 25 36 49 64", "on_done got: callback value", "callbacks run: 1", "p8: done" })
  end)

  it("P9: a process running threads", function()
    check(H.example("p9_process_threads.lua"), { "process %d+ ran 4 threads:", "thread %d+: 100000",
      "thread %d+: 400000", "p9: done" })
  end)
end)
