-- Reads a scalar, the filter's field and a nested one, and adds what it saw.
function setup() end

function loop(msg)
   msg.seen = tostring(msg.a) .. "/" .. tostring(msg.f) .. "/" .. tostring(msg.x and msg.x.y)
   dragonfly.output_event(default_output, msg)
end
