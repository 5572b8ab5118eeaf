//! Wall-clock time as text: UTC timestamps for records and file names.

use std::time::{SystemTime, UNIX_EPOCH};

/// Formats a Unix time as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn format_utc(secs: i64, sep_date: &str, sep_time: &str, t: &str, z: &str) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z0 = days + 719_468;
    let era = z0.div_euclid(146_097);
    let doe = z0.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}{sep_date}{m:02}{sep_date}{d:02}{t}{:02}{sep_time}{:02}{sep_time}{:02}{z}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn utc_now() -> String {
    format_utc(now_secs(), "-", ":", "T", "Z")
}

/// The current time as a file suffix, `YYYYMMDD.HHMMSS` (UTC, zero-padded).
pub(crate) fn utc_suffix() -> String {
    format_utc(now_secs(), "", "", ".", "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(format_utc(0, "-", ":", "T", "Z"), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_709_251_199, "-", ":", "T", "Z"), "2024-02-29T23:59:59Z");
        assert_eq!(format_utc(951_782_400, "", "", ".", ""), "20000229.000000");
    }
}

/// A test's virtual clock (`dragonfly-mle test`): scripts see `start` at the first event of an
/// input and `step` more per event after it (by the event's position in its input, so the
/// time an event sees does not depend on the shard it runs on); timers fall due on this clock,
/// and when the input ends it runs on by `after` (firing the timers due by then).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Virtual {
    /// Unix time, nanoseconds.
    pub start_ns: u64,
    pub step_ns: u64,
    pub after_ns: u64,
}

/// The variable a test run passes its clock in: `START_NS,STEP_NS,AFTER_NS`.
pub(crate) const VIRTUAL_CLOCK_ENV: &str = "DFM_TEST_CLOCK";

static VIRTUAL: std::sync::OnceLock<Option<Virtual>> = std::sync::OnceLock::new();

/// The virtual clock of this process, if it runs a test (read once from the environment).
pub(crate) fn virtual_clock() -> Option<Virtual> {
    *VIRTUAL.get_or_init(|| {
        let v = std::env::var(VIRTUAL_CLOCK_ENV).ok()?;
        let mut n = v.split(',').map(|p| p.trim().parse::<u64>().ok());
        Some(Virtual {
            start_ns: n.next()??,
            step_ns: n.next().flatten().unwrap_or(0),
            after_ns: n.next().flatten().unwrap_or(0),
        })
    })
}
