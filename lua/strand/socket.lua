-- strand.socket — cooperative sockets (TCP, UDP, UNIX stream and datagram, IPv4 and IPv6).
-- This file owns the Lua-level helpers (connect, listen, unix_connect, unix_listen) over the
-- C core in csrc/socket.c, sockio.c, sockopt.c, buffer.c and resolve.c.
--
-- Behaviour worth knowing (the contract is API.md "strand.socket"; these are the details):
--  * Every call that can wait is cooperative: inside a task it suspends only that task; from the
--    main program it drives the loop. s:settimeout(t) bounds each such call (nil: no bound);
--    s:setblocking(false) makes them return nil, "wouldblock", "EAGAIN" instead of waiting.
--  * Failures return nil, message, CODE ("connection refused", "ECONNREFUSED"). The end of a
--    stream is nil, "closed", "EOF"; a socket closed by another task while this one waited gives
--    nil, "closed", "ECLOSED". sendall, send_frame and sendfile fail with
--    nil, message, bytes_sent, CODE; write fails with nil, message, CODE.
--  * read(fmt) is buffered like a Lua file: "l" (default; strips "\n" or "\r\n"), "L", "a"
--    (everything up to the end of the stream; "" if nothing is left), or a count n (exactly n,
--    fewer only at the end). A timed-out read keeps what arrived in the socket's buffer: the next
--    read sees it. recv/recv_frame/lines share that buffer. lines(fmt) ends at the end of the
--    stream and raises on other errors.
--  * Lines are bounded (memory per connection stays bounded): a line whose bytes before the
--    "\n" are more than the socket's maxline (default 64 KiB, as asyncio's limit) makes
--    read("l"/"L") return nil, "line too long", "EMSGSIZE" (lines() raises it) as soon as that
--    many bytes arrived without a "\n". Nothing is consumed: the bytes stay in the buffer (at
--    most maxline plus one 64 KiB read) and the connection stays usable, so the caller chooses:
--    skip them with read(n)/recv, raise the limit, or close. s:setoption("maxline", n) sets it
--    per socket (0 or false: no limit; getoption("maxline") reads it); accepted sockets
--    inherit their listener's.
--  * send_frame(data) writes a 4-byte big-endian length then data; recv_frame([max]) returns one
--    payload (max defaults to 64 MiB). A frame longer than max returns nil, "frame too large",
--    "EMSGSIZE": its header is consumed and its payload is discarded (now, as far as it has
--    arrived, the rest by the following reads), so the next recv_frame returns the next frame.
--    A stream ending inside a frame gives nil, "truncated frame", "EPROTO".
--  * sendfile(file_or_path [, offset [, count]]) uses sendfile(2). With a Lua file the default
--    offset is the file's position and the file is left just past the last byte sent (also on
--    failure), so a transfer can resume. Returns the number of bytes sent.
--  * SIGPIPE: send() uses MSG_NOSIGNAL; sendfile cannot, so loading this module sets SIGPIPE to
--    "ignore" for the process if it still had the default disposition (a program's own handler
--    is kept). Writing to a closed peer returns nil, "closed", "EPIPE" (or "connection reset").
--  * accept() failing with EMFILE/ENFILE returns nil, "too many open files", "EMFILE" at once;
--    the pending connection stays queued and a later accept() takes it. That next accept()
--    first sleeps 50 ms (within its timeout), so a plain accept loop yields instead of spinning.
--  * Names are resolved on a small pool of threads, never on the loop; numeric addresses skip it.
--  * getoption("rcvbuf"/"sndbuf") reports what Linux uses (twice the value set).
local core = require "strand.core"

local M = core.socket
if M == nil then error("strand.socket: the C module was built without sockets", 2) end

local now = core.now

local function check_opts(opts, fname)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("bad argument #3 to '%s' (table expected, got %s)"):format(fname, type(opts)), 3)
  end
  return opts
end

local function check_family(opts, fname)
  local f = opts.family
  if f ~= nil and f ~= "inet" and f ~= "inet6" then
    error(("bad argument #3 to '%s' (family must be \"inet\" or \"inet6\")"):format(fname), 3)
  end
end

-- A port argument: a number must be an integer 0..65535 (a string is a service name).
local function check_port(port, arg, fname)
  if type(port) == "number" and (math.type(port) ~= "integer" or port < 0 or port > 65535) then
    error(("bad argument #%d to '%s' (port must be an integer 0..65535)"):format(arg, fname), 3)
  end
end

local function remaining(deadline)
  if deadline == nil then return nil end
  local r = deadline - now()
  return r > 0 and r or 0
end

-- Run method m on s; on an error (a cancellation too) close s and raise it again.
local function guarded(s, m, ...)
  local r = table.pack(pcall(s[m], s, ...))
  if not r[1] then
    s:close()
    error(r[2], 0)
  end
  return table.unpack(r, 2, r.n)
end

-- The end of a constructor: s when its steps went ok, else close s and return their failure.
local function kept(s, ok, err, code)
  if ok then return s end
  s:close()
  return nil, err, code
end

-- A UNIX socket path argument (argument #1 of fname).
local function check_path(path, fname)
  if type(path) ~= "string" then
    error(("bad argument #1 to '%s' (string expected, got %s)"):format(fname, type(path)), 3)
  end
end

--- socket.connect(host, port [, {timeout=, family="inet"|"inet6", bind=host|{host, port}}])
--- -> conn | nil, err, code. Tries every address the name has until one connects; timeout
--- bounds the whole (lookup included). The connection has no default timeout.
function M.connect(host, port, opts)
  if type(host) ~= "string" then
    error(("bad argument #1 to 'connect' (string expected, got %s)"):format(type(host)), 2)
  end
  if type(port) ~= "number" and type(port) ~= "string" then
    error(("bad argument #2 to 'connect' (port expected, got %s)"):format(type(port)), 2)
  end
  check_port(port, 2, "connect")
  opts = check_opts(opts, "connect")
  check_family(opts, "connect")
  local timeout = opts.timeout
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout >= 0)) then   -- NaN too
    error("bad argument #3 to 'connect' (timeout must be a number >= 0)", 2)
  end
  local deadline = timeout and now() + timeout
  local addrs, err, code = M.getaddrinfo(host, port, { family = opts.family, type = "stream",
                                                      timeout = timeout })
  if not addrs then return nil, err, code end
  if #addrs == 0 then return nil, "no address", "EAI_NODATA" end
  local bhost, bport = opts.bind, nil
  if type(bhost) == "table" then bhost, bport = bhost[1], bhost[2] end
  for _, a in ipairs(addrs) do
    local s
    s, err, code = M.tcp(a.family)
    if s then
      local ok = true
      if bhost ~= nil or bport ~= nil then ok, err, code = guarded(s, "bind", bhost, bport or 0) end
      if ok then
        s:settimeout(remaining(deadline))
        ok, err, code = guarded(s, "connect", a.host, a.port)
      end
      if ok then
        s:settimeout(nil)
        return s
      end
      s:close()
      if err == "timeout" then break end
    end
  end
  return nil, err, code
end

--- socket.listen(host, port [, {backlog=, reuseaddr=true, reuseport=false, family=}])
--- -> server socket | nil, err, code. host nil, "*" or "" listens on every address of the
--- family ("inet" unless family="inet6"); port 0 picks a free port (see getsockname).
function M.listen(host, port, opts)
  opts = check_opts(opts, "listen")
  check_family(opts, "listen")
  if host ~= nil and type(host) ~= "string" then
    error(("bad argument #1 to 'listen' (string or nil expected, got %s)"):format(type(host)), 2)
  end
  if port ~= nil and type(port) ~= "number" and type(port) ~= "string" then
    error(("bad argument #2 to 'listen' (port expected, got %s)"):format(type(port)), 2)
  end
  check_port(port, 2, "listen")
  local backlog = opts.backlog
  if backlog ~= nil and (math.type(backlog) ~= "integer" or backlog < 0 or backlog > 65535) then
    error("bad argument #3 to 'listen' (option backlog must be an integer 0..65535)", 2)
  end
  for _, name in ipairs { "reuseaddr", "reuseport" } do
    if opts[name] ~= nil and type(opts[name]) ~= "boolean" then
      error(("bad argument #3 to 'listen' (option %s must be a boolean)"):format(name), 2)
    end
  end
  if host == nil or host == "" or host == "*" then
    host = opts.family == "inet6" and "::" or "0.0.0.0"
  end
  local addrs, err, code = M.getaddrinfo(host, port or 0, { family = opts.family, type = "stream",
                                                           passive = true })
  if not addrs then return nil, err, code end
  for _, a in ipairs(addrs) do
    local s
    s, err, code = M.tcp(a.family)
    if s then
      local ok = true
      if opts.reuseaddr ~= false then ok, err, code = s:setoption("reuseaddr", true) end
      if ok and opts.reuseport then ok, err, code = s:setoption("reuseport", true) end
      if ok then ok, err, code = s:bind(a.host, a.port) end
      if ok then ok, err, code = s:listen(opts.backlog) end
      if ok then return s end
      s:close()
    end
  end
  return nil, err or "no address", code or "EAI_NODATA"
end

--- socket.unix_connect(path [, "stream"|"dgram"]) -> conn | nil, err, code
function M.unix_connect(path, type_)
  check_path(path, "unix_connect")
  local s, err, code = M.unix(type_ or "stream")
  if not s then return nil, err, code end
  return kept(s, guarded(s, "connect", path))
end

--- socket.unix_listen(path [, {type="stream"|"dgram", backlog=, unlink=false}])
--- -> socket | nil, err, code. A stream socket listens; a datagram socket is only bound.
--- unlink=true first removes a stale socket file at path (never any other kind of file).
function M.unix_listen(path, opts)
  check_path(path, "unix_listen")
  opts = check_opts(opts, "unix_listen")
  local s, err, code = M.unix(opts.type or "stream")
  if not s then return nil, err, code end
  local ok = true
  if opts.unlink then ok, err, code = M._unlink_socket(path) end
  if ok then ok, err, code = s:bind(path) end
  if ok and (opts.type or "stream") == "stream" then ok, err, code = s:listen(opts.backlog) end
  return kept(s, ok, err, code)
end

return M
