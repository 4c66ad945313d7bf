-- spec/sshmodule_spec.lua — the SSH area is its own module (strand/sshcore.so, the only one linked
-- with libssh2): a program that never requires strand.ssh maps neither libssh2 nor libcrypto; the
-- module loaded in a thread, in a forked child, kept after its last state closes; the ABI check.
local H = require "support.helper"
local sshd = require "support.sshd"
local strand = require "strand"
local process = require "strand.process"

strand.run(function() end)   -- the loop's own fds exist before any leak check

local BUILD = os.getenv("STRAND_TEST_BUILD") or "build"

-- Lua source of a function mapped() -> "core libssh2 ..." naming which of these files the
-- process has mapped (read from /proc/self/maps), in this order.
local MAPPED = [=[
local function mapped()
  local names = { { "core", "/strand/core%.so" }, { "sshcore", "/strand/sshcore%.so" },
                  { "libssh2", "/libssh2%.so" }, { "libcrypto", "/libcrypto%.so" },
                  { "libz", "/libz%.so" } }
  local seen = {}
  for line in io.lines("/proc/self/maps") do
    for _, n in ipairs(names) do if line:find(n[2]) then seen[n[1]] = true end end
  end
  local out = {}
  for _, n in ipairs(names) do if seen[n[1]] then out[#out + 1] = n[1] end end
  return table.concat(out, " ")
end
]=]

local function opts_source(o)
  return ("{ host = %q, port = %d, user = %q, key = %q, known_hosts = %q, timeout = %d }")
    :format(o.host, o.port, o.user, o.key, o.known_hosts, o.timeout)
end

describe("the ssh module (strand/sshcore.so)", function()
  local srv
  setup(function() srv = sshd.start() end)
  teardown(function() if srv then srv:stop() end end)
  H.guard()

  it("is not mapped by a program using sockets, threads and processes; require maps it", function()
    local out = H.lua(MAPPED .. [[
local strand = require "strand"
local socket = require "strand.socket"
local thread = require "strand.thread"
local process = require "strand.process"
strand.run(function()
  local a, b = assert(socket.pair())
  assert(a:send("x"))
  assert(b:recv(1) == "x")
  a:close(); b:close()
  assert(thread.start(function(x) return x + 1 end, 1):result(10) == 2)
  assert(process.start(function() return 3 end):result(10) == 3)
end)
print("before: " .. mapped())
local ssh = require "strand.ssh"
print("after: " .. mapped())
print("same table: " .. tostring(require("strand.core").ssh == package.loaded["strand.sshcore"]))
]])
    assert.matches("before: core\n", out, 1, true)
    assert.matches("after: core sshcore libssh2 libcrypto libz\n", out, 1, true)
    assert.matches("same table: true\n", out, 1, true)
  end)

  it("works in a thread of a program whose main state never loaded it, and stays mapped", function()
    local out = H.lua(MAPPED .. ([[
local thread = require "strand.thread"
local function use(o)
  local ssh = require "strand.ssh"
  local s = assert(ssh.connect(o))
  local r = assert(s:run("echo from a thread"))
  s:close()
  return r.stdout
end
local o = %s
io.write("first: ", thread.start(use, o):result(20))
print("main: " .. tostring(package.loaded["strand.ssh"]) .. " " .. mapped())
io.write("second: ", thread.start(use, o):result(20))
]]):format(opts_source(srv:opts())))
    assert.matches("first: from a thread\n", out, 1, true)
    -- the thread's state is closed (its dlclose done): the module is pinned, still mapped
    assert.matches("main: nil core sshcore libssh2 libcrypto libz\n", out, 1, true)
    assert.matches("second: from a thread\n", out, 1, true)
  end)

  it("loaded by a parent, works in its forked child; a child can load it itself", function()
    local use = function(o)
      local ssh = require "strand.ssh"
      local s = assert(ssh.connect(o))
      local r = assert(s:run("echo from a child"))
      s:close()
      return r.stdout
    end
    -- a child of a parent without ssh loads it itself
    assert.is_nil(package.loaded["strand.sshcore"])
    assert.equal("from a child\n", process.start(use, srv:opts()):result(H.TIMEOUT))
    assert.is_nil(package.loaded["strand.sshcore"])
    -- the parent loads it (and uses it), the child inherits the loaded module
    local ssh = require "strand.ssh"
    local s = assert(ssh.connect(srv:opts()))
    assert.equal("parent\n", s:run("echo parent").stdout)
    s:close()
    local p = process.start(function(o)
      assert(package.loaded["strand.sshcore"], "the child did not inherit the module")
      return use(o)
    end, srv:opts())
    assert.equal("from a child\n", p:result(H.TIMEOUT))
  end)

  it("a connect failure in a fresh program returns nil, message, code", function()
    local out = H.lua([[
local strand = require "strand"
local socket = require "strand.socket"
local ssh = require "strand.ssh"
local l = assert(socket.listen("127.0.0.1", 0))
local port = select(2, l:getsockname())
l:close()
print(strand.run(function() return ssh.connect { host = "127.0.0.1", port = port, timeout = 5 } end))
]])
    assert.matches("^nil\tconnection refused\tECONNREFUSED\n", out)
  end)

  it("refuses a core.so of another build, saying so", function()
    local dir = os.tmpname(); os.remove(dir)
    assert(os.execute("mkdir -p " .. dir .. "/strand"))
    local inc = io.popen("pkg-config --variable=includedir lua5.4 2>/dev/null"):read("l")
    inc = (inc and inc ~= "" and inc or "/usr/include") .. "/lua5.4"
    local objs = ("%s/obj/ssh.o %s/obj/sshchan.o %s/obj/sftp.o"):format(BUILD, BUILD, BUILD)
    local cmd = ("cc -std=gnu11 -fPIC -fvisibility=hidden -D_GNU_SOURCE -I%s -DSTRAND_ABI_SUM=12345UL "
      .. "-c -o %s/sshcore.o csrc/sshcore.c && cc -shared -o %s/strand/sshcore.so %s %s/sshcore.o "
      .. "$(pkg-config --libs libssh2 2>/dev/null || echo -lssh2) -lpthread 2>&1"):format(inc, dir, dir, objs, dir)
    local p = io.popen(cmd); local log = p:read("a"); local built = p:close()
    local out = built and H.lua([[
print(pcall(require, "strand.ssh"))
print(package.searchpath("strand.core", package.cpath))
]], ("LUA_CPATH='%s/?.so;%s/?.so'"):format(dir, BUILD))
    os.execute("rm -rf " .. dir)
    assert(built, log)
    assert.matches("false\t.*strand%.sshcore: built for another strand%.core %(ABI %d+/%d+, this "
                   .. "sshcore%.so wants %d+/12345%)", out)
    assert.matches("\n" .. BUILD:gsub("%p", "%%%0") .. "/strand/core%.so\n", out)
  end)
end)
