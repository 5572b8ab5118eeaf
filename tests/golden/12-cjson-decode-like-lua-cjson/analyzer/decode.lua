-- Decodes edge cases and outputs what came back.
function setup() end
function loop(msg)
   local r = {}
   r.number = cjson_safe.decode(123)
   r.float = cjson_safe.decode(2.5)
   r.nul_ends = cjson_safe.decode('{"a":1}\0garbage').a
   r.nul_first = select(2, cjson_safe.decode('\0{}'))
   r.nul_second = select(2, cjson_safe.decode('1\0'))
   r.table_arg = select(2, cjson_safe.decode({}))
   dragonfly.output_event(default_output, r)
end
