-- examples/h1_run.lua — H1: connect with a password, run "df -h; pwd", read stdout, stderr and
-- the exit code (paramiko's exec_command). Usage: ./strand-run examples/h1_run.lua user@host[:port] | --smoke
package.path = "examples/?.lua;" .. package.path
local ssh = require "strand.ssh"
local target = require("ssh_target").get(arg)

local ok, err = pcall(function()
  local opts
  if target.password then
    opts = target.opts { key = false, password = target.password }
    print("h1: connecting with a password")
  else
    opts = target.opts()
    print("h1: no password available (not root): connecting with a key instead")
  end
  local s = assert(ssh.connect(opts))
  local r = assert(s:run("df -h; pwd; ls /nonexistent-dir"))
  print("h1: stdout first line: " .. r.stdout:match("^[^\n]*"))
  print("h1: pwd: " .. r.stdout:match("\n(/[^\n]*)\n$"))
  print("h1: stderr: " .. r.stderr:gsub("\n$", ""))
  print("h1: exit code: " .. tostring(r.code))
  s:close()
end)
target.stop()
if not ok then error(err, 0) end
print("h1: done")
