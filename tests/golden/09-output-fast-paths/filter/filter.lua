-- Changes each event as its "op" says, writes it to "out", then passes it on.
function setup() end

function loop(msg)
   local op = msg.op
   if op == "num" then msg.added = 42
   elseif op == "float" then msg.added = -0.125
   elseif op == "big" then msg.added = 9007199254740991
   elseif op == "str" then msg.added = 'q"uo\\te\n\t\1 é ☃ </'
   elseif op == "true" then msg.added = true
   elseif op == "false" then msg.added = false
   elseif op == "exists" then msg.a = 7
   elseif op == "del" then msg.a = nil
   elseif op == "delnew" then msg.added = 1; msg.added = nil
   elseif op == "two" then msg.b1 = 1; msg.b2 = "2"
   elseif op == "table" then msg.added = { 1, 2 }
   elseif op == "nested" then
      local x = msg.x
      x.added = 1
      dragonfly.output_event("out", x)
      dragonfly.analyze_event(default_analyzer, x)
      return
   elseif op == "nestedread" then
      dragonfly.output_event("out", msg.x)
      dragonfly.analyze_event(default_analyzer, msg.x)
      return
   elseif op == "readnested" then
      local _ = msg.x.y
   elseif op == "fwd" then
      msg.added = "f"
      dragonfly.forward_event("OUT", msg)
      dragonfly.analyze_event(default_analyzer, msg)
      return
   elseif op == nil then msg.added = 0
   end
   dragonfly.output_event("out", msg)
   dragonfly.analyze_event(default_analyzer, msg)
end
