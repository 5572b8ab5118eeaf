-- Golden case: an analyzer that only reads an event (scalars, nested objects, arrays, pairs
-- and ipairs) must write it as its original bytes.
inputs = { { tag = "eve", uri = "file://input.json", script = "filter.lua", default_analyzer = "reader" } }
analyzers = { { tag = "reader", script = "reader.lua", default_analyzer = "", default_output = "out" } }
outputs = { { tag = "out", uri = "file://output.json<" } }
