-- perf configuration (n) analyzer: reads the event type and one field of the event's own
-- nested object (flow.bytes_toserver, dns.rrname, tls.sni, http.hostname,
-- alert.signature_id, fileinfo.filename), as real analyzers do, and outputs the event
-- unchanged. It measures field reads through nested event tables.
local seen = 0

function setup()
end

function loop(msg)
   local et = msg.event_type
   local v
   if et == "flow" then v = msg.flow.bytes_toserver
   elseif et == "dns" then v = msg.dns.rrname
   elseif et == "tls" then v = msg.tls.sni
   elseif et == "http" then v = msg.http.hostname
   elseif et == "alert" then v = msg.alert.signature_id
   elseif et == "fileinfo" then v = msg.fileinfo.filename end
   if v ~= nil then seen = seen + 1 end
   dragonfly.output_event(default_output, msg)
end
