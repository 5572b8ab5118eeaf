-- dragonfly-mle configuration: the shipped example pipeline.
-- Relative file:// and tail:// paths live under the log directory (-l).
--
-- Redis: naming no Redis (or redis_host = "managed") makes the engine run its own
-- redis-server on a private unix socket, started on first use and stopped at exit
-- (Debian package redis-server). To use your own: redis_host = "127.0.0.1"; redis_port = 6379
-- (a port <= 0 makes redis_host a unix socket path).

inputs = {
   { tag = "eve", uri = "file://eve.json", script = "filter.lua", default_analyzer = "counter" },
}

analyzers = {
   -- The original's hello-world chain: count per event type in Redis, annotate, write out.
   { tag = "counter", script = "hello-counter.lua", default_analyzer = "flows", default_output = "" },
   -- Pure Lua: per-flow counters, then on to the DGA detector.
   { tag = "flows", script = "flow-counter.lua", default_analyzer = "dga", default_output = "annotated" },
   -- Native Redis-ML: scores dns.rrname with a random forest (dga_score, 0 benign .. 1 DGA).
   -- dga-score-redis.lua is the same detector written for a Redis with the Redis-ML module.
   { tag = "dga", script = "dga-score.lua", default_analyzer = "", default_output = "annotated" },
   { tag = "pass", script = "pass-through.lua", default_analyzer = "", default_output = "annotated" },
}

outputs = {
   { tag = "annotated", uri = "file://annotated.json<" },
}

-- Optional knobs (defaults shown):
-- stats_interval = 60        -- seconds between lines in dragonfly-mle-stats.log
-- max_line_bytes = 1048576   -- longer input lines are reported and skipped
-- tail_poll_ms = 100         -- how often tail:// looks for new data at end of file
