-- alert -> alerts, dns -> dns, tls -> both (alerts first); everything else is dropped.
function setup() end

function loop(msg)
   local t = msg.event_type
   if t == "alert" then
      dragonfly.analyze_event(default_analyzer, msg)
   elseif t == "dns" then
      dragonfly.analyze_event("dns", msg)
   elseif t == "tls" then
      dragonfly.analyze_event("alerts", msg)
      dragonfly.analyze_event("dns", msg)
   end
end
