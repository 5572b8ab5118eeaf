-- Tests of analyzer/flow-counter.lua with the shipped configuration (see docs/testing.md):
--   dragonfly-mle -r scripts test scripts/tests/flow-counter.test.lua

local function flow(a, ap, b, bp)
   return {
      timestamp = "2024-03-01T12:00:00.000000+0000", event_type = "flow", proto = "TCP",
      src_ip = a, src_port = ap, dest_ip = b, dest_port = bp,
   }
end

tests = {
   {
      name = "both directions of a flow count as one flow",
      events = {
         flow("10.0.0.1", 40000, "192.0.2.7", 443),
         flow("192.0.2.7", 443, "10.0.0.1", 40000),   -- the reply direction
         flow("10.0.0.1", 40001, "192.0.2.7", 443),   -- another flow
         flow("10.0.0.1", 40000, "192.0.2.7", 443),
         { timestamp = "2024-03-01T12:00:01.000000+0000", event_type = "stats" },
      },
      expect = {
         fields = {
            annotated = {
               [1] = { flow_events = 1, type_count = 1 },
               [2] = { flow_events = 2, type_count = 2 },
               [3] = { flow_events = 1 },
               [4] = { flow_events = 3, type_count = 4 },
               -- No tuple, no flow count; the first stats event.
               [5] = { flow_events = { absent = true }, type_count = 1 },
            },
         },
         -- setup() writes a record to dragonfly-mle.log ("-" is special in Lua patterns).
         log = { { msg = "^flow%-counter ready$" } },
      },
      -- Flows are counted per worker: this test holds on one shard (on several, the two
      -- flows may meet different workers, each counting its own).
      shards = 1,
   },
}
