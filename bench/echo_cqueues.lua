-- bench/echo_cqueues.lua — the cqueues peer of bench/echo.sh: one coroutine per connection,
-- read(-65536) (what is there, up to 64 KiB) then write, unbuffered. Prints "PORT n".
-- usage: lua5.4 bench/echo_cqueues.lua [PORT]
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local cq = cqueues.new()
local srv = socket.listen { host = "127.0.0.1", port = tonumber(arg[1]) or 0, backlog = 4096 }
srv:listen()
local _, _, port = srv:localname()
print("PORT " .. port)
io.stdout:flush()
cq:wrap(function()
  for conn in srv:clients() do
    cq:wrap(function()
      conn:setmode("b", "bn")
      pcall(function()                  -- a client that goes away resets: cqueues raises then
        while true do
          local data = conn:read(-65536)
          if not data then break end
          conn:write(data)
        end
      end)
      conn:close()
    end)
  end
end)
assert(cq:loop())
