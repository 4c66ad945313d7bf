-- bench/server_echo.lua — the strand.server side of bench/server_bench.sh: an echo handler served
-- in MODE ("task", "thread", "prefork") with WORKERS loops. Prints "PORT n", serves until killed.
-- WORK > 0 makes each message cost the server WORK iterations of Lua arithmetic before its echo
-- (a CPU-bound handler: what thread and prefork modes exist for).
-- PROTO "line" answers line by line (read "L", one sendall per line: a request/response protocol
-- such as a pipelined client meets), "raw" (the default) echoes whatever one recv returned.
-- usage: lua5.4 bench/server_echo.lua MODE [WORKERS [WORK [PROTO]]]
local server = require "strand.server"

local mode, workers, work = arg[1] or "task", tonumber(arg[2]) or 2, math.tointeger(tonumber(arg[3]) or 0)
local proto = arg[4] or "raw"
local line_handler = function(conn)
  conn:setoption("nodelay", true)        -- small answers go out at once (no Nagle wait for the ACK)
  while true do
    local l = conn:read("L")
    if not l or not conn:sendall(l) then break end
  end
end
local srv = assert(server.tcp { port = 0, mode = mode, workers = workers, backlog = 4096,
  handler = proto == "line" and line_handler or function(conn)
    while true do
      local data = conn:recv(65536)
      if not data then break end
      if work > 0 then
        local x = #data
        for i = 1, work do x = (x * 31 + i) % 2147483647 end
        if x < 0 then data = "" end        -- never true: keeps the loop's result used
      end
      if not conn:sendall(data) then break end
    end
  end })
require("strand").spawn(function()     -- PORT once every worker listens (SO_REUSEPORT sockets)
  srv:wait_ready(30)
  print("PORT " .. srv.port)
  io.stdout:flush()
end)
srv:serve_forever()
