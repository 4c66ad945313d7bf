-- spec/support/helper.lua — shared by every spec: bounded waits, running code as a task with
-- errors rethrown with their traceback, fd-leak, thread-leak and zombie checks (H.guard).
local H = {}

H.TIMEOUT = tonumber(os.getenv("STRAND_TEST_TIMEOUT")) or 10
-- How long a leak check waits for fds, threads and children to go away by themselves (a thread
-- that was joined may still be finishing its exit; a child may still be being reaped).
H.SETTLE = tonumber(os.getenv("STRAND_TEST_SETTLE")) or 2
-- Under `make test-valgrind` (STRAND_VALGRIND set): code runs ~50 times slower, threads one at a
-- time, and the shared arena is 32 MiB (csrc/shm.c). H.work(n, small) is a workload's size:
-- small there, n elsewhere; the assertions stay the same.
H.VALGRIND = os.getenv("STRAND_VALGRIND") ~= nil
function H.work(n, small) return H.VALGRIND and small or n end

--- Run fn as a task with a bound of `limit` seconds on the whole run (a guard against hangs, never
--- a speed goal); rethrows the task's error (with traceback).
function H.run_within(limit, fn, ...)
  local strand = require "strand"
  local args = table.pack(...)
  local r = table.pack(strand.run(function()
    local res = table.pack(strand.timeout(limit, fn, table.unpack(args, 1, args.n)))
    if res[1] == nil then error("spec task timed out after " .. limit .. " s", 0) end
    return table.unpack(res, 2, res.n)
  end))
  return table.unpack(r, 1, r.n)
end

--- H.run_within(H.TIMEOUT, fn, ...)
function H.run(fn, ...) return H.run_within(H.TIMEOUT, fn, ...) end

function H.pid()
  local f = io.open("/proc/self/stat")
  local pid = f:read("n")
  f:close()
  return pid
end

-- One probe lists fds (with targets), OS threads (with names) and the state of every child.
-- It reads /proc from inside the process (strand.core's _proc, C): no child and no pipe of its
-- own, so nothing transient is ever counted and the listing is exact even under load.
-- The spare result file strand.process keeps open for its next start (csrc/process.c): not a
-- leak (only that one fd, named by the module; any other result file still counts).
local function spare_result_fd()
  local core = package.loaded["strand.core"]
  local pc = core and core.process
  return pc and pc._spare_fd and pc._spare_fd()
end

-- The spare eventfds strand.thread keeps for its next starts (csrc/thread.c, efd_take): not
-- leaks either (only those, named by the module).
local function drop_spare_efds(fds, n)
  local core = package.loaded["strand.core"]
  local th = core and core.thread
  local spares = th and th._spare_fds and th._spare_fds()
  for fd in pairs(spares or {}) do
    if fds[fd] then fds[fd] = nil; n = n - 1 end
  end
  return n
end

local function probe(children)
  local proc = require("strand.core")._proc
  local r = { fds = {}, nfds = 0, threads = {}, nthreads = 0, children = {}, zombies = 0 }
  r.fds, r.nfds = assert(proc.fds())
  local spare = spare_result_fd()
  if spare and r.fds[spare] then r.fds[spare] = nil; r.nfds = r.nfds - 1 end
  r.nfds = drop_spare_efds(r.fds, r.nfds)
  r.threads, r.nthreads = assert(proc.threads())
  if children then r.children, r.zombies = assert(proc.children()) end
  return r
end

--- Open file descriptors of this process: { [fd] = "target" } and their count.
function H.fds()
  local r = probe()
  return r.fds, r.nfds
end

--- Open file descriptors of this process (counted in-process: see probe).
function H.fd_count()
  local fds, n = assert(require("strand.core")._proc.fds())
  local spare = spare_result_fd()
  if spare and fds[spare] then fds[spare] = nil; n = n - 1 end
  return drop_spare_efds(fds, n)
end

--- OS threads of this process: { [tid] = "name" } and their count.
function H.threads()
  local r = probe()
  return r.threads, r.nthreads
end

--- Threads that a library keeps on purpose for the life of the process (matched against the
--- thread's name, /proc/self/task/*/comm): they never count as leaked. Areas add patterns here.
H.persistent_threads = { "^strand%-resolv", "^strand%-pool", "^strand%-relay" }
H.persistent_threads[#H.persistent_threads + 1] = "^strand%-idle"   -- thread.c: OS threads waiting for a next start

local function persistent(comm)
  for _, pat in ipairs(H.persistent_threads) do
    if comm:match(pat) then return true end
  end
  return false
end

--- Children of this process that are zombies.
function H.zombies()
  return probe(true).zombies
end

-- Sleep without touching strand's loop (a leak check must not run leftover tasks).
local function pause(s)
  os.execute(("LD_PRELOAD= sleep %.3f"):format(s))
end

-- Poll check() until it returns nil (settled) or H.SETTLE seconds pass; returns its last message.
local function settle(check)
  local now = require("strand.core").now
  local deadline = now() + H.SETTLE
  local msg = check()
  while msg and now() < deadline do
    pause(0.05)
    collectgarbage(); collectgarbage()
    msg = check()
  end
  return msg
end

local function strand_thread_count()
  local th = package.loaded["strand.thread"]
  if type(th) == "table" and type(th.active_count) == "function" then
    local ok, n = pcall(th.active_count)
    if ok then return n end
  end
  return nil
end

--- A snapshot of what a spec must give back: fds, OS threads, strand threads.
function H.snapshot()
  -- the loop (epoll fd) is created on first use and lives as long as the Lua state: create it now
  -- so that a spec that happens to be the first user is not blamed for it
  pcall(function() require("strand.core").backend() end)
  -- likewise the family's shared arena (one memfd) and this state's wake-up eventfd: both are
  -- made when the shared-object areas open and live as long as the process / the state
  pcall(function() return require("strand.core").sync end)
  collectgarbage(); collectgarbage()
  local r = probe()
  return { fds = r.fds, threads = r.threads, strand_threads = strand_thread_count() }
end

--- Compare the process with a snapshot: nil when nothing leaked, else a message listing every
--- leaked fd (number and target), thread (tid and name) and zombie. Waits up to H.SETTLE s.
function H.leaks(before)
  return settle(function()
    local problems = {}
    local now = probe(true)
    local fds = now.fds
    local leaked = {}
    for fd, target in pairs(fds) do
      if before.fds[fd] ~= target then leaked[#leaked + 1] = ("%d -> %s"):format(fd, target) end
    end
    table.sort(leaked)
    if #leaked > 0 then
      problems[#problems + 1] = ("leaked %d file descriptor(s): %s"):format(#leaked, table.concat(leaked, ", "))
    end
    local extra = {}
    for tid, comm in pairs(before.threads and now.threads or {}) do
      if not before.threads[tid] and not persistent(comm) then extra[#extra + 1] = ("%d (%s)"):format(tid, comm) end
    end
    table.sort(extra)
    if #extra > 0 then
      problems[#problems + 1] = ("left %d thread(s) running: %s"):format(#extra, table.concat(extra, ", "))
    end
    local st = strand_thread_count()
    if st and before.strand_threads and st > before.strand_threads then
      problems[#problems + 1] = ("left %d strand thread(s) alive"):format(st - before.strand_threads)
    end
    local z = now.zombies
    if z > 0 then problems[#problems + 1] = ("left %d zombie child(ren)"):format(z) end
    if #problems == 0 then return nil end
    return table.concat(problems, "; ")
  end)
end

--- Wrap a spec body: fails if it leaks an fd (named with its target) or leaves a zombie.
--- Waits up to H.SETTLE s for an fd another thread is still closing.
function H.no_leaks(fn)
  return function(...)
    pcall(function() require("strand.core").backend() end)   -- the loop's own fd, as H.snapshot
    collectgarbage(); collectgarbage()
    local before = H.fds()
    fn(...)
    local msg = settle(function()
      local now, leaked = H.fds(), {}
      for fd, target in pairs(now) do
        if before[fd] ~= target then leaked[#leaked + 1] = ("%d -> %s"):format(fd, target) end
      end
      table.sort(leaked)
      if #leaked > 0 then
        return ("leaked %d file descriptor(s): %s"):format(#leaked, table.concat(leaked, ", "))
      end
      if H.zombies() > 0 then return "left a zombie child" end
    end)
    if msg then error(msg, 0) end
  end
end

--- Wrap a spec body with the full check of H.guard (fds by number, threads, zombies).
function H.checked(fn)
  return function(...)
    local before = H.snapshot()
    fn(...)
    local msg = H.leaks(before)
    if msg then error(msg, 0) end
  end
end

--- Call inside a describe block: every test of the block (and of nested blocks) fails when it
--- leaks a file descriptor, leaves an OS thread or a strand thread running, or leaves a zombie
--- child. The message names each fd (with its target), thread and zombie.
--- H.guard{threads = false} skips the thread check (for blocks that resolve host names: the
--- resolver's idle threads linger ten seconds and cannot be told apart from leaked ones yet).
function H.guard(opts)
  local busted = require "busted"
  local before
  busted.before_each(function()
    before = H.snapshot()
    if opts and opts.threads == false then before.threads = nil end
  end)
  busted.after_each(function()
    if before == nil then return end
    local msg = H.leaks(before)
    before = nil
    if msg then error(msg, 0) end
  end)
end

--- Run a Lua snippet in a fresh lua5.4 process (env: optional "VAR=value ..." prefix);
--- returns stdout+stderr, exit ok.
function H.lua(code, env)
  local f = os.tmpname()
  local h = io.open(f, "w"); h:write(code); h:close()
  local p = io.popen((env and env .. " " or "") .. "lua5.4 " .. f .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  os.remove(f)
  return out, ok
end

--- Lua source for a program run by H.lua: relays() counts the process's cross-process relay
--- threads (named "strand-relay"; shm.c starts one only when a task sleeps on a shared object).
H.RELAYS = [[
local function relays()
  local n = 0
  for _, name in pairs(require("strand.core")._proc.threads()) do
    if name == "strand-relay" then n = n + 1 end
  end
  return n
end
]]

--- Run a busted spec given as source in a fresh process; returns its output and exit ok.
function H.busted(code, env)
  local f = os.tmpname() .. "_spec.lua"
  local h = io.open(f, "w"); h:write(code); h:close()
  local p = io.popen((env and env .. " " or "") .. "lua5.4 /usr/bin/busted -o utfTerminal --no-auto-insulate " .. f .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  os.remove(f)
  return out, ok
end

--- Run fn(...) with a new temporary directory as the working directory (code that creates
--- files by relative names leaves them there), then go back and remove it; rethrows fn's error.
function H.in_tmpdir(fn, ...)
  local proc = require("strand.core")._proc
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir " .. dir))
  local old = assert(proc.getcwd())
  assert(proc.chdir(dir))
  local r = table.pack(pcall(fn, ...))
  assert(proc.chdir(old))
  os.execute("rm -rf " .. dir)
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

--- Resident set size of this process (or of pid) in KiB.
function H.rss_kib(pid)
  local f = io.open("/proc/" .. (pid or "self") .. "/status")
  if not f then return nil end
  local s = f:read("a"); f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

--- Poll pred() every `step` seconds (driving strand's loop) until it is true or timeout passes;
--- returns the last value of pred(). Every wait in a spec is bounded.
function H.wait_until(pred, timeout, step)
  local strand = require "strand"
  local deadline = strand.now() + (timeout or H.TIMEOUT)
  local v = pred()
  while not v and strand.now() < deadline do
    strand.sleep(step or 0.005)
    v = pred()
  end
  return v
end

--- Run examples/<script> with args as its own lua5.4 process, bounded by `limit` seconds (60);
--- returns everything it printed followed by "exit:<status>".
function H.example(script, args, limit)
  local p = io.popen(("timeout -k 2 %d lua5.4 examples/%s %s 2>&1; echo \"exit:$?\"")
    :format(limit or 60, script, args or ""))
  local out = p:read("a")
  p:close()
  return out
end

--- Assert an example exited 0 and printed every pattern (Lua patterns) somewhere.
function H.check_output(out, patterns)
  assert(out:find("exit:0\n$"), "the example failed:\n" .. out)
  for _, pat in ipairs(patterns) do
    assert(out:find(pat), ("missing %q in output:\n%s"):format(pat, out))
  end
end

--- One `it` per row { name, script, args, patterns }: examples/<script> run with args (bounded
--- by limit seconds, as H.example) exits 0 and prints every pattern.
function H.examples(rows, limit)
  local busted = require "busted"
  for _, r in ipairs(rows) do
    busted.it(r[1], function() H.check_output(H.example(r[2], r[3], limit), r[4]) end)
  end
end

return H
