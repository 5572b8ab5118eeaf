-- Lists the keys pairs() gives (at most 10, so that a looping iteration shows instead of
-- hanging), then changes or deletes what the event's "op" names.
function setup() end

local function keys_of(t)
   local seen = {}
   for k, v in pairs(t) do
      seen[#seen + 1] = k .. "=" .. (type(v) == "table" and "{}" or tostring(v))
      if #seen >= 10 then break end
   end
   return table.concat(seen, ",")
end

function loop(msg)
   local op = msg.op
   if op == "read" then
      msg.keys = keys_of(msg)
      msg.a_is = msg.a
   elseif op == "set" then
      msg.a = 5
   elseif op == "delete" then
      msg.d = nil
   elseif op == "nested" then
      msg.keys = keys_of(msg.x)
      msg.x.a = 7
   end
   dragonfly.output_event(default_output, msg)
end
