-- Writes number keys as the event's "case" says, then outputs it and passes it on.
local cases = {
   function(m) m[1] = "A" end,
   function(m) m[1] = "A"; m[2] = "B" end,
   function(m) m[1.5] = "F" end,
   function(m) m.dns[1] = "A" end,
   function(m) m.x = 1; m[2] = "B" end,
   function(m) m[0] = "Z"; m[0] = nil end,
   function(m) local _ = m[7]; m[7] = true end,
   function(m) m[100] = 3 end,
}
function setup() end
function loop(msg)
   cases[msg.case](msg)
   dragonfly.output_event(default_output, msg)
   dragonfly.analyze_event(default_analyzer, msg)
end
