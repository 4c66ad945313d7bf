-- What a newcomer meets first (issue 10, item 7): the documented command of every example
-- works after `make` from any directory, the rockspec names the public repository, and
-- `make test` says it fuzzes first.
local H = require "support.helper"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"exit:$?\"")
  local out = p:read("a")
  p:close()
  return out
end

local ROOT = require("strand.core")._proc.getcwd()
local BUILD = os.getenv("STRAND_TEST_BUILD") or "build"

describe("a newcomer", function()
  it("runs an example with its documented command (./strand-run), from any directory", function()
    local out = sh(("cd /tmp && env -u LUA_PATH -u LUA_CPATH STRAND_BUILD=%s/%s timeout -k 2 60 %s/strand-run %s/examples/s1_echo.lua")
      :format(ROOT, BUILD, ROOT, ROOT))
    assert.matches("s1: done\nexit:0\n$", out)
    out = sh(("cd %s && env -u LUA_PATH -u LUA_CPATH STRAND_BUILD=%s ./strand-run -e 'print(type(require(\"strand\").run))'")
      :format(ROOT, BUILD))
    assert.equal("function\nexit:0\n", out)
    out = sh(("env -u LUA_PATH -u LUA_CPATH STRAND_BUILD=/nonexistent %s/strand-run -e 'print(1)'"):format(ROOT))
    assert.matches("strand%-run: /nonexistent/strand/core.so is missing: run make in .*\nexit:1\n$", out)
  end)

  it("finds that command in every example's header", function()
    local p = io.popen("ls examples/*.lua")
    local n = 0
    for f in p:lines() do
      -- ssh_target.lua is a module the SSH examples require, not an example
      if not f:match("_spec%.lua$") and not f:match("demo") and not f:match("ssh_target") then
        local h = io.open(f); local head = h:read(1200); h:close()
        assert.is_nil(head:find("lua5.4 examples/", 1, true), f .. " still says lua5.4 examples/")
        assert.truthy(head:find("./strand-run " .. f, 1, true), f .. " has no ./strand-run line")
        n = n + 1
      end
    end
    p:close()
    assert.is_true(n >= 15)
  end)

  it("gets a rockspec whose source is the public repository", function()
    local f = io.open("rockspec/strand-scm-1.rockspec"); local text = f:read("a"); f:close()
    local url = text:match('url%s*=%s*"([^"]*)"')
    assert.equal("git+https://github.com/strand-lua/strand.git", url)
    assert.is_nil(text:find("file://", 1, true))
  end)

  it("is told that make test fuzzes first, before it does", function()
    local out = sh("make -n test")
    local notice = out:find("make test fuzzes first: %$%$n libFuzzer targets for")
      or out:find("make test fuzzes first", 1, true)
    local fuzz = out:find("fuzz.sh smoke", 1, true)
    assert.truthy(notice, out)
    assert.truthy(fuzz, out)
    assert.is_true(notice < fuzz)
  end)
end)
