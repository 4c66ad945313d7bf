-- examples/ssh_examples_spec.lua — runs the SSH scenarios (H1-H5) as separate programs against
-- their own private sshd (--smoke) with a time bound and checks what they printed.
local H = require "support.helper"

describe("ssh examples", function()
  H.examples {
    { "H1: run a command, stdout, stderr and exit code", "h1_run.lua", "--smoke", {
      "h1: pwd: /home/", "h1: stderr: ls: cannot access '/nonexistent%-dir'", "h1: exit code: 2", "h1: done",
    } },
    { "H2: keys, passphrase, strict / accept-new, changed host key", "h2_keys.lua", "--smoke", {
      "h2: key without passphrase: authenticated", "h2: server fingerprint SHA256:",
      "h2: key with passphrase: authenticated", "h2: strict, unknown host: nil, unknown host key SHA256:",
      "h2: accept%-new added: ssh%-ed25519", "h2: strict again: accepted",
      "h2: changed host key: nil, host key mismatch", "h2: done",
    } },
    { "H3: sftp put/get with progress and a resumed download", "h3_sftp.lua", "--smoke 8", {
      "h3: put 8 MiB", "h3: interrupted get: failed", "resume %[#+%] 100.0%%", "h3: checksums match: true", "h3: done",
    } },
    { "H4: interactive shell with a password prompt", "h4_shell.lua", "--smoke", {
      "h4: got the password prompt", "h4: authenticated as admin", "h4: uptime says:", "h4: shell exit code 0", "h4: done",
    } },
    { "H5: the same command over many sessions at once", "h5_many_hosts.lua", "--smoke 10", {
      "h5: 10 of 10 sessions ran the command", "h5: done",
    } },
  }
end)
