-- perf configuration (b): writes every event it receives to its default output.
function setup()
end

function loop(msg)
   dragonfly.output_event(default_output, msg)
end
