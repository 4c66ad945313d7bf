-- strand.process — processes (fork: the child runs a function on a fresh loop), pipes between
-- processes and external programs; the C core is csrc/process.c (fork, pidfd handles) and
-- csrc/spawn.c (posix_spawn).
--
-- Behaviour worth knowing (the contract is API.md "strand.process"):
--  * process.start(fn, ...) forks. The child abandons the parent's loop (its tasks never run in
--    the child, its poller is never touched) and runs fn(...) as the only task of a fresh loop;
--    when fn returns (tasks it spawned and left running are abandoned) its results are copied
--    back (the copy rule, functions included) through a result file and the child _exits: 0, or
--    1 if fn raised. join/result follow the finishing protocol; exitcode is Python's (0, 1, -N
--    for a death by signal N). join waits through the loop (pidfd), so other tasks run meanwhile.
--  * Shared strand objects (locks, events, semaphores, conditions, barriers, queues, shared
--    dicts/lists) come back as results and go through pipes, also ones made after the fork:
--    they cross by arena offset (serial.c).
--  * Forking while other strand threads run raises unless allow_threads=true: the child would
--    hold only the calling thread, and whatever lock another thread held at that moment (a strand
--    thread's Lua state, stdio, a library's own) would stay held forever in the child. (glibc's
--    malloc survives fork; strand's resolver threads wait idle between lookups and are not counted.)
--  * A child is reaped by join, by exitcode/is_alive once it has ended, and by the next start.
--    At exit (the Lua state closing) daemon children are killed and others waited for; daemon
--    children also die with the parent when it is killed (PR_SET_PDEATHSIG; note Linux ties it
--    to the thread that forked: a daemon started from a strand thread dies when that thread ends).
--  * A child's results go to a result file of its own (a memfd) and are read once it has exited:
--    however big they are, the child never waits for a reader, and join waits for one event. A
--    file read is emptied and kept for the next start (csrc/process.c); a child whose function
--    returned nothing writes none (empty and exit code 0 read as `true`).
--  * spawn connects the child's stdin/stdout/stderr to socket pairs (so they are ordinary strand
--    streams: read, lines, write, close); the child sees blocking sockets, which programs read and
--    write like pipes. "inherit" (default) and "null" are the other choices.
local core = require "strand.core"
local socket = require "strand.socket"

local C = core.process
if C == nil then error("strand.process: the C module was built without processes", 2) end
local spawn_task, now = core.spawn, core.now
local pack, unpack, tmove = table.pack, table.unpack, table.move

local M = { pid = C.pid, ppid = C.ppid, cpu_count = C.cpu_count }

local live = {}                                    -- handle -> true: children not reaped yet
local parent_ends = setmetatable({}, { __mode = "k" })   -- sockets a forked child closes
M._parent_ends = parent_ends

local fin = require "strand._finish"
local remaining, check_timeout, outcome = fin.remaining, fin.check_timeout, fin.outcome

-- (next, not pairs, over strand's own plain tables on the fork path: pairs looks up a __pairs
-- metamethod by name, a strcmp through Lua's string cache, a libc code page faulted in there by
-- a forked child)
local function sweep()
  for h in next, live do
    if h:poll() ~= nil then live[h] = nil end
  end
end

-- Encode values for another process of ours: functions allowed, strand objects outside the
-- family's arena refused (locks, queues, dicts... cross by arena offset).
local function encode_for_process(v, what, argno)
  local data                           -- (an argument: "bad argument #1 to 'send' (value.x: ...)")
  if argno then data = C._encodeargs(what, argno, v) else data = C._encode(v) end
  if data == nil then
    error(what .. ": this strand object cannot be copied to another process (only locks, events, "
      .. "semaphores, conditions, barriers, queues and shared dicts/lists cross)", 3)
  end
  return data
end
M._encode = encode_for_process

-- The first thing a forked child does: close what belongs to the parent.
local function child_setup(own_parent_end)
  if own_parent_end then own_parent_end:close() end
  for s in next, parent_ends do s:close() end
  for h in next, live do h:set_daemon(2); live[h] = nil end    -- the parent's children
end
M._child_setup = child_setup

-- What a forked child runs first (C._fork calls it on the child's own coroutine with the
-- arguments the parent passed): nothing is stored in the parent for the child to find (a write to
-- an upvalue is a write to a heap page, a fault after each fork).
local function fork_entry(rfd, child_main, own_parent_end, arg)
  child_setup(own_parent_end)
  return child_main(rfd, arg)
end

local function check_threads(allow_threads, level)
  local th = package.loaded["strand.thread"]
  if not allow_threads and type(th) == "table" and th.active_count() > 1 then
    error(("process.start: %d strand thread(s) run in this process; a forked child would hold only "
      .. "this one, with whatever lock another thread held at that moment (a strand thread's Lua "
      .. "state, stdio, a library's own) frozen for good (pass allow_threads=true to fork anyway)")
      :format(th.active_count() - 1), level + 1)
  end
end

--- Fork with child_main(rfd, arg) run in the child (returns its exit status); rfd is a result
--- file (process._put_result) when with_result; current: what process.name() reads in the
--- child. -> handle | nil, msg, code
function M._fork(child_main, daemon, allow_threads, parent_end, with_result, arg, current)
  check_threads(allow_threads, 3)
  if next(live) ~= nil then sweep() end
  local h, err, code = C._fork(fork_entry, daemon, with_result, current,
                               child_main, parent_end, arg)
  if not h then return nil, err, code end
  live[h] = true
  return h
end

--- Reap h if it has ended; forget it then.
function M._reaped(h)
  live[h] = nil
end

-- {==== Process objects

local Process = {}
local methods = {}
local next_num = C._next_num          -- Process-N: a counter in C (no upvalue written per start)

Process.__index = function(self, k)
  if k == "name" then                    -- "Process-N", made when first asked for (most never are)
    local name = "Process-" .. rawget(self, "_num")
    rawset(self, "name", name)
    return name
  end
  if k == "exitcode" then
    local h = rawget(self, "_h")
    if h == nil then return nil end
    local code = h:poll()
    if code ~= nil then live[h] = nil end
    return code
  end
  return methods[k]
end
Process.__name = "strand.process"
Process.__tostring = function(self)
  return ("strand.process %s (pid %s)"):format(self.name, tostring(rawget(self, "pid")))
end

local function check_self(self, fname)
  if getmetatable(self) ~= Process then
    error(("bad argument #1 to '%s' (strand.process expected, got %s)"):format(fname, type(self)), 3)
  end
end

--- process.new{fn=, args=, name=, daemon=, allow_threads=}
function M.new(opts)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'new' (table expected, got " .. type(opts) .. ")", 2)
  end
  if type(opts.fn) ~= "function" then
    error("bad argument #1 to 'new' (fn must be a function)", 2)
  end
  if opts.args ~= nil and type(opts.args) ~= "table" then
    error("bad argument #1 to 'new' (args must be a table)", 2)
  end
  if opts.name ~= nil and type(opts.name) ~= "string" then
    error("bad argument #1 to 'new' (name must be a string)", 2)
  end
  local args = opts.args or {}
  -- the fields start, join and finish add are named too (nil): the table is made with room
  return setmetatable({
    fn = opts.fn, args = args, nargs = args.n or #args,
    name = opts.name, _num = next_num(),
    daemon = opts.daemon and true or false,
    allow_threads = opts.allow_threads and true or false,
    _h = nil, pid = nil, _final = nil, _joining = nil, _waiters = nil,
  }, Process)
end

-- The child's side: run fn as a task of the fresh loop, write the outcome, exit.
local function child_outcome(rfd, self, ...)
  -- fn returned nothing: nothing to write (the parent reads an empty result file and exit code
  -- 0 as `true`); no table, no encoding, no write in a child that should touch little memory
  if ... == true and select("#", ...) == 1 then return 0 end
  local r = pack(...)
  -- the outcome as bare values (true, ... | false, err): no table to walk and look up among
  -- the loaded modules in a child that should touch as little of its memory as it can
  local ok, data = pcall(C._encodev, unpack(r, 1, r.n))
  if not ok or data == nil then
    -- (the refusal names value k of (ok, ...) "args[k]": result #k-1, or the error)
    local why = not ok and tostring(data):gsub("^args%[(%d+)%]", function(k)
      return r[1] and "result #" .. (k - 1) or "its error" end)
    r = pack(false, "process " .. self.name .. ": cannot copy its results back: " .. (ok and
      "result: this strand object cannot be copied to another process (only locks, events, "
      .. "semaphores, conditions, barriers, queues and shared dicts/lists cross)" or why))
    data = C._encodev(false, r[2])
  end
  local ok2, err = C._put_result(rfd, data)
  if not ok2 then
    io.stderr:write("strand: process ", self.name, ": cannot write its results: ", tostring(err), "\n")
    return 1
  end
  return r[1] and 0 or 1
end

-- (process.name(): C._fork keeps self for C._current; its name made only if asked: a new string
-- in the child would be one more page written there)
local function run_child(rfd, self)
  return child_outcome(rfd, self, spawn_task(self.fn, unpack(self.args, 1, self.nargs)):join())
end

function methods:start()
  check_self(self, "start")
  if rawget(self, "_h") ~= nil then error("process " .. self.name .. " already started", 2) end
  local h, err, code = M._fork(run_child, self.daemon, self.allow_threads, nil, true, self, self)
  if not h then return nil, err, code end
  self._h = h
  self.pid = h:pid()
  return self
end

local function failure_message(code)
  if code < 0 then return "process killed by signal " .. -code end
  return "process exited with code " .. code
end

-- The outcome of a child whose fn returned nothing (an empty result file, exit code 0), shared
-- by every such process: _final is only ever read.
local RETURNED_NOTHING = pack(true)

-- The outcome of a child that has been reaped (h:wait or h:poll gave its exit code): its
-- results read from the file it left. Nothing here waits.
local function settle(self, h, code)
  live[h] = nil
  if h:foreign() then                 -- a forked child's copy: the process is its parent's child
    self._final = pack(false, "process " .. self.name .. " belongs to the parent process (this is a forked child)")
    return
  end
  local msg = h:take_result()
  local r
  if msg and #msg > 0 then
    r = pack(C._decode_at(msg, 1))                  -- true, ... | false, err | nil, why
    if type(r[1]) ~= "boolean" then
      r = pack(false, "process " .. self.name .. ": bad result: " .. tostring(r[2] or r[1]))
    end
  elseif code == 0 then
    r = RETURNED_NOTHING
  else
    r = pack(false, failure_message(code))
  end
  self._final = r
end

--- p:join([timeout]) -> true, ...results | false, err | nil, "timeout"
--- One joiner waits for the exit (one event: the pidfd) and reads the results the child left;
--- the others wait for its notification. A child already gone is settled without a wait (and
--- without the pcall a wait needs: fewer call levels, see M.start).
function methods:join(timeout)
  if getmetatable(self) ~= Process then check_self(self, "join") end   -- calls only to raise
  if timeout ~= nil then check_timeout(timeout, 2, "join") end
  local h = rawget(self, "_h")
  if h == nil then error("process " .. self.name .. " was not started", 2) end
  local deadline = timeout and now() + timeout
  while self._final == nil do
    if self._joining then
      local n = core.notifier()
      local w = self._waiters
      if w == nil then w = {}; self._waiters = w end
      w[#w + 1] = n
      local ok = n:wait(remaining(deadline))
      if not ok and self._final == nil then return nil, "timeout" end
    else
      local code = h:poll()                 -- reaps a child that has ended
      if code ~= nil then
        settle(self, h, code)               -- (no waiters: they come only while one waits)
      else
        self._joining = true
        local ok, err
        ok, code, err = pcall(h.wait, h, deadline and remaining(deadline), true)  -- (just looked)
        if ok and code ~= nil and self._waiters == nil then
          self._joining = false               -- (settle does not wait: none can come meanwhile)
          settle(self, h, code)
        else
          if ok and code ~= nil then
            ok, err = pcall(settle, self, h, code)      -- the waiters are told even if it raised
            if not ok then code = err end
          end
          self._joining = false
          local w = self._waiters
          if w then
            self._waiters = nil
            for i = 1, #w do w[i]:notify() end
          end
          if not ok then error(code, 0) end
          if code == nil then return nil, err end
        end
      end
    end
  end
  local r = self._final
  return unpack(r, 1, r.n)
end

--- p:result([timeout]) -> ...results, or raises the error ("timeout" exactly on timeout)
function methods:result(timeout)
  check_self(self, "result")
  check_timeout(timeout, 2, "result")
  return outcome(self:join(timeout))
end

function methods:is_alive()
  check_self(self, "is_alive")
  local h = rawget(self, "_h")
  if h == nil then return false end
  local code = h:poll()
  if code ~= nil then live[h] = nil end
  return code == nil
end

local function send_signal(self, sig, fname)
  check_self(self, fname)
  local h = rawget(self, "_h")
  if h == nil then error("process " .. self.name .. " was not started", 3) end
  if h:poll() ~= nil then return true end           -- already ended: nothing to do (Python)
  local ok, err, code = h:signal(sig)
  if not ok and code == "ESRCH" then return true end
  return ok, err, code
end

function methods:terminate() return send_signal(self, 15, "terminate") end
function methods:kill() return send_signal(self, 9, "kill") end
function methods:signal(n)
  if math.type(n) ~= "integer" then
    error("bad argument #1 to 'signal' (integer expected, got " .. type(n) .. ")", 2)
  end
  return send_signal(self, n, "signal")
end

-- The args of every process.start(fn) without arguments (read only: by the child, at its start)
local NO_ARGS = pack()

--- process.start(fn, ...) -> a started process | nil, "cannot fork: <message>", CODE (out of
--- descriptors, memory or processes: a runtime failure, API.md). process.new{...}:start(),
--- inline: each call level is a CallInfo node of the caller's thread written, and those nodes
--- lie on pages of their own (allocated over the program's life): a fault each after a fork.
function M.start(fn, ...)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'start' (function expected, got " .. type(fn) .. ")", 2)
  end
  local args = select("#", ...) == 0 and NO_ARGS or pack(...)
  local p = setmetatable({
    fn = fn, args = args, nargs = args.n, name = nil, _num = next_num(), daemon = false,
    allow_threads = false, _h = nil, pid = nil, _final = nil, _joining = nil, _waiters = nil,
  }, Process)
  check_threads(false, 2)
  if next(live) ~= nil then sweep() end
  local h, pid, code = C._fork(fork_entry, false, true, p, run_child, nil, p)
  if not h then return nil, "cannot fork: " .. tostring(pid), code end
  live[h] = true
  p._h = h
  p.pid = pid
  return p
end

--- The name of this process ("MainProcess" unless started by strand.process).
function M.name()
  local p = C._current()
  return p and p.name or "MainProcess"
end

--- Every started child not reaped yet (also reaps those that have ended).
function M.active_children()
  sweep()
  local n = 0
  for _ in pairs(live) do n = n + 1 end
  return n
end

-- }==== Process objects

-- {==== pipes: framed, copied values over a socket pair

local Conn = {}
Conn.__index = Conn
Conn.__name = "strand.pipe"

local function check_conn(self, fname)
  if getmetatable(self) ~= Conn then
    error(("bad argument #1 to '%s' (strand.pipe expected, got %s)"):format(fname, type(self)), 3)
  end
  if self.closed then error("attempt to use a closed pipe", 3) end
end

--- process.pipe([duplex=true]) -> a, b   (not duplex: a only receives, b only sends)
function M.pipe(duplex)
  if duplex == nil then duplex = true end
  local s1, s2, code = socket.pair()
  if not s1 then return nil, s2, code end
  if not duplex then
    s1:shutdown("w")
    s2:shutdown("r")
  end
  return setmetatable({ s = s1, can_send = duplex, can_recv = true }, Conn),
         setmetatable({ s = s2, can_send = true, can_recv = duplex }, Conn)
end

--- a:send(v) -> true | nil, msg (the peer is gone: "closed")
function Conn:send(v)
  check_conn(self, "send")
  if not self.can_send then error("send: this end of the pipe only receives", 2) end
  if v == nil then error("bad argument #1 to 'send' (cannot send nil)", 2) end
  local data = encode_for_process(v, "send", 1)
  if self.t ~= nil then self.s:settimeout(nil); self.t = nil end
  local ok, err, _, code = self.s:send_frame(data)
  if not ok then
    if code == "EPIPE" or code == "ECONNRESET" then return nil, "closed", code end
    return nil, err, code
  end
  return true
end

local function take(self, timeout)
  if self.pending then return true end
  if self.t ~= timeout then self.s:settimeout(timeout); self.t = timeout end   -- nil: none
  local data, err, code = self.s:recv_frame()
  if data then self.pending = data; return true end
  if code == "ECONNRESET" then return nil, "closed", code end
  return nil, err, code
end

--- b:recv([timeout]) -> v | nil, "closed" | nil, "timeout"
function Conn:recv(timeout)
  check_conn(self, "recv")
  check_timeout(timeout, 1, "recv")
  if not self.can_recv then error("recv: this end of the pipe only sends", 2) end
  local ok, err, code = take(self, timeout)
  if not ok then return nil, err, code end
  local data = self.pending
  self.pending = nil
  return C._decode_at(data, 1)      -- decoded once: the value adopts the message's references
end

--- a:poll([timeout]) -> true (a value is there, or the peer closed: recv will say) | false
function Conn:poll(timeout)
  check_conn(self, "poll")
  check_timeout(timeout, 1, "poll")
  if not self.can_recv then error("poll: this end of the pipe only sends", 2) end
  local ok, err = take(self, timeout or 0)
  if ok then return true end
  if err == "timeout" then return false end
  return true
end

function Conn:close()
  if getmetatable(self) ~= Conn then error("bad argument #1 to 'close' (strand.pipe expected)", 2) end
  if self.closed then return true end
  self.closed = true
  if self.pending then C._release(self.pending) end   -- taken by poll, never received
  self.pending = nil
  self.s:close()
  return true
end
Conn.__close = Conn.close
Conn.__gc = Conn.close

-- }==== pipes

-- {==== external programs

local Child = {}
Child.__index = Child
Child.__name = "strand.child"

local stdio_names = { "stdin", "stdout", "stderr" }

local function check_opts(opts, fname)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("bad argument #2 to '%s' (table expected, got %s)"):format(fname, type(opts)), 3)
  end
  for _, name in ipairs(stdio_names) do
    local v = opts[name]
    if v ~= nil and v ~= "pipe" and v ~= "inherit" and v ~= "null" then
      error(("bad argument #2 to '%s' (%s must be \"pipe\", \"inherit\" or \"null\")"):format(fname, name), 3)
    end
  end
  if opts.cwd ~= nil and type(opts.cwd) ~= "string" then
    error(("bad argument #2 to '%s' (cwd must be a string)"):format(fname), 3)
  end
  if opts.env ~= nil and type(opts.env) ~= "table" then
    error(("bad argument #2 to '%s' (env must be a table)"):format(fname), 3)
  end
  return opts
end

local function check_argv(argv, fname)
  if type(argv) ~= "table" then
    error(("bad argument #1 to '%s' (table expected, got %s)"):format(fname, type(argv)), 3)
  end
  if #argv == 0 then error(("bad argument #1 to '%s' (argv is empty)"):format(fname), 3) end
  for i = 1, #argv do
    if type(argv[i]) ~= "string" then
      error(("bad argument #1 to '%s' (argv[%d] must be a string)"):format(fname, i), 3)
    end
  end
end

local function env_array(env)
  local out = {}
  for k, v in pairs(env) do
    if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number") then
      error("bad argument #2 to 'spawn' (env must map strings to strings)", 4)
    end
    out[#out + 1] = k .. "=" .. v
  end
  table.sort(out)
  return out
end

--- process.spawn(argv, {stdin=, stdout=, stderr=, env=, cwd=}) -> child | nil, msg, code
function M.spawn(argv, opts)
  check_argv(argv, "spawn")
  opts = check_opts(opts, "spawn")
  local env = opts.env and env_array(opts.env)
  local fds, mine, theirs = { -1, -1, -1 }, {}, {}
  local function cleanup()
    for _, s in pairs(mine) do s:close() end
    for _, s in pairs(theirs) do s:close() end
  end
  for i, name in ipairs(stdio_names) do
    local mode = opts[name] or "inherit"
    if mode == "pipe" then
      local a, b, code = socket.pair()
      if not a then cleanup(); return nil, b, code end
      mine[name], theirs[name] = a, b
      fds[i] = b:fileno()
    elseif mode == "null" then
      fds[i] = -2
    end
  end
  local h, err, code = C._spawn(argv, env, opts.cwd, fds[1], fds[2], fds[3])
  for _, s in pairs(theirs) do s:close() end
  if not h then
    for _, s in pairs(mine) do s:close() end
    return nil, err, code
  end
  live[h] = true
  if mine.stdin then mine.stdin:shutdown("r") end
  if mine.stdout then mine.stdout:shutdown("w") end
  if mine.stderr then mine.stderr:shutdown("w") end
  for _, s in pairs(mine) do parent_ends[s] = true end
  return setmetatable({ _h = h, pid = h:pid(), argv = argv,
    stdin = mine.stdin, stdout = mine.stdout, stderr = mine.stderr }, Child)
end

--- child:wait([timeout]) -> code, signal (code = -signal when killed) | nil, "timeout"
function Child:wait(timeout)
  check_timeout(timeout, 1, "wait")
  local code, err, ecode = self._h:wait(timeout)
  if code == nil then return nil, err, ecode end
  live[self._h] = nil
  self.code = code
  if code < 0 then return code, -code end
  return code, nil
end

function Child:poll()
  local code = self._h:poll()
  if code ~= nil then live[self._h] = nil; self.code = code end
  return code
end

--- child:kill([sig=9]) -> true | nil, msg
function Child:kill(sig)
  sig = sig or 9
  if math.type(sig) ~= "integer" then
    error("bad argument #1 to 'kill' (integer expected, got " .. type(sig) .. ")", 2)
  end
  local ok, err, code = self._h:signal(sig)
  if not ok and code == "ESRCH" then return true end
  return ok, err, code
end

--- Close the pipes this side holds (the program sees end of input / a closed output).
function Child:close()
  for _, name in ipairs(stdio_names) do
    local s = self[name]
    if s then s:close(); parent_ends[s] = nil end
  end
end
Child.__close = Child.close

--- process.run(argv, {input=, stdin=, env=, cwd=, timeout=}) -> {code=, signal=, stdout=, stderr=}
--- | nil, msg. stdout and stderr are read at once (no deadlock whatever their sizes); input (a
--- string) is written to stdin meanwhile. On timeout the program is killed: nil, "timeout".
function M.run(argv, opts)
  check_argv(argv, "run")
  opts = check_opts(opts, "run")
  if opts.input ~= nil and type(opts.input) ~= "string" then
    error("bad argument #2 to 'run' (input must be a string)", 2)
  end
  check_timeout(opts.timeout, 2, "run")
  local sopts = { env = opts.env, cwd = opts.cwd, stdout = "pipe", stderr = "pipe",
                  stdin = opts.input and "pipe" or (opts.stdin or "inherit") }
  local child, err, code = M.spawn(argv, sopts)
  if not child then return nil, err, code end
  local deadline = opts.timeout and now() + opts.timeout
  local out, errout = {}, {}
  local function reader(s, into)
    return function()
      s:settimeout(nil)
      into[1] = s:read("a")
    end
  end
  local tasks = { spawn_task(reader(child.stdout, out)), spawn_task(reader(child.stderr, errout)) }
  if opts.input then
    tasks[3] = spawn_task(function()
      child.stdin:settimeout(nil)
      child.stdin:sendall(opts.input)
      child.stdin:close()
    end)
  end
  local timed_out = false
  for _, t in ipairs(tasks) do
    if t:join(remaining(deadline)) == nil then timed_out = true; break end
  end
  local rc, sig
  if not timed_out then
    rc, sig = child:wait(remaining(deadline))
    if rc == nil then timed_out = true end
  end
  if timed_out then
    for _, t in ipairs(tasks) do t:cancel() end
    child:kill(9)
    child:wait()
    child:close()
    for _, t in ipairs(tasks) do t:join() end
    return nil, "timeout", "ETIMEDOUT"
  end
  child:close()
  for _, t in ipairs(tasks) do
    local ok, e = t:join()
    if ok == false then error(e, 0) end
  end
  return { code = rc, signal = sig, stdout = out[1] or "", stderr = errout[1] or "" }
end

-- }==== external programs

return M
