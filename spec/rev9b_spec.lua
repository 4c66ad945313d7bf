-- spec/rev9b_spec.lua — review 9b: defects found attacking this session's merged work, each case
-- failed before its fix (SSH turns: a step that read input and said EAGAIN ran again at once).
local H = require "support.helper"
local sshd = require "support.sshd"
local strand = require "strand"
local ssh = require "strand.ssh"

strand.run(function() end)   -- the loop's own fds exist before any leak check

local MiB = 1024 * 1024

local function size_of(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n
end

describe("review 9b: SSH copy steps give the other tasks a turn between every two steps", function()
  local srv, src, total
  setup(function()
    srv = sshd.start()
    total = H.work(32, 8) * MiB
    src = sshd.tmpname()
    sshd.write_file(src, ("0123456789abcdef"):rep(65536):rep(total // MiB))
  end)
  teardown(function()
    if srv then srv:stop() end
    os.remove(src)
  end)
  H.guard()

  -- A ticker on sleep(0) samples the local file's size at each of its turns. A step moves at most
  -- SSH_TURN_BYTES plus one read (1 MiB) before the others' turn; a step that read from the socket
  -- and still said EAGAIN used to be called again at once, its count started afresh, so while the
  -- server kept the socket fed the steps ran on without a turn (3.7 MiB was seen under epoll).
  -- Each round's gap is exact (no timing): at most 2 MiB plus the FILE buffer, whatever the load.
  it("sftp:get: never more than two turns' bytes between two ticks", function()
    H.run_within(H.VALGRIND and 300 or 90, function()
      local s = assert(ssh.connect(srv:opts()))
      local sftp = assert(s:sftp())
      local worst = 0
      for _ = 1, H.work(3, 1) do
        local dst = sshd.tmpname()
        local running, last, gap = true, 0, 0
        local ticker = strand.spawn(function()
          while running do
            strand.sleep(0)
            local now = size_of(dst)
            if now - last > gap then gap = now - last end
            last = now
          end
        end)
        local got = sftp:get(src, dst)
        running = false
        ticker:join()
        os.remove(dst)
        assert.equal(total, got)
        if gap > worst then worst = gap end
      end
      assert.is_true(worst <= 2 * MiB + 65536, ("%d bytes arrived between two ticks"):format(worst))
      sftp:close()
      s:close()
    end)
  end)
end)
