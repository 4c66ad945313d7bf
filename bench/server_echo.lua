-- bench/server_echo.lua — the strand.server side of bench/server_bench.sh: an echo handler served
-- in MODE ("task", "thread", "prefork") with WORKERS loops. Prints "PORT n", serves until killed.
-- usage: lua5.4 bench/server_echo.lua MODE [WORKERS]
local server = require "strand.server"

local mode, workers = arg[1] or "task", tonumber(arg[2]) or 2
local srv = assert(server.tcp { port = 0, mode = mode, workers = workers, backlog = 4096,
  handler = function(conn)
    while true do
      local data = conn:recv(65536)
      if not data or not conn:sendall(data) then break end
    end
  end })
require("strand").spawn(function()     -- PORT once every worker listens (SO_REUSEPORT sockets)
  srv:wait_ready(30)
  print("PORT " .. srv.port)
  io.stdout:flush()
end)
srv:serve_forever()
