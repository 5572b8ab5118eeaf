//! Model test of event tables: random sequences of Lua operations (reads of present, absent
//! and nested keys, writes of scalars and tables, deletions, `pairs`, `next`, changes through
//! nested tables, changes while iterating, `#`, `type`) applied both to a lazy event table and
//! to a plain table that `cjson_safe.decode` made from the same JSON, checked for agreement
//! after every step in Lua (values, key sets, and the documented iteration order: original
//! members in document order, then added keys in the order of their first assignment); then
//! the outputs of both, in the filter, in an analyzer that got both through `analyze_event`
//! and went on changing them, and in an analyzer that got the event alone, parsed with
//! serde_json and compared here, with the key order of every event object still the event's
//! own checked against what the script expects. Events are top-level (`ev = msg`) or nested
//! (`ev = msg.doc`); 7% are left unchanged and must be written as their original bytes. The
//! first run uses one shard, the second two shards and a pipelined analyzer (`pipeline = 16`);
//! their outputs must be identical. `DFM_MODEL_EVENTS` and `DFM_MODEL_SEED` change the number
//! of events and the generator's seed (for longer runs).

use std::collections::HashSet;

use serde_json::Value;

use crate::util::*;

/// Number of generated events.
const EVENTS: usize = 1500;

/// The operations and checks, shared by the filter and the analyzer (`analyzer/model_lib.lua`).
const LIB: &str = r##"
-- Random operations applied to an event table and to a plain table decoded from the same
-- JSON (the model), checked for agreement after every step. Shared by the filter and the
-- analyzer of the model test (tests/model/mod.rs).
local M = {}
local null = cjson_safe.null
local SEP = "\31"

-- A Park-Miller generator (multiplier 48271): every product stays below 2^47, exact in doubles.
function M.rng(seed)
   local s = math.fmod(seed, 2147483646) + 1
   local r = {}
   function r.next()
      s = math.fmod(s * 48271, 2147483647)
      return s
   end
   function r.below(n) return math.fmod(r.next(), n) end
   function r.chance(pct) return math.fmod(r.next(), 100) < pct end
   function r.pick(list) return list[math.fmod(r.next(), #list) + 1] end
   return r
end

-- A path: SEP before every component (the root is "", its member "" is SEP).
function M.child(path, k)
   return path .. SEP .. tostring(k)
end

local function show(v)
   local t = type(v)
   if t == "string" then
      if #v > 60 then v = v:sub(1, 60) .. "..." end
      return string.format("%q", v)
   end
   if v == null then return "null" end
   if t == "table" then
      return (getmetatable(v) ~= nil and "event table" or "table") .. " (#" .. #v .. ")"
   end
   return tostring(v)
end
M.show = show

local function showpath(path)
   if path == "" then return "/" end
   return (path:gsub(SEP, "/"))
end

local function keycmp(a, b)
   local ta, tb = type(a), type(b)
   if ta ~= tb then return ta < tb end
   return a < b
end

-- The keys of a plain table, sorted (numbers first): plain tables iterate in hash order,
-- which changes from run to run; the choices must not.
function M.keys(t)
   local ks = {}
   for k in pairs(t) do ks[#ks + 1] = k end
   table.sort(ks, keycmp)
   return ks
end

function M.copy(v)
   if type(v) ~= "table" then return v end
   local c = {}
   for k, x in pairs(v) do c[k] = M.copy(x) end
   return c
end

-- ctx: ev, model, orders (list of {comps, keys}: every object of the document and its keys in
-- document order), added (path -> keys assigned that the object did not have, in order of
-- first assignment), seed, where, step, op.
function M.context(ev, model, orders, added, seed, where)
   local ctx = { ev = ev, model = model, orders = orders, seed = seed, where = where, step = 0, op = "start",
                 orig = {}, origset = {}, added = {}, addedset = {} }
   for _, o in ipairs(orders) do
      local comps, keys = o[1], o[2]
      local path = ""
      for i = 1, #comps do path = M.child(path, comps[i]) end
      local list, set = {}, {}
      for i = 1, #keys do list[i] = keys[i]; set[keys[i]] = true end
      ctx.orig[path] = list
      ctx.origset[path] = set
   end
   for path, list in pairs(added or {}) do
      local l, s = {}, {}
      for i = 1, #list do l[i] = list[i]; s[list[i]] = true end
      ctx.added[path] = l
      ctx.addedset[path] = s
   end
   return ctx
end

function M.fail(ctx, msg)
   error(string.format("model mismatch: seed=%d %s step=%d op=%s: %s", ctx.seed, ctx.where, ctx.step, ctx.op, msg), 0)
end
local fail = M.fail

-- The order pairs/next must give for the event object at `path`: its original members that
-- the model still has, in document order, then the keys assigned later, in order of first
-- assignment (an assignment of nil included), that the model has.
function M.expected(ctx, path, m)
   local res = {}
   local set = ctx.origset[path] or {}
   for _, k in ipairs(ctx.orig[path] or {}) do
      if m[k] ~= nil then res[#res + 1] = k end
   end
   for _, k in ipairs(ctx.added[path] or {}) do
      if not set[k] and m[k] ~= nil then res[#res + 1] = k end
   end
   return res
end

local function track(ctx, path, k)
   if type(k) ~= "string" then return end
   local o = ctx.origset[path]
   if o and o[k] then return end
   local s = ctx.addedset[path]
   if not s then
      s = {}
      ctx.addedset[path] = s
      ctx.added[path] = {}
   end
   if not s[k] then
      s[k] = true
      local l = ctx.added[path]
      l[#l + 1] = k
   end
end

-- Compares an event value with its model value: types, scalars, key sets, `#`, index and
-- pairs agreeing, and for event objects the iteration order. `deep` descends into tables.
function M.same(ctx, e, m, path, deep)
   local te, tm = type(e), type(m)
   if te ~= tm then
      fail(ctx, string.format("at %s: event %s, model %s", showpath(path), show(e), show(m)))
   end
   if te ~= "table" then
      if e ~= m then
         fail(ctx, string.format("at %s: event %s, model %s", showpath(path), show(e), show(m)))
      end
      return
   end
   if #e ~= #m then
      fail(ctx, string.format("at %s: #event %d, #model %d", showpath(path), #e, #m))
   end
   local n, seen, order = 0, {}, {}
   for k, v in pairs(e) do
      if seen[k] then fail(ctx, string.format("at %s: pairs gives %s twice", showpath(path), show(k))) end
      n = n + 1
      seen[k] = true
      order[n] = k
      local mv = m[k]
      if mv == nil then
         fail(ctx, string.format("at %s: key %s (value %s) only in the event", showpath(path), show(k), show(v)))
      end
      if e[k] ~= v then
         fail(ctx, string.format("at %s: pairs gives %s = %s, index %s", showpath(path), show(k), show(v), show(e[k])))
      end
      if deep then
         M.same(ctx, v, mv, M.child(path, k), true)
      elseif type(v) ~= type(mv) or (type(v) ~= "table" and v ~= mv) then
         fail(ctx, string.format("at %s: member %s: event %s, model %s", showpath(path), show(k), show(v), show(mv)))
      end
   end
   for k in pairs(m) do
      if not seen[k] then
         fail(ctx, string.format("at %s: key %s missing from the event (model %s)", showpath(path), show(k), show(m[k])))
      end
   end
   if getmetatable(e) ~= nil then
      local exp = M.expected(ctx, path, m)
      for i = 1, math.max(n, #exp) do
         if exp[i] ~= order[i] then
            fail(ctx, string.format("at %s: pairs order differs at %d: got %s, want %s (got %d keys, want %d)",
               showpath(path), i, show(order[i]), show(exp[i]), n, #exp))
         end
      end
   end
end

-- Values to write.
local STRS = { "", "x", "GET", "10.0.0.1", "quote\"d", "back\\slash", "line\nbreak", "tab\tbed", "ctrl\1\31\127",
   "nul\0byte", "\195\169", "\230\151\165\230\156\172", "\240\159\152\128", "a/b\\/c", "\226\130\172 euro",
   string.rep("long", 40) }
local NUMS = { 0, -1, 1, 42, 65535, 3.25, -0.5, 1e-7, 2 ^ 53, -2 ^ 53, 1e300, 123456.789, 0.1, 4294967296, -0.0 }
local KEYS = { "new", "x", "y", "src_ip", "dest_port", "event_type", "flow", "dns", "alert", "", "k\"q", "\195\188n\195\175",
   "sp ace", "tab\tkey", "nul\0k", "a/b", "added_1", "added_2", "\240\159\152\128", "metadata", "extra", "src", "rrname",
   "timestamp" }
M.KEYS = KEYS

function M.scalar(r)
   local c = r.below(100)
   if c < 40 then
      local s = r.pick(STRS)
      for _ = 1, r.below(3) do s = s .. r.pick(STRS) end
      return s
   elseif c < 70 then
      local d = r.below(4)
      if d == 0 then return r.below(2000000) - 1000000 end
      if d == 1 then return r.next() / 1024 end
      return r.pick(NUMS)
   elseif c < 88 then
      return r.chance(50)
   end
   return null
end

function M.value(r, depth)
   depth = depth or 0
   if depth >= 3 or r.chance(65) then return M.scalar(r) end
   local t = {}
   if r.chance(50) then
      for i = 1, r.below(5) do t[i] = M.value(r, depth + 1) end
   else
      for _ = 1, r.below(5) do t[r.pick(KEYS)] = M.value(r, depth + 1) end
   end
   return t
end

local function table_value(r)
   local v = M.value(r, 2)
   if type(v) == "table" then return v end
   local t = {}
   if r.chance(50) then t[1] = v else t[r.pick(KEYS)] = v end
   return t
end

-- Assigns `v` (a copy to each side) to key k of the object or array at `path`.
local function assign(ctx, e, m, path, k, v)
   e[k] = M.copy(v)
   m[k] = M.copy(v)
   track(ctx, path, k)
end

local function check_member(ctx, e, m, path, k)
   local ev, mv = e[k], m[k]
   M.same(ctx, ev, mv, M.child(path, k), false)
end

-- Picks a table of the model and the event's table at the same place: from the root, going
-- down into a random member table with probability 55% per level.
function M.pick_node(ctx, r)
   local e, m, path, comps = ctx.ev, ctx.model, "", {}
   while true do
      local kids = {}
      for _, k in ipairs(M.keys(m)) do
         if type(m[k]) == "table" then kids[#kids + 1] = k end
      end
      if #kids == 0 or r.chance(45) then return e, m, path, comps end
      local k = r.pick(kids)
      local ne = e[k]
      path = M.child(path, k)
      comps[#comps + 1] = k
      if type(ne) ~= "table" then
         fail(ctx, string.format("at %s: event %s, model table", showpath(path), show(ne)))
      end
      e, m = ne, m[k]
   end
end

local function absent_key(r, m, ks)
   local cands = { "absent", "SRC_IP", "src_ip ", 1, true }
   for _ = 1, 3 do
      local k = r.pick(ks)
      if type(k) == "string" then
         cands[#cands + 1] = k .. "_"
         cands[#cands + 1] = k:sub(1, -2)
         cands[#cands + 1] = "_" .. k
         cands[#cands + 1] = k:upper()
      end
   end
   for _ = 1, 5 do
      local k = r.pick(cands)
      if m[k] == nil then return k end
   end
   return "absent\0really"
end

local function string_keys(ks)
   local s = {}
   for _, k in ipairs(ks) do
      if type(k) == "string" then s[#s + 1] = k end
   end
   return s
end

-- Operations on an object (event object or plain table with string keys, or an empty table).
local OBJECT_OPS = {
   { "read", 16, function(ctx, r, e, m, path, ks)
      if #ks == 0 then return false end
      local k = r.pick(ks)
      M.same(ctx, e[k], m[k], M.child(path, k), r.chance(30))
   end },
   { "read absent", 6, function(ctx, r, e, m, path, ks)
      local k = absent_key(r, m, ks)
      if e[k] ~= nil then fail(ctx, string.format("absent key %s reads %s", show(k), show(e[k]))) end
   end },
   { "write scalar new", 10, function(ctx, r, e, m, path, ks)
      local k = r.pick(KEYS)
      assign(ctx, e, m, path, k, M.scalar(r))
      check_member(ctx, e, m, path, k)
   end },
   { "write scalar existing", 10, function(ctx, r, e, m, path, ks)
      ks = string_keys(ks)
      if #ks == 0 then return false end
      local k = r.pick(ks)
      assign(ctx, e, m, path, k, M.scalar(r))
      check_member(ctx, e, m, path, k)
   end },
   { "rewrite same value", 3, function(ctx, r, e, m, path, ks)
      ks = string_keys(ks)
      if #ks == 0 then return false end
      local k = r.pick(ks)
      if type(m[k]) == "table" then return false end
      assign(ctx, e, m, path, k, m[k])
      check_member(ctx, e, m, path, k)
   end },
   { "write table", 7, function(ctx, r, e, m, path, ks)
      local sk = string_keys(ks)
      local k
      if #sk > 0 and r.chance(50) then k = r.pick(sk) else k = r.pick(KEYS) end
      assign(ctx, e, m, path, k, table_value(r))
      M.same(ctx, e[k], m[k], M.child(path, k), true)
   end },
   { "delete", 8, function(ctx, r, e, m, path, ks)
      ks = string_keys(ks)
      if #ks == 0 then return false end
      local k = r.pick(ks)
      assign(ctx, e, m, path, k, nil)
      if e[k] ~= nil then fail(ctx, "deleted key " .. show(k) .. " reads " .. show(e[k])) end
   end },
   { "delete absent", 2, function(ctx, r, e, m, path, ks)
      local k = absent_key(r, m, ks)
      if type(k) ~= "string" then return false end
      assign(ctx, e, m, path, k, nil)
      if e[k] ~= nil then fail(ctx, "absent key " .. show(k) .. " reads " .. show(e[k])) end
   end },
   { "write then delete", 4, function(ctx, r, e, m, path, ks)
      local k = r.pick(KEYS)
      assign(ctx, e, m, path, k, M.value(r, 1))
      check_member(ctx, e, m, path, k)
      assign(ctx, e, m, path, k, nil)
      if e[k] ~= nil then fail(ctx, "deleted key " .. show(k) .. " reads " .. show(e[k])) end
   end },
   { "write delete write", 3, function(ctx, r, e, m, path, ks)
      local k = r.pick(KEYS)
      assign(ctx, e, m, path, k, M.scalar(r))
      assign(ctx, e, m, path, k, nil)
      local k2 = r.pick(KEYS)
      if k2 ~= k then assign(ctx, e, m, path, k2, M.scalar(r)) end
      assign(ctx, e, m, path, k, M.value(r, 1))
      M.same(ctx, e, m, path, false)
   end },
   { "pairs", 8, function(ctx, r, e, m, path, ks)
      M.same(ctx, e, m, path, r.chance(20))
   end },
   { "next", 5, function(ctx, r, e, m, path, ks)
      local seq, n = {}, 0
      local k, v = next(e)
      while k ~= nil do
         n = n + 1
         if n > 100000 then fail(ctx, "next does not end") end
         seq[n] = k
         M.same(ctx, v, m[k], M.child(path, k), false)
         k, v = next(e, k)
      end
      local i = 0
      for pk in pairs(e) do
         i = i + 1
         if seq[i] ~= pk then
            fail(ctx, string.format("next gives %s as key %d, pairs %s", show(seq[i]), i, show(pk)))
         end
      end
      if i ~= n then fail(ctx, string.format("next gives %d keys, pairs %d", n, i)) end
      M.same(ctx, e, m, path, false)
   end },
   { "modify nested", 8, function(ctx, r, e, m, path, ks)
      local kids = {}
      for _, k in ipairs(ks) do
         if type(m[k]) == "table" then kids[#kids + 1] = k end
      end
      if #kids == 0 then return false end
      local k = r.pick(kids)
      local s, ms = e[k], m[k]
      if type(s) ~= "table" then fail(ctx, "member " .. show(k) .. " is " .. show(s) .. " in the event") end
      local sub = M.child(path, k)
      if #ms > 0 then
         local i = r.below(#ms + 1) + 1
         assign(ctx, s, ms, sub, i, M.value(r, 2))
      else
         assign(ctx, s, ms, sub, r.pick(KEYS), M.value(r, 2))
      end
      if e[k] ~= s then fail(ctx, "member " .. show(k) .. " is another table after a change through it") end
      M.same(ctx, e[k], m[k], sub, false)
   end },
   { "self assign", 3, function(ctx, r, e, m, path, ks)
      ks = string_keys(ks)
      if #ks == 0 then return false end
      local k = r.pick(ks)
      e[k] = e[k]
      m[k] = m[k]
      track(ctx, path, k)
      M.same(ctx, e[k], m[k], M.child(path, k), false)
   end },
   { "change while iterating", 4, function(ctx, r, e, m, path, ks)
      ks = string_keys(ks)
      if #ks == 0 then return false end
      local del, mod = {}, {}
      for _, k in ipairs(ks) do
         local c = r.below(4)
         if c == 0 then del[k] = true elseif c == 1 then mod[k] = M.scalar(r) end
      end
      for _, t in ipairs({ e, m }) do
         for k in pairs(t) do
            if del[k] then t[k] = nil elseif mod[k] ~= nil then t[k] = mod[k] end
         end
      end
      M.same(ctx, e, m, path, false)
   end },
   { "type and length", 2, function(ctx, r, e, m, path, ks)
      if type(e) ~= "table" then fail(ctx, "type(event) is " .. type(e)) end
      if #e ~= #m then fail(ctx, string.format("#event %d, #model %d", #e, #m)) end
   end },
}

-- Operations on a non-empty array (a plain table on both sides).
local ARRAY_OPS = {
   { "array read", 10, function(ctx, r, e, m, path)
      local i = r.below(#m + 1) + 1
      M.same(ctx, e[i], m[i], M.child(path, i), r.chance(30))
   end },
   { "array length", 4, function(ctx, r, e, m, path)
      if #e ~= #m then fail(ctx, string.format("#event %d, #model %d", #e, #m)) end
   end },
   { "array set", 6, function(ctx, r, e, m, path)
      local i = r.below(#m) + 1
      assign(ctx, e, m, path, i, M.value(r, 1))
      check_member(ctx, e, m, path, i)
   end },
   { "array append", 5, function(ctx, r, e, m, path)
      local v = M.value(r, 1)
      table.insert(e, M.copy(v))
      table.insert(m, M.copy(v))
      M.same(ctx, e, m, path, false)
   end },
   { "array pop", 4, function(ctx, r, e, m, path)
      table.remove(e)
      table.remove(m)
      M.same(ctx, e, m, path, false)
   end },
   { "ipairs", 4, function(ctx, r, e, m, path)
      local n = 0
      for i, v in ipairs(e) do
         n = i
         M.same(ctx, v, m[i], M.child(path, i), false)
      end
      if n ~= #m then fail(ctx, string.format("ipairs gives %d elements, model has %d", n, #m)) end
   end },
   { "array pairs", 3, function(ctx, r, e, m, path)
      M.same(ctx, e, m, path, r.chance(30))
   end },
}

local function weighted(ops, r)
   local total = 0
   for _, o in ipairs(ops) do total = total + o[2] end
   local x = r.below(total)
   for _, o in ipairs(ops) do
      if x < o[2] then return o end
      x = x - o[2]
   end
end

-- Runs `n` random operations, checking after each. With n == 1 the operation is a scalar
-- written to the root (the case output_event writes without the encoder).
function M.run(ctx, r, n)
   for step = 1, n do
      ctx.step = step
      local e, m, path = ctx.ev, ctx.model, ""
      if n > 1 then e, m, path = M.pick_node(ctx, r) end
      ctx.op = "pick " .. showpath(path)
      if r.chance(3) then
         ctx.op = "compare all"
         M.same(ctx, ctx.ev, ctx.model, "", true)
      else
         local ks = M.keys(m)
         local is_array = #m > 0
         local done = false
         for _ = 1, 10 do
            local o = n == 1 and OBJECT_OPS[3] or weighted(is_array and ARRAY_OPS or OBJECT_OPS, r)
            ctx.op = o[1] .. " at " .. showpath(path)
            if o[3](ctx, r, e, m, path, ks) ~= false then
               done = true
               break
            end
         end
         if not done then
            ctx.op = "pairs at " .. showpath(path)
            M.same(ctx, e, m, path, false)
         end
      end
   end
end

-- For every object of the document that is still the event's own (an event table, not a
-- table a script put there), the key order its output must have: {comps, keys}.
function M.orders_out(ctx)
   local res = {}
   for _, o in ipairs(ctx.orders) do
      local comps = o[1]
      local e, m, path, ok = ctx.ev, ctx.model, "", true
      for i = 1, #comps do
         if type(e) ~= "table" or type(m) ~= "table" then
            ok = false
            break
         end
         e, m = e[comps[i]], m[comps[i]]
         path = M.child(path, comps[i])
      end
      if ok and type(e) == "table" and getmetatable(e) ~= nil and type(m) == "table" then
         local c = {}
         for i = 1, #comps do c[i] = comps[i] end
         res[#res + 1] = { c, M.expected(ctx, path, m) }
      end
   end
   return res
end

return M
"##;

/// The filter: builds the event table and the model, runs the operations, writes both, hands
/// both to analyzer `a` and the event alone to analyzer `b`, and writes the key orders the
/// event's objects must have in `out`.
const FILTER: &str = r##"
local L = require 'analyzer/model_lib'
function setup() end
function loop(msg)
   local ev, model, raw
   if msg._nested then
      ev = msg.doc
      raw = msg._raw
      model = cjson_safe.decode(raw)
   else
      -- Only scalars are read from a top-level event before the operations, so that an
      -- unchanged one (or one with a scalar added) takes output_event's FFI paths.
      ev = msg
      raw = msg._raw
      model = cjson_safe.decode(raw)
      if model ~= nil then model._raw = raw end
   end
   if type(model) ~= "table" then
      error("model: cjson_safe.decode failed on " .. tostring(raw):sub(1, 200), 0)
   end
   local meta = msg._nested and msg or model
   local seed, nops = meta._seed, meta._nops
   local orders = L.copy(meta._orders)
   local ctx = L.context(ev, model, orders, nil, seed, "filter")
   if type(ev) ~= "table" then L.fail(ctx, "the event is a " .. type(ev)) end
   local r = L.rng(seed)
   L.run(ctx, r, nops)
   dragonfly.output_event("out", ev)
   dragonfly.output_event("model", model)
   local json, err = cjson_safe.encode(model)
   if json == nil then L.fail(ctx, "cjson_safe.encode(model): " .. tostring(err)) end
   dragonfly.analyze_event("a", { ev = ev, model = model, model_json = json, orders = orders, added = ctx.added,
      seed = seed, nops = nops == 0 and 0 or 8 + r.below(8) })
   dragonfly.analyze_event("b", ev)
   dragonfly.output_event("order", L.orders_out(ctx))
end
"##;

/// Analyzer `a`: checks the copies it got, decodes its own model from the JSON text, runs
/// more operations (seeded differently) and writes both and the expected key orders.
const ANALYZER_A: &str = r##"
local L = require 'analyzer/model_lib'
function setup() end
function loop(msg)
   local model = cjson_safe.decode(msg.model_json)
   local ctx = L.context(msg.ev, model, msg.orders, msg.added, msg.seed, "analyzer")
   ctx.op = "copied model"
   L.same(ctx, msg.model, model, "", true)
   local r = L.rng(msg.seed * 7 + 3)
   if msg.nops > 0 and r.chance(50) then
      ctx.op = "copied event"
      L.same(ctx, ctx.ev, model, "", true)
   end
   L.run(ctx, r, msg.nops)
   dragonfly.output_event("aout", ctx.ev)
   dragonfly.output_event("amodel", model)
   dragonfly.output_event("aorder", L.orders_out(ctx))
end
"##;

/// Analyzer `b`: writes the event it got.
const ANALYZER_B: &str = "function setup() end\nfunction loop(msg) dragonfly.output_event(\"bout\", msg) end\n";

/// The output files, by tag (`<tag>.json`).
const OUTPUTS: [&str; 7] = ["out", "model", "order", "aout", "amodel", "aorder", "bout"];

/// The configuration; `pipeline` makes analyzer `a` pipelined (events run in windows of that
/// many, filters first, analyzers as coroutines).
fn config(pipeline: u32) -> String {
    let outputs: Vec<String> = OUTPUTS
        .iter()
        .map(|t| format!("  {{ tag = \"{t}\", uri = \"file://{t}.json<\" }},\n"))
        .collect();
    // Numbers the model re-encodes must read back exactly (14 digits is the default).
    format!(
        "number_precision = 17\n\
         inputs = {{ {{ tag = \"eve\", uri = \"file://in.json\", script = \"model_filter.lua\", default_analyzer = \"a\" }} }}\n\
         analyzers = {{\n  {{ tag = \"a\", script = \"model_a.lua\", default_analyzer = \"\", default_output = \"aout\", pipeline = {pipeline} }},\n  \
         {{ tag = \"b\", script = \"model_b.lua\", default_analyzer = \"\", default_output = \"bout\" }},\n}}\n\
         outputs = {{\n{}}}\n",
        outputs.concat()
    )
}

// ---------------------------------------------------------------------------------------------
// Generated documents
// ---------------------------------------------------------------------------------------------

/// A JSON value as generated; numbers keep their literal text, `Raw` is written as it is.
#[derive(Clone, Debug)]
enum Doc {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Doc>),
    Obj(Vec<(String, Doc)>),
    Raw(String),
}

/// One step of a path: an object key or a (1-based) array index.
#[derive(Clone, Debug)]
enum Comp {
    Key(String),
    Idx(usize),
}

const SURICATA_KEYS: &[&str] = &[
    "timestamp",
    "flow_id",
    "in_iface",
    "event_type",
    "src_ip",
    "src_port",
    "dest_ip",
    "dest_port",
    "proto",
    "app_proto",
    "tx_id",
    "alert",
    "action",
    "gid",
    "signature_id",
    "rev",
    "signature",
    "category",
    "severity",
    "metadata",
    "dns",
    "type",
    "id",
    "rrname",
    "rrtype",
    "rcode",
    "answers",
    "ttl",
    "rdata",
    "http",
    "hostname",
    "url",
    "http_user_agent",
    "http_method",
    "protocol",
    "status",
    "length",
    "tls",
    "subject",
    "issuerdn",
    "sni",
    "version",
    "ja3",
    "hash",
    "string",
    "fileinfo",
    "filename",
    "sha256",
    "size",
    "stored",
    "flow",
    "pkts_toserver",
    "pkts_toclient",
    "bytes_toserver",
    "bytes_toclient",
    "start",
    "end",
    "age",
    "state",
    "reason",
    "alerted",
    "stats",
    "uptime",
    "capture",
    "kernel_packets",
    "src",
    "src_",
    "dest",
    "a",
    "b",
];

const SPECIAL_KEYS: &[&str] = &[
    "",
    "k\"q",
    "back\\slash",
    "ünïcödé",
    "日本",
    "😀",
    "tab\tkey",
    "nul\u{0}k",
    "sp ace",
    "a/b",
    "ctl\u{1}\u{7f}",
    "x",
    "SRC_IP",
    "src_ip ",
    "new",
    "added_1",
];

const STRINGS: &[&str] = &[
    "10.0.0.1",
    "192.168.1.20",
    "GET",
    "/index.html?a=b&c=d",
    "Mozilla/5.0 (X11; Linux x86_64)",
    "ET POLICY \"quoted\" rule",
    "C:\\Windows\\System32",
    "line1\nline2",
    "tab\there",
    "ünïcödé",
    "日本語テキスト",
    "😀 emoji 🎉",
    "",
    "nul\u{0}byte",
    "del\u{7f}",
    "us\u{1f}",
    "a/b/c",
    "€uro",
    "TLSv1.3",
    "allowed",
    "x",
];

const ALPHABET: &[char] = &[
    'a',
    'b',
    'z',
    'A',
    'Q',
    '0',
    '7',
    ' ',
    '"',
    '\\',
    '/',
    '\n',
    '\t',
    '\r',
    '\u{8}',
    '\u{c}',
    '\u{1}',
    '\u{1f}',
    '\u{7f}',
    'é',
    'ß',
    '€',
    '日',
    '😀',
    '\u{10ffff}',
    '\u{fffd}',
    '\u{2028}',
    '.',
    ':',
    '-',
];

/// Numbers that are easy to get wrong.
const HARD_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-0.0",
    "0.0",
    "1e308",
    "1.7976931348623157e308",
    "5e-324",
    "2.2250738585072014e-308",
    "0.30000000000000004",
    "9007199254740993",
    "18446744073709551615",
    "123456789012345678",
    "1234567890123456789",
    "0.1",
    "1E2",
    "1e+2",
    "-1.5e-7",
    // Not "100000000000000000000" (or any integer beyond the 64-bit ranges): the reader
    // rejects such a line as invalid JSON (simd-json "InvalidNumber"); see the report.
];

struct Gen {
    rng: Rng,
}

impl Gen {
    fn pick<'a, T>(&mut self, list: &'a [T]) -> &'a T {
        &list[self.rng.below(list.len() as u64) as usize]
    }

    fn string(&mut self) -> String {
        if self.rng.below(3) == 0 {
            let n = self.rng.below(13);
            (0..n).map(|_| *self.pick(ALPHABET)).collect()
        } else {
            self.pick(STRINGS).to_string()
        }
    }

    fn number(&mut self) -> String {
        let r = &mut self.rng;
        match r.below(12) {
            0 => r.below(100).to_string(),
            1 => r.below(65536).to_string(),
            2 => r.below(1 << 53).to_string(),
            3 => format!("-{}", r.below(1_000_000)),
            4 | 5 => format!("{}", r.below(10_000_000) as f64 / 1000.0),
            6 => format!("{}e{}", r.below(1000), r.below(40) as i64 - 20),
            7 => format!("{}.{}E+{}", r.below(10), r.below(1000), r.below(10)),
            8 => format!("-{}.{:03}", r.below(100), r.below(1000)),
            _ => self.pick(HARD_NUMBERS).to_string(),
        }
    }

    fn value(&mut self, depth: usize) -> Doc {
        let c = self.rng.below(100);
        match c {
            _ if c < 26 => Doc::Str(self.string()),
            _ if c < 40 => Doc::Num(self.number()),
            _ if c < 48 => Doc::Bool(self.rng.below(2) == 0),
            _ if c < 53 => Doc::Null,
            _ if c < 70 && depth < 4 => self.object(depth + 1, 0, 6),
            _ if c < 85 && depth < 4 => {
                let n = self.rng.below(6);
                Doc::Arr((0..n).map(|_| self.value(depth + 1)).collect())
            }
            _ => Doc::Str(self.string()),
        }
    }

    fn object(&mut self, depth: usize, min: u64, max: u64) -> Doc {
        let n = min + self.rng.below(max - min + 1);
        let mut seen = HashSet::new();
        let mut members = Vec::new();
        for _ in 0..n {
            let k = if self.rng.below(100) < 85 {
                self.pick(SURICATA_KEYS).to_string()
            } else {
                self.pick(SPECIAL_KEYS).to_string()
            };
            if seen.insert(k.clone()) {
                let v = self.value(depth);
                members.push((k, v));
            }
        }
        Doc::Obj(members)
    }
}

/// Every object of `d` (at `comps`) with its keys in document order.
fn orders(d: &Doc, comps: &mut Vec<Comp>, out: &mut Vec<(Vec<Comp>, Vec<String>)>) {
    match d {
        Doc::Obj(members) => {
            out.push((comps.clone(), members.iter().map(|(k, _)| k.clone()).collect()));
            for (k, v) in members {
                comps.push(Comp::Key(k.clone()));
                orders(v, comps, out);
                comps.pop();
            }
        }
        Doc::Arr(items) => {
            for (i, v) in items.iter().enumerate() {
                comps.push(Comp::Idx(i + 1));
                orders(v, comps, out);
                comps.pop();
            }
        }
        _ => {}
    }
}

fn orders_doc(list: &[(Vec<Comp>, Vec<String>)]) -> Doc {
    Doc::Arr(
        list.iter()
            .map(|(comps, keys)| {
                let comps = comps
                    .iter()
                    .map(|c| match c {
                        Comp::Key(k) => Doc::Str(k.clone()),
                        Comp::Idx(i) => Doc::Num(i.to_string()),
                    })
                    .collect();
                Doc::Arr(vec![
                    Doc::Arr(comps),
                    Doc::Arr(keys.iter().cloned().map(Doc::Str).collect()),
                ])
            })
            .collect(),
    )
}

/// Writes JSON text with random (valid) spellings: escapes where none are needed, `\/`,
/// `\u` escapes of any character (surrogate pairs above the BMP), and, with `ws`, blanks
/// between tokens.
struct Writer<'a> {
    rng: &'a mut Rng,
    ws: bool,
}

impl Writer<'_> {
    fn blank(&mut self, out: &mut String) {
        if self.ws && self.rng.below(4) == 0 {
            out.push_str([" ", "\t", "  ", " \t"][self.rng.below(4) as usize]);
        }
    }

    fn string(&mut self, s: &str, key: bool, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            let r = self.rng.below(100);
            let hex = |out: &mut String, u: u32, upper: bool| {
                if upper {
                    out.push_str(&format!("\\u{u:04X}"));
                } else {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            };
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '/' if r < 50 => out.push_str("\\/"),
                '\n' if r < 70 => out.push_str("\\n"),
                '\t' if r < 70 => out.push_str("\\t"),
                '\r' if r < 70 => out.push_str("\\r"),
                '\u{8}' if r < 70 => out.push_str("\\b"),
                '\u{c}' if r < 70 => out.push_str("\\f"),
                c if (c as u32) < 0x20 => hex(out, c as u32, r.is_multiple_of(2)),
                c if c.is_ascii() && r < if key { 6 } else { 3 } => hex(out, c as u32, r.is_multiple_of(2)),
                c if !c.is_ascii() && r < 25 => {
                    let mut buf = [0u16; 2];
                    for u in c.encode_utf16(&mut buf) {
                        hex(out, *u as u32, r.is_multiple_of(2));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }

    fn value(&mut self, d: &Doc, out: &mut String) {
        match d {
            Doc::Null => out.push_str("null"),
            Doc::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Doc::Num(n) | Doc::Raw(n) => out.push_str(n),
            Doc::Str(s) => self.string(s, false, out),
            Doc::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.blank(out);
                    self.value(v, out);
                    self.blank(out);
                }
                out.push(']');
            }
            Doc::Obj(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.blank(out);
                    self.string(k, true, out);
                    self.blank(out);
                    out.push(':');
                    self.blank(out);
                    self.value(v, out);
                    self.blank(out);
                }
                out.push('}');
            }
        }
    }
}

/// One generated input line and what the test knows about it.
struct Case {
    line: String,
    seed: u64,
    nops: u64,
    nested: bool,
    /// The event's bytes as an unchanged event table writes them.
    original: String,
}

fn gen_case(g: &mut Gen) -> Case {
    let seed = 1 + g.rng.below((1 << 31) - 3);
    let nops = match g.rng.below(100) {
        0..7 => 0,
        7..12 => 1,
        _ => 20 + g.rng.below(21),
    };
    let nested = g.rng.below(2) == 0;
    let ws = g.rng.below(3) == 0;
    let Doc::Obj(mut members) = g.object(0, 4, 10) else {
        unreachable!()
    };
    let mut w = Writer { rng: &mut g.rng, ws };
    let mut list = Vec::new();
    if nested {
        let doc = Doc::Obj(members);
        orders(&doc, &mut Vec::new(), &mut list);
        let mut raw = String::new();
        Writer {
            rng: &mut *w.rng,
            ws: false,
        }
        .value(&doc, &mut raw);
        let mut original = String::new();
        w.value(&doc, &mut original);
        let wrapper = Doc::Obj(vec![
            ("_nested".into(), Doc::Bool(true)),
            ("_seed".into(), Doc::Num(seed.to_string())),
            ("_nops".into(), Doc::Num(nops.to_string())),
            ("_orders".into(), orders_doc(&list)),
            ("doc".into(), Doc::Raw(original.clone())),
            ("_raw".into(), Doc::Str(raw)),
        ]);
        let mut line = String::new();
        w.value(&wrapper, &mut line);
        Case {
            line,
            seed,
            nops,
            nested,
            original,
        }
    } else {
        orders(&Doc::Obj(members.clone()), &mut Vec::new(), &mut list);
        list[0]
            .1
            .extend(["_seed", "_nops", "_orders", "_raw"].map(String::from));
        members.push(("_seed".into(), Doc::Num(seed.to_string())));
        members.push(("_nops".into(), Doc::Num(nops.to_string())));
        members.push(("_orders".into(), orders_doc(&list)));
        let mut raw = String::new();
        Writer {
            rng: &mut *w.rng,
            ws: false,
        }
        .value(&Doc::Obj(members.clone()), &mut raw);
        members.push(("_raw".into(), Doc::Str(raw)));
        let mut original = String::new();
        w.value(&Doc::Obj(members), &mut original);
        let mut line = original.clone();
        if ws {
            line = format!(" \t{line}  ");
        }
        Case {
            line,
            seed,
            nops,
            nested,
            original,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// A JSON value as the comparison sees it: numbers as f64, and an empty array as `{}` (the
/// encoder writes every empty Lua table as `{}`; an unchanged event keeps its `[]`).
fn norm(v: Value) -> Value {
    match v {
        Value::Number(n) => Value::from(n.as_f64().expect("a number")),
        Value::Array(a) if a.is_empty() => Value::Object(Default::default()),
        Value::Array(a) => Value::Array(a.into_iter().map(norm).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, norm(v))).collect()),
        v => v,
    }
}

/// Where two normalized values first differ (None when equal).
fn first_diff(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    None => return Some(format!("{path}/{k:?}: only in the event")),
                    Some(w) => {
                        if let Some(d) = first_diff(v, w, &format!("{path}/{k:?}")) {
                            return Some(d);
                        }
                    }
                }
            }
            y.keys()
                .find(|k| !x.contains_key(*k))
                .map(|k| format!("{path}/{k:?}: only in the model"))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_diff(v, w, &format!("{path}/{}", i + 1))),
        _ if a == b => None,
        _ => Some(format!("{path}: event {a}, model {b}")),
    }
}

fn parse(line: &[u8], what: &str) -> Result<Value, String> {
    serde_json::from_slice(line).map_err(|e| format!("{what}: not JSON ({e}): {}", show(line)))
}

/// The structure of a JSON text with object keys in the order written.
enum Tree {
    Obj(Vec<(String, Tree)>),
    Arr(Vec<Tree>),
    Leaf,
}

fn tree(b: &[u8]) -> Tree {
    let mut i = 0;
    tree_at(b, &mut i)
}

fn skip_blanks(b: &[u8], i: &mut usize) {
    while matches!(b.get(*i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        *i += 1;
    }
}

fn skip_string(b: &[u8], i: &mut usize) {
    *i += 1;
    while let Some(&c) = b.get(*i) {
        *i += if c == b'\\' { 2 } else { 1 };
        if c == b'"' {
            return;
        }
    }
}

fn tree_at(b: &[u8], i: &mut usize) -> Tree {
    skip_blanks(b, i);
    match b.get(*i) {
        Some(b'{') => {
            *i += 1;
            let mut members = Vec::new();
            loop {
                skip_blanks(b, i);
                match b.get(*i) {
                    Some(b'}') | None => break,
                    Some(b',') => *i += 1,
                    _ => {
                        let start = *i;
                        skip_string(b, i);
                        let k: String = serde_json::from_slice(&b[start..*i]).unwrap_or_default();
                        skip_blanks(b, i);
                        *i += 1; // ':'
                        members.push((k, tree_at(b, i)));
                    }
                }
            }
            *i += 1;
            Tree::Obj(members)
        }
        Some(b'[') => {
            *i += 1;
            let mut items = Vec::new();
            loop {
                skip_blanks(b, i);
                match b.get(*i) {
                    Some(b']') | None => break,
                    Some(b',') => *i += 1,
                    _ => items.push(tree_at(b, i)),
                }
            }
            *i += 1;
            Tree::Arr(items)
        }
        Some(b'"') => {
            skip_string(b, i);
            Tree::Leaf
        }
        _ => {
            while !matches!(b.get(*i), None | Some(b',' | b']' | b'}' | b' ' | b'\t')) {
                *i += 1;
            }
            Tree::Leaf
        }
    }
}

/// An array of the order records (`{}` is how the encoder writes an empty one).
fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Checks the key order of every object an order record names in the written event.
fn check_orders(out_line: &[u8], order: &Value) -> Result<(), String> {
    let t = tree(out_line);
    for entry in list(order) {
        let (comps, keys) = (list(&entry[0]), list(&entry[1]));
        let mut at = &t;
        for c in comps {
            at = match (at, c) {
                (Tree::Obj(m), Value::String(k)) => match m.iter().find(|(n, _)| n == k) {
                    Some((_, v)) => v,
                    None => return Err(format!("{comps:?}: no member {k:?} in the output")),
                },
                (Tree::Arr(a), Value::Number(n)) => match a.get((n.as_u64().unwrap_or(0) as usize).wrapping_sub(1)) {
                    Some(v) => v,
                    None => return Err(format!("{comps:?}: no element {n} in the output")),
                },
                _ => return Err(format!("{comps:?}: the output has no such path")),
            };
        }
        let Tree::Obj(members) = at else {
            return Err(format!("{comps:?}: not an object in the output"));
        };
        let got: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
        let want: Vec<&str> = keys.iter().map(|k| k.as_str().unwrap_or("?")).collect();
        if got != want {
            return Err(format!("{comps:?}: keys written {got:?}, expected {want:?}"));
        }
    }
    Ok(())
}

/// Checks the outputs of one run against each other and against the inputs; returns the
/// problems found.
fn check_run(env: &Env, cases: &[Case]) -> Vec<String> {
    let files: Vec<Vec<Vec<u8>>> = OUTPUTS.iter().map(|t| env.lines(&format!("{t}.json"))).collect();
    let mut problems = Vec::new();
    for (t, lines) in OUTPUTS.iter().zip(&files) {
        if lines.len() != cases.len() {
            problems.push(format!("{t}.json has {} lines, want {}", lines.len(), cases.len()));
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    let [out, model, order, aout, amodel, aorder, bout] = &files[..] else {
        unreachable!()
    };
    for (i, c) in cases.iter().enumerate() {
        let what = |f: &str| {
            format!(
                "line {} (seed {}, {} ops, nested {}) of {f}",
                i + 1,
                c.seed,
                c.nops,
                c.nested
            )
        };
        let r = (|| -> Result<(), String> {
            let ev = norm(parse(&out[i], &what("out.json"))?);
            let m = norm(parse(&model[i], &what("model.json"))?);
            if let Some(d) = first_diff(&ev, &m, "") {
                return Err(format!("{}: event and model differ at {d}", what("out.json")));
            }
            let b = norm(parse(&bout[i], &what("bout.json"))?);
            if let Some(d) = first_diff(&b, &m, "") {
                return Err(format!("{}: event and model differ at {d}", what("bout.json")));
            }
            let aev = norm(parse(&aout[i], &what("aout.json"))?);
            let am = norm(parse(&amodel[i], &what("amodel.json"))?);
            if let Some(d) = first_diff(&aev, &am, "") {
                return Err(format!("{}: event and model differ at {d}", what("aout.json")));
            }
            check_orders(&out[i], &parse(&order[i], &what("order.json"))?)
                .map_err(|e| format!("{}: key order: {e}", what("out.json")))?;
            check_orders(&aout[i], &parse(&aorder[i], &what("aorder.json"))?)
                .map_err(|e| format!("{}: key order: {e}", what("aout.json")))?;
            if c.nops == 0 {
                for (f, lines) in [("out.json", out), ("aout.json", aout), ("bout.json", bout)] {
                    if lines[i] != c.original.as_bytes() {
                        return Err(format!(
                            "{}: unchanged event not written as its bytes:\n  want {}\n  got  {}",
                            what(f),
                            show(c.original.as_bytes()),
                            show(&lines[i])
                        ));
                    }
                }
                let doc = norm(parse(c.original.as_bytes(), "the input")?);
                for (f, v) in [("model.json", &m), ("amodel.json", &am)] {
                    if let Some(d) = first_diff(&doc, v, "") {
                        return Err(format!(
                            "{}: cjson_safe round trip differs from serde_json at {d}",
                            what(f)
                        ));
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = r {
            problems.push(e);
            if problems.len() >= 10 {
                break;
            }
        }
    }
    problems
}

#[test]
fn event_tables_agree_with_plain_tables_under_random_operations() {
    let seed = std::env::var("DFM_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6d6f_6465_6c21);
    let events = std::env::var("DFM_MODEL_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(EVENTS);
    let mut g = Gen { rng: Rng::new(seed) };
    let cases: Vec<Case> = (0..events).map(|_| gen_case(&mut g)).collect();
    let input = join_lines(&cases.iter().map(|c| c.line.as_str()).collect::<Vec<_>>());
    let mut first: Option<Vec<Vec<Vec<u8>>>> = None;
    for (shards, pipeline) in [("1", 1), ("2", 16)] {
        let env = Env::new();
        env.config(&config(pipeline));
        env.filter("model_filter.lua", FILTER);
        env.analyzer("model_lib.lua", LIB);
        env.analyzer("model_a.lua", ANALYZER_A);
        env.analyzer("model_b.lua", ANALYZER_B);
        env.write_log("in.json", &input);
        let out = env.run(&["--shards", shards]);
        out.assert_success();
        let s = out.summary();
        let errors: Vec<String> = env
            .log_records_of("script_error")
            .iter()
            .take(10)
            .map(|r| r["message"].as_str().unwrap_or_default().to_string())
            .collect();
        assert!(
            s.script_errors == 0 && s.invalid == 0 && s.read == events as u64,
            "--shards {shards}, pipeline {pipeline}: {s:?}\nfirst script errors:\n{}\ndragonfly-mle.log:\n{}",
            errors.join("\n"),
            String::from_utf8_lossy(&std::fs::read(env.log("dragonfly-mle.log")).unwrap_or_default())
                .chars()
                .take(20_000)
                .collect::<String>()
        );
        let problems = check_run(&env, &cases);
        assert!(
            problems.is_empty(),
            "--shards {shards}, pipeline {pipeline}:\n{}",
            problems.join("\n")
        );
        let files: Vec<Vec<Vec<u8>>> = OUTPUTS.iter().map(|t| env.lines(&format!("{t}.json"))).collect();
        match &first {
            None => first = Some(files),
            Some(f) => {
                for (t, (a, b)) in OUTPUTS.iter().zip(f.iter().zip(&files)) {
                    let d = diff_lines(a, b);
                    assert!(
                        d.is_empty(),
                        "{t}.json differs between --shards 1 and --shards 2 with pipeline 16:\n{d}"
                    );
                }
            }
        }
    }
}
