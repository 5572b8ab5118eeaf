-- dragonfly-mle configuration for the container image (Dockerfile, README "Deployment"):
-- the shipped example pipeline of config.lua, reading Suricata's live eve.json. The systemd
-- install copies it to <root>/config/config.lua (Suricata's default path is the same).
-- The image runs: dragonfly-mle -r /usr/local/dragonfly-mle -l /var/log/dragonfly-mle
--                 --config /usr/local/dragonfly-mle/config/docker.lua ...
-- Suricata's log directory is mounted read-only at /var/log/suricata; relative file:// paths
-- live under the log directory /var/log/dragonfly-mle (a volume).
--
-- Redis: none is named, so the engine runs its own redis-server (managed Redis, the Debian
-- package installed in the image) on a private unix socket under /var/run/dragonfly-mle.
--
-- .ci/check-packaging checks that the analyzers below are those of config.lua.

inputs = {
   -- Follows eve.json from its end (through Suricata's rotations); the checkpoint in the run
   -- directory resumes where the engine stopped when the container restarts.
   { tag = "eve", uri = "tail:///var/log/suricata/eve.json", script = "filter.lua", default_analyzer = "counter" },
}

analyzers = {
   -- The original's hello-world chain: count per event type in Redis, annotate, write out.
   { tag = "counter", script = "hello-counter.lua", default_analyzer = "flows", default_output = "" },
   -- Pure Lua: per-flow counters, then on to the DGA detector.
   { tag = "flows", script = "flow-counter.lua", default_analyzer = "dga", default_output = "annotated" },
   -- Native Redis-ML: scores dns.rrname with a random forest (dga_score, 0 benign .. 1 DGA).
   -- dga-score-redis.lua is the same detector written for a Redis with the Redis-ML module.
   { tag = "dga", script = "dga-score.lua", default_analyzer = "", default_output = "annotated" },
   { tag = "pass", script = "pass-through.lua", default_analyzer = "", default_output = "annotated" },
}

outputs = {
   -- Appends (a long-running service keeps what it wrote before a restart); SIGUSR1 rotates.
   { tag = "annotated", uri = "file://annotated.json" },
}

-- Optional knobs (defaults shown):
-- stats_interval = 60        -- seconds between lines in dragonfly-mle-stats.log
-- max_line_bytes = 1048576   -- longer input lines are reported and skipped
-- tail_poll_ms = 100         -- how often tail:// looks for new data at end of file
