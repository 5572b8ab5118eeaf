-- perf configuration (c) analyzer: reads the five tuple fields, counts events per directional
-- tuple in a Lua table, adds one field (tuple_count) and outputs the event.
local counts = {}

function setup()
end

function loop(msg)
   -- ICMP events have no ports: tostring() turns a missing one into "nil".
   local key = tostring(msg.src_ip) .. "|" .. tostring(msg.src_port) .. "|" .. tostring(msg.dest_ip)
      .. "|" .. tostring(msg.dest_port) .. "|" .. tostring(msg.proto)
   local n = (counts[key] or 0) + 1
   counts[key] = n
   msg.tuple_count = n
   dragonfly.output_event(default_output, msg)
end
