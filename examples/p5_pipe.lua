-- P5: a pipe between two processes, both directions; poll and the end of the conversation.
-- Usage: ./strand-run examples/p5_pipe.lua
local process = require "strand.process"

local here, there = process.pipe()
local child = process.start(function()
  here:close()                             -- the child keeps only its end
  while true do
    local msg, err = there:recv()
    if msg == nil then return "child: parent " .. err end
    there:send({ reply = msg.text:upper(), from = process.pid() })
  end
end)
there:close()
for _, text in ipairs { "hello", "how are you", "bye" } do
  here:send({ text = text })
  local r = here:recv()
  print(("parent sent %q, child %d answered %q"):format(text, r.from, r.reply))
end
print(("anything more waiting? %s"):format(tostring(here:poll(0.05))))
here:close()
print(child:result())
print("p5: done")
