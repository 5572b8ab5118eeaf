-- DGA scoring analyzer (original Redis-ML API through hiredis): the same scores as
-- dga-score.lua, with the forest loaded into and evaluated by a Redis server running the
-- Redis-ML module (ML.FOREST.ADD / ML.FOREST.RUN).
local features = require 'analyzer/dga/features'

local MODEL = "analyzer/dga/dga-rf.model"
local KEY = "dga:tree"
local NAMES = features.NAMES
local format, concat = string.format, table.concat
local conn
local pairs_buf = {}

function setup()
   local err
   conn, err = hiredis.connect()
   if not conn then error("dga-score-redis: cannot connect to redis: " .. tostring(err)) end
   -- Each model line holds the arguments of one ML.FOREST.ADD (key dga:tree, one tree).
   -- command_line splits on spaces; the model holds no '%'.
   for line in io.lines(MODEL) do
      if line:find("%S") then
         local reply, cerr = conn:command_line("ML.FOREST.ADD " .. line)
         if reply == nil or (type(reply) == "table" and reply.name ~= "OK") then
            error("dga-score-redis: ML.FOREST.ADD failed: " .. tostring(reply and reply.name or cerr))
         end
      end
   end
end

function loop(msg)
   if type(msg) == "table" and msg.event_type == "dns" and type(msg.dns) == "table" then
      local f = features.extract(msg.dns.rrname)
      if f then
         -- "name:value,..." in NAMES order; %.17g keeps every double exact.
         for i = 1, #NAMES do
            pairs_buf[i] = NAMES[i] .. ":" .. format("%.17g", f[NAMES[i]])
         end
         local reply, cerr = conn:command("ML.FOREST.RUN", KEY, concat(pairs_buf, ","), "REGRESSION")
         local score = tonumber(reply) -- the reply is a bulk string such as "0.8125"
         if score then
            msg.dga_score = score
         else
            msg.dga_error = type(reply) == "table" and reply.name or tostring(cerr)
         end
      end
   end
   dragonfly.output_event(default_output, msg)
end
