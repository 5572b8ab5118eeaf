-- Forwards every event unchanged.
function setup() end

function loop(msg)
   dragonfly.output_event(default_output, msg)
end
