-- Golden case: cjson_safe decode/encode round trips in an analyzer, logged with log_event.
inputs = { { tag = "eve", uri = "file://input.json", script = "filter.lua", default_analyzer = "json" } }
analyzers = { { tag = "json", script = "json.lua", default_analyzer = "", default_output = "out" } }
outputs = { { tag = "out", uri = "file://output.json<" } }
