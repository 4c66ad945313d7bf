-- examples/demo_areas.lua — the per-area sections of `make demo` (see demo.lua): each one does
-- real work on loopback or between threads and prints what happened.
local areas = {}

local function add(name, module, run) areas[#areas + 1] = { name = name, module = module, run = run } end

add("sockets: a task-per-connection echo server and 200 concurrent clients", "strand.socket", function(strand)
  local socket = require "strand.socket"
  local srv = assert(socket.listen("127.0.0.1", 0))
  local _, port = srv:getsockname()
  local server = strand.spawn(function()
    while true do
      local conn = srv:accept()
      if not conn then return end
      strand.spawn(function()
        for line in conn:lines() do conn:write(line:upper(), "\n") end
        conn:close()
      end)
    end
  end)
  local t0, ok = strand.now(), 0
  local clients = {}
  for i = 1, 200 do
    clients[i] = strand.spawn(function()
      local c <close> = assert(socket.connect("127.0.0.1", port, { timeout = 5 }))
      for j = 1, 3 do
        c:write(("client %d message %d\n"):format(i, j))
        assert(c:read("l") == ("CLIENT %d MESSAGE %d"):format(i, j))
      end
      ok = ok + 1
    end)
  end
  strand.joinall(clients, 10)
  srv:close()
  server:join(1)
  print(("  200 clients x 3 round trips, every reply checked: %d ok in %.3f s"):format(ok, strand.now() - t0))
  local a, b = socket.pair()
  a:send_frame("framed message")
  print("  socket.pair + frames:", b:recv_frame())
  a:close(); b:close()
end)

add("selectors: Python-style selectors loop with callbacks as data", "strand.selector", function(strand)
  local selector = require "strand.selector"
  local socket = require "strand.socket"
  local sel <close> = selector.new()
  local a, b = socket.pair()
  a:setblocking(false); b:setblocking(false)
  sel:register(b, selector.READ, function(s) return s:recv(100) end)
  a:send("ready?")
  for key, mask in sel:select(1) do
    print(("  fd %d readable (mask %d): %s"):format(key.fd, mask, key.data(key.fileobj)))
  end
  a:send("again")
  local r, w = strand.select({ b }, { a }, {}, 1)
  print(("  strand.select: %d readable, %d writable"):format(#r, #w))
  a:close(); b:close()
end)

add("threads: 4 OS threads, each with its own Lua state, joined cooperatively", "strand.thread", function(strand)
  local thread = require "strand.thread"
  local t0 = strand.now()
  local ts = {}
  for i = 1, 4 do
    ts[i] = thread.start(function(n)
      require("strand").sleep(0.2)
      local x = 0
      for k = 1, 1e6 do x = x + k % n end
      return n, x
    end, i + 1)
  end
  for i = 1, 4 do
    local ok, n, x = ts[i]:join(10)
    print(("  %s -> n=%d sum=%d"):format(tostring(ok), n, x))
  end
  print(("  4 threads sleeping 0.2 s each took %.2f s"):format(strand.now() - t0))
end)

add("locks and queues across threads: 20 threads x 250 increments, a producer/consumer queue", "strand.sync", function(strand)
  local thread = require "strand.thread"
  local sync = require "strand.sync"
  local shared = require "strand.shared"
  local queue = require "strand.queue"
  local lock, d = sync.lock(), shared.dict()
  d.n = 0
  local ts = {}
  for i = 1, 20 do
    ts[i] = thread.start(function()
      for _ = 1, 250 do
        local held <close> = lock:acquire()
        d.n = d.n + 1
      end
    end)
  end
  for i = 1, 20 do assert(ts[i]:join(20)) end
  print(("  counter after 20 x 250 locked increments: %d (expected 5000)"):format(d.n))
  local q = queue.new(5)
  local producer = thread.start(function()
    for i = 1, 100 do q:put(i) end
    q:put("stop")
  end)
  local sum = 0
  while true do
    local v = q:get(10)
    if v == "stop" or v == nil then break end
    sum = sum + v
  end
  producer:join(10)
  print(("  consumer got 1..100 through a bounded queue(5): sum %d (expected 5050)"):format(sum))
end)

add("processes and pools: forked children, a pipe, a process pool surviving a kill -9", "strand.process", function(strand)
  local process = require "strand.process"
  local pool = require "strand.pool"
  local ps = {}
  for i = 1, 3 do ps[i] = process.start(function(n) return n * n, process.pid() end, i) end
  for i = 1, 3 do
    local sq, pid = ps[i]:result(10)
    print(("  child %d (pid %d) returned %d"):format(i, pid, sq))
  end
  local a, b = process.pipe()
  local echo = process.start(function() b:send(b:recv(10):upper()) end)
  a:send("through a pipe")
  print("  pipe round trip: " .. a:recv(10))
  echo:join(10); a:close(); b:close()
  local p <close> = pool.new{ size = 2 }
  print("  pool.map: " .. table.concat(p:map(function(x) return x * 10 end, { 1, 2, 3, 4 }), " "))
  local victim = p:submit(function() require("strand").sleep(30) end)
  while victim:status() ~= "running" do strand.sleep(0.005) end
  process.run({ "kill", "-9", tostring(p:pids()[1]) })
  print(("  worker killed: %s; next apply: %s"):format(select(2, victim:join(10)),
    p:apply(function() return "still serving" end)))
end)

add("server + LuaSocket bridge: a thread-mode server, socket.http GETs in tasks", "strand.server", function(strand)
  local server = require "strand.server"
  require("strand.luasocket").install()
  local http = require "socket.http"
  local srv = assert(server.tcp { mode = "thread", workers = 2, handler = function(conn)
    local path = conn:read("l"):match("^GET (%S+)")
    repeat local h = conn:read("l") until h == nil or h == ""
    require("strand").sleep(0.2)
    conn:write("HTTP/1.1 200 OK\r\nContent-Length: ", #path, "\r\nConnection: close\r\n\r\n", path)
  end })
  local runner = strand.spawn(function() srv:serve_forever() end)
  local t0, ts, ok = strand.now(), {}, 0
  for i = 1, 10 do
    ts[i] = strand.spawn(function() return http.request(("http://127.0.0.1:%d/%d"):format(srv.port, i)) end)
  end
  for i = 1, 10 do if select(2, ts[i]:join(10)) == "/" .. i then ok = ok + 1 end end
  print(("  10 socket.http GETs (each answered after 0.2 s by a 2-thread server): %d ok in %.2f s"):format(ok, strand.now() - t0))
  srv:shutdown(1)
  runner:join(5)
end)

add("ssh: a private sshd, 10 sessions running a command at once, an sftp round trip", "strand.ssh", function(strand)
  local ssh = require "strand.ssh"
  if not package.path:find("spec/?.lua", 1, true) then package.path = "spec/?.lua;" .. package.path end
  local ok, sshd = pcall(require, "support.sshd")
  if not ok then print("  (spec/support/sshd.lua not found: skipped)"); return end
  local srv = sshd.start()
  local done, err = pcall(function()
    local t0 = strand.now()
    local ts = {}
    for i = 1, 10 do
      ts[i] = strand.spawn(function()
        local s = assert(ssh.connect(srv:opts()))
        local out = s:run("echo session " .. i .. " on $(hostname)").stdout
        s:close()
        return out
      end)
    end
    local okn = 0
    for i = 1, 10 do if ts[i]:result(30):match("^session " .. i) then okn = okn + 1 end end
    print(("  10 sessions (connect, key auth, host key checked, run, close) from one thread: %d ok in %.2f s"):format(okn, strand.now() - t0))
    local s = assert(ssh.connect(srv:opts()))
    print("  host key " .. s:fingerprint())
    local sftp = assert(s:sftp())
    local src = os.tmpname()
    local f = io.open(src, "wb"); f:write(("strand"):rep(1e6)); f:close()
    assert(sftp:put(src, srv.data .. "/demo.bin"))
    assert(sftp:get(srv.data .. "/demo.bin", src .. ".back"))
    local g = io.open(src .. ".back", "rb"); local same = g:read("a") == ("strand"):rep(1e6); g:close()
    print(("  sftp put + get of 6 MB: identical=%s"):format(tostring(same)))
    os.remove(src); os.remove(src .. ".back")
    s:close()
  end)
  srv:stop()
  if not done then error(err, 0) end
end)

return areas
