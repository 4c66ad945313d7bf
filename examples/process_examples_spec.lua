-- examples/process_examples_spec.lua — runs the process and pool scenarios (P1-P9) as separate
-- programs with a time bound and checks what they printed.
local H = require "support.helper"

describe("process examples", function()
  H.examples {
    { "P1: arguments, pid/ppid, isolated memory, parallel vs serial", "p1_processes.lua", "0.2", {
      "hello lua from pid %d+, my parent is %d+",
      "child saw counter = 100, parent still has counter = 0", "parallel is faster: true", "p1: done" } },
    { "P2: no zombie after join; a daemon ends with its SIGKILLed parent", "p2_zombies.lua", nil, {
      "after join: 0 zombie%(s%)", "killed child: exitcode %-9, 0 zombie",
      "its daemon child ended too", "p2: done" } },
    { "P3: tickets under a process lock: exactly as many sold as there were", "p3_tickets.lua", "15 4", {
      "15 tickets, 15 sold, 0 left in the file", "p3: done" } },
    { "P4: producer/consumer processes with a joinable queue", "p4_queue.lua", "60", {
      "producer: all 60 items processed", "60 items consumed, sum 1830 %(expected 1830%)", "p4: done" } },
    { "P5: a pipe both ways", "p5_pipe.lua", nil, {
      'parent sent "hello", child %d+ answered "HELLO"',
      'answered "BYE"', "anything more waiting%? false", "child: parent closed", "p5: done" } },
    { "P6: shared dict and list changed by 5 processes", "p6_shared.lua", nil, {
      "dict keys: total worker1 worker2 worker3 worker4 worker5", "total = 500", "list: 1 4 9 16 25",
      "p6: done" } },
    { "P7: pool apply vs submit, map, a SIGKILLed worker fails only its task", "p7_pool.lua", "0.1", {
      "callbacks saw 5 results", "map: 10 20 30 40 50 60",
      "its task %-> false, worker exited: signal 9", "the pool goes on: still serving", "p7: done" } },
    { "P8: thread pool with as_completed, map, on_done", "p8_threadpool.lua", nil, {
      "the first two results: %d+ and %d+", "map in order: 1 4 9 16 25 36 49 64",
      "on_done got: callback value", "callbacks run: 1", "p8: done" } },
    { "P9: a process running threads", "p9_process_threads.lua", nil, {
      "process %d+ ran 4 threads:", "thread %d+: 100000", "thread %d+: 400000", "p9: done" } },
  }
end)
