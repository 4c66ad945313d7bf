-- examples/e4_client_storm.lua — scenario E4: a storm of clients opening their connections at
-- once (each a strand task), each sending three messages and checking every reply, against a
-- selector echo server. Up to 4000 clients the server runs in this program (its selector loop
-- drives the event loop while the clients wait); beyond that, or with --split, it runs as a
-- second process, because both ends of 10000 connections need 20000 fds, the per-process limit.
-- Run: ./strand-run examples/e4_client_storm.lua [clients=1000] [--split] [--backend=epoll|poll]
--      ./strand-run examples/e4_client_storm.lua --server N [backend]     (the server process alone)
local strand = require "strand"
local socket = require "strand.socket"
local selector = require "strand.selector"
local sync = require "strand.sync"

local MESSAGES = { "it is the first message", "it is the second message",
                   "it is the third message" }

-- {==== the server: accept and echo until `n` connections have come and gone

local function serve(srv, n, backend, log)
  local sel = selector.new(backend)
  local out = {}                                   -- conn -> reply not fully sent yet
  local stats = { accepted = 0, closed = 0, echoed = 0, open = 0, most = 0, rounds = 0 }
  local function close(conn)
    sel:unregister(conn)
    out[conn] = nil
    conn:close()
    stats.closed, stats.open = stats.closed + 1, stats.open - 1
  end
  local function send(conn, data)
    local n_, err = conn:send(data)
    if n_ == #data then
      if out[conn] then out[conn] = nil; sel:modify(conn, selector.READ) end
    elseif n_ or err == "wouldblock" then
      if not out[conn] then sel:modify(conn, selector.WRITE) end
      out[conn] = data:sub((n_ or 0) + 1)
    else
      close(conn)
    end
  end
  srv:setblocking(false)
  sel:register(srv, selector.READ, "listen")
  while stats.closed < n do
    for key, mask in sel:select(30) do
      local s = key.fileobj
      if key.data == "listen" then
        while true do
          local conn = srv:accept()
          if not conn then break end
          conn:setblocking(false)
          sel:register(conn, selector.READ)
          stats.accepted, stats.open = stats.accepted + 1, stats.open + 1
          if stats.open > stats.most then stats.most = stats.open end
        end
      elseif mask & selector.WRITE ~= 0 then
        send(s, out[s])
      else
        local data, err = s:recv(4096)
        if data then
          stats.echoed = stats.echoed + 1
          send(s, data)
        elseif err ~= "wouldblock" then
          close(s)
        end
      end
    end
    stats.rounds = stats.rounds + 1
  end
  sel:unregister(srv)
  sel:close()
  log(("e4: server: accepted %d, echoed %d messages, at most %d connections open at once, %d select rounds")
    :format(stats.accepted, stats.echoed, stats.most, stats.rounds))
  return stats
end

-- }====

-- {==== the clients

local function storm(port, n)
  local connected, failures = 0, 0
  local all_open, all_done = sync.event(), sync.event()
  local replies = { 0, 0, 0 }
  local finished = 0
  local t0 = strand.now()
  local t_open
  local function client(id)
    local c, err = socket.connect("127.0.0.1", port, { timeout = 60 })
    connected = connected + 1
    if connected == n then t_open = strand.now(); all_open:set() end
    if not c then failures = failures + 1; error("connect: " .. tostring(err)) end
    c:settimeout(60)
    all_open:wait()                                -- every connection is open: now talk
    for i, msg in ipairs(MESSAGES) do
      local m = ("%s from client %d"):format(msg, id)
      assert(c:sendall(m))
      if c:read(#m) == m then replies[i] = replies[i] + 1 end
    end
    finished = finished + 1
    if finished == n then all_done:set() end
    all_done:wait()                                -- all still open until everyone is done
    c:close()
  end
  local tasks = {}
  for id = 1, n do tasks[id] = strand.spawn(client, id) end
  return tasks, function()
    for _, t in ipairs(tasks) do t:join() end
    print(("e4: %d connections open at once after %.2f s (%d failed)")
      :format(n - failures, (t_open or strand.now()) - t0, failures))
    local total = 0
    for i = 1, #MESSAGES do
      print(("e4: message %d: %d/%d replies correct"):format(i, replies[i], n))
      total = total + replies[i]
    end
    return total == n * #MESSAGES, total
  end
end

-- }====

local args, opts = {}, { backend = "epoll" }
for _, a in ipairs(arg or {}) do
  local k, v = a:match("^%-%-(%w+)=?(.*)$")
  if k then opts[k] = v ~= "" and v or true else args[#args + 1] = a end
end

if opts.server then                                -- the server process of the split mode
  local n = assert(tonumber(args[1]), "--server N")
  local srv = assert(socket.listen("127.0.0.1", 0, { backlog = 4096 }))
  local _, port = srv:getsockname()
  io.stdout:write(("port %d\n"):format(port)); io.stdout:flush()
  serve(srv, n, args[2] or opts.backend, print)
  srv:close()
  os.exit(0)
end

local N = tonumber(args[1]) or 1000
local split = opts.split or N > 4000
local t0 = strand.now()
local ok, total
if not split then
  local srv = assert(socket.listen("127.0.0.1", 0, { backlog = 4096 }))
  local _, port = srv:getsockname()
  print(("e4: %d clients against an echo server using the %s selector, same process (127.0.0.1:%d)")
    :format(N, opts.backend, port))
  local _, finish = storm(port, N)
  serve(srv, N, opts.backend, print)               -- its select() runs the clients meanwhile
  srv:close()
  ok, total = finish()
else
  local script = arg and arg[0] or "examples/e4_client_storm.lua"
  local child = assert(io.popen(("lua5.4 %s --server %d %s"):format(script, N, opts.backend), "r"))
  local port = tonumber((child:read("l") or ""):match("^port (%d+)"))
  assert(port, "the server process did not start")
  print(("e4: %d clients against an echo server using the %s selector, another process (127.0.0.1:%d)")
    :format(N, opts.backend, port))
  local _, finish = storm(port, N)
  ok, total = finish()
  io.write(child:read("a"))                        -- the server's own report
  assert(child:close(), "the server process failed")
end
print(("e4: all %d replies correct: %s"):format(total, tostring(ok)))
print(("e4: done in %.2f s"):format(strand.now() - t0))
