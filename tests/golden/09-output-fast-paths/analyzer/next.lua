-- Adds a member to the events whose "op" has an even length (so both unchanged and changed
-- events are written, the same whatever the number of shards).
function setup() end

function loop(msg)
   local op = tostring(msg.op)
   if #op % 2 == 0 then msg.second = #op end
   dragonfly.output_event(default_output, msg)
end
