-- examples/ssh_target.lua — shared by the SSH examples (H1-H5): where to connect. With
-- `--smoke` (how the test suite runs them) a private sshd is started from spec/support/sshd.lua
-- and stopped at the end; otherwise user@host[:port] comes from the command line, with the
-- password from $SSH_PASSWORD or the key from $SSH_KEY, and ~/.ssh/known_hosts as usual.
local M = {}

function M.get(args)
  local target = {}
  if args[1] == "--smoke" then
    package.path = "spec/?.lua;" .. package.path
    local sshd = require "support.sshd"
    local srv = sshd.start()
    target.server = srv
    target.opts = function(extra) return srv:opts(extra) end
    target.password = srv.password
    target.user = srv.user
    target.keys = srv.keys
    target.passphrase = srv.passphrase
    target.known_hosts = srv.known_hosts
    target.dir = srv.data
    target.stop = function() srv:stop() end
    return target
  end
  local user, host, port = (args[1] or ""):match("^([^@]+)@([^:]+):?(%d*)$")
  if not user then
    io.stderr:write("usage: lua ", arg[0], " user@host[:port]   (or --smoke)\n")
    os.exit(2)
  end
  target.user = user
  target.password = os.getenv("SSH_PASSWORD")
  target.keys = { ed25519 = os.getenv("SSH_KEY") }
  target.passphrase = os.getenv("SSH_PASSPHRASE")
  target.dir = os.getenv("SSH_DIR") or "/tmp"
  target.opts = function(extra)
    local o = { host = host, port = tonumber(port) or 22, user = user, key = target.keys.ed25519,
                password = target.password, timeout = 10 }
    for k, v in pairs(extra or {}) do o[k] = v end
    if o.key == false then o.key = nil end
    return o
  end
  target.stop = function() end
  return target
end

return M
