-- bench/socket_idle_memory.lua — memory of idle connections: N connections (from
-- bench/echo_client -i in another process), each with a task blocked in conn:read("l"),
-- against N tasks blocked in strand.sleep (the coroutine and task alone). Prints bytes per
-- connection of the Lua heap (sockets and their state live there) and of the process RSS, for
-- each poller (the RSS beyond the heap is malloc's chunk overhead, ~96 B, and under io_uring the
-- socket's 64-byte slot).
-- usage: lua5.4 bench/socket_idle_memory.lua [N] [BUILD_DIR]   (env POLLERS="uring epoll")
local strand = require "strand"
local socket = require "strand.socket"

local N = tonumber(arg[1]) or 10000
local build = arg[2] or "build"

local function rss_kib()
  for line in io.lines("/proc/self/status") do
    local v = line:match("^VmRSS:%s+(%d+)")
    if v then return tonumber(v) end
  end
end

local function heap() collectgarbage(); collectgarbage(); return collectgarbage("count") end

-- One measurement per process (freed memory is reused, so RSS must start fresh).
local mode = arg[3]
if mode == nil then
  local function run(m, poller)
    local p = io.popen(("STRAND_POLLER=%s lua5.4 %s %d %s %s"):format(poller, arg[0], N, build, m))
    local h, r = p:read("n", "n")
    p:close()
    return h, r
  end
  print(("%d idle TCP connections, each with a task blocked in read(\"l\"):"):format(N))
  for poller in (os.getenv("POLLERS") or "uring epoll"):gmatch("%S+") do
    local th, tr = run("tasks", poller)
    local ch, cr = run("conns", poller)
    if not (ch and cr and th and tr) then print(poller .. ": failed"); os.exit(1) end
    print(("%s:"):format(poller))
    print(("  Lua heap per connection: %6.0f bytes  (the task alone: %.0f; the socket and its wait: %.0f)")
          :format(ch, th, ch - th))
    print(("  RSS per connection:      %6.0f bytes  (the task alone: %.0f; the socket and its wait: %.0f)")
          :format(cr, tr, cr - tr))
  end
  os.exit(0)
end

strand.run(function()
  local h0, r0 = heap(), rss_kib()
  local client
  if mode == "tasks" then
    for _ = 1, N do strand.spawn(strand.sleep, 1e6) end
  else
    local srv = assert(socket.listen("127.0.0.1", 0, { backlog = 4096 }))
    local _, port = srv:getsockname()
    local p = io.popen(("%s/bench/echo_client -i %d %d 60 >/dev/null & echo $!"):format(build, port, N))
    client = p:read("n")
    p:close()
    h0, r0 = heap(), rss_kib()
    local function handle(c) return c:read("l") end   -- one handler for all, as servers do
    for _ = 1, N do strand.spawn(handle, assert(srv:accept())) end   -- handles not kept
  end
  strand.sleep(0.2)
  local h1, r1 = heap(), rss_kib()
  print((h1 - h0) * 1024 / N, (r1 - r0) * 1024 / N)
  io.stdout:flush()
  if client then os.execute("kill " .. client) end
  os.exit(0)
end)
