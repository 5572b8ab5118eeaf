-- prelude.lua: runs in every script state before the script, with the engine's functions and
-- constants in a table (script.rs, `run_prelude`). It makes event tables behave as tables
-- (field access in Lua, the lookup called through LuaJIT's FFI so that reads compile into
-- the script's traces), puts FFI fast paths in front of output_event/analyze_event, and
-- closes what would let a script reach memory the engine owns (ffi, the raw debug library,
-- bytecode loading) or stop the process (os.exit).
local E = ...
local mt, LINE_MT, VIEW = E.mt, E.line_mt, E.view
local LINE, SPAN, SEAL, SET, CACHE, ORDER = E.LINE, E.SPAN, E.SEAL, E.SET, E.CACHE, E.ORDER
local F_ABSENT, F_STRING, F_NUMBER, F_TRUE, F_FALSE, F_NULL, F_TAMPERED =
   E.F_ABSENT, E.F_STRING, E.F_NUMBER, E.F_TRUE, E.F_FALSE, E.F_NULL, E.F_TAMPERED
local ADDED_NONE, ADDED_NUMBER, ADDED_STRING, ADDED_TRUE, ADDED_FALSE =
   E.ADDED_NONE, E.ADDED_NUMBER, E.ADDED_STRING, E.ADDED_TRUE, E.ADDED_FALSE
local F_OBJECT, F_INT = E.F_OBJECT, E.F_INT
local DONE, DECLINED = E.DONE, E.DECLINED
local TAMPERED_MSG = E.TAMPERED_MSG
local is_proxy, next_proxy, slow_index = E.is_proxy, E.next_proxy, E.slow_index
local lnull = E.null

local rawnext, rawpairs, rawget, rawset, type, error, select, getmetatable =
   next, pairs, rawget, rawset, type, error, select, getmetatable

-- Event tables are filled lazily: pairs/next walk their original members, then added ones.
function next(t, k)
   if is_proxy(t) then return next_proxy(t, k) end
   return rawnext(t, k)
end
function pairs(t)
   if is_proxy(t) then return next_proxy, t, nil end
   return rawpairs(t)
end

local ffi = require("ffi")
ffi.cdef[[
typedef struct { int32_t kind; int32_t len; double num; const char *ptr; } df_field_out;
]]
local find = ffi.cast("int32_t (*)(const void *, double, double, const char *, size_t, df_field_out *)", E.find)
local out = ffi.new("df_field_out")
local ffistring = ffi.string
local TOMB = mt
-- Presized tables: a first write then costs no rehash.
local tnew = require("table.new")

local function tampered(level)
   error(TAMPERED_MSG, level + 1)
end

-- The line block of an event table, checked: only the engine makes userdata with LINE_MT.
local function block_of(t)
   local line = rawget(t, LINE)
   if type(line) ~= "userdata" or getmetatable(line) ~= LINE_MT then return nil end
   return line
end

-- How the engine calls loop() with a new event: the event table is made here, where the
-- compiler turns it into an inline allocation, rather than through the C API (script.rs
-- registers this function; window.rs, `call_loop_event`). A tail call: loop() runs as if the
-- engine had called it.
-- The table starts as a copy of a template holding the hidden keys (their numbers written
-- out: a constant key makes a template), so setting them adds no key; SET and ORDER, set to
-- nil (absent, as before the first write), keep their slots for a first write. The engine
-- calls dispatch in engine time (the table is the engine's allocation: a script at its
-- memory limit still gets its events) and it turns to script time right before loop().
local setmetatable_ = setmetatable
local script_time = ffi.cast("int32_t (*)(int32_t)", E.script_time)
assert(LINE == -1 and SPAN == -2 and SEAL == -3 and SET == -4 and CACHE == -5 and ORDER == -6,
   "dispatch: hidden keys changed")
E.dispatch = function(loop, line, seal)
   local t = {[-1] = false, [-3] = false, [-4] = false, [-6] = false}
   t[LINE] = line
   t[SEAL] = seal
   t[SET] = nil
   t[ORDER] = nil
   setmetatable_(t, mt)
   script_time(1)
   return loop(t)
end

-- The nested event tables this state's __index made, each with the table it was read from
-- (weak both ways: an entry goes with either). The fast paths of output_event and
-- analyze_event take a nested table for unchanged only when it is one of these, read from
-- that event table: a plain table dressed up as one (its metatable's __metatable copied, its
-- hidden fields too) is not.
local handed = setmetatable({}, {__mode = "kv"})

-- `find` writes its answer to `out`, which every read of this state shares, and returns its
-- kind with a stamp of that call (its low four bits are the kind). A finalizer that reads an
-- event can run between `find` and the reads of `out` (the collector runs at allocations,
-- and at the head of a compiled trace, such as the side trace of a kind seen for the first
-- time there), and its read overwrites `out`: a value is taken only when `out` still holds
-- this call's stamp after it was read, and the lookup is made again otherwise.
local band = require("bit").band
local index
index = function(t, k)
   local set = rawget(t, SET)
   if set ~= nil then
      if type(set) ~= "table" then tampered(2) end
      local v = rawget(set, k)
      if v ~= nil then
         if v == TOMB then return nil end
         return v
      end
   end
   local cache = rawget(t, CACHE)
   if cache ~= nil then
      if type(cache) ~= "table" then tampered(2) end
      local v = rawget(cache, k)
      if v ~= nil then return v end
   end
   if type(k) ~= "string" then return nil end
   local line = block_of(t)
   local span, seal = rawget(t, SPAN) or 0, rawget(t, SEAL)
   if line == nil or type(span) ~= "number" or type(seal) ~= "number" then tampered(2) end
   local stamp = find(line, span, seal, k, #k, out)
   local kind = band(stamp, 15)
   if kind == F_STRING then
      -- Reading `out.ptr` makes a pointer object, whose allocation can run a finalizer: the
      -- stamp is checked after it and before the copy, so that the pointer and the length
      -- are of the same answer (the copy reads `len` bytes from `ptr`).
      local n, p = out.len, out.ptr
      if out.kind ~= stamp then return index(t, k) end
      return ffistring(p, n)
   end
   if kind == F_INT then
      -- An integer (read from an int32_t: compiled code keeps it an integer).
      local v = out.len
      if out.kind == stamp then return v end
      return index(t, k)
   end
   if kind == F_NUMBER then
      local v = out.num
      if out.kind == stamp then return v end
      return index(t, k)
   end
   if kind == F_ABSENT then return nil end
   if kind == F_TRUE then return true end
   if kind == F_FALSE then return false end
   if kind == F_NULL then return lnull end
   if kind == F_TAMPERED then tampered(2) end
   if kind == F_OBJECT then
      -- A nested event table over the same line block (as `dispatch` makes the top level's),
      -- kept with the others handed out so that changes made through it stay. Its span is
      -- read first (the allocations below may run a finalizer that calls `find`), and taken
      -- only with this call's stamp. Checked as the C side checks a table before it hands
      -- out a nested one.
      local nspan = out.num
      if out.kind ~= stamp then return index(t, k) end
      local order, tspan = rawget(t, ORDER), rawget(t, SPAN)
      if (order ~= nil and type(order) ~= "table") or tspan == 0 then tampered(2) end
      local was = script_time(0)
      local nt = {[-1] = false, [-2] = false, [-3] = false, [-4] = false}
      nt[LINE] = line
      nt[SPAN] = nspan
      nt[SEAL] = seal
      nt[SET] = nil
      setmetatable_(nt, mt)
      local fresh = cache == nil and tnew(0, 2) or nil
      handed[nt] = t
      -- A finalizer run by those allocations (the GC runs at allocations, not at raw
      -- stores) may have read the same member or made the table of nested ones: what it
      -- made stays. The stores below may grow tables: still engine time.
      cache = rawget(t, CACHE)
      if cache == nil then
         cache = fresh or tnew(0, 2)
         rawset(t, CACHE, cache)
      end
      local first
      if type(cache) == "table" then
         first = rawget(cache, k)
         if first == nil then rawset(cache, k, nt) end
      end
      script_time(was)
      if type(cache) ~= "table" then tampered(2) end
      return first or nt
   end
   return slow_index(t, k)
end
mt.__index = index

mt.__newindex = function(t, k, v)
   if k == nil then error("table index is nil", 2) end
   if k ~= k then error("table index is NaN", 2) end
   if type(k) == "number" and k < 0 and k >= ORDER then tampered(2) end
   local set = rawget(t, SET)
   if set == nil then
      -- The first written key needs no order list: it is the write table's only key.
      set = tnew(0, 2)
      rawset(t, SET, set)
   elseif type(set) ~= "table" then
      tampered(2)
   elseif rawget(set, k) == nil then
      local order = rawget(t, ORDER)
      if order == nil then
         order = tnew(4, 0)
         order[1] = rawnext(set)
         rawset(t, ORDER, order)
      elseif type(order) ~= "table" then
         tampered(2)
      end
      order[#order + 1] = k
   end
   if v == nil then v = TOMB end
   rawset(set, k, v)
end

-- getmetatable(event) gives VIEW, not the metatable (which is also the deletion marker), and
-- setmetatable(event, ...) raises: the metatable is protected.
mt.__metatable = VIEW

-- output_event (and forward_event) and analyze_event of the common cases through the FFI, so
-- that a compiled trace does not leave for the C API: an event table unchanged or with one
-- member added (a scalar), and the current event passed on unchanged. Everything else, and
-- every case the FFI side declines, goes to the C functions (which check the table and report
-- what is wrong with it).
local emit = ffi.cast("int32_t (*)(const char *, size_t, const void *, double, double, const char *, size_t, int32_t, double, const char *, size_t, int32_t)", E.emit)
-- The state's cjson_safe settings (cjson.rs, CjsonConfig): the first byte is the number
-- precision (cjson_safe.encode_number_precision), which the fast path writes numbers with.
local cjson_cfg = ffi.cast("const uint8_t *", E.cjson_cfg)
local queue = ffi.cast("int32_t (*)(const char *, size_t, const void *, double)", E.queue)
local d = dragonfly
local c_output, c_analyze = d.output_event, d.analyze_event

-- Whether the nested tables an event table handed out (its CACHE) leave the event as its
-- bytes say: each one an event table over the same line and seal, unchanged, with nothing
-- handed out itself, and the one over its member (its span is that member's, which `find`
-- gives). Reading a nested field then does not send the event through the C encoder.
local function nested_clean(msg, line, span, seal)
   local cache = rawget(msg, CACHE)
   if cache == nil then return true end
   if type(cache) ~= "table" then return false end
   local k, nt = rawnext(cache)
   while k ~= nil do
      if type(k) ~= "string" or handed[nt] ~= msg or rawget(nt, LINE) ~= line
         or rawget(nt, SEAL) ~= seal or rawget(nt, SET) ~= nil or rawget(nt, CACHE) ~= nil
         or rawget(nt, ORDER) ~= nil then
         return false
      end
      local stamp = find(line, span, seal, k, #k, out)
      if band(stamp, 15) ~= F_OBJECT or out.num ~= rawget(nt, SPAN) or out.kind ~= stamp then
         return false
      end
      k, nt = rawnext(cache, k)
   end
   return true
end

local function output_event(...)
   if select('#', ...) == 2 then
      local tag, msg = ...
      if type(tag) == "string" and getmetatable(msg) == VIEW and rawget(msg, ORDER) == nil then
         local line, seal = block_of(msg), rawget(msg, SEAL)
         if line ~= nil and type(seal) == "number" then
            local span = rawget(msg, SPAN) or 0
            local set = rawget(msg, SET)
            if type(span) ~= "number" or not nested_clean(msg, line, span, seal) then
            elseif set == nil then
               if emit(tag, #tag, line, span, seal, nil, 0, ADDED_NONE, 0, nil, 0, cjson_cfg[0]) == DONE then return end
            elseif type(set) == "table" then
               local k, v = rawnext(set)
               if type(k) == "string" and rawnext(set, k) == nil then
                  local tv = type(v)
                  local r
                  if tv == "number" then
                     r = emit(tag, #tag, line, span, seal, k, #k, ADDED_NUMBER, v, nil, 0, cjson_cfg[0])
                  elseif tv == "string" then
                     r = emit(tag, #tag, line, span, seal, k, #k, ADDED_STRING, 0, v, #v, cjson_cfg[0])
                  elseif tv == "boolean" then
                     r = emit(tag, #tag, line, span, seal, k, #k, v and ADDED_TRUE or ADDED_FALSE, 0, nil, 0, cjson_cfg[0])
                  end
                  if r == DONE then return end
               end
            end
         end
      end
   end
   return c_output(...)
end
d.output_event = output_event
d.forward_event = output_event

d.analyze_event = function(...)
   if select('#', ...) == 2 then
      local tag, msg = ...
      if type(tag) == "string" and getmetatable(msg) == VIEW and rawget(msg, SPAN) == nil
         and rawget(msg, SET) == nil then
         local line, seal = block_of(msg), rawget(msg, SEAL)
         if line ~= nil and type(seal) == "number" and nested_clean(msg, line, 0, seal)
            and queue(tag, #tag, line, seal) == DONE then
            return
         end
      end
   end
   return c_analyze(...)
end

-- A script that connects per event and never calls close() leaves its connections to the
-- collector, which may not run for a long time: beyond GC_BEFORE_CONNECT open connections on
-- the worker, connect first runs a full collection (closing the ones nothing holds).
local GC_BEFORE_CONNECT = 32
local c_connect, hiredis_open, full_gc = hiredis.connect, E.hiredis_open, collectgarbage
hiredis.connect = function(...)
   if hiredis_open() >= GC_BEFORE_CONNECT then full_gc("collect") end
   return c_connect(...)
end

-- hiredis commands tell the C side whether the caller can yield: a command of a pipelined
-- analyzer is queued (and its coroutine suspended) only where it can.
local conn_methods, isyieldable = E.conn_methods, coroutine.isyieldable
local c_command, c_command_line = conn_methods.command, conn_methods.command_line
conn_methods.command = function(c, ...) return c_command(c, isyieldable(), ...) end
conn_methods.command_line = function(c, ...) return c_command_line(c, isyieldable(), ...) end

-- An error raised in a finalizer (__gc) does not reach the code the collector interrupted:
-- LuaJIT hands it to the state's "errfin" handler, and the engine counts and reports it as
-- a script error (without a handler it would be dropped without a word). The handler
-- allocates nothing: a collection step it started would run more finalizers while LuaJIT
-- holds their errors back (it turns its events off during a handler).
jit.attach(E.finalizer_error, "errfin")

-- What scripts may not reach. The FFI and the raw debug library read and write any memory
-- of the process; bytecode loaded by load/loadstring/loadfile/dofile/require can too (LuaJIT
-- does not verify bytecode); os.exit ends the engine, os.execute and package.loadlib can.
-- The modules above took what they need.
local preload, loaded = package.preload, package.loaded
preload.ffi, loaded.ffi = nil, nil
preload["jit.util"], loaded["jit.util"] = nil, nil
preload["jit.profile"], loaded["jit.profile"] = nil, nil
local function unavailable(name, why)
   return function() error(name .. " is not available to scripts (" .. why .. ")", 2) end
end
local dbg = debug
local safe_debug = { traceback = dbg.traceback, getinfo = dbg.getinfo }
debug = safe_debug
loaded.debug = safe_debug
local raw_require = require
function require(name)
   if name == "ffi" or name == "jit.util" or name == "jit.profile" then
      error("module '" .. tostring(name) .. "' is not available to scripts (it can read and write any memory of the engine)", 2)
   end
   return raw_require(name)
end
local raw_load, raw_loadfile = load, loadfile
-- Text chunks only: mode "t" whatever the caller asks.
function load(chunk, name, _, env) return raw_load(chunk, name, "t", env) end
function loadstring(s, name) return raw_load(s, name, "t") end
-- The memory of a process (/proc/self/mem) or of the machine is a file: opening it would read
-- and write the engine's memory. Every way of opening a file by name checks the name.
local memory_file = E.memory_file
local function guard(name, path)
   if type(path) == "string" and memory_file(path) then
      error(name .. ": " .. path .. " is the memory of a process or of the machine, which scripts may not open", 3)
   end
end
function loadfile(path, _, env) guard("loadfile", path) return raw_loadfile(path, "t", env) end
function dofile(path)
   guard("dofile", path)
   local f, err = raw_loadfile(path, "t")
   if f == nil then error(err, 2) end
   return f()
end
-- require's Lua-file searcher, text only (the C searchers load native modules: the
-- operator's code, outside the scripts' sandbox).
local loaders = package.loaders
if loaders ~= nil and package.searchpath ~= nil then
   loaders[2] = function(name)
      local path, err = package.searchpath(name, package.path)
      if path == nil then return err end
      guard("require", path)
      local f, lerr = raw_loadfile(path, "t")
      if f == nil then error("error loading module '" .. name .. "' from file '" .. path .. "':\n\t" .. lerr, 3) end
      return f
   end
end
os.exit = unavailable("os.exit", "a script cannot stop the engine")
-- os.execute runs a shell (which can signal the engine: `kill $PPID`); package.loadlib calls
-- any function of any shared library (`abort` of libc), native code the operator did not
-- install as a module. require's C searcher does not go through package.loadlib.
os.execute = unavailable("os.execute", "a script cannot run commands, which could stop the engine")
io.popen = unavailable("io.popen", "a script cannot run commands, which could stop the engine")
local raw_open, raw_lines, raw_input, raw_output = io.open, io.lines, io.input, io.output
io.open = function(path, ...) guard("io.open", path) return raw_open(path, ...) end
io.lines = function(path, ...) guard("io.lines", path) return raw_lines(path, ...) end
io.input = function(f, ...) guard("io.input", f) return raw_input(f, ...) end
io.output = function(f, ...) guard("io.output", f) return raw_output(f, ...) end
package.loadlib = unavailable("package.loadlib", "a script cannot call into arbitrary native libraries; C modules installed on package.cpath load with require")

-- A test's virtual clock (dragonfly-mle test): os.time() and os.date() without a time see it.
if E.vtime then
   local time, date, vtime = os.time, os.date, E.vtime
   os.time = function(t)
      if t == nil then return vtime() end
      return time(t)
   end
   os.date = function(f, t)
      if t == nil then return date(f, vtime()) end
      return date(f, t)
   end
end
-- print writes its whole line in one call (the engine's `print_line`, one fwrite under the C
-- stream's lock): LuaJIT's own writes each piece, tab and newline apart, and the lines of two
-- workers printing at once were cut into each other. As Lua's: each argument goes through
-- the global tostring as it is when print is called, pieces are joined with tabs, and the
-- line goes to the C standard output.
do
   local print_line = ffi.cast("void (*)(const char *, size_t)", E.print_line)
   local tconcat = table.concat
   function print(...)
      local n = select("#", ...)
      local parts = {}
      for i = 1, n do
         local s = tostring((select(i, ...)))
         local ts = type(s)
         if ts ~= "string" and ts ~= "number" then
            error("'tostring' must return a string to 'print'", 2)
         end
         parts[i] = s
      end
      local line = tconcat(parts, "\t", 1, n) .. "\n"
      print_line(line, #line)
   end
end
-- The collector keeps a state within its memory limit: "stop" is ignored.
local raw_collectgarbage = collectgarbage
function collectgarbage(opt, ...)
   if opt == "stop" then return 0 end
   return raw_collectgarbage(opt, ...)
end
-- Coroutines the engine runs pipelined calls in are resumed only by the engine.
local engine_threads = E.engine_threads
local raw_resume = coroutine.resume
coroutine.resume = function(co, ...)
   if engine_threads[co] then
      return false, "cannot resume the engine's coroutine (it runs a pipelined analyzer's loop(); only the engine resumes it)"
   end
   return raw_resume(co, ...)
end
