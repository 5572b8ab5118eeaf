-- Golden case: output_event, forward_event and analyze_event of the shapes that take the FFI
-- fast path (an event unchanged, or with one scalar member added under a new key; the current
-- event passed on unchanged) next to the shapes that take the C path (a key of the original
-- changed or deleted, two members added, a table added, nested objects handed out). Both
-- paths must write the same bytes: expected.json is what the engine wrote before the fast
-- paths existed, and so is expected-second.json but for the two events with a deletion, which
-- that engine could not pass to an analyzer (the deletion marker was copied as a table).
inputs = { { tag = "eve", uri = "file://input.json", script = "filter.lua", default_analyzer = "next" } }
analyzers = { { tag = "next", script = "next.lua", default_analyzer = "", default_output = "out2" } }
outputs = {
   { tag = "out", uri = "file://output.json<" },
   { tag = "out2", uri = "file://second.json<" },
}
