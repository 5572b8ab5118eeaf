-- perf configuration (n) nested reads: filter -> analyzer reading one nested field per event -> output.
-- Relative file:// paths live under the log directory: perf/run.sh passes -l <work dir>,
-- where it put eve.json (and where out.json is written, truncated by the '<' suffix).
-- perf/run.sh adds "ordered = false" to the output entry when PERF_ORDERED=0.

inputs = {
   { tag = "eve", uri = "file://eve.json", script = "filter.lua", default_analyzer = "a" },
}

analyzers = {
   { tag = "a", script = "nested-read.lua", default_analyzer = "", default_output = "out" },
}

outputs = {
   { tag = "out", uri = "file://out.json<" },
}
