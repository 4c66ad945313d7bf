-- T2: daemon threads are abandoned at exit, non-daemon threads are waited for; active_count,
-- id and name. Usage: ./strand-run examples/t2_daemon.lua
local thread = require "strand.thread"

print(("main thread: id %d, name %s"):format(thread.id(), thread.name()))
local worker = thread.new {
  name = "worker",
  fn = function()
    local th = require "strand.thread"
    require("strand").sleep(0.3)
    print(("%s (id %d) finished its work"):format(th.name(), th.id()))
  end,
}
local watcher = thread.new {
  name = "watcher", daemon = true,
  fn = function()
    require("strand").sleep(60)
    print("the daemon should never get here")
  end,
}
worker:start()
watcher:start()
print("active threads:", thread.active_count())
print("main is done; the worker will still finish, the daemon is abandoned")
