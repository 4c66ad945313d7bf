-- spec/fixes9_ssh_spec.lua — long SFTP/SCP transfers take turns with the loop's other tasks (the
-- copy steps stop after SSH_TURN_BYTES while data keeps coming): a ticker keeps running during a
-- transfer, and a cancel lands within a turn, the files closed. Each failed before its fix.
local H = require "support.helper"
local sshd = require "support.sshd"
local strand = require "strand"
local ssh = require "strand.ssh"

strand.run(function() end)   -- the loop's own fds exist before any leak check

local write_file, tmpname = sshd.write_file, sshd.tmpname
local MiB = 1024 * 1024

local function size_of(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n
end

describe("fixes 9: SFTP transfers take turns with the other tasks", function()
  local srv, src, total
  setup(function()
    srv = sshd.start()
    total = H.work(48, 8) * MiB
    src = tmpname()
    local chunk = ("0123456789abcdef"):rep(65536)          -- 1 MiB
    write_file(src, chunk:rep(total // MiB))
  end)
  teardown(function()
    if srv then srv:stop() end
    os.remove(src)
  end)
  H.guard()

  -- While fn() runs in a task, a ticker task samples watch() at each of its turns: the largest
  -- growth between two turns and the count of turns.
  -- The turns come every 1 MiB; the bounds leave room for a loaded machine (one epoll run beside
  -- a loaded make test saw 3.7 MiB between two ticks) while a transfer without turns (no tick
  -- before its end: the whole file at once) still fails them.
  local function gap_max() return math.max(3 * MiB, total // 4) end
  local MIN_TICKS = 3
  local function ticking(fn, watch)
    local ticks, last, gap, running = 0, watch(), 0, true
    local ticker = strand.spawn(function()
      while running do
        strand.sleep(0)
        ticks = ticks + 1
        local now = watch()
        if now - last > gap then gap = now - last end
        last = now
      end
    end)
    local r = table.pack(fn())
    running = false
    ticker:join()
    return ticks, gap, r
  end

  it("get: the ticker runs at least once per few MiB received", function()
    H.run_within(H.VALGRIND and 300 or 60, function()
      local s = assert(ssh.connect(srv:opts()))
      local sftp = assert(s:sftp())
      local dst = tmpname()
      local ticks, gap, r = ticking(function() return sftp:get(src, dst) end,
        function() return size_of(dst) end)
      assert.equal(total, r[1])
      assert.equal(total, size_of(dst))
      -- a turn every 1 MiB read (plus one 1 MiB read and the FILE buffer): never 8 MiB at once
      assert.is_true(gap <= gap_max(), ("%d bytes arrived between two ticks"):format(gap))
      assert.is_true(ticks >= MIN_TICKS, ("only %d ticks"):format(ticks))
      os.remove(dst)
      sftp:close()
      s:close()
    end)
  end)

  it("put and f:write: the ticker keeps running", function()
    H.run_within(H.VALGRIND and 300 or 60, function()
      local s = assert(ssh.connect(srv:opts()))
      local sftp = assert(s:sftp())
      local dst = tmpname()
      -- (the server is local: the remote file grows as its writes are acknowledged)
      local ticks, gap, r = ticking(function() return sftp:put(src, dst) end,
        function() return size_of(dst) end)
      assert.equal(total, r[1])
      assert.is_true(gap <= gap_max(), ("%d bytes written between two ticks"):format(gap))
      assert.is_true(ticks >= MIN_TICKS, ("only %d ticks during put"):format(ticks))
      local data = ("x"):rep(H.work(16, 4) * MiB)
      local f = assert(sftp:open(dst, "w"))
      local ticks2, gap2, r2 = ticking(function() return f:write(data) end,
        function() return size_of(dst) end)
      assert.equal(f, r2[1])
      assert.is_true(gap2 <= gap_max(), ("%d bytes written between two ticks"):format(gap2))
      assert.is_true(ticks2 >= #data // (3 * MiB), ("only %d ticks during write"):format(ticks2))
      assert.is_true(f:close())
      local back = assert(sftp:open(dst, "r"))
      local ticks3, _, r3 = ticking(function() return back:read(#data + 1) end, function() return 0 end)
      assert.equal(#data, #r3[1])
      assert.is_true(ticks3 >= #data // (3 * MiB), ("only %d ticks during read"):format(ticks3))
      back:close()
      assert.is_true(sftp:remove(dst))
      sftp:close()
      s:close()
    end)
  end)

  it("a cancel mid-get lands within a turn; the local and remote files are closed", function()
    H.run_within(H.VALGRIND and 300 or 60, function()
      local s = assert(ssh.connect(srv:opts()))
      local sftp = assert(s:sftp())
      local dst = tmpname()
      local t = strand.spawn(function() return sftp:get(src, dst) end)
      -- cancel once 2 MiB have arrived (checked at each of this task's turns)
      local asked
      while t:status() ~= "done" and t:status() ~= "failed" do
        strand.sleep(0)
        asked = size_of(dst)
        if asked >= 2 * MiB then t:cancel("enough"); break end
      end
      local ok, err = t:join(H.TIMEOUT)
      assert.is_false(ok)
      assert.is_true(strand.is_cancelled(err))
      local final = size_of(dst)
      assert.is_true(final < total, "the transfer ended before the cancel")
      assert.is_true(final - asked <= 3 * MiB, ("%d bytes arrived after the cancel"):format(final - asked))
      -- the session and its SFTP session go on: the cancelled get left no request half-done
      local again = tmpname()
      assert.equal(total, sftp:get(src, again))
      os.remove(again)
      os.remove(dst)
      sftp:close()
      s:close()
    end)
  end)

  it("scp_get and run's output take turns too", function()
    H.run_within(H.VALGRIND and 300 or 60, function()
      local s = assert(ssh.connect(srv:opts()))
      local dst = tmpname()
      local ticks, gap, r = ticking(function() return s:scp_get(src, dst) end,
        function() return size_of(dst) end)
      assert.equal(total, r[1])
      assert.is_true(gap <= gap_max(), ("%d bytes received between two ticks"):format(gap))
      assert.is_true(ticks >= MIN_TICKS, ("only %d ticks during scp_get"):format(ticks))
      local ticks2, _, r2 = ticking(function() return s:run("cat " .. src) end, function() return 0 end)
      assert.equal(total, #r2[1].stdout)
      assert.is_true(ticks2 >= total // (3 * MiB), ("only %d ticks during run"):format(ticks2))
      os.remove(dst)
      s:close()
    end)
  end)
end)

describe("fixes 9: a task reading a channel is not left asleep on a drained socket", function()
  local srv
  setup(function() srv = sshd.start() end)
  teardown(function() if srv then srv:stop() end end)
  H.guard()

  it("another task's write that drains the socket wakes the channel's reader", function()
    H.run_within(H.VALGRIND and 120 or 30, function()
      local s = assert(ssh.connect(srv:opts()))
      local a = assert(s:exec("cat"))              -- echoes: its reader waits on the socket
      local b = assert(s:exec("cat > /dev/null"))  -- swallows: a write there reads the socket
      assert.is_true(a:write("warm\n"))
      assert.equal("warm\n", a:read())
      local got
      local reader = strand.spawn(function() got = a:read() end)
      strand.sleep(0)                              -- the reader now waits on the socket
      assert.is_true(a:write("ping\n"))
      -- the loop's thread held (no poll) until the echo sits in the socket, then a write on the
      -- other channel, whose libssh2 call drains the transport first: the echo is decoded, the
      -- socket empty
      os.execute("sleep 0.3")
      assert.is_true(b:write("x"))
      local ok = reader:join(H.VALGRIND and 60 or 5)
      assert.is_true(ok, "the reader slept on a drained socket")
      assert.equal("ping\n", got)
      a:close()
      b:close()
      s:close()
    end)
  end)
end)
