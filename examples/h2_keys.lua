-- examples/h2_keys.lua — H2: private keys with and without a passphrase; strict host-key checking
-- by default, accept-new when asked, a changed host key refused.
-- Usage: ./strand-run examples/h2_keys.lua --smoke  (needs the throwaway keys of the private sshd)
package.path = "examples/?.lua;" .. package.path
local ssh = require "strand.ssh"
local target = require("ssh_target").get(arg)

local ok, err = pcall(function()
  local s = assert(ssh.connect(target.opts { key = target.keys.ed25519 }))
  print("h2: key without passphrase: " .. s:run("echo authenticated").stdout:gsub("\n", ""))
  print("h2: server fingerprint " .. s:fingerprint())
  s:close()
  if target.keys.ed25519_pass then
    s = assert(ssh.connect(target.opts { key = target.keys.ed25519_pass, passphrase = target.passphrase }))
    print("h2: key with passphrase: " .. s:run("echo authenticated").stdout:gsub("\n", ""))
    s:close()
  end
  local kh = os.tmpname()
  os.remove(kh)
  local s2, e2 = ssh.connect(target.opts { known_hosts = kh })
  print("h2: strict, unknown host: " .. tostring(s2) .. ", " .. e2)
  local s3 = assert(ssh.connect(target.opts { known_hosts = kh, host_key = "accept-new" }))
  s3:close()
  print("h2: accept-new added: " .. (io.open(kh):read("a"):match("ssh%-ed25519") or "nothing"))
  local s4 = assert(ssh.connect(target.opts { known_hosts = kh }))
  print("h2: strict again: accepted")
  s4:close()
  -- the server "changes" its key: known_hosts now holds another key for it
  local content = io.open(kh):read("a")
  local f = io.open(kh, "w")
  f:write((content:gsub("(ssh%-ed25519 )(%S+)", "%1AAAAC3NzaC1lZDI1NTE5AAAAIJpWGHxo4y2ALsb9QDqcxUnyl4bNPyhcWf3JqKtoV0Yz")))
  f:close()
  local s5, e5 = ssh.connect(target.opts { known_hosts = kh, host_key = "accept-new" })
  print("h2: changed host key: " .. tostring(s5) .. ", " .. e5)
  os.remove(kh)
end)
target.stop()
if not ok then error(err, 0) end
print("h2: done")
