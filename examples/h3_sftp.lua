-- examples/h3_sftp.lua — H3: SFTP put and get with a progress bar, and a download interrupted
-- half-way then resumed; the result is byte-identical (sha256sum).
-- Usage: ./strand-run examples/h3_sftp.lua user@host[:port] [MiB] | --smoke [MiB]
package.path = "examples/?.lua;" .. package.path
local ssh = require "strand.ssh"
local target = require("ssh_target").get(arg)
local mib = tonumber(arg[2]) or 64

local function bar(label)
  return function(done, total)
    local w = 30
    local fill = total > 0 and math.floor(w * done / total) or w
    io.write(("\r%s [%s%s] %5.1f%%"):format(label, ("#"):rep(fill), ("."):rep(w - fill),
      total > 0 and 100 * done / total or 100))
    if done == total then io.write("\n") end
    io.flush()
  end
end

local function sha(path)
  local p = io.popen("sha256sum " .. path)
  local h = p:read("a"):match("^(%x+)")
  p:close()
  return h
end

local src, back = os.tmpname(), os.tmpname()
local ok, err = pcall(function()
  assert(os.execute(("head -c %d /dev/urandom > %s"):format(mib * 1048576, src)))
  local s = assert(ssh.connect(target.opts()))
  local sftp = assert(s:sftp())
  local remote = target.dir .. "/h3.bin"
  local t0 = require("strand").now()
  assert(sftp:put(src, remote, { progress = bar("put") }))
  print(("h3: put %d MiB in %.2f s"):format(mib, require("strand").now() - t0))
  -- a download that breaks off half-way (the progress callback raises, as a dropped link would)
  local stop_at = mib * 1048576 // 2
  local ok2 = pcall(sftp.get, sftp, remote, back, { progress = function(done)
    if done >= stop_at then error("link dropped") end
  end })
  local f = io.open(back, "rb")
  local have = f:seek("end")
  f:close()
  print(("h3: interrupted get: %s, %d of %d bytes here"):format(ok2 and "completed?" or "failed", have, mib * 1048576))
  assert(sftp:get(remote, back, { resume = true, progress = bar("resume") }))
  print("h3: checksums match: " .. tostring(sha(src) == sha(back)))
  sftp:remove(remote)
  sftp:close()
  s:close()
end)
os.remove(src); os.remove(back)
target.stop()
if not ok then error(err, 0) end
print("h3: done")
