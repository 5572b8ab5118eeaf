-- Golden case: number keys written into event objects (one, several, non-integer, nested,
-- deleted again) are written out as "%.14g" string keys after the original members, by
-- output_event and in the copy analyze_event passes on.
inputs = { { tag = "eve", uri = "file://input.json", script = "filter.lua", default_analyzer = "set" } }
analyzers = {
   { tag = "set", script = "set.lua", default_analyzer = "emit", default_output = "out" },
   { tag = "emit", script = "emit.lua", default_analyzer = "", default_output = "copy" },
}
outputs = {
   { tag = "out", uri = "file://output.json<" },
   { tag = "copy", uri = "file://copy.json<" },
}
