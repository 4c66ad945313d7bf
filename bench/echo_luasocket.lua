-- bench/echo_luasocket.lua — the LuaSocket peer of bench/echo.sh: the classic socket.select
-- loop (select(2): at most FD_SETSIZE = 1024 descriptors, so 1000 connections but not 10000),
-- non-blocking sockets, one receive and one send per message. Prints "PORT n".
-- usage: lua5.4 bench/echo_luasocket.lua [PORT]
local socket = require "socket"

local srv = assert(socket.bind("127.0.0.1", tonumber(arg[1]) or 0, 4096))
srv:settimeout(0)
local _, port = srv:getsockname()
print("PORT " .. port)
io.stdout:flush()

local recvt, index = { srv }, { [srv] = 1 }

local function drop(c)
  local i, last = index[c], recvt[#recvt]
  recvt[i], index[last] = last, i
  recvt[#recvt], index[c] = nil, nil
  c:close()
end

while true do
  local ready = socket.select(recvt, nil)
  for _, s in ipairs(ready) do
    if s == srv then
      while true do
        local c = srv:accept()
        if not c then break end
        c:settimeout(0)
        c:setoption("tcp-nodelay", true)
        recvt[#recvt + 1] = c
        index[c] = #recvt
      end
    else
      local data, err, partial = s:receive(65536)
      data = data or partial
      if data and #data > 0 then
        local i = 1
        while i <= #data do                  -- small echoes fit the send buffer
          local sent, serr, last = s:send(data, i)
          if sent then i = sent + 1
          elseif serr == "timeout" then i = last + 1
          else drop(s); break end
        end
      elseif err == "closed" then
        drop(s)
      end
    end
  end
end
