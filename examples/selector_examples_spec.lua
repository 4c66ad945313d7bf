-- examples/selector_examples_spec.lua — runs the event-loop scenarios (E1-E4) as separate
-- programs with a time bound and checks what they printed.
local H = require "support.helper"

local rows = {
  { "E1: select() server with per-connection queues, 500 clients at once", "e1_select_server.lua", "500", {
    "e1: 500 clients were connected at once; the server saw at most 500 connections open",
    "e1: 1500/1500 replies correct",
    "e1: server: accepted 500, echoed 1500 messages, 0 exceptional, closed 500",
    "e1: all correct: true",
  } },
  { "E2: edge-triggered epoll server, reads until wouldblock, partial sends", "e2_epoll_et_server.lua",
    "8 131072", {
    "e2: 8/8 clients got back exactly the 131072 bytes they sent",
    "e2: server: accepted 8, echoed 1048576 bytes",
    "e2: partial sends handled: true",
    "e2: all correct: true",
  } },
}
for _, backend in ipairs { "epoll", "poll", "select" } do
  rows[#rows + 1] = { "E3: selectors server with callbacks as data (" .. backend .. ")",
    "e3_selectors_server.lua", "100 " .. backend, {
    "e3: " .. backend .. " selector echo server",
    "e3: 100 clients, 300/300 replies correct",
    "e3: server: accepted 100, echoed 300 messages",
    "e3: all correct: true",
  } }
end
rows[#rows + 1] = { "E4: a storm of 1000 connections at once, every reply checked", "e4_client_storm.lua",
  "1000", {
  "same process",
  "e4: 1000 connections open at once after [%d.]+ s %(0 failed%)",
  "e4: message 1: 1000/1000 replies correct",
  "e4: message 3: 1000/1000 replies correct",
  "at most 1000 connections open at once",
  "e4: all 3000 replies correct: true",
} }
rows[#rows + 1] = { "E4: client and server in separate processes (the 10000 mode, smaller)",
  "e4_client_storm.lua", "300 --split --backend=poll", {
  "using the poll selector, another process",
  "e4: message 2: 300/300 replies correct",
  "e4: server: accepted 300, echoed 900 messages, at most 300 connections open at once",
  "e4: all 900 replies correct: true",
} }

describe("selector examples", function()
  H.examples(rows, 120)
end)
