-- spec/rev10a_ssh_spec.lua — session 10's hostile review of strand.ssh from the user's side:
-- SFTP readlink/realpath/symlink answers, local-file failures of get/put/scp, scp_put's result,
-- why the server refused to open a channel.
-- Each case failed before its fix (the message of its `it` says how).
local H = require "support.helper"
local sshd = require "support.sshd"
local strand = require "strand"
local ssh = require "strand.ssh"
local socket = require "strand.socket"

strand.run(function() end)   -- the loop's own fds exist before any leak check

local read_file, write_file, tmpname = sshd.read_file, sshd.write_file, sshd.tmpname

describe("rev10a ssh", function()
  local srv, s
  setup(function() srv = sshd.start() end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() s = assert(ssh.connect(srv:opts())) end)
  after_each(function() s:close() end)
  H.guard()

  describe("sftp readlink, realpath, symlink (libssh2 1.10 reads a STATUS reply's request id as its code)", function()
    it("the first request of an sftp session refused: realpath and readlink gave \"\", symlink true", function()
      local sf = assert(s:sftp())
      assert.same({ nil, "no such file", "ENOENT" }, { sf:realpath(srv.data .. "/missing/x") })
      sf:close()
      sf = assert(s:sftp())
      assert.same({ nil, "no such file", "ENOENT" }, { sf:readlink(srv.data .. "/missing") })
      sf:close()
      write_file(srv.data .. "/exists", "x")
      sf = assert(s:sftp())
      assert.same({ nil, "file exists", "EEXIST" }, { sf:symlink("/etc/hosts", srv.data .. "/exists") })
      assert.equal("x", read_file(srv.data .. "/exists"))
      sf:close()
      sf = assert(s:sftp())
      local ok, err, code = sf:symlink("/etc/hosts", srv.data .. "/missing/l")
      assert.is_nil(ok)
      assert.equal("no such file", err)
      assert.equal("ENOENT", code)
      sf:close()
      os.remove(srv.data .. "/exists")
    end)

    it("later requests refused get the server's reason, not their request id read as a code", function()
      local sf = assert(s:sftp())
      write_file(srv.data .. "/plain", "p")
      for _ = 1, 3 do   -- request ids 1.., each a different wrong code before
        assert.is_table(sf:stat(srv.data))
        assert.same({ nil, "no such file", "ENOENT" }, { sf:realpath(srv.data .. "/missing/x") })
        assert.same({ nil, "no such file", "ENOENT" }, { sf:readlink(srv.data .. "/missing") })
        assert.same({ nil, "not a symbolic link", "EINVAL" }, { sf:readlink(srv.data .. "/plain") })
        assert.same({ nil, "file exists", "EEXIST" }, { sf:symlink("/etc/hosts", srv.data .. "/plain") })
      end
      sf:close()
      os.remove(srv.data .. "/plain")
    end)

    it("what succeeds still does: symlink then readlink, realpath, with a timeout", function()
      local sf = assert(s:sftp())
      local link = srv.data .. "/lnk"
      assert.is_true(sf:symlink("/etc/hosts", link, 10))
      assert.equal("/etc/hosts", sf:readlink(link, 10))
      assert.equal("/etc/hosts", sf:realpath(link, 10))
      assert.equal(srv.data, sf:realpath(srv.data .. "/./", 10))
      assert.is_true(sf:remove(link))
      assert.has_error(function() sf:readlink(5) end, "bad argument #1 to 'readlink' (string expected, got number)")
      assert.has_error(function() sf:symlink("a", {}) end, "bad argument #2 to 'symlink' (string expected, got table)")
      assert.has_error(function() sf:realpath("/", -1) end, "bad argument #2 to 'realpath' (timeout must be a number >= 0)")
      sf:close()
    end)
  end)

  describe("sftp:open exclusive", function()
    it("\"x\" alone creates as Python's does (it raised invalid mode); an existing file is EEXIST (it was \"failure\")", function()
      local sf = assert(s:sftp())
      local p = srv.data .. "/excl"
      local f = assert(sf:open(p, "x"))
      assert(f:write("one"))
      f:close()
      assert.equal("one", read_file(p))
      for _, mode in ipairs { "x", "wx", "w+x", "xb" } do
        assert.same({ nil, "file exists", "EEXIST" }, { sf:open(p, mode) })
      end
      assert.equal("one", read_file(p))
      assert.same({ nil, "no such file", "ENOENT" }, { sf:open(srv.data .. "/nodir/f", "x") })
      assert.has_error(function() sf:open(p, "xq") end, "bad argument #2 to 'open' (invalid mode)")
      sf:close()
      os.remove(p)
    end)
  end)

  describe("a request that timed out or was cancelled", function()
    -- OpenSSH's sftp server opens a FIFO for reading with open(2), which blocks it (and every
    -- request after) until a writer comes: a server that does not answer, on demand
    local function fifo(name)
      local p = srv.data .. "/" .. name
      assert(os.execute("LD_PRELOAD= mkfifo " .. p))
      return p
    end
    local function unblock(p)              -- the server waits as the reader: this open returns
      local w = assert(io.open(p, "w"))
      w:close()
    end

    it("does not hand its reply to the next call (open(b) opened a, stat(b) gave a's, mkdir made nothing)", function()
      local sf = assert(s:sftp())
      local a, b = srv.data .. "/ra", srv.data .. "/rb"
      write_file(a, ("a"):rep(111)); write_file(b, ("b"):rep(2222))
      local f1 = fifo("f1")
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { sf:open(f1, "r", nil, 0.3) })
      -- the server is still blocked: the next call says so instead of taking the old reply
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { sf:stat(b, 0.3) })
      unblock(f1)
      local f = assert(sf:open(b, "r", nil, 10))
      assert.equal(2222, #f:read(10000))
      f:close()
      assert.equal(2222, sf:stat(b, 10).size)
      -- cancelled (strand.timeout) rather than timed out: the same
      local f2 = fifo("f2")
      assert.same({ nil, "timeout" }, { strand.timeout(0.3, sf.open, sf, f2, "r") })
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { sf:mkdir(srv.data .. "/e1", nil, 0.3) })
      unblock(f2)
      assert.is_true(sf:mkdir(srv.data .. "/e2", nil, 10))
      assert.equal("dir", sf:stat(srv.data .. "/e2", 10).type)
      assert.equal(111, sf:stat(a, 10).size)
      sf:close()
      for _, n in ipairs { "ra", "rb", "f1", "f2" } do os.remove(srv.data .. "/" .. n) end
      os.execute("rmdir " .. srv.data .. "/e1 " .. srv.data .. "/e2 2>/dev/null")
    end)
  end)

  describe("remote files read then written", function()
    it("a write after a read on one handle lands where the read stopped (it looped for ever in C)", function()
      -- in a child process bounded by `timeout`: before the fix no strand timeout could end it
      local o = srv:opts()
      local out = H.lua(([[
        local ssh = require "strand.ssh"
        local strand = require "strand"
        local s = assert(ssh.connect { host = %q, port = %d, user = %q, key = %q, known_hosts = %q })
        local sf = assert(s:sftp())
        local p = %q
        local data = {}
        for i = 1, 200000 do data[i] = string.char(65 + i %% 26) end
        data = table.concat(data)
        local f = assert(sf:open(p, "w+"))
        assert(f:write(data))
        f:seek("set", 150000)
        assert(f:read(10) == data:sub(150001, 150010))
        print("write after read", strand.timeout(10, f.write, f, "MID") and "ok")
        print("position", f:seek())
        print("read after write", f:read(5) == data:sub(150014, 150018))
        f:seek("set", 0)
        assert(#f:read(300000) == 200000)   -- to the end, then write there
        print("write at the end", strand.timeout(10, f.write, f, "TAIL") and "ok")
        f:close()
        local g = assert(sf:open(p, "r"))
        local all = g:read(300000)
        g:close()
        print("content", all == data:sub(1, 150010) .. "MID" .. data:sub(150014) .. "TAIL")
        s:close()
      ]]):format(o.host, o.port, o.user, o.key, o.known_hosts, srv.data .. "/rw"), "timeout -k 5 60")
      assert.matches("write after read\tok\n", out)
      assert.matches("position\t150013\n", out)
      assert.matches("read after write\ttrue\n", out)
      assert.matches("write at the end\tok\n", out)
      assert.matches("content\ttrue\n", out)
      os.remove(srv.data .. "/rw")
    end)
  end)

  describe("local files of transfers", function()
    it("put of a local directory fails before the remote file is touched (it was truncated to 0)", function()
      local sf = assert(s:sftp())
      local remote = srv.data .. "/keep"
      write_file(remote, "precious")
      local n, err, code = sf:put(srv.dir, remote)
      assert.is_nil(n)
      assert.equal(srv.dir .. ": Is a directory", err)
      assert.equal("EISDIR", code)
      assert.equal("precious", read_file(remote))
      sf:close()
      os.remove(remote)
    end)

    it("local open failures carry their own code (get said EIO, put ENOENT, scp none)", function()
      local sf = assert(s:sftp())
      local n, err, code = sf:get("/etc/hostname", srv.dir)
      assert.is_nil(n); assert.equal(srv.dir .. ": Is a directory", err); assert.equal("EISDIR", code)
      n, err, code = sf:get("/etc/hostname", srv.dir .. "/no/such/dir/f")
      assert.is_nil(n); assert.matches("No such file or directory", err); assert.equal("ENOENT", code)
      n, err, code = s:scp_get("/etc/hostname", srv.dir)
      assert.is_nil(n); assert.equal(srv.dir .. ": Is a directory", err); assert.equal("EISDIR", code)
      n, err, code = s:scp_put(srv.dir .. "/no/such/file", srv.data .. "/x")
      assert.is_nil(n); assert.matches("No such file or directory", err); assert.equal("ENOENT", code)
      n, err, code = sf:put(srv.dir .. "/no/such/file", srv.data .. "/x")
      assert.is_nil(n); assert.matches("No such file or directory", err); assert.equal("ENOENT", code)
      sf:close()
    end)

    it("get and scp_get into a full disk fail (they returned the size: the bytes were lost)", function()
      local sf = assert(s:sftp())
      local src = srv.data .. "/small"
      write_file(src, "twelve bytes")          -- stays in stdio's buffer until the close
      local n, err, code = sf:get(src, "/dev/full")
      assert.is_nil(n); assert.equal("/dev/full: No space left on device", err); assert.equal("ENOSPC", code)
      n, err, code = s:scp_get(src, "/dev/full")
      assert.is_nil(n); assert.equal("/dev/full: No space left on device", err); assert.equal("ENOSPC", code)
      write_file(src, ("x"):rep(300000))       -- written through: every write fails
      n, err, code = s:scp_get(src, "/dev/full")
      assert.is_nil(n); assert.equal("/dev/full: No space left on device", err); assert.equal("ENOSPC", code)
      local back = tmpname()
      assert.equal(300000, sf:get(src, back))   -- the session and sftp go on
      sf:close()
      os.remove(src)
      os.remove(back)
    end)
  end)

  describe("modes", function()
    it("put and scp_put refuse a mode that is not 0..0o7777 (put took \"600\" as 600 and -1 as all bits)", function()
      local sf = assert(s:sftp())
      local src = tmpname()
      write_file(src, "m")
      for _, bad in ipairs { "600", 1.5 } do
        assert.has_error(function() sf:put(src, srv.data .. "/mm", { mode = bad }) end,
          "bad argument #3 to 'put' (mode must be an integer)")
        assert.has_error(function() s:scp_put(src, srv.data .. "/mm", bad) end,
          "bad argument #3 to 'scp_put' (integer expected)")
      end
      for _, bad in ipairs { -1, 4096 } do
        assert.has_error(function() sf:put(src, srv.data .. "/mm", { mode = bad }) end,
          "bad argument #3 to 'put' (mode must be 0..4095 (0o7777))")
        assert.has_error(function() s:scp_put(src, srv.data .. "/mm", bad) end,
          "bad argument #3 to 'scp_put' (mode must be 0..4095 (0o7777))")
      end
      assert.is_nil(sf:stat(srv.data .. "/mm"))
      assert.equal(1, sf:put(src, srv.data .. "/mm", { mode = 384 }))
      assert.equal(384, sf:stat(srv.data .. "/mm").mode)
      sf:close()
      os.remove(src)
      os.remove(srv.data .. "/mm")
    end)
  end)

  describe("scp_put", function()
    it("a remote write that fails is an error with the remote scp's reason (it returned the size)", function()
      local src = tmpname()
      write_file(src, ("y"):rep(200000))
      local n, err, code = s:scp_put(src, "/dev/full")
      assert.is_nil(n)
      assert.equal("scp: /dev/full: No space left on device", err)
      assert.equal("EREMOTE", code)
      -- copies that work still do (the remote scp now gets the protocol's closing \0 and exits 0)
      assert.equal(200000, s:scp_put(src, srv.data .. "/copy"))
      assert.equal(("y"):rep(200000), read_file(srv.data .. "/copy"))
      write_file(src, "")
      assert.equal(0, s:scp_put(src, srv.data .. "/copy"))
      assert.equal("", read_file(srv.data .. "/copy"))
      os.remove(src)
      os.remove(srv.data .. "/copy")
    end)
  end)
  describe("channels the server refuses to open", function()
    it("say so and why, as documented (every one was \"channel request refused\")", function()
      local l = assert(socket.listen("127.0.0.1", 0))
      local _, port = l:getsockname()
      l:close()                                  -- a port nobody listens on
      assert.same({ nil, "channel open refused (connect failed)", "ECHANNEL" }, { s:forward("127.0.0.1", port) })
      local tight = sshd.start { config = { "MaxSessions 1", "AllowTcpForwarding no" } }
      local ok, err = pcall(function()
        local t = assert(ssh.connect(tight:opts()))
        local ch = assert(t:exec("sleep 5"))
        assert.same({ nil, "channel open refused (connect failed)", "ECHANNEL" }, { t:exec("true") })
        assert.same({ nil, "channel open refused (connect failed)", "ECHANNEL" }, { t:run("true") })
        assert.same({ nil, "channel open refused (administratively prohibited)", "ECHANNEL" },
          { t:forward("127.0.0.1", tight.port) })
        ch:close()
        t:close()
      end)
      tight:stop()
      assert(ok, err)
    end)
  end)
  describe("run and expect", function()
    it("run ends when the command exits without reading all its stdin (it waited for ever)", function()
      local stdin = ("x"):rep(3 * 1024 * 1024)     -- more than the channel's window
      local ok, r = strand.timeout(30, s.run, s, "head -c 100 /dev/zero", { stdin = stdin })
      assert.is_true(ok)
      assert.equal(("\0"):rep(100), r.stdout)
      assert.equal(0, r.code)
      -- and with a timeout it neither waited for all of it nor called that a success
      ok, r = strand.timeout(30, s.run, s, "exit 4", { stdin = stdin, timeout = 25 })
      assert.is_true(ok)
      assert.equal(4, r.code)
      -- a command that reads it all still gets it all, EOF included
      r = assert(s:run("cat", { stdin = stdin, timeout = 60 }))
      assert.is_true(r.stdout == stdin)
      r = assert(s:run("exec >&-; wc -c >&2", { stdin = stdin, timeout = 60 }))
      assert.equal(tostring(#stdin) .. "\n", r.stderr)   -- all of it, read after closing stdout
    end)

    it("ch:write to a command that exited without reading fails \"channel closed\" (it waited for ever)", function()
      local ch = assert(s:exec("echo bye"))
      local ok, a, b, c = strand.timeout(30, ch.write, ch, ("x"):rep(3 * 1024 * 1024))
      assert.is_true(ok)
      assert.same({ nil, "channel closed", "ECLOSED" }, { a, b, c })
      assert.equal("bye\n", ch:read(100, 10))          -- what it said is still there
      assert.equal(0, ch:wait(10))
      ch:close()
      -- the same with another task reading meanwhile (the reader ends at EOF, the writer then)
      ch = assert(s:exec("sleep 0.2; echo bye"))
      local w = strand.spawn(function() return ch:write(("x"):rep(3 * 1024 * 1024)) end)
      assert.equal("bye\n", ch:read(100, 10))
      assert.same({ true, nil, "channel closed", "ECLOSED" }, { w:join(30) })
      ch:close()
    end)

    it("expect with a malformed pattern raises naming 'expect' at the caller (it pointed into ssh.lua)", function()
      local ch = assert(s:exec("echo hello"))
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() local r = ch:expect("[", 5); return r end)
      assert.is_false(ok)
      assert.equal(("spec/rev10a_ssh_spec.lua:%d: bad argument #1 to 'expect' (malformed pattern (missing ']'))"):format(line), err)
      assert.equal("hello", ch:expect("h%a+", 5))   -- the channel still works
      ch:close()
    end)
  end)
end)
