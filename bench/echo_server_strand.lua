-- bench/echo_server_strand.lua — the strand side of bench/echo.sh: one task per connection,
-- recv then sendall until the peer closes. Prints "PORT n" then serves until killed.
-- usage: lua5.4 bench/echo_server_strand.lua [PORT [N]]   (N: exit once N connections closed,
-- for bench/echo_counts.sh; 0 or none: serve until killed)
local strand = require "strand"
local socket = require "strand.socket"

local srv = assert(socket.listen("127.0.0.1", tonumber(arg[1]) or 0, { backlog = 4096 }))
local _, port = srv:getsockname()
print("PORT " .. port)
io.stdout:flush()

local exit_after, closed = tonumber(arg[2]) or 0, 0

local function handle(conn)
  while true do
    local data = conn:recv(65536)
    if not data then break end
    if not conn:sendall(data) then break end
  end
  conn:close()
  closed = closed + 1
  if closed == exit_after then os.exit(0) end
end

strand.run(function()
  while true do
    local conn = srv:accept()
    if conn then strand.spawn(handle, conn) end
  end
end)
