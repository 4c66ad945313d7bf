-- spec/activemem_spec.lua — what an active echo connection leaves to Lua's collector: one string
-- per message and nothing else (docs/internals.md "Active connections and the collector").
local H = require "support.helper"
local strand = require "strand"
local net = require "support.net"

-- The loop's own fds (epoll) exist before any leak check runs.
strand.run(function() end)

local MSG = ("m"):rep(64)

-- bench/echo_server_strand.lua's handler: recv then sendall until the peer closes.
local function handle(conn)
  while true do
    local data = conn:recv(65536)
    if not data then break end
    if not conn:sendall(data) then break end
  end
  conn:close()
end

-- n round trips of one 64-byte message on client c; sample(i) after each (may be nil).
local function trips(c, n, sample)
  for i = 1, n do
    assert(c:sendall(MSG))
    local got = 0
    while got < #MSG do
      local d = assert(c:recv(65536))
      got = got + #d
    end
    if sample then sample(i) end
  end
  return true
end

-- conns echo pairs (client, server task); returns the clients.
local function pairs_of(conns)
  local clients = {}
  for i = 1, conns do
    local c, a = net.tcp_pair()
    strand.spawn(handle, a)
    clients[i] = c
  end
  return clients
end

-- every client does n round trips at once (each in its own task); bounded by H.TIMEOUT
local function all_trips(clients, n, sample)
  local g = strand.group()
  for _, c in ipairs(clients) do g:spawn(trips, c, n, sample) end
  assert(g:wait(H.TIMEOUT * 4))   -- a bound against hangs, not a speed goal
end

local function close_all(clients)
  for _, c in ipairs(clients) do c:close() end
  strand.sleep(0)                 -- the server tasks see EOF and finish
end

describe("active echo connections and the collector", function()
  it("an echo round trip allocates two message strings of Lua heap and nothing else",
      H.checked(function()
    -- client and server each make one 64-byte string per message (24-byte header + NUL: 89 B,
    -- as Lua counts); anything strand allocated per recv, send or wait would show here
    local conns, n = 50, H.work(40, 10)
    H.run(function()
      local clients = pairs_of(conns)
      all_trips(clients, 5)           -- warm up: buffers, event arrays, call frames all exist
      collectgarbage(); collectgarbage()
      collectgarbage("stop")
      local ok, err = pcall(function()
        local h0 = collectgarbage("count")
        all_trips(clients, n)
        local per = (collectgarbage("count") - h0) * 1024 / (conns * n)
        -- plus the group's tasks (~1.6 KB a client, spread over its n round trips) and less
        -- slack than the smallest Lua object a recv or send could add (a table is 56 B)
        assert.is_true(per >= 2 * 89 and per < 2 * 89 + 2000 / n + 24,
          ("%.1f bytes of Lua heap per round trip"):format(per))
      end)
      collectgarbage("restart")
      close_all(clients)
      assert(ok, err)
    end)
  end))
end)
