-- Golden case: an analyzer adds fields, modifies nested fields and deletes fields.
inputs = { { tag = "eve", uri = "file://input.json", script = "filter.lua", default_analyzer = "annotate" } }
analyzers = { { tag = "annotate", script = "annotate.lua", default_analyzer = "", default_output = "out" } }
outputs = { { tag = "out", uri = "file://output.json<" } }
