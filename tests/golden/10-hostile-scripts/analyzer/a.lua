-- Writes what reaches it (nothing should: the filter only passes tampered tables, which fail).
function setup() end
function loop(msg) dragonfly.output_event("out", { analyzer = "reached" }) end
