-- The original's hello-world analyzer: INCR count:<event_type> in Redis, annotate the event
-- with the count, and pass it on. Redis failures are annotated, not fatal.
local conn

function setup()
   conn = assert(hiredis.connect())
   assert(conn:command("PING") == hiredis.status.PONG)
end

function loop(msg)
   local reply, err = conn:command("INCR", "count:" .. tostring(msg.event_type))
   if type(reply) == "number" then
      msg.type_total = reply
   else
      msg.redis_error = err or (type(reply) == "table" and reply.name) or "unknown"
   end
   dragonfly.analyze_event(default_analyzer, msg)
end
