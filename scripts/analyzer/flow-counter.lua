-- Example analyzer in pure Lua: counts events per flow tuple and per event type, and
-- annotates each event with what it has seen so far of its flow.
--
-- State that grows with every new flow must be bounded, or a sensor running for months
-- reaches the script's memory limit (script_memory_mb), where each event's call fails. The
-- counts are kept in two generations: once the current one holds MAX_FLOWS flows it becomes
-- the older one (the one before is dropped); a flow seen in the older one goes on counting.
local MAX_FLOWS = 500000
local counts, older, size = {}, {}, 0
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
      local n = counts[key]
      if n == nil then
         n = older[key] or 0
         if size >= MAX_FLOWS then
            older, counts, size = counts, {}, 0
         end
         size = size + 1
      end
      n = n + 1
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
