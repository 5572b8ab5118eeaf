//! The plan of a pipeline: how many workers, which CPU each thread is pinned to, the tags
//! and which outputs keep input order.

use super::*;

/// What a pipeline is built to.
pub(super) struct Plan {
    pub cpus: Vec<usize>,
    pub inputs: usize,
    pub shards: usize,
    pub no_pin: bool,
    pub input_tags: Vec<String>,
    pub analyzer_tags: Vec<String>,
    /// `log`, `stats`, then the user outputs.
    pub output_tags: Vec<String>,
    /// Per output (`log`, `stats`, user outputs): whether it keeps input order.
    pub ordered: Vec<bool>,
    /// Whether workers send end-of-event marks: an ordered output, or an input that waits
    /// for its events to be written (tail checkpoints, Kafka commits).
    pub marks: bool,
}

impl Plan {
    /// The plan for `cfg`. `workers` already running (a rebuild) keep their number: they
    /// outlive it with their Lua states.
    pub(super) fn new(opts: &Options, cfg: &Config, workers: usize) -> Plan {
        let cpus = opts.cores.clone().unwrap_or_else(pin::available);
        let inputs = cfg.inputs.len();
        let shards = match workers {
            0 => opts
                .shards
                .or(cfg.shards)
                .unwrap_or_else(|| cpus.len().saturating_sub(inputs).max(1))
                .max(1),
            n => n,
        };
        let any_ordered = cfg.outputs.iter().any(|o| o.ordered);
        let mut ordered = vec![any_ordered, false];
        ordered.extend(cfg.outputs.iter().map(|o| o.ordered));
        let waits = cfg
            .inputs
            .iter()
            .any(|i| matches!(i.uri, InputUri::Tail { .. } | InputUri::Kafka(_) | InputUri::Redis(_)));
        // The internal sinks by the names the original gave them: a user output may be tagged
        // "log" or "stats", and the stats line, /metrics and /status key outputs by name.
        let mut output_tags = vec!["{log}".to_string(), "{stats}".to_string()];
        output_tags.extend(cfg.outputs.iter().map(|o| o.tag.clone()));
        Plan {
            cpus,
            inputs,
            shards,
            no_pin: opts.no_pin,
            input_tags: cfg.inputs.iter().map(|i| i.tag.clone()).collect(),
            analyzer_tags: cfg.analyzers.iter().map(|a| a.tag.clone()).collect(),
            output_tags,
            ordered,
            marks: any_ordered || waits,
        }
    }

    /// Where thread `slot` runs: readers first on the CPU list, then workers.
    pub(super) fn cpu(&self, slot: usize) -> Option<pin::Pin> {
        pin::placement(&self.cpus, self.inputs + self.shards, slot, self.no_pin)
    }

    /// Where worker `w` runs.
    pub(super) fn worker_cpu(&self, w: usize) -> Option<pin::Pin> {
        self.cpu(self.inputs + w)
    }

    /// The counters of a pipeline run to this plan.
    pub(super) fn stats(&self, cfg: &Config) -> Arc<Stats> {
        crate::metrics::latency::init_clock();
        let mut stats = Stats::new(
            self.input_tags.clone(),
            self.analyzer_tags.clone(),
            self.output_tags.clone(),
            self.shards,
        );
        stats.ring_capacity = crate::shard::ring_batches(self.inputs) as u64;
        stats.histograms = cfg.latency_histograms;
        // Uptime counts from the run's start, not from the last rebuild of the pipeline.
        static RUN_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        stats.started = *RUN_START.get_or_init(|| stats.started);
        Arc::new(stats)
    }

    /// The plan in words (`-v`).
    pub(super) fn describe(&self) -> String {
        let (n, cpus) = (self.inputs + self.shards, &self.cpus);
        let placement = if self.no_pin {
            "not pinned (--no-pin)".to_string()
        } else if n <= cpus.len() {
            "one CPU per thread".to_string()
        } else {
            format!("{n} threads share the CPUs (not pinned one per CPU)")
        };
        format!(
            "{} input(s), {} shard(s), CPUs {cpus:?}, {placement}",
            self.inputs, self.shards
        )
    }
}
