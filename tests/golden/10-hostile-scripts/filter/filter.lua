-- Attack n on event n (see config.lua); the outcome is written as {n, ok, value or error}.
local prev, prev_flow
-- The engine sets io to nil after setup(), as the original did.
local io = io

local function short(err)
   -- Drop the "path:line: " prefix (the path depends on the checkout).
   return (tostring(err):gsub("^[^:]*:%d+: ", ""))
end

local attacks = {
   -- 1: an ordinary read (this event is kept as `prev`).
   function(msg) return msg.src_ip .. " " .. msg.flow.pkts_toserver end,
   -- 2: the line slot deleted, then a field read.
   function(msg) msg[-1] = nil return msg.src_ip end,
   -- 3: the line slot replaced by a string (the FFI would have read a header out of it).
   function(msg) msg[-1] = "short" return msg.src_ip end,
   -- 4: a foreign userdata of size 0.
   function(msg) msg[-1] = newproxy(true) return msg.src_ip end,
   -- 5: a foreign userdata of the io library.
   function(msg) msg[-1] = io.stderr return msg.proto end,
   -- 6: the seal changed with rawset.
   function(msg) rawset(msg, -3, 12345) return msg.proto end,
   -- 7: a span given to the top-level table (a reserved key: no write).
   function(msg) msg[-2] = 5 return msg.proto end,
   -- 8: a nested table's span moved by one byte.
   function(msg) local f = msg.flow f[-2] = f[-2] + 1 return f.pkts_toserver end,
   -- 9: the line block of another event's table.
   function(msg) msg[-1] = prev[-1] return msg.src_ip end,
   -- 10: another event's line block and seal together: a copy of that event, read as it is.
   function(msg) msg[-1], msg[-3] = prev[-1], prev[-3] return msg.src_ip end,
   -- 11: an event of an earlier loop() call read now: its own fields.
   function(msg) return prev.src_ip .. " " .. prev.flow.pkts_toserver end,
   -- 12: an event of an earlier loop() call written out now: its own bytes.
   function(msg) dragonfly.output_event("out", prev) return "written" end,
   -- 13: the metatable replaced.
   function(msg) setmetatable(msg, nil) return msg.src_ip end,
   -- 14: getmetatable gives a stand-in: changing it changes nothing.
   function(msg) getmetatable(msg).__index = function() return "forged" end return msg.src_ip end,
   -- 15: rawset of a field: seen by a read of that table, not part of the event.
   function(msg) rawset(msg, "src_ip", "forged") dragonfly.output_event("out", msg) return msg.src_ip end,
   -- 16: the write table replaced by a number.
   function(msg) msg[-4] = 42 return msg.src_ip end,
   -- 17: the nested-table table forged with a plain table: reads and output agree.
   function(msg) msg[-5] = { flow = { pkts_toserver = 999 } } dragonfly.output_event("out", msg) return msg.flow.pkts_toserver end,
   -- 18: the nested-table table given another event's nested table: reads and output agree.
   function(msg) msg[-5] = { flow = prev_flow } dragonfly.output_event("out", msg) return msg.flow.pkts_toserver end,
   -- 19: the FFI library.
   function(msg) return require("ffi") end,
   -- 20: the registry through the debug library.
   function(msg) return debug.getregistry() end,
   -- 21: bytecode.
   function(msg) local f, err = loadstring(string.dump(function() return 1 end)) assert(f, err) return f() end,
   -- 22: stopping the engine.
   function(msg) os.exit(3) end,
   -- 23: a tampered table passed to an analyzer.
   function(msg) msg[-1] = nil dragonfly.analyze_event("a", msg) return "passed" end,
   -- 24: a tampered table written out.
   function(msg) msg[-1] = "x" dragonfly.output_event("out", msg) return "written" end,
   -- 25: a tampered nested table inside a plain table, written out.
   function(msg) local f = msg.flow f[-1] = nil dragonfly.output_event("out", { f = f }) return "written" end,
   -- 26: a tampered table iterated.
   function(msg) msg[-1] = nil for k in pairs(msg) do end return "iterated" end,
   -- 27: the order list forged (a string), then a write.
   function(msg) msg.a = 1 msg[-6] = "x" msg.b = 2 return "written" end,
   -- 28: the deletion marker cannot be reached: a key set to what getmetatable gives is a value.
   function(msg) msg.gm = getmetatable(msg) return type(msg.gm) end,
   -- 29: a table pretending to be an event (its metatable claims the stand-in) written out.
   function(msg) local fake = setmetatable({ [-1] = msg[-1], [-3] = msg[-3] }, { __metatable = getmetatable(msg) })
      dragonfly.output_event("out", fake) return "written" end,
   -- 30: the line slot given a table with the line-block metatable.
   function(msg) msg[-1] = setmetatable({}, getmetatable(msg[-1])) return msg.src_ip end,
   -- 31: next with a hidden key.
   function(msg) return tostring(next(msg, -1)) end,
   -- 32: loading a binary chunk from a file.
   function(msg) local p = os.tmpname() local f = io.open(p, "wb") f:write(string.dump(function() return 1 end)) f:close()
      local ok, err = pcall(dofile, p) os.remove(p) assert(ok, err) return "loaded" end,
   -- 33: a shell, which could signal the engine.
   function(msg) os.execute("kill -9 $PPID") return "ran" end,
   -- 34: a function of a native library that is not a module (libc's abort).
   function(msg) local f = package.loadlib("libc.so.6", "abort") if f then f() end return "loaded" end,
   -- 35: a shell through io.popen, kept from the chunk's time.
   function(msg) local f = io.popen("kill -9 $PPID") if f then f:close() end return "ran" end,
   -- 36: the engine's memory as a file (/proc/self is a symlink to the engine's pid).
   function(msg) local ok, f = pcall(io.open, "/proc/self/mem", "r+b") assert(ok, f) return "opened" end,
   -- 37: an ordinary read after all that: the engine is fine.
   function(msg) return msg.src_ip .. " " .. msg.flow.pkts_toserver end,
}

function setup() end

-- Attacks that leave their event intact: those events may serve as `prev` for later ones.
local harmless = { [1] = true, [11] = true, [12] = true, [14] = true, [19] = true, [20] = true,
   [21] = true, [22] = true, [28] = true, [31] = true, [32] = true }

function loop(msg)
   local n = msg.n
   local flow = msg.flow
   local ok, v = pcall(attacks[n], msg)
   local r = { n = n, ok = ok }
   if ok then r.value = v else r.error = short(v) end
   dragonfly.output_event("out", r)
   if harmless[n] then
      prev, prev_flow = msg, flow
   end
end
