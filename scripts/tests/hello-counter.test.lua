-- Tests of analyzer/hello-counter.lua, run with the shipped configuration (filter ->
-- hello-counter -> flow-counter -> dga-score -> output "annotated"):
--   dragonfly-mle -r scripts test
-- See docs/testing.md.

local function dns(ts, name)
   return {
      timestamp = ts, event_type = "dns", proto = "UDP",
      src_ip = "10.0.0.1", src_port = 53530, dest_ip = "10.0.0.53", dest_port = 53,
      dns = { type = "query", id = 1, rrname = name, rrtype = "A" },
   }
end

tests = {
   {
      name = "counts events per type in Redis",
      -- Redis holds a count from before: the next dns event is the 42nd.
      redis = { { "SET", "count:dns", "41" } },
      events = {
         dns("2024-03-01T12:00:00.000000+0000", "example.com"),
         -- An event as Suricata writes it, as JSON text.
         [[{"timestamp":"2024-03-01T12:00:01.000000+0000","event_type":"flow","src_ip":"10.0.0.2","src_port":40000,"dest_ip":"192.0.2.7","dest_port":443,"proto":"TCP","flow":{"pkts_toserver":3}}]],
         dns("2024-03-01T12:00:02.000000+0000", "example.org"),
      },
      expect = {
         counts = { annotated = 3 },
         fields = {
            annotated = {
               [1] = { type_total = 42, event_type = "dns" },
               [2] = { type_total = 1, event_type = "flow" },
               [3] = { type_total = 43 },
               each = { redis_error = { absent = true } },
            },
         },
         -- What the run left in Redis: a number matches Redis's text of it.
         redis = {
            { "GET", "count:dns", equals = 43 },
            { "GET", "count:flow", equals = 1 },
            { "GET", "count:alert", absent = true },
         },
      },
   },
}
