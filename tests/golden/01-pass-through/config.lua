-- Golden case: every event goes through unchanged (original bytes, in input order).
inputs = { { tag = "eve", uri = "file://input.json", script = "filter.lua", default_analyzer = "pass" } }
analyzers = { { tag = "pass", script = "pass.lua", default_analyzer = "", default_output = "out" } }
outputs = { { tag = "out", uri = "file://output.json<" } }
