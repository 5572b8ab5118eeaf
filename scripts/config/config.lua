-- dragonfly-mle configuration: the shipped example pipeline.
-- Relative file:// and tail:// paths live under the log directory (-l).
-- No Redis is needed by these scripts.

inputs = {
   { tag = "eve", uri = "file://eve.json", script = "filter.lua", default_analyzer = "flows" },
}

analyzers = {
   { tag = "flows", script = "flow-counter.lua", default_analyzer = "", default_output = "annotated" },
   { tag = "pass", script = "pass-through.lua", default_analyzer = "", default_output = "annotated" },
}

outputs = {
   { tag = "annotated", uri = "file://annotated.json<" },
}

-- Optional knobs (defaults shown):
-- stats_interval = 60        -- seconds between lines in dragonfly-mle-stats.log
-- max_line_bytes = 1048576   -- longer input lines are reported and skipped
-- tail_poll_ms = 100         -- how often tail:// looks for new data at end of file
