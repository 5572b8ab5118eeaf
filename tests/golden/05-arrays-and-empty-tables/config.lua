-- Golden case: arrays and empty tables built, replaced and changed by an analyzer.
inputs = { { tag = "eve", uri = "file://input.json", script = "filter.lua", default_analyzer = "arrays" } }
analyzers = { { tag = "arrays", script = "arrays.lua", default_analyzer = "", default_output = "out" } }
outputs = { { tag = "out", uri = "file://output.json<" } }
