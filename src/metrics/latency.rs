//! Latency histograms (hdrhistogram): each thread records into its own histograms with no
//! lock and merges them into the shared ones about once a second; the stats line and
//! `/metrics` read the shared ones.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Largest value a histogram keeps exactly (ns); larger ones count as this.
const HIGHEST_NS: u64 = 600_000_000_000;
/// How often a thread merges what it recorded into the shared histograms.
pub const MERGE_EVERY: Duration = Duration::from_secs(1);

/// A histogram of nanoseconds, 2 significant digits (1% resolution), 1 ns to 10 min.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_NS, 2).expect("valid histogram bounds")
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Monotonic nanoseconds since the first call in this process (never 0 after it).
pub fn mono_ns() -> u64 {
    let e = *EPOCH.get_or_init(Instant::now);
    e.elapsed().as_nanos() as u64 + 1
}

/// A histogram shared between threads.
pub struct Shared(Mutex<Histogram<u64>>);

impl Default for Shared {
    fn default() -> Self {
        Shared(Mutex::new(new_hist()))
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shared(count {})", self.snapshot().len())
    }
}

impl Shared {
    /// Adds a thread's recordings and clears them.
    pub fn absorb(&self, local: &mut Histogram<u64>) {
        if local.is_empty() {
            return;
        }
        let mut h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = h.add(&*local);
        local.reset();
    }

    /// A copy of the histogram.
    pub fn snapshot(&self) -> Histogram<u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Records one value, saturating at the histogram's highest value.
#[inline]
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.max(1));
}

/// Records `n` values.
#[inline]
pub fn record_n(h: &mut Histogram<u64>, ns: u64, n: u64) {
    let _ = h.record_n(ns.clamp(1, HIGHEST_NS), n);
}

/// The quantiles reported everywhere: p50, p90, p99, p99.9.
pub const QUANTILES: [(f64, &str); 4] = [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p999")];

/// Upper bounds (seconds) of the Prometheus histogram buckets.
pub const BUCKETS: [f64; 20] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5,
    1.0, 10.0,
];

/// The count of values at or below each bucket bound (cumulative, as Prometheus wants).
pub fn bucket_counts(h: &Histogram<u64>) -> [u64; BUCKETS.len()] {
    let mut out = [0u64; BUCKETS.len()];
    for v in h.iter_recorded() {
        // Values are kept at 1% resolution: each counts, by the lowest value of its bin, in
        // the first bucket that holds it (bounds compared in whole nanoseconds).
        let ns = h.lowest_equivalent(v.value_iterated_to());
        if let Some(b) = BUCKETS.iter().position(|&ub| ns <= (ub * 1e9).round() as u64) {
            out[b] += v.count_at_value();
        }
    }
    for i in 1..out.len() {
        out[i] += out[i - 1];
    }
    out
}

/// Sum of the recorded values (ns, at the histogram's resolution).
pub fn sum_ns(h: &Histogram<u64>) -> f64 {
    h.iter_recorded()
        .map(|v| h.median_equivalent(v.value_iterated_to()) as f64 * v.count_at_value() as f64)
        .fold(0.0, |a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_quantiles_close() {
        let mut h = new_hist();
        for us in 1..=1000u64 {
            record(&mut h, us * 1000);
        }
        let b = bucket_counts(&h);
        // 1 µs..1 ms: 1 value <= 1 µs, 10 <= 10 µs, 100 <= 100 µs, all <= 1 ms (1% slack).
        assert_eq!(b[0], 1);
        assert!((10..=11).contains(&b[3]), "{}", b[3]);
        assert!((100..=101).contains(&b[6]), "{}", b[6]);
        assert_eq!(b[9], 1000);
        assert_eq!(b[BUCKETS.len() - 1], 1000);
        let p99 = h.value_at_quantile(0.99) as f64;
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.02, "{p99}");
        let s = sum_ns(&h);
        assert!((s - 500_500_000.0).abs() / 500_500_000.0 < 0.01, "{s}");
    }

    #[test]
    fn absorb_moves_and_clears() {
        let shared = Shared::default();
        let mut local = new_hist();
        record_n(&mut local, 5_000, 7);
        shared.absorb(&mut local);
        assert!(local.is_empty());
        record(&mut local, u64::MAX);
        shared.absorb(&mut local);
        let s = shared.snapshot();
        assert_eq!(s.len(), 8);
        assert!(s.max() >= HIGHEST_NS / 2);
    }
}
