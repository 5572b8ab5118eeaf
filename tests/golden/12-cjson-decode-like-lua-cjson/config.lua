-- Golden case: cjson_safe.decode takes what lua-cjson 2.1.0 takes at its edges: a number
-- (decoded as its text), a NUL that ends the text, a NUL in the first two bytes refused.
inputs = { { tag = "eve", uri = "file://input.json", script = "filter.lua", default_analyzer = "d" } }
analyzers = { { tag = "d", script = "decode.lua", default_analyzer = "", default_output = "out" } }
outputs = { { tag = "out", uri = "file://output.json<" } }
