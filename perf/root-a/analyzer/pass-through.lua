-- perf configuration (a) analyzer: forwards every event unchanged to its default output.
function setup()
end

function loop(msg)
   dragonfly.output_event(default_output, msg)
end
