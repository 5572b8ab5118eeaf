//! Latency histograms (hdrhistogram): each thread records into its own histograms with no
//! lock and merges them into the shared ones about once a second; the stats line and
//! `/metrics` read the shared ones.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Largest value a histogram keeps exactly (ns); larger ones count as this.
const HIGHEST_NS: u64 = 600_000_000_000;
/// How often a thread merges what it recorded into the shared histograms.
pub(crate) const MERGE_EVERY: Duration = Duration::from_secs(1);

/// A histogram of nanoseconds, 2 significant digits (1% resolution), 1 ns to 10 min.
pub(crate) fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_NS, 2).expect("valid histogram bounds")
}

/// The clock of the latency figures: the CPU's time-stamp counter where it is invariant
/// (constant rate, running in every power state: the kernel then uses it too), read in a few
/// nanoseconds with no system call; elsewhere `Instant`.
struct Clock {
    epoch: Instant,
    /// Counter value at `epoch` and nanoseconds per tick, when the counter is used.
    tsc: Option<(u64, f64)>,
}

static CLOCK: OnceLock<Clock> = OnceLock::new();

#[cfg(target_arch = "x86_64")]
#[inline]
fn rdtsc() -> u64 {
    #[allow(unused_unsafe)]
    // SAFETY: RDTSC has no preconditions; it only reads the counter.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
}

/// How long the counter is compared with the system clock: its rate is then known within
/// about 0.1 % (a microsecond of jitter in 2 ms), far finer than the histograms' 1 %.
const CALIBRATION: Duration = Duration::from_millis(2);

fn calibrate() -> Clock {
    #[cfg(target_arch = "x86_64")]
    {
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let invariant = flags.contains(" constant_tsc") && flags.contains(" nonstop_tsc");
        if invariant {
            // Both clocks read together (reading /proc/cpuinfo between them once made the
            // rate 5 % wrong: 0.1 ms of a 2 ms calibration).
            let (epoch, t0) = (Instant::now(), rdtsc());
            std::thread::sleep(CALIBRATION);
            let (t1, dt) = (rdtsc(), epoch.elapsed().as_nanos() as f64);
            if t1 > t0 && dt > 0.0 {
                return Clock {
                    epoch,
                    tsc: Some((t0, dt / (t1 - t0) as f64)),
                };
            }
        }
    }
    Clock {
        epoch: Instant::now(),
        tsc: None,
    }
}

/// Sets the clock up (a 2 ms calibration); called at startup so that no event pays for it.
pub(crate) fn init_clock() {
    CLOCK.get_or_init(calibrate);
}

/// Monotonic nanoseconds since the clock was set up (never 0).
#[inline]
pub(crate) fn mono_ns() -> u64 {
    let c = CLOCK.get_or_init(calibrate);
    #[cfg(target_arch = "x86_64")]
    if let Some((t0, ns_per_tick)) = c.tsc {
        return (rdtsc().saturating_sub(t0) as f64 * ns_per_tick) as u64 + 1;
    }
    c.epoch.elapsed().as_nanos() as u64 + 1
}

/// Sub-buckets per power of two of [`LocalHist`]: 128, i.e. under 0.8% error.
const SUB_BITS: u32 = 7;
/// Values at or above this (about 18 minutes in ns) count as the largest.
const LOCAL_MAX: u64 = (1 << 40) - 1;
const LOCAL_SLOTS: usize = ((40 - SUB_BITS as usize) << SUB_BITS) + (2 << SUB_BITS);

/// The recording end of a thread's histogram: a log-linear array of counts whose bucket is a
/// few instructions to find (recording into an hdrhistogram costs about 65 instructions,
/// which per event is most of the metrics' cost). Drained into an hdrhistogram once a second.
pub struct LocalHist {
    counts: Box<[u64]>,
    total: u64,
}

impl Default for LocalHist {
    fn default() -> Self {
        LocalHist {
            counts: vec![0; LOCAL_SLOTS].into_boxed_slice(),
            total: 0,
        }
    }
}

#[inline]
fn local_index(ns: u64) -> usize {
    let v = ns.min(LOCAL_MAX);
    if v < (2 << SUB_BITS) {
        return v as usize;
    }
    let shift = 63 - v.leading_zeros() - SUB_BITS;
    ((shift as usize) << SUB_BITS) + (v >> shift) as usize
}

/// The middle of bucket `i`'s value range.
fn local_value(i: usize) -> u64 {
    if i < (2 << SUB_BITS) {
        return i as u64;
    }
    let shift = (i >> SUB_BITS) as u32 - 1;
    let mantissa = (i - ((shift as usize) << SUB_BITS)) as u64;
    (mantissa << shift) + ((1u64 << shift) >> 1)
}

impl LocalHist {
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.record_n(ns, 1);
    }

    /// Records `n` values of `ns`.
    #[inline]
    pub fn record_n(&mut self, ns: u64, n: u64) {
        self.counts[local_index(ns)] += n;
        self.total += n;
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Moves the counts into `h`.
    pub fn drain_into(&mut self, h: &mut Histogram<u64>) {
        if self.total == 0 {
            return;
        }
        for (i, c) in self.counts.iter_mut().enumerate() {
            if *c != 0 {
                record_n(h, local_value(i), *c);
                *c = 0;
            }
        }
        self.total = 0;
    }
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
    pub fn absorb(&self, local: &mut LocalHist) {
        if local.is_empty() {
            return;
        }
        let mut h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        local.drain_into(&mut h);
    }

    /// A copy of the histogram.
    pub fn snapshot(&self) -> Histogram<u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Records `n` values.
#[inline]
pub(crate) fn record_n(h: &mut Histogram<u64>, ns: u64, n: u64) {
    let _ = h.record_n(ns.clamp(1, HIGHEST_NS), n);
}

/// The quantiles reported everywhere: p50, p90, p99, p99.9.
pub(crate) const QUANTILES: [(f64, &str); 4] = [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p999")];

/// Upper bounds (seconds) of the Prometheus histogram buckets.
pub(crate) const BUCKETS: [f64; 20] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5,
    1.0, 10.0,
];

/// The count of values at or below each bucket bound (cumulative, as Prometheus wants).
pub(crate) fn bucket_counts(h: &Histogram<u64>) -> [u64; BUCKETS.len()] {
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
pub(crate) fn sum_ns(h: &Histogram<u64>) -> f64 {
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
            record_n(&mut h, us * 1000, 1);
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
    fn clock_follows_instant() {
        init_clock();
        // A preemption between the two clock reads skews one attempt on a loaded machine (seen
        // once: 6% over 50 ms); the clock must agree within 5% in one of three.
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (a, t) = (mono_ns(), Instant::now());
            std::thread::sleep(Duration::from_millis(50));
            let (b, dt) = (mono_ns(), t.elapsed().as_nanos() as f64);
            let d = (b - a) as f64;
            if (d - dt).abs() / dt < 0.05 {
                return;
            }
            seen.push((d, dt));
        }
        panic!("clock vs Instant (ns): {seen:?}");
    }

    #[test]
    fn absorb_moves_and_clears() {
        let shared = Shared::default();
        let mut local = LocalHist::default();
        for _ in 0..7 {
            local.record(5_000);
        }
        shared.absorb(&mut local);
        assert!(local.is_empty());
        local.record(u64::MAX);
        shared.absorb(&mut local);
        let s = shared.snapshot();
        assert_eq!(s.len(), 8);
        assert!(
            (s.value_at_quantile(0.5) as f64 - 5000.0).abs() < 60.0,
            "{}",
            s.value_at_quantile(0.5)
        );
        assert!(s.max() >= LOCAL_MAX / 2);
    }

    #[test]
    fn local_buckets_are_contiguous_and_within_one_percent() {
        let mut last = 0;
        for v in 0..5000u64 {
            let i = local_index(v);
            assert!(i >= last && i <= last + 1, "{v}: index {i} after {last}");
            last = i;
        }
        for v in (0..5000u64).chain((12..40).flat_map(|b| [(1u64 << b) - 1, 1 << b, (1 << b) + 12345])) {
            let i = local_index(v);
            assert!(i < LOCAL_SLOTS, "{v} -> {i}");
            let mid = local_value(i);
            assert!(
                (mid as f64 - v as f64).abs() <= (v as f64 * 0.008).max(0.5),
                "{v} -> bucket {i} value {mid}"
            );
        }
        assert_eq!(local_index(u64::MAX), local_index(LOCAL_MAX));
    }
}
