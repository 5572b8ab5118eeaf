-- DGA scoring analyzer (native Redis-ML): scores the rrname of every DNS event with the
-- dga-rf random forest evaluated by the engine, annotates msg.dga_score (0 = benign,
-- 1 = generated; >= 0.5 means DGA) and forwards every event to the default output.
local features = require 'analyzer/dga/features'

local MODEL = "analyzer/dga/dga-rf.model"
local KEY = "dga:tree"

function setup()
   -- Each model line holds the arguments of one ML.FOREST.ADD (key dga:tree, one tree).
   local n, err = dragonfly.ml.load_forest(MODEL)
   if not n then
      error("dga-score: cannot load " .. MODEL .. ": " .. tostring(err))
   end
end

function loop(msg)
   if type(msg) == "table" and msg.event_type == "dns" and type(msg.dns) == "table" then
      local f = features.extract(msg.dns.rrname)
      if f then
         local score, err = dragonfly.ml.forest_run(KEY, f, "REGRESSION")
         if score then
            msg.dga_score = score
         else
            msg.dga_error = tostring(err)
         end
      end
   end
   dragonfly.output_event(default_output, msg)
end
