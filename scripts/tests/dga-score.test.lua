-- Tests of analyzer/dga-score.lua (the shipped random forest, scored by native Redis-ML) with
-- the shipped configuration (see docs/testing.md). The exact records are in
-- dga-score.test.expected/ (written by `dragonfly-mle -r scripts test --update`).

local function dns(name)
   return {
      timestamp = "2024-03-01T12:00:00.000000+0000", event_type = "dns", proto = "UDP",
      src_ip = "10.0.0.1", src_port = 53530, dest_ip = "10.0.0.53", dest_port = 53,
      dns = { type = "query", id = 7, rrname = name, rrtype = "A" },
   }
end

tests = {
   {
      name = "dns names get a score, other events pass unscored",
      events = {
         dns("www.wikipedia.org"),
         dns("xjw3kq9zv2plm0tt8.com"),
         { timestamp = "2024-03-01T12:00:01.000000+0000", event_type = "flow", proto = "TCP",
           src_ip = "10.0.0.1", src_port = 40000, dest_ip = "192.0.2.7", dest_port = 443 },
      },
      expect = {
         counts = { annotated = 3 },
         fields = {
            annotated = {
               [1] = { dga_score = { matches = "^[%d%.e%-]+$" }, dga_error = { absent = true } },
               [2] = { dga_score = { exists = true } },
               [3] = { dga_score = { absent = true } },
            },
         },
      },
   },
}
