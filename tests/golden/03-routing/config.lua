-- Golden case: the filter drops some events and routes the others to two analyzers (tls
-- events to both); each analyzer writes to its own output and to a shared one.
inputs = { { tag = "eve", uri = "file://input.json", script = "route.lua", default_analyzer = "alerts" } }
analyzers = {
   { tag = "alerts", script = "alerts.lua", default_analyzer = "", default_output = "alerts_out" },
   { tag = "dns", script = "dns.lua", default_analyzer = "", default_output = "dns_out" },
}
outputs = {
   { tag = "all", uri = "file://output.json<" },
   { tag = "alerts_out", uri = "file://alerts.json<" },
   { tag = "dns_out", uri = "file://dns.json<" },
}
