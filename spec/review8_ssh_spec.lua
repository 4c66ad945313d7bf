-- spec/review8_ssh_spec.lua — defects found in session 8's hostile review of strand.ssh / SFTP,
-- against the private sshd the other SSH specs use: each case failed before its fix.
local H = require "support.helper"
local sshd = require "support.sshd"
local strand = require "strand"
local ssh = require "strand.ssh"

strand.run(function() end)   -- the loop's own fds exist before any leak check

describe("review 8: strand.ssh", function()
  local srv, s
  setup(function() srv = sshd.start() end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() s = assert(ssh.connect(srv:opts())) end)
  after_each(function() s:close() end)
  H.guard()

  it("failed opens (sftp file, directory, channel) that are collected leave no dangling child behind", function()
    -- a failed open kept its (dead) child in the session's list, and __gc skipped unlinking dead
    -- children: the freed userdata stayed linked and the next open/close wrote into it (ASan:
    -- heap-use-after-free in ssh_child_unlink; a plain build crashed or corrupted the heap)
    local sftp = assert(s:sftp())
    for i = 1, 40 do
      local f, err, code = sftp:open(srv.data .. "/missing-" .. i)
      assert.is_nil(f)
      assert.equal("ENOENT", code, err)
      assert.is_nil(sftp:list(srv.data .. "/missing-dir-" .. i))
      assert.is_nil(s:scp_get(srv.data .. "/missing-" .. i, os.tmpname()))   -- a failed scp channel
      collectgarbage(); collectgarbage()
      local g = assert(sftp:open(srv.data .. "/present", "w"))
      assert.is_true(g:close())
      local ch = assert(s:exec("true"))
      assert.equal(0, ch:wait(H.TIMEOUT))
      assert.is_true(ch:close())
    end
    assert.is_true(sftp:close())
    assert.is_true(s:close())
  end)

  it("the same with freed memory poisoned (MALLOC_PERTURB_): a plain build looped or crashed closing", function()
    local o = srv:opts()
    local out, ok = H.lua(([[
      local ssh = require "strand.ssh"
      local s = assert(ssh.connect{ host = %q, port = %d, user = %q, key = %q, known_hosts = %q,
                                    timeout = %d })
      local sftp = assert(s:sftp())
      for i = 1, 3 do
        assert(not sftp:open(%q .. "/missing-" .. i))
        collectgarbage(); collectgarbage()
      end
      assert(sftp:close())
      assert(s:close())
      print("closed")
    ]]):format(o.host, o.port, o.user, o.key, o.known_hosts, o.timeout, srv.data),
      "MALLOC_PERTURB_=165 timeout -k 5 60")
    assert.is_true(ok, out)
    assert.equal("closed\n", out)
  end)
end)
