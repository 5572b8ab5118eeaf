-- Outputs the copy it was passed.
function setup() end
function loop(msg)
   dragonfly.output_event(default_output, msg)
end
