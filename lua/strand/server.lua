-- strand.server — socketserver for strand: TCP, UDP and UNIX servers whose handler runs in a task per
-- connection ("task"), in N threads or N forked processes on the shared socket, or a process each.
--
-- Behaviour worth knowing (the contract is API.md "strand.server"):
--  * server.tcp{...} / unix{...} listen at once (port 0 picks a free port: srv.port) and return the
--    server, or nil, err, code; serve_forever() serves until shutdown() and returns true.
--  * max_connections=n: at most n handlers run at once; the server stops accepting meanwhile,
--    so further clients wait in the kernel's backlog (backlog= option, default 1024) and are
--    served in turn: nobody is dropped. For datagram servers it bounds the handlers running.
--  * idle_timeout=s: every blocking call on a connection fails with nil, "timeout" after s
--    seconds without progress (the connection's default timeout), so idle clients go away.
--  * a handler that raises: the error and its traceback go to log (default: stderr), only its
--    connection is closed; the server goes on. The connection is closed when the handler returns.
--  * shutdown([grace]): stop accepting, let running handlers finish for up to grace seconds
--    (default 5), then cancel the rest; waits until serve_forever has returned (unless called
--    from one of the server's own handlers). serve_forever from the main program (not in a task,
--    main thread) turns SIGINT and SIGTERM into shutdown() while it runs.
--  * "thread" mode: workers= threads (default: the number of CPUs) each accept on their own
--    duplicate of the listening socket and run a task per connection; the handler is copied into
--    each thread (API.md's copy rule: upvalues are copied, loaded modules go by name), so
--    handlers cannot share plain Lua tables across threads (use strand.shared / queues).
--  * "prefork": workers= processes forked at serve_forever, each serving a task per connection on
--    the inherited listening socket (the kernel hands each connection to one of them).
--  * thread/prefork TCP servers without max_connections default to reuseport=true: each worker
--    listens on its own SO_REUSEPORT socket on the port, so the kernel spreads the connections
--    evenly (on one shared socket the worker that wakes first takes nearly all). With
--    max_connections they share one socket (the backlog guarantee needs one queue) and a worker
--    with more connections than another waits up to 20 ms before accepting. "fork": the
--    server accepts and forks a child per connection (per datagram for udp) that runs the handler
--    and exits; children are reaped by the server. max_connections holds across processes (a
--    strand semaphore); shutdown's grace ends with SIGTERM for children still running. Both
--    need strand.process; without it server.tcp raises.
local strand = require "strand"
local core = require "strand.core"
local ssock = require "strand.socket"
local sync = require "strand.sync"

local M = {}
local Server = {}
Server.__index = Server

local DEFAULT_GRACE = 5
-- How long a shutdown waits for the handlers it cancelled after the grace (a handler catching the
-- cancellation with pcall and going on is left running then: its task, its thread in thread mode),
-- and how much longer the server waits for its thread/prefork workers to come back (then a
-- prefork worker is killed, a thread is left to finish by itself).
local CANCEL_WAIT = 10
local WORKER_SLACK = 5
local MODES = { task = true, thread = true, fork = true, prefork = true }

local function default_log(msg) io.stderr:write(msg, "\n") end

local function cpu_count()
  local f = io.open("/sys/devices/system/cpu/online")
  if not f then return 1 end
  local spec = f:read("l") or ""
  f:close()
  local n = 0
  for a, b in spec:gmatch("(%d+)%-?(%d*)") do
    n = n + (b ~= "" and (tonumber(b) - tonumber(a) + 1) or 1)
  end
  return n > 0 and n or 1
end

-- {==== serving loops (run in the server's own thread, or inside each worker thread)

local function new_state(handler, opts, sem, kind, mode)
  return { handler = handler, kind = kind, fork = mode == "fork", idle_timeout = opts.idle_timeout, log = opts.log or default_log,
           sem = sem, tasks = {}, active = 0, served = 0, stopping = false,
           grace = DEFAULT_GRACE }
end

-- Every message goes through st.log (the user's log=, or stderr). A log function that raises must
-- not skip what follows it (a handler's slot, its count): its error goes to stderr with the message.
local function log(st, msg)
  local ok, err = pcall(st.log, msg)
  if not ok then
    default_log(msg)
    default_log("strand.server: the log function failed: " .. tostring(err))
  end
end

local function peer_string(host, port)
  if port == nil then return tostring(host or "?") end
  return ("%s:%s"):format(host, port)
end

local function report(st, err, host, port)
  if strand.is_cancelled(err) then return end
  log(st, ("strand.server: handler failed (peer %s): %s"):format(peer_string(host, port), tostring(err)))
end

-- Wait for a free slot under max_connections; false once the server is stopping.
local function take_slot(st)
  if not st.sem then return true end
  while not st.stopping do
    if st.sem:acquire(0.2) then return true end
  end
  return false
end

local function give_slot(st)
  if st.sem then st.sem:release() end
end

local function track(st, t)
  local s = t:status()
  if s ~= "done" and s ~= "failed" and s ~= "cancelled" then st.tasks[t] = true end
end

local run_datagram

local function run_stream(st, conn, host, port)
  st.active = st.active + 1
  if st.loads then st.loads:incr(st.index, 1) end
  if st.idle_timeout then conn:settimeout(st.idle_timeout) end
  local ok, err = xpcall(st.handler, debug.traceback, conn, host, port)
  conn:close()
  if not ok then report(st, err, host, port) end
  st.active = st.active - 1
  if st.loads then st.loads:incr(st.index, -1) end
  st.tasks[strand.current()] = nil
  give_slot(st)
end

-- Workers share one listening socket and all wake when a client arrives; the one that accepts
-- keeps accepting while the backlog lasts, so one worker could take nearly every connection.
-- A worker with more connections than another lets it go first (up to 20 ms), then accepts anyway.
local function less_loaded_elsewhere(st)
  local loads = st.loads
  for i = 1, st.nworkers do
    if i ~= st.index and (loads[i] or 0) < st.active then return true end
  end
  return false
end

local function let_others_accept(st)
  if not st.loads then return end
  for _ = 1, 10 do
    if st.stopping or not less_loaded_elsewhere(st) then return end
    strand.sleep(0.002)
  end
end

-- sock:method(...), or nil, "closed" when another task of this thread closed sock meanwhile.
local function call_open(sock, method, ...)
  local r = table.pack(pcall(sock[method], sock, ...))
  if r[1] then return table.unpack(r, 2, r.n) end
  if type(r[2]) == "string" and r[2]:find("closed socket", 1, true) then return nil, "closed" end
  error(r[2], 0)
end

--- Body of a forked child (fork mode): one connection (or datagram), then the child exits.
function M._fork_child(st, lsock, ...)
  core.netcompat.signal_unwatch()          -- the parent's watcher: SIGINT/SIGTERM act as usual here
  st.tasks, st.sem, st.fork = {}, nil, false
  if st.kind == "stream" then
    lsock:close()                          -- the child serves only the connection it was given
    run_stream(st, ...)
  else
    run_datagram(st, ...)                  -- replies go out through the shared datagram socket
  end
end

-- Run the handler in a forked child and wait for it; a shutdown past its grace terminates it.
local function run_forked(st, lsock, conn, ...)
  local process = require "strand.process"
  local p = process.new { fn = M._fork_child, args = table.pack(st, lsock, conn, ...), daemon = true,
                          allow_threads = true }
  local ok, err = p:start()
  if conn and conn.close then conn:close() end  -- the child has its own copy
  if not ok then
    log(st, "strand.server: fork failed: " .. tostring(err))
  else
    local jok, jerr = pcall(p.join, p)
    if not jok then                                -- cancelled by shutdown: the child goes too
      p:terminate()
      p:join(5)
      if not strand.is_cancelled(jerr) then error(jerr, 0) end
    end
  end
  st.tasks[strand.current()] = nil
  give_slot(st)
end

local function accept_loop(st, lsock)
  while take_slot(st) do
    let_others_accept(st)
    local conn, host, port = call_open(lsock, "accept")
    if not conn then
      give_slot(st)
      if st.stopping or host == "closed" then break end
      log(st, "strand.server: accept failed: " .. tostring(host))   -- EMFILE: accept pauses itself
    else
      st.served = st.served + 1
      if st.fork then track(st, strand.spawn(run_forked, st, lsock, conn, host, port))
      else track(st, strand.spawn(run_stream, st, conn, host, port)) end
    end
  end
end

function run_datagram(st, data, host, port, sock)
  st.active = st.active + 1
  local ok, err = xpcall(st.handler, debug.traceback, data, host, port, sock)
  if not ok then report(st, err, host, port) end
  st.active = st.active - 1
  st.tasks[strand.current()] = nil
  give_slot(st)
end

local function datagram_loop(st, sock)
  while take_slot(st) do
    local data, host, port = call_open(sock, "recvfrom", 65536)
    if not data then
      give_slot(st)
      if st.stopping or host == "closed" then break end
      log(st, "strand.server: recvfrom failed: " .. tostring(host))
    else
      st.served = st.served + 1
      if st.fork then track(st, strand.spawn(run_forked, st, sock, data, host, port, sock))
      else track(st, strand.spawn(run_datagram, st, data, host, port, sock)) end
    end
  end
end

-- Let running handlers finish for up to grace seconds, then cancel the rest and wait for them.
local function drain(st, grace)
  local list = {}
  for t in pairs(st.tasks) do list[#list + 1] = t end
  if #list == 0 then return end
  strand.joinall(list, grace)
  for _, t in ipairs(list) do
    local s = t:status()
    if s ~= "done" and s ~= "failed" and s ~= "cancelled" then t:cancel("server shutdown") end
  end
  strand.joinall(list, CANCEL_WAIT)
end

-- The loop of one thread (thread mode) or of the server (task mode); returns connections served.
local function serve_loop(st, sock, kind)
  local loop = strand.spawn(kind == "stream" and accept_loop or datagram_loop, st, sock)
  local ok, err = loop:join()
  if ok == false then log(st, "strand.server: serving loop failed: " .. tostring(err)) end
  sock:close()
  drain(st, st.grace)
  return st.served
end

--- Body of each worker thread (thread mode; fd is a number) or process (prefork mode; fd is the
--- inherited listening socket): crosses into threads by name.
function M._thread_main(fd, kind, handler, opts, stopq, sem, loads, index, readyq)
  local lsock
  if type(fd) ~= "number" then
    core.netcompat.signal_unwatch()         -- a prefork child: the parent's watcher is not ours
  end
  if opts.own_socket and index > 1 then
    -- SO_REUSEPORT: a listening socket of its own on the same port; the kernel spreads the
    -- connections over the workers' sockets (the first worker uses the server's own socket)
    if type(fd) ~= "number" then fd:close() end
    local o = opts.own_socket
    lsock = assert(ssock.listen(o.host, o.port, { reuseport = true, backlog = o.backlog, family = o.family }))
  elseif type(fd) == "number" then
    lsock = assert(core.netcompat.fromfd(fd))
  else
    lsock = fd
  end
  local st = new_state(handler, opts, sem, kind, "task")
  st.loads, st.index, st.nworkers = loads, index, opts.nworkers
  readyq:put(index)
  local watcher = strand.spawn(function()
    local grace = stopq:get()
    st.stopping = true
    st.grace = grace
    lsock:close()                 -- wakes the accept (or recvfrom) with nil, "closed"
  end)
  local served = serve_loop(st, lsock, kind)
  watcher:join()
  return served
end

-- }====

-- {==== the server object

local function check_opts(opts, fname, need)
  if type(opts) ~= "table" then
    error(("bad argument #1 to '%s' (table expected, got %s)"):format(fname, type(opts)), 3)
  end
  local function bad(msg) error(("bad argument #1 to '%s' (%s)"):format(fname, msg), 4) end
  if type(opts.handler) ~= "function" then bad("handler must be a function") end
  local mode = opts.mode or "task"
  if not MODES[mode] then bad(("unknown mode '%s'"):format(tostring(mode))) end
  if (mode == "fork" or mode == "prefork") and not pcall(require, "strand.process") then
    bad(("mode '%s' needs strand.process, which this build does not have"):format(mode))
  end
  for _, k in ipairs { "max_connections", "workers" } do
    local v = opts[k]
    if v ~= nil and (math.type(v) ~= "integer" or v < 1) then bad(k .. " must be an integer >= 1") end
  end
  local it = opts.idle_timeout
  if it ~= nil and (type(it) ~= "number" or not (it > 0)) then bad("idle_timeout must be a number > 0") end
  if opts.host ~= nil and type(opts.host) ~= "string" then bad("host must be a string") end
  local bl = opts.backlog
  if bl ~= nil and (math.type(bl) ~= "integer" or bl < 0 or bl > 65535) then
    bad("backlog must be an integer 0..65535")
  end
  local fam = opts.family
  if fam ~= nil and fam ~= "inet" and fam ~= "inet6" then bad('family must be "inet" or "inet6"') end
  if opts.log ~= nil and type(opts.log) ~= "function" then bad("log must be a function") end
  if need == "path" and type(opts.path) ~= "string" then bad("path must be a string") end
  local port = opts.port
  if need == "port" and port ~= nil and type(port) ~= "string"
     and (math.type(port) ~= "integer" or port < 0 or port > 65535) then
    bad("port must be an integer 0..65535")   -- (a string is a service name: "http")
  end
  return mode
end

local function new_server(sock, kind, opts, mode, extra)
  local srv = setmetatable(extra or {}, Server)
  srv.sock, srv.kind, srv.mode, srv.opts = sock, kind, mode, opts
  srv.handler = opts.handler
  srv.workers = opts.workers or ((mode == "thread" or mode == "prefork") and cpu_count() or 1)
  local sem = opts.max_connections and sync.semaphore(opts.max_connections) or nil
  srv.st = new_state(opts.handler, opts, sem, kind, mode)
  srv.sem = sem
  srv.stopped = sync.event()
  srv.ready = sync.event()
  local h, p = sock:getsockname()
  if srv.path == nil then srv.host, srv.port = h, p end
  return srv
end

--- server.tcp{host=, port=, handler=fn(conn, host, port), mode=, workers=, max_connections=,
---            idle_timeout=, reuseport=, backlog=, log=} -> server | nil, err, code
function M.tcp(opts)
  local mode = check_opts(opts, "tcp", "port")
  -- thread/prefork without max_connections: every worker gets its own SO_REUSEPORT socket (the
  -- kernel balances them; one shared socket lets one worker take nearly every connection)
  local reuseport = opts.reuseport
  if reuseport == nil then
    reuseport = (mode == "thread" or mode == "prefork") and opts.max_connections == nil
  end
  if reuseport and opts.max_connections then
    error("bad argument #1 to 'tcp' (reuseport cannot be combined with max_connections: a worker "
      .. "holding a slot would wait on its own backlog while clients wait in another's)", 2)
  end
  local sock, err, code = ssock.listen(opts.host or "127.0.0.1", opts.port or 0,
    { backlog = opts.backlog or 1024, reuseport = reuseport, family = opts.family })
  if not sock then return nil, err, code end
  local srv = new_server(sock, "stream", opts, mode)
  if reuseport and (mode == "thread" or mode == "prefork") then
    srv.own_socket = { host = srv.host, port = srv.port, backlog = opts.backlog or 1024,
                       family = opts.family }
  end
  return srv
end

--- server.udp{host=, port=, handler=fn(data, host, port, sock), mode=, workers=, ...}
function M.udp(opts)
  local mode = check_opts(opts, "udp", "port")
  local sock, err, code = ssock.udp(opts.family)
  if not sock then return nil, err, code end
  local ok = true
  if opts.reuseport then ok, err, code = sock:setoption("reuseport", true) end
  if ok then ok, err, code = sock:bind(opts.host or "127.0.0.1", opts.port or 0) end
  if not ok then sock:close(); return nil, err, code end
  return new_server(sock, "dgram", opts, mode)
end

--- server.unix{path=, handler=fn(conn), mode=, ...}: a stale socket file at path is replaced.
function M.unix(opts)
  local mode = check_opts(opts, "unix", "path")
  local sock, err, code = ssock.unix_listen(opts.path, { unlink = true, backlog = opts.backlog or 1024 })
  if not sock then return nil, err, code end
  return new_server(sock, "stream", opts, mode, { path = opts.path })
end

--- server.unix_dgram{path=, handler=fn(data, peer_path, nil, sock), mode=, ...}
function M.unix_dgram(opts)
  local mode = check_opts(opts, "unix_dgram", "path")
  local sock, err, code = ssock.unix_listen(opts.path, { type = "dgram", unlink = true })
  if not sock then return nil, err, code end
  return new_server(sock, "dgram", opts, mode, { path = opts.path })
end

local function in_main_program()
  if strand.current() ~= nil then return false end
  local ok, th = pcall(require, "strand.thread")
  return not ok or th.id() == 1
end

-- SIGINT/SIGTERM -> shutdown while serve_forever runs in the main program.
local function watch_signals(srv)
  local sig = core.netcompat.signal_watch()
  if not sig then return nil end
  local t = strand.spawn(function()
    local b = sig:recv(1)
    if b then
      log(srv.st, ("strand.server: signal %d, shutting down"):format(b:byte()))
      srv:shutdown(srv.grace)
    end
  end)
  return function()
    core.netcompat.signal_unwatch()
    sig:close()
    t:join(1)
  end
end

--- srv:serve_forever() -> true, once shutdown() has stopped the server
function Server:serve_forever()
  if self.serving or self.closed then error("serve_forever: the server is already serving or closed", 2) end
  self.serving = true
  local unwatch = in_main_program() and watch_signals(self) or nil
  local ok, err = pcall(function()
    if self.mode == "task" or self.mode == "fork" then
      self.ready:set()
      self.loop_task = strand.spawn(function()
        self.st.grace = self.grace or DEFAULT_GRACE
        return serve_loop(self.st, self.sock, self.kind)
      end)
      local r, e = self.loop_task:join()
      if r == false then error(e, 0) end
    else
      self:_serve_threads()
    end
  end)
  self:_cleanup()
  self.serving = false
  self.stopped:set()     -- first: a signal's shutdown() waits for it, and unwatch joins that task
  if unwatch then unwatch() end
  if not ok then error(err, 0) end
  return true
end

function Server:_serve_threads()
  local thread = require "strand.thread"
  local queue = require "strand.queue"
  local stopq = queue.new()
  self.stopq = stopq
  self.stop_ev = self.stop_ev or sync.event()
  local opts = { idle_timeout = self.opts.idle_timeout, log = self.opts.log }
  local threads = {}
  local readyq = queue.new()
  local loads = nil
  if self.kind == "stream" and self.workers > 1 then
    loads = require("strand.shared").dict()
    for i = 1, self.workers do loads[i] = 0 end
  end
  opts.nworkers = self.workers
  opts.own_socket = self.own_socket
  if self.mode == "prefork" then
    local process = require "strand.process"
    for i = 1, self.workers do
      local p = process.new { fn = M._thread_main, daemon = true, allow_threads = true,
        args = table.pack(self.sock, self.kind, self.handler, opts, stopq, self.sem, loads, i,
                          readyq) }
      local ok, err = p:start()
      if not ok then
        log(self.st, "strand.server: fork failed: " .. tostring(err))
      else
        threads[#threads + 1] = p
      end
    end
  else
    local fd = self.sock:fileno()
    for i = 1, self.workers do
      threads[i] = thread.start(M._thread_main, fd, self.kind, self.handler, opts, stopq, self.sem,
                                loads, i, readyq)
    end
  end
  for _ = 1, #threads do                      -- every worker is listening: serving
    if not readyq:get(30) then break end
  end
  self.ready:set()
  if not self.st.stopping then self.stop_ev:wait() end
  local grace = self.grace or DEFAULT_GRACE
  for _ = 1, #threads do stopq:put(grace) end
  local served = 0
  local deadline = strand.now() + grace + CANCEL_WAIT + WORKER_SLACK
  for i, t in ipairs(threads) do
    local ok, n = t:join(math.max(0, deadline - strand.now()))
    if ok == nil and self.mode == "prefork" then   -- stuck: it goes (what it served is lost)
      t:kill()
      ok, n = t:join(WORKER_SLACK)
    end
    if ok then served = served + (n or 0)
    elseif ok == nil then
      log(self.st, ("strand.server: worker %d did not stop (a handler went on after its "
        .. "cancellation): left running"):format(i))
    else log(self.st, "strand.server: worker thread failed: " .. tostring(n)) end
  end
  self.st.served = served
end

function Server:_cleanup()
  self.closed = true                   -- its socket is gone: serve_forever raises from now on
  if self.sock then self.sock:close() end
  if self.path and not self.unlinked then
    self.unlinked = true
    ssock._unlink_socket(self.path)
  end
end

--- srv:shutdown([grace]) -> true. Stops accepting, lets handlers finish for up to grace seconds,
--- cancels the rest; returns once serve_forever has returned (at once from a handler).
function Server:shutdown(grace)
  if grace ~= nil and (type(grace) ~= "number" or not (grace >= 0)) then   -- NaN too
    error("bad argument #1 to 'shutdown' (grace must be a number >= 0)", 2)
  end
  if grace ~= nil then self.grace = grace end
  local st = self.st
  if not st.stopping then
    st.stopping = true
    st.grace = self.grace or DEFAULT_GRACE
    if self.mode == "task" or self.mode == "fork" then
      self.sock:close()                  -- wakes the accept loop with nil, "closed"
    else
      self.stop_ev = self.stop_ev or sync.event()
      self.stop_ev:set()
    end
  end
  if not self.serving then
    self:_cleanup()
    return true
  end
  local me = strand.current()
  if me and (st.tasks[me] or me == self.loop_task) then return true end
  self.stopped:wait()
  return true
end

--- srv:close(): shutdown(0) if serving, else release the socket (and the UNIX path). Idempotent.
function Server:close()
  if self.closed then return true end
  if self.serving then self:shutdown(0) end
  self.closed = true
  self:_cleanup()
  return true
end
Server.__close = Server.close
Server.__gc = function(self) if self.sock then self.sock:close() end end

--- srv:wait_ready([timeout]) -> true once serve_forever serves (every worker listening) | false
function Server:wait_ready(timeout)
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout >= 0)) then   -- NaN too
    error("bad argument #1 to 'wait_ready' (timeout must be a number >= 0)", 2)
  end
  return self.ready:wait(timeout)
end

--- srv:active() -> handlers running now (task mode; 0 in other modes' parent)
function Server:active() return self.st.active end

--- srv:served() -> connections (datagrams) accepted so far (thread mode: known after the stop)
function Server:served() return self.st.served end

-- }====

return M
