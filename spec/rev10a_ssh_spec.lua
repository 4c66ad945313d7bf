-- spec/rev10a_ssh_spec.lua — session 10's hostile review of strand.ssh from the user's side:
-- SFTP readlink/realpath/symlink answers.
-- Each case failed before its fix (the message of its `it` says how).
local H = require "support.helper"
local sshd = require "support.sshd"
local strand = require "strand"
local ssh = require "strand.ssh"

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
end)
