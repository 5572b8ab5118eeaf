-- Golden case: hostile scripts. Each event runs one attack on the script boundary (event
-- `n` runs attack `n` of filter.lua) inside pcall and writes what came of it: a clear error
-- for the event, or the right value; never a crash, never a read of other memory or of
-- another event. All events are of one flow, so that they meet on one shard. The engine before the checked line blocks crashed (SIGSEGV) on attack 1
-- and read empty or foreign fields on others.
inputs = { { tag = "eve", uri = "file://input.json", script = "filter.lua", default_analyzer = "a" } }
analyzers = { { tag = "a", script = "a.lua", default_analyzer = "", default_output = "out" } }
outputs = { { tag = "out", uri = "file://output.json<" } }
