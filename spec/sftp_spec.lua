-- spec/sftp_spec.lua — strand.ssh SFTP against a private sshd: get/put (byte-identical, resume,
-- progress), remote files, directories and path operations; then the failure conditions.
local H = require "support.helper"
local sshd = require "support.sshd"
local strand = require "strand"
local ssh = require "strand.ssh"

strand.run(function() end)   -- the loop's own fds exist before any leak check

local read_file, write_file, tmpname = sshd.read_file, sshd.write_file, sshd.tmpname

local function bytes(n, seed)
  local t, x = {}, seed or 7
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    t[i] = string.char(x % 256)
  end
  return table.concat(t)
end

describe("strand.ssh sftp", function()
  local srv, s, sftp, data
  setup(function()
    srv = sshd.start()
    data = bytes(300000):rep(10)      -- 3 MB
  end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function()
    s = assert(ssh.connect(srv:opts()))
    sftp = assert(s:sftp())
  end)
  after_each(function()
    sftp:close()
    s:close()
  end)
  H.guard()

  it("put then get: byte-identical, with progress up to the total", function()
    local src, back = tmpname(), tmpname()
    write_file(src, data)
    local seen = {}
    local n = assert(sftp:put(src, srv.data .. "/f.bin", { progress = function(done, total)
      seen[#seen + 1] = { done, total }
    end }))
    assert.equal(#data, n)
    assert.same({ 0, #data }, seen[1])
    assert.same({ #data, #data }, seen[#seen])
    for i = 2, #seen do assert.is_true(seen[i][1] >= seen[i - 1][1]) end
    assert.equal(#data, sftp:stat(srv.data .. "/f.bin").size)
    local last
    assert.equal(#data, sftp:get(srv.data .. "/f.bin", back, { progress = function(d, t) last = { d, t } end }))
    assert.same({ #data, #data }, last)
    assert.equal(data, read_file(back))
    os.remove(src); os.remove(back)
  end)

  it("put and get of sizes at every edge of the copy loops' buffers and requests", function()
    -- 30000: libssh2's request size; 512 KiB: what put keeps in flight against OpenSSH;
    -- 1 MiB: the copy buffers (put's slides at half of it)
    local src, back = tmpname(), tmpname()
    for _, n in ipairs { 0, 1, 29999, 30001, 524287, 524289, 1048575, 1048577, 2 * 1048576 + 3 } do
      local d = data:rep(2):sub(1, n)
      write_file(src, d)
      assert.equal(n, sftp:put(src, srv.data .. "/edge.bin"))
      assert.equal(n, sftp:stat(srv.data .. "/edge.bin").size)
      assert.equal(d, read_file(srv.data .. "/edge.bin"), "put of " .. n .. " bytes")
      assert.equal(n, sftp:get(srv.data .. "/edge.bin", back))
      assert.equal(d, read_file(back), "get of " .. n .. " bytes")
    end
    os.remove(src); os.remove(back)
  end)

  it("get and put resume from what the other side already holds (H3)", function()
    local src, part = tmpname(), tmpname()
    write_file(src, data)
    assert(sftp:put(src, srv.data .. "/r.bin"))
    -- an interrupted download: the first 1,000,001 bytes are here
    write_file(part, data:sub(1, 1000001))
    local first
    assert.equal(#data, sftp:get(srv.data .. "/r.bin", part, { resume = true,
      progress = function(d) first = first or d end }))
    assert.equal(1000001, first)
    assert.equal(data, read_file(part))
    -- an interrupted upload: the server has the first 777 bytes
    local f = assert(sftp:open(srv.data .. "/u.bin", "w"))
    assert(f:write(data:sub(1, 777)))
    f:close()
    assert.equal(#data, sftp:put(src, srv.data .. "/u.bin", { resume = true }))
    assert.equal(data, read_file(srv.data .. "/u.bin"))
    -- resume with nothing there yet is a whole transfer
    os.remove(part)
    assert.equal(#data, sftp:get(srv.data .. "/r.bin", part, { resume = true }))
    assert.equal(data, read_file(part))
    os.remove(src); os.remove(part)
  end)

  it("remote files: write, read, seek, stat, like Lua files", function()
    H.run(function()
      local f = assert(sftp:open(srv.data .. "/rw.txt", "w", 384))
      assert.equal(f, f:write("hello "))
      f:write("remote world")
      assert.equal(18, f:stat().size)
      f:close()
      f = assert(sftp:open(srv.data .. "/rw.txt"))
      assert.equal("hello", f:read(5))
      assert.equal(5, f:seek())
      assert.equal(13, f:seek("end", -5))
      assert.equal("world", f:read(100))
      assert.is_nil(f:read(1))
      assert.equal(0, f:seek("set"))
      assert.equal("hello remote world", f:read(1000))
      local st = f:stat()
      assert.equal("file", st.type)
      assert.equal(384, st.mode)
      f:close()
      local a = assert(sftp:open(srv.data .. "/rw.txt", "a"))
      a:write("!")
      a:close()
      assert.equal("hello remote world!", read_file(srv.data .. "/rw.txt"))
    end)
  end)

  it("list, stat, lstat, mkdir, rmdir, remove, rename, symlink, readlink, realpath, chmod", function()
    local d = srv.data .. "/tree"
    assert.is_true(sftp:mkdir(d))
    assert.equal("dir", sftp:stat(d).type)
    assert.equal(493, sftp:stat(d).mode)
    assert(sftp:mkdir(d .. "/sub", 448))
    assert.equal(448, sftp:stat(d .. "/sub").mode)
    local f = assert(sftp:open(d .. "/a.txt", "w"))
    f:write("abc")
    f:close()
    assert.is_true(sftp:rename(d .. "/a.txt", d .. "/b.txt"))
    assert.is_true(sftp:symlink(d .. "/b.txt", d .. "/link"))
    assert.equal(d .. "/b.txt", sftp:readlink(d .. "/link"))
    assert.equal("link", sftp:lstat(d .. "/link").type)
    assert.equal("file", sftp:stat(d .. "/link").type)
    assert.is_true(sftp:chmod(d .. "/b.txt", 384))
    assert.equal(384, sftp:stat(d .. "/b.txt").mode)
    local names = {}
    for _, e in ipairs(assert(sftp:list(d))) do names[#names + 1] = e.name .. ":" .. e.type end
    assert.same({ "b.txt:file", "link:link", "sub:dir" }, names)
    assert.equal(3, sftp:list(d)[1].size)
    assert.equal("/home/" .. srv.user, sftp:realpath("."))
    assert.is_true(sftp:remove(d .. "/link"))
    assert.is_true(sftp:remove(d .. "/b.txt"))
    assert.is_true(sftp:rmdir(d .. "/sub"))
    assert.is_true(sftp:rmdir(d))
    assert.is_nil(sftp:stat(d))
  end)

  it("many transfers at once on one session, from tasks", function()
    local src = tmpname()
    write_file(src, data:sub(1, 500000))
    H.run(function()
      local ts = {}
      for i = 1, 4 do
        ts[i] = strand.spawn(function()
          local sf = assert(s:sftp())
          assert(sf:put(src, srv.data .. "/par" .. i))
          local back = tmpname()
          assert(sf:get(srv.data .. "/par" .. i, back))
          local ok = read_file(back) == data:sub(1, 500000)
          os.remove(back)
          sf:close()
          return ok
        end)
      end
      for i = 1, 4 do assert.is_true(ts[i]:result()) end
    end)
    os.remove(src)
  end)

  it("tasks sharing one sftp object: transfers, files and path operations interleave safely", function()
    local src = tmpname()
    write_file(src, data:sub(1, 700000))
    H.run(function()
      local ts = {}
      for i = 1, 4 do
        ts[i] = strand.spawn(function()
          local p = srv.data .. "/shared" .. i
          assert(sftp:put(src, p))
          assert.equal(700000, sftp:stat(p).size)
          local f = assert(sftp:open(p))
          f:seek("set", 1000 * i)
          local chunk = f:read(5000)
          f:close()
          local back = tmpname()
          assert(sftp:get(p, back))
          local ok = read_file(back) == data:sub(1, 700000) and chunk == data:sub(1000 * i + 1, 1000 * i + 5000)
          os.remove(back)
          assert(sftp:remove(p))
          return ok
        end)
      end
      for i = 1, 4 do assert.is_true(ts[i]:result()) end
    end)
    os.remove(src)
  end)

  describe("failure conditions", function()
    it("missing files and directories: nil, message, code", function()
      local back = tmpname()
      local n, err, code = sftp:get(srv.data .. "/nope", back)
      assert.is_nil(n)
      assert.equal("no such file", err)
      assert.equal("ENOENT", code)
      assert.is_nil(read_file(back))
      assert.same({ nil, "no such file", "ENOENT" }, { sftp:remove(srv.data .. "/nope") })
      assert.same({ nil, "no such file", "ENOENT" }, { sftp:stat(srv.data .. "/nope") })
      assert.is_nil((sftp:list(srv.data .. "/nope")))
      assert.is_nil((sftp:open(srv.data .. "/nope/x", "w")))
      assert(sftp:mkdir(srv.data .. "/twice"))
      local ok, e2 = sftp:mkdir(srv.data .. "/twice")
      assert.is_nil(ok)
      assert.truthy(e2)
      sftp:rmdir(srv.data .. "/twice")
      local p, e3 = sftp:put("/nonexistent/local", srv.data .. "/x")
      assert.is_nil(p)
      assert.truthy(e3)
    end)

    it("resume refuses a local file longer than the remote one", function()
      local part = tmpname()
      local f = assert(sftp:open(srv.data .. "/short", "w"))
      f:write("abc")
      f:close()
      write_file(part, "abcdef")
      local n, err = sftp:get(srv.data .. "/short", part, { resume = true })
      assert.is_nil(n)
      assert.matches("larger", err)
      os.remove(part)
    end)

    it("closed files, a closed sftp and a closed session raise on use", function()
      local f = assert(sftp:open(srv.data .. "/c.txt", "w"))
      f:close()
      assert.is_true(f:close())
      assert.has_error(function() f:write("x") end, "attempt to use a closed sftp file")
      local f2 = assert(sftp:open(srv.data .. "/c2.txt", "w"))
      s:close()
      assert.has_error(function() f2:write("x") end)
      assert.has_error(function() sftp:stat("/") end)
      s = assert(ssh.connect(srv:opts()))
      sftp = assert(s:sftp())
    end)

    it("bad arguments raise naming the function", function()
      assert.has_error(function() sftp:get(1, "x") end, "bad argument #1 to 'get' (string expected, got number)")
      assert.has_error(function() sftp:put("x", "y", { progress = 1 }) end, "bad argument #3 to 'put' (progress must be a function)")
      assert.has_error(function() sftp:open("/x", "q") end)
      assert.has_error(function() sftp:list(nil) end)
    end)
  end)
end)
