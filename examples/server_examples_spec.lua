-- examples/server_examples_spec.lua — runs the server, LuaSocket-bridge and coroutine scenarios
-- (S4, S5, C1, C2, C3) as separate programs in a bounded smoke mode and checks what they printed.
local H = require "support.helper"

describe("server and bridge examples", function()
  it("S4: socketserver in task, thread, fork and prefork modes, TCP and UDP (argparse options)", function()
    local out = H.example("s4_socketserver.lua", "--mode all --udp --clients 3 --workers 2")
    local pats = { "s4: done" }
    for _, mode in ipairs { "task", "thread", "fork", "prefork" } do
      pats[#pats + 1] = ("s4 %s/tcp: 3/3 replies correct"):format(mode)
      pats[#pats + 1] = ("s4 %s/udp: 3/3 replies correct"):format(mode)
    end
    H.check_output(out, pats)
    -- a bad option is refused by argparse with its usage message
    local bad = H.example("s4_socketserver.lua", "--mode nope")
    assert.truthy(bad:find("argument for option '--mode' must be one of", 1, true), bad)
    assert.falsy(bad:find("exit:0\n$"))
  end)

  H.examples {
    { "S5: max_connections bounds the handlers; every client is served in turn", "s5_limited_server.lua",
      "12 3 0.05", {
      "s5: served 12/12 clients, 0 failed, none dropped",
      "s5: at most 3 handlers ran at once %(limit 3%)",
      "s5: done",
    } },
    { "C1: plain coroutine producer/consumer pairs inside tasks", "c1_coroutines.lua", "4", {
      'c1: consumer A consumed "A item 4"',
      "c1: consumer A got 4 items in order: true",
      "c1: consumer B got 4 items in order: true",
      "c1: queue hand%-over between tasks: sum 10 %(expected 10%)",
      "c1: done",
    } },
    { "C2: sleepers finish in deadline order and overlap", "c2_sleepers.lua", "0.1", {
      "c2: finish order 0, 1, 2; three sleepers took",
      "c2: 10 tasks sleeping 0.10 s took %d+%.%d+ s",
      "c2: done",
    } },
    { "C3: socket.http GETs sequentially, then in tasks", "c3_http_fetch.lua", "6 0.1", {
      "c3: sequential: 6 GETs in %d+%.%d+ s",
      "c3: in tasks: 6 GETs in %d+%.%d+ s %(6 ok%)",
      "c3: speedup %d+%.%dx",
      "c3: done",
    } },
  }
end)
