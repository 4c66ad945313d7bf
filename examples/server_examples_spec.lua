-- examples/server_examples_spec.lua — runs the server, LuaSocket-bridge and coroutine scenarios
-- (S4, S5, C1, C2, C3) as separate programs in a bounded smoke mode and checks what they printed.
local H = require "support.helper"
local function run(script, args) return H.example(script, args) end
local check = H.check_output

describe("server and bridge examples", function()
  it("C3: socket.http GETs sequentially, then in tasks", function()
    check(run("c3_http_fetch.lua", "6 0.1"), {
      "c3: sequential: 6 GETs in %d+%.%d+ s",
      "c3: in tasks: 6 GETs in %d+%.%d+ s %(6 ok%)",
      "c3: speedup %d+%.%dx",
      "c3: done",
    })
  end)
end)
