-- Decodes the JSON text in msg.payload, logs the decoded value and its re-decoded encoding,
-- and annotates the event with the encoding. (Objects here have one key each, and one member
-- is added, so that the expected bytes do not depend on table iteration order.)
local json = require("cjson_safe")

function setup() end

function loop(msg)
   local decoded, err = json.decode(msg.payload)
   if decoded == nil then
      dragonfly.log_event({ decode_error = type(err) })
      msg.valid = false
      dragonfly.output_event(default_output, msg)
      return
   end
   if decoded == json.null then
      dragonfly.log_event({ is_null = true })
   end
   dragonfly.log_event(decoded)
   local text = json.encode(decoded)
   dragonfly.log_event({ again = cjson.decode(text) })
   dragonfly.log_event({ same = (cjson.encode(cjson.decode(text)) == text) })
   msg.encoded = text
   dragonfly.output_event(default_output, msg)
end
