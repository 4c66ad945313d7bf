-- examples/s4_socketserver.lua — scenario S4 (Python's socketserver): a handler serving each
-- connection in task, thread, fork and prefork modes, over TCP and UDP; options via argparse.
-- Run: ./strand-run examples/s4_socketserver.lua [--mode task|thread|fork|prefork|all] [--host H]
--      [--port P] [--workers N] [--clients N] [--udp] [--serve]   (--serve: serve until Ctrl-C)
local argparse = require "argparse"
local strand = require "strand"
local server = require "strand.server"
local process = require "strand.process"
local queue = require "strand.queue"

local parser = argparse("s4_socketserver", "socketserver in four modes")
parser:option("--host", "address to listen on", "127.0.0.1")
parser:option("--port", "port (0: any free port)", "0"):convert(tonumber)
parser:option("--mode", "task, thread, fork, prefork or all", "all")
  :choices { "task", "thread", "fork", "prefork", "all" }
parser:option("--workers", "threads or processes for thread/prefork", "2"):convert(tonumber)
parser:option("--clients", "clients per mode in the self-test", "4"):convert(tonumber)
parser:flag("--udp", "also run the UDP variant (uppercase echo)")
parser:flag("--serve", "serve TCP in the first mode until SIGINT/SIGTERM instead of the self-test")
local args = parser:parse()

-- The handler: like socketserver.StreamRequestHandler, one line in, one line out per round.
local function handle(conn, host, port)
  local who = require("strand.process").pid() .. "/" .. require("strand.thread").name()
  for line in conn:lines() do conn:write(("%s (served by %s)\n"):format(line:upper(), who)) end
end

-- Clients run in a process of their own: a server that forks (fork, prefork) hands its children
-- every descriptor it has, and a connection only ends once every copy of its client end is closed.
-- That process is forked once, at the start, before any server thread exists (a fork while other
-- threads run copies whatever lock one of them holds at that instant, held forever in the child),
-- and takes one job per server through a queue: the port, how many clients, TCP or UDP.
local jobs, answers = queue.new(), queue.new()

local function clients_main()
  local st, sk = require "strand", require "strand.socket"
  while true do
    local job = jobs:get()
    if job == "stop" then return end
    local port, n, udp = job.port, job.n, job.udp
    local ts, out = {}, {}
    for i = 1, n do
      ts[i] = st.spawn(function()
        if udp then
          local c <close> = assert(sk.udp())
          c:settimeout(10)
          assert(c:sendto("datagram " .. i, "127.0.0.1", port))
          return (c:recvfrom(200))
        end
        local c <close> = assert(sk.connect("127.0.0.1", port, { timeout = 10 }))
        c:settimeout(10)
        c:write("hello from client ", i, "\n")
        return c:read("l")
      end)
    end
    for i = 1, n do out[i] = select(2, ts[i]:join(20)) end
    answers:put(out)
  end
end

-- -> the n replies, or nil, "timeout"
local function run_clients(port, n, udp)
  jobs:put { port = port, n = n, udp = udp }
  return answers:get(30)
end

local modes = args.mode == "all" and { "task", "thread", "fork", "prefork" } or { args.mode }

if args.serve then
  local srv = assert(server.tcp { host = args.host, port = args.port, mode = modes[1],
                                  workers = args.workers, handler = handle })
  print(("s4: serving %s mode on %s:%d, Ctrl-C stops"):format(modes[1], args.host, srv.port))
  srv:serve_forever()
  print("s4: stopped")
  return
end

-- daemon: should this program fail half way, its client process is killed, not waited for
local clients = assert(process.new { fn = clients_main, daemon = true }:start())
for _, mode in ipairs(modes) do
  for _, proto in ipairs(args.udp and { "tcp", "udp" } or { "tcp" }) do
    local srv
    if proto == "tcp" then
      srv = assert(server.tcp { host = args.host, port = args.port, mode = mode,
                                workers = args.workers, handler = handle })
    else
      srv = assert(server.udp { host = args.host, port = args.port, mode = mode, workers = args.workers,
        handler = function(data, host, port, sock)
          local who = require("strand.process").pid() .. "/" .. require("strand.thread").name()
          sock:sendto(("%s (served by %s)"):format(data:upper(), who), host, port)
        end })
    end
    local replies
    strand.spawn(function()
      srv:wait_ready(10)                     -- every worker listening
      local out, err = run_clients(srv.port, args.clients, proto == "udp")
      if not out then print("s4: clients failed: " .. tostring(err)) end
      replies = out or {}
      srv:shutdown(2)
    end)
    srv:serve_forever()
    local good = 0
    for i = 1, args.clients do
      local r = replies[i] or "(none)"
      local want = proto == "udp" and ("DATAGRAM " .. i) or ("HELLO FROM CLIENT " .. i)
      if r:find(want, 1, true) == 1 then good = good + 1 end
      print(("s4 %s/%s: %s"):format(mode, proto, r))
    end
    print(("s4 %s/%s: %d/%d replies correct"):format(mode, proto, good, args.clients))
  end
end
jobs:put("stop")
assert(clients:join(30), "s4: the client process did not stop")
print("s4: done")
