-- Tags the event with its route; writes it to its own output and to "all".
function setup() end

function loop(msg)
   msg.route = "dns"
   dragonfly.output_event(default_output, msg)
   dragonfly.forward_event("all", msg)
end
