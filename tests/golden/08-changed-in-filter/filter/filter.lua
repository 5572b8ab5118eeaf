-- "mod": a field added and one changed before forwarding; "nested": only msg.x is forwarded;
-- anything else goes unchanged (no copy).
function setup() end

function loop(msg)
   if msg.op == "mod" then
      msg.f = 1
      msg.a = msg.a + 10
   elseif msg.op == "nested" then
      dragonfly.analyze_event(default_analyzer, msg.x)
      return
   end
   dragonfly.analyze_event(default_analyzer, msg)
end
