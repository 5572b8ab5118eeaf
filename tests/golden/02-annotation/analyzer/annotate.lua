-- Adds members (appended at the end, in the order they were added), changes nested members
-- in place, deletes members; stats events go through untouched.
function setup() end

function loop(msg)
   if msg.event_type == "stats" then
      dragonfly.output_event(default_output, msg)
      return
   end
   msg.annotated = true
   msg.score = 0.75
   msg.analyst = "dfm"
   msg.pcap_cnt = nil
   if msg.dns then
      msg.dns.rrname = "redacted.example"
   end
   if msg.alert then
      msg.alert.severity = msg.alert.severity + 10
      msg.alert.rev = nil
      msg.alert.note = "seen"
   end
   if msg.event_type == "flow" then
      msg.flow.state = { closed = true }
      msg.src_port = nil
      msg.dest_port = nil
   end
   dragonfly.output_event(default_output, msg)
end
