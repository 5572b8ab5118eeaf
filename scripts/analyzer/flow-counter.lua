-- Example analyzer in pure Lua: counts events per flow tuple and per event type, and
-- annotates each event with what it has seen so far of its flow.
local counts = {}
local by_type = {}
local seen = 0

function setup()
   dragonfly.log_event({ msg = "flow-counter ready" })
end

function loop(msg)
   seen = seen + 1
   local t = msg.event_type or "unknown"
   by_type[t] = (by_type[t] or 0) + 1
   if msg.src_ip and msg.dest_ip then
      -- Order the two ends so that both directions of a flow share one key.
      local a = msg.src_ip .. ":" .. tostring(msg.src_port or 0)
      local b = msg.dest_ip .. ":" .. tostring(msg.dest_port or 0)
      local key = (a < b) and (a .. "-" .. b) or (b .. "-" .. a)
      key = (msg.proto or "") .. " " .. key
      local n = (counts[key] or 0) + 1
      counts[key] = n
      msg.flow_events = n
   end
   msg.type_count = by_type[t]
   -- On to the next analyzer when the config names one (default_analyzer is only set then).
   if default_analyzer then
      dragonfly.analyze_event(default_analyzer, msg)
   else
      dragonfly.output_event(default_output, msg)
   end
end
