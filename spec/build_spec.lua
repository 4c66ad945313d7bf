-- The rockspec builds and installs the same module into a local tree (what `luarocks make` users get).
local H = require "support.helper"

describe("packaging", function()
  it("luarocks make installs a working strand into a local tree", function()
    if os.execute("command -v luarocks >/dev/null 2>&1") ~= true then
      pending("luarocks is not installed")
      return
    end
    local tree = os.tmpname()
    os.remove(tree)
    local log = os.tmpname()
    local ok = os.execute(("luarocks --lua-version=5.4 --tree %s make rockspec/strand-scm-1.rockspec >%s 2>&1")
      :format(tree, log))
    local f = io.open(log); local text = f:read("a"); f:close(); os.remove(log)
    assert.is_true(ok == true, text)
    local p = io.popen(("cd / && LUA_PATH='%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua' LUA_CPATH='%s/lib/lua/5.4/?.so' lua5.4 -e 'local s = require \"strand\"; print(s.run(function() s.sleep(0) return \"installed ok\" end))' 2>&1")
      :format(tree, tree, tree))
    local out = p:read("a"); p:close()
    os.execute("rm -rf " .. tree)
    assert.matches("installed ok", out)
  end)
end)
