-- examples/h4_shell.lua — H4: an interactive shell on a pty: wait for a prompt, answer it, run a
-- command, read its output (the su-style flow paramiko users write with invoke_shell).
-- Usage: ./strand-run examples/h4_shell.lua user@host[:port] | --smoke
package.path = "examples/?.lua;" .. package.path
local ssh = require "strand.ssh"
local target = require("ssh_target").get(arg)

local ok, err = pcall(function()
  local s = assert(ssh.connect(target.opts()))
  local sh = assert(s:shell { term = "vt100", cols = 120, rows = 40 })
  sh:write("PS1='h4$ '; export PS1\n")
  assert(sh:expect("h4%$ ", 10))
  -- a program that asks for a password the way su does (no echo), then greets
  sh:write("stty -echo; printf 'Password: '; read pw; stty echo; echo; "
    .. "[ \"$pw\" = open-sesame ] && echo 'authenticated as admin' || echo 'su: Authentication failure'\n")
  assert(sh:expect("Password: ", 10))
  print("h4: got the password prompt")
  sh:write("open-sesame\n")
  local line = assert(sh:expect("authenticated as (%a+)", 10))
  print("h4: " .. line:match("authenticated as %a+"))
  sh:write("echo \"uptime says: $(uptime | cut -c1-9)\"\n")
  print("h4: " .. assert(sh:expect("uptime says: [^\r\n]+", 10)):match("uptime says: [^\r\n]+"))
  sh:write("exit\n")
  print("h4: shell exit code " .. tostring(sh:wait(10)))
  sh:close()
  s:close()
end)
target.stop()
if not ok then error(err, 0) end
print("h4: done")
