-- perf filter: sends every event to the input's default analyzer, untouched.
function setup()
end

function loop(msg)
   dragonfly.analyze_event(default_analyzer, msg)
end
