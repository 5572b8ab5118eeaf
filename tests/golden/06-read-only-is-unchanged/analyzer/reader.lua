-- Reads, never writes; the reads are logged so that they cannot be optimised away.
function setup() end

function loop(msg)
   local what = msg.read
   local seen = 0
   if what == "scalars" then
      seen = msg.n + #msg.s + (msg.f and 1 or 0)
   elseif what == "nested" then
      seen = msg.dns.id + #msg.dns.rrname + msg.a.b.c
   elseif what == "arrays" then
      seen = #msg.values + #msg.empty + msg.values[2] + msg.objs[1].n + #msg.objs[2].deep
   elseif what == "pairs" then
      for _, v in pairs(msg.dns) do
         seen = seen + 1
      end
   elseif what == "ipairs" then
      for _, v in ipairs(msg.values) do
         seen = seen + v
      end
   end
   dragonfly.log_event({ seen = seen })
   dragonfly.output_event(default_output, msg)
end
