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
    local p = io.popen(("cd / && LUA_PATH='%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua' LUA_CPATH='%s/lib/lua/5.4/?.so' lua5.4 -e 'local s = require \"strand\"; print(s.run(function() s.sleep(0) return \"installed ok\" end)); local ssh = require \"strand.ssh\"; print(package.searchpath(\"strand.sshcore\", package.cpath)); print(s.run(function() return ssh.connect { host = \"127.0.0.1\", port = 1, timeout = 5 } end))' 2>&1")
      :format(tree, tree, tree))
    local out = p:read("a"); p:close()
    -- luarocks pack: a binary rock of what was installed, written in a temporary directory
    local dir = os.tmpname(); os.remove(dir); assert(os.execute("mkdir " .. dir))
    p = io.popen(("cd %s && luarocks --lua-version=5.4 --tree %s pack strand 2>&1 && ls"):format(dir, tree))
    local packed = p:read("a"); p:close()
    os.execute("rm -rf " .. tree)
    assert.matches("installed ok", out)
    -- the SSH module is installed next to core.so and loads (with its libssh2) from the tree
    assert.matches("\n" .. tree:gsub("%p", "%%%0") .. "/lib/lua/5%.4/strand/sshcore%.so\n", out)
    assert.matches("\nnil\tconnection refused\tECONNREFUSED\n", out)
    assert.matches("\nstrand%-scm%-1%.[%w_-]+%.rock\n", packed)
    -- and a source rock: the rockspec with its public URL swapped for this checkout (committed
    -- files; no network here)
    local f = assert(io.open("rockspec/strand-scm-1.rockspec")); local spec = f:read("a"); f:close()
    local root = require("strand.core")._proc.getcwd()
    local local_spec, n = spec:gsub('url = "git%+https://github%.com/strand%-lua/strand%.git"',
                                    'url = "git+file://' .. root .. '"')
    assert.equal(1, n)
    f = assert(io.open(dir .. "/strand-scm-1.rockspec", "w")); f:write(local_spec); f:close()
    p = io.popen(("cd %s && luarocks --lua-version=5.4 pack strand-scm-1.rockspec 2>&1 && ls"):format(dir))
    packed = p:read("a"); p:close()
    os.execute("rm -rf " .. dir)
    assert.matches("\nstrand%-scm%-1%.src%.rock\n", packed)
  end)
end)
