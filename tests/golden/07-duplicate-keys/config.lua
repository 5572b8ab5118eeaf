-- Golden case: JSON objects with a key that occurs twice (RFC 8259 allows it; Suricata
-- writes it rarely: some smb events carry tree_id twice). Scripts read the last occurrence
-- (as lua-cjson, the original's decoder, did), pairs() gives each key once (at its first
-- place, with the value a read gives), and a change or deletion applies to every occurrence,
-- so that any reader of the output sees the new value.
inputs = { { tag = "eve", uri = "file://input.json", script = "filter.lua", default_analyzer = "dups" } }
analyzers = { { tag = "dups", script = "dups.lua", default_analyzer = "", default_output = "out" } }
outputs = { { tag = "out", uri = "file://output.json<" } }
