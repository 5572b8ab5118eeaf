-- perf configuration (b): the original's hello-world chain on managed Redis: INCR per event
-- type (one Redis round trip per event), annotate, then a write-to-log analyzer.
-- Relative file:// paths live under the log directory (perf/run.sh passes -l <work dir>).
-- No Redis is named, so the engine runs its own redis-server (Debian package redis-server).
-- Without persistence, as the benchmark was first measured: it measures the engine, not the
-- server's append-only file.
redis_persist = false

inputs = {
   { tag = "eve", uri = "file://eve.json", script = "filter.lua", default_analyzer = "counter" },
}

analyzers = {
   { tag = "counter", script = "hello-counter.lua", default_analyzer = "log", default_output = "" },
   { tag = "log", script = "write-to-log.lua", default_analyzer = "", default_output = "out" },
}

outputs = {
   { tag = "out", uri = "file://out.json<" },
}
