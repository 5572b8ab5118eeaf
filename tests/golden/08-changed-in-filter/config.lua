-- Golden case: an event the filter changed, or a nested object of it, reaches the analyzer's
-- state as a copy (its own table over its own copy of the line), with the filter's writes.
inputs = { { tag = "eve", uri = "file://input.json", script = "filter.lua", default_analyzer = "reader" } }
analyzers = { { tag = "reader", script = "reader.lua", default_analyzer = "", default_output = "out" } }
outputs = { { tag = "out", uri = "file://output.json<" } }
