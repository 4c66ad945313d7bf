-- examples/socket_examples_spec.lua — runs the socket scenarios (S1, S2, S3, C4) as separate
-- programs with a time bound and checks what they printed.
local H = require "support.helper"

describe("socket examples", function()
  H.examples {
    { "S1: echo over TCP, UDP, UNIX stream and datagram", "s1_echo.lua", nil, {
      'tcp: client sent "hello", got back "hello"',
      'tcp: client sent "bye", got back "bye"',
      'udp: client sent "hello udp", got back "HELLO UDP"',
      'unix stream: client got back "over a unix socket"',
      'unix dgram: client got back "DATAGRAM"',
      "s1: done",
    } },
    { "S2: a large file with an ack exchange, then frames", "s2_bigfile.lua", "2", {
      'two sends %("hello" and "world"%) arrived as one recv: "helloworld"',
      "checksums match: true",
      "frame reply: #1 first messag %(13 bytes%)",
      "frame reply: #2 second %(6 bytes%)",
      "frame reply: #3 third, large %(65000 bytes%)",
      "frame reply: #4 fourth %(6 bytes%)",
      "s2: done",
    } },
    { "S3: resumes an interrupted upload with seek + sendfile", "s3_resume.lua", "1", {
      "server had 0 bytes, sent 419430 more",
      "server had 419430 bytes, sent 629146 more %(file position now 1048576%)",
      "identical: true",
    } },
    { "C4: one task per connection, 50 messages per client", "c4_task_server.lua", "4", {
      "client 1: 50/50 replies correct",
      "client 4: 50/50 replies correct",
      "connection %d closed after 50 messages",
      "all correct: true",
    } },
  }
end)
