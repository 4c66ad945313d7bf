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

describe("review 9b: a sendall's short send is not lost to another task's send", function()
  local socket = require "strand.socket"
  local core = require "strand.core"
  H.guard()

  -- STRAND_POLLER=uring: a sendall whose send came short (the peer reset the connection) learns
  -- it when it resumes, from the slot's record of the last short send. Another task's sendall that
  -- found that send done (it reaps the ring first) issued its own; when that one came short too
  -- (the same reset) before the first task resumed, the record was overwritten and the first
  -- sendall returned true: 8 MiB "sent" of which 270 KB went. core._uring.stats() reaps the ring
  -- as that second sendall's look would (exact: no timing); under epoll and poll it is nil.
  it("the first sendall fails with what it sent; the second fails too", function()
    H.run(function()
      local srv = assert(socket.listen("127.0.0.1", 0))
      local _, port = srv:getsockname()
      local cli = assert(socket.connect("127.0.0.1", port))
      local peer = assert(srv:accept())
      assert(cli:setoption("sndbuf", 65536))
      assert(peer:sendall("h"))
      assert.equal("h", cli:recv(1))            -- (uring: the socket goes on the fast path)
      local big = ("x"):rep(16 * 1024 * 1024)     -- more than both buffers hold
      local ra
      local a = strand.spawn(function() ra = table.pack(cli:sendall(big)) end)
      strand.sleep(0)                             -- a issued its send and waits
      assert.equal("waiting", a:status())
      assert(peer:setoption("linger", 0))
      peer:close()                                -- a reset: a's send ends short
      if core._uring.stats() then
        -- reap (bounded, no yield) until the kernel ended a's send: a woken, not run yet
        local deadline = strand.now() + 10
        while a:status() == "waiting" and strand.now() < deadline do core._uring.stats() end
        assert.equal("ready", a:status())
      else
        a:join()                                  -- (a second writer meanwhile would raise)
      end
      local rb = table.pack(cli:sendall("b"))
      a:join()
      assert.is_nil(ra[1], "a's sendall returned true")
      assert.is_true(ra[3] < #big, ("a's sendall says %s bytes sent"):format(tostring(ra[3])))
      assert.is_nil(rb[1])
      cli:close(); srv:close()
    end)
  end)
end)
