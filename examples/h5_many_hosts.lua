-- examples/h5_many_hosts.lua — H5: the same command on many hosts at once, from one Lua thread:
-- one task per session (against the private sshd, the "hosts" are N sessions to it).
-- Usage: ./strand-run examples/h5_many_hosts.lua user@host[:port] [N] | --smoke [N]
package.path = "examples/?.lua;" .. package.path
local strand = require "strand"
local ssh = require "strand.ssh"
local target = require("ssh_target").get(arg)
local n = tonumber(arg[2]) or 20

local ok, err = pcall(function()
  local t0 = strand.now()
  local tasks = {}
  for i = 1, n do
    tasks[i] = strand.spawn(function()
      local s = assert(ssh.connect(target.opts()))
      local r = assert(s:run("echo host-" .. i .. " $(hostname) up"))
      s:close()
      return r.stdout
    end)
  end
  local good = 0
  for i, t in ipairs(tasks) do
    local out = t:result(60)
    if out:match("^host%-" .. i .. " ") then good = good + 1 end
  end
  print(("h5: %d of %d sessions ran the command, in %.2f s from one thread"):format(good, n, strand.now() - t0))
end)
target.stop()
if not ok then error(err, 0) end
print("h5: done")
