-- "build" adds new arrays and empty tables, "modify" changes existing arrays in place,
-- "replace" swaps existing members for empty tables, "output" writes new plain tables.
function setup() end

function loop(msg)
   local kind = msg.kind
   if kind == "build" then
      msg.built = { {}, { 1, 2, 3 }, { { 1, 2 }, {}, { "a" } }, { "x", 1.5, true, cjson_safe.null, -7 } }
   elseif kind == "modify" then
      local v = msg.values
      v[2] = 21
      v[#v + 1] = 40
      msg.objs[1].seen = true
      msg.tags[1] = nil
   elseif kind == "replace" then
      msg.obj = {}
      msg.arr = {}
   elseif kind == "output" then
      dragonfly.output_event(default_output, {})
      dragonfly.output_event(default_output, { {}, {} })
      dragonfly.output_event(default_output, { 9007199254740991, -1, 0.5 })
      dragonfly.output_event(default_output, { list = { msg.n, msg.n * 2 } })
      return
   end
   dragonfly.output_event(default_output, msg)
end
