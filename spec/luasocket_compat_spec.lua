-- spec/luasocket_compat_spec.lua — strand.luasocket against the real LuaSocket (Debian's
-- lua-socket): the same probe script (spec/support/luasocket_probe.lua) must print the same lines.
local H = require "support.helper"

local function probe(mode)
  local p = io.popen(("LUA_PATH=%q LUA_CPATH=%q timeout -k 2 60 lua5.4 spec/support/luasocket_probe.lua %s 2>&1; echo \"exit:$?\"")
    :format(package.path, package.cpath, mode))
  local out = p:read("a")
  p:close()
  return out
end

describe("strand.luasocket compared with the real LuaSocket", function()
  it("prints exactly what the real module prints, method by method", function()
    if not pcall(require, "socket.core") then pending("lua-socket is not installed") return end
    local real, bridge = probe("real"), probe("bridge")
    assert.truthy(real:find("exit:0\n$"), real)
    assert.truthy(bridge:find("exit:0\n$"), bridge)
    local rl, bl = {}, {}
    for l in real:gmatch("[^\n]+") do rl[#rl + 1] = l end
    for l in bridge:gmatch("[^\n]+") do bl[#bl + 1] = l end
    assert.is_true(#rl > 100)
    for i = 1, math.max(#rl, #bl) do
      assert.equal(rl[i], bl[i], ("line %d differs"):format(i))
    end
  end)
end)
