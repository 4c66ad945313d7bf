-- spec/review7_spec.lua — defects found reviewing session 7's changes (the child's carved blocks,
-- the spare result file, strand-made thread stacks, the SSH module): each case failed before its fix.
local process = require "strand.process"
local H = require "support.helper"

-- A program in a fresh lua5.4 (nothing loaded or pinned by earlier specs).
local function fresh(code, env)
  local out, ok = H.lua('package.path = "lua/?.lua;lua/?/init.lua;" .. package.path\n' .. code, env)
  assert.is_true(ok, out)
  return out
end

describe("review 7: process", function()
  H.guard()

  it("a child that closes its state (os.exit(n, true)) exits with n, not SIGSEGV", function()
    -- the child's allocator (carve_alloc) is core.so's code; closing the state unloads the C
    -- libraries before its last frees: core.so must stay mapped
    local out = fresh([[
      local process = require "strand.process"
      local p = process.start(function()
        local t = {}
        for i = 1, 5000 do t[i] = { i } end
        os.exit(5, true)
      end)
      local ok, err = p:join(30)
      print("exit " .. tostring(p.exitcode) .. " " .. tostring(err))
      local q = process.start(function() return "after" end)
      print("next " .. tostring(select(2, q:join(30))))
    ]])
    assert.matches("exit 5 process exited with code 5\n", out)
    assert.matches("next after\n", out)
  end)

  local function ended(p)
    assert.is_true(H.wait_until(function() return p.exitcode ~= nil end, H.TIMEOUT))
  end

  it("a child that joins a sibling (ended, not joined yet) leaves the parent its results", function()
    local p1 = process.start(function() return 42, "answer" end)
    ended(p1)                                       -- reaped by the parent, results not read yet
    local p2 = process.start(function() return p1:join(5) end)
    assert.same({ true, true, 42, "answer", n = 4 }, table.pack(p2:join(H.TIMEOUT)))
    assert.same({ true, 42, "answer", n = 3 }, table.pack(p1:join(H.TIMEOUT)))
  end)

  it("a child's copy of the parent's result file never becomes its spare (its children's results)", function()
    local p1 = process.start(function() end)        -- an empty result file
    ended(p1)
    local p2 = process.start(function()
      local strand = require "strand"
      local ok = p1:join(5)                          -- reads the parent's (empty) file
      local g = process.start(function() return "grandchild" end)
      local deadline = strand.now() + 10
      while g.exitcode == nil and strand.now() < deadline do strand.sleep(0.005) end
      return ok, g.exitcode                          -- its result left unread in its file
    end)
    assert.same({ true, true, 0, n = 3 }, table.pack(p2:join(H.TIMEOUT)))
    assert.same({ true, n = 1 }, table.pack(p1:join(H.TIMEOUT)))   -- not the grandchild's
    -- and the parent's next child gets an empty file
    assert.same({ true, n = 1 }, table.pack(process.start(function() end):join(H.TIMEOUT)))
  end)
end)

describe("review 7: threads", function()
  H.guard()
  local thread = require "strand.thread"
  local sync = require "strand.sync"

  it("a child forked while threads run, or from a thread, counts only itself", function()
    local go = sync.event()
    local t = thread.start(function(ev) assert(ev:wait(60)); return "done" end, go)
    local p = process.new{ allow_threads = true, fn = function()
      local th = require "strand.thread"
      return th.active_count(), (process.start(function() return "g" end):join(10))
    end }
    assert.is_truthy(p:start())
    local r = table.pack(p:join(H.TIMEOUT))
    go:set()
    assert.equal("done", t:result(H.TIMEOUT))
    assert.same({ true, 1, true, n = 3 }, r)
    -- forked from a strand thread (on a stack strand made): the child is that thread alone
    local u = thread.start(function()
      local pr = require "strand.process"
      local q = pr.new{ allow_threads = true, fn = function()
        local th = require "strand.thread"
        local n = th.active_count()
        local s = th.start(function(x) return x * 2 end, 21):result(10)
        return n, s, (pr.start(function() return "g" end):join(10))
      end }
      assert(q:start())
      return q:join(20)
    end)
    assert.same({ true, true, 1, 42, true, n = 5 }, table.pack(u:join(H.TIMEOUT)))
  end)
end)

describe("review 7: the ssh module", function()
  H.guard()

  it("require 'strand.sshcore' is the first thing a thread's state does: it binds to that core", function()
    local out = fresh([[
      local thread = require "strand.thread"
      local ts = {}
      for i = 1, 4 do
        ts[i] = thread.start(function()
          local ok, C = pcall(require, "strand.sshcore")
          return ok and type(C.session) or tostring(C)
        end)
      end
      for i = 1, 4 do print("thread " .. ts[i]:result(20)) end
      local C = require "strand.sshcore"
      print("main " .. type(C.session) .. " " .. tostring(rawequal(C, require("strand.core").ssh)))
    ]])
    assert.equal(("thread function\n"):rep(4) .. "main function true\n", out)
  end)

  it("a program that closes its Lua state and makes another uses ssh in both (core.so kept)", function()
    -- a C host: state 1 requires strand.sshcore and closes (package unloads core.so unless pinned), the
    -- places it was mapped at are filled, state 2 loads core.so (elsewhere if it was unloaded)
    local dir = os.tmpname(); os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local f = assert(io.open(dir .. "/host.c", "w"))
    f:write([=[
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <sys/mman.h>
static int run(const char *code) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  int r = luaL_dostring(L, code);
  if (r != LUA_OK) printf("error: %s\n", lua_tostring(L, -1));
  lua_close(L);
  return r;
}
int main(int argc, char **argv) {
  if (argc < 2 || run(argv[1]) != LUA_OK) return 1;
  for (int i = 0; i < 64; i++) (void)mmap(NULL, 1 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (run(argv[1]) != LUA_OK) return 1;
  printf("both\n");
  return 0;
}
]=])
    f:close()
    local inc = io.popen("pkg-config --variable=includedir lua5.4 2>/dev/null"):read("l")
    inc = (inc and inc ~= "" and inc or "/usr/include") .. "/lua5.4"
    local p = io.popen(("cc -o %s/host %s/host.c -I%s $(pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4) 2>&1")
      :format(dir, dir, inc))
    local log = p:read("a"); local built = p:close()
    local out = ""
    if built then
      local BUILD = os.getenv("STRAND_TEST_BUILD") or "build"
      local h = io.popen(("LUA_PATH='lua/?.lua;lua/?/init.lua' LUA_CPATH='%s/?.so' %s/host "
        .. "'print(type(require(\"strand.sshcore\").session))' 2>&1"):format(BUILD, dir))
      out = h:read("a"); h:close()
    end
    os.execute("rm -rf " .. dir)
    assert(built, log)
    assert.equal("function\nfunction\nboth\n", out)
  end)
end)
