//! The rate limit of diagnostic records, per kind, shared by every emitter (workers, readers):
//! the first [`BURST`] records of a kind in each [`WINDOW`] are written in full, the others only
//! counted; when the window ends one `suppressed` record says how many were left out. The
//! counters of the stats line are kept apart and stay exact, so a storm of errors keeps the
//! log small without hiding how many there were.

use std::time::{Duration, Instant};

/// Records of one kind written in full per window (per emitter), and the window.
pub(crate) const BURST: u32 = 50;
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

use super::{self as events, Kind};

struct Limit {
    kind: Kind,
    since: Instant,
    written: u32,
    suppressed: u64,
}

/// The limits of one emitter.
#[derive(Default)]
pub(crate) struct Limiter {
    kinds: Vec<Limit>,
}

impl Limiter {
    /// Whether a record of `kind` may be written now. When the kind's window had ended, its
    /// `suppressed` record (if any) is put in `ended`, to be written first.
    pub(crate) fn allow(&mut self, kind: Kind, ended: &mut Option<Vec<u8>>) -> bool {
        let now = Instant::now();
        let i = match self.kinds.iter().position(|r| r.kind == kind) {
            Some(i) => i,
            None => {
                self.kinds.push(Limit {
                    kind,
                    since: now,
                    written: 0,
                    suppressed: 0,
                });
                self.kinds.len() - 1
            }
        };
        let k = &mut self.kinds[i];
        if now.duration_since(k.since) >= WINDOW {
            *ended = take_suppressed(k);
            k.since = now;
        }
        if k.written < BURST {
            k.written += 1;
            true
        } else {
            // Left out, but counted as every record of its kind is.
            events::count(kind);
            k.suppressed += 1;
            false
        }
    }

    /// The `suppressed` records of every kind whose window has ended (`all`: of every kind, at
    /// the end), to be written.
    pub(crate) fn due(&mut self, all: bool) -> Vec<Vec<u8>> {
        if self.kinds.iter().all(|k| k.suppressed == 0) {
            return Vec::new();
        }
        let now = Instant::now();
        let mut out = Vec::new();
        for k in &mut self.kinds {
            if all || now.duration_since(k.since) >= WINDOW {
                out.extend(take_suppressed(k));
                k.since = now;
            }
        }
        out
    }
}

/// The `suppressed` record of a kind whose window ended (and a new window's counts), if
/// records were left out.
fn take_suppressed(k: &mut Limit) -> Option<Vec<u8>> {
    let (n, written) = (std::mem::take(&mut k.suppressed), std::mem::take(&mut k.written));
    if n == 0 {
        return None;
    }
    let msg = format!(
        "{n} more {} records were not written ({written} were, in {} s; the counters are exact)",
        k.kind.name(),
        WINDOW.as_secs()
    );
    use crate::primitives::json::write_str;
    let mut line = Vec::with_capacity(192);
    events::head(Kind::Suppressed, &mut line);
    line.extend_from_slice(b",\"of\":");
    write_str(&mut line, k.kind.name().as_bytes());
    line.extend_from_slice(format!(",\"count\":{n},\"message\":").as_bytes());
    write_str(&mut line, msg.as_bytes());
    line.push(b'}');
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_is_cut_to_the_burst_and_one_summary() {
        let mut l = Limiter::default();
        let mut ended = None;
        let allowed = (0..1000).filter(|_| l.allow(Kind::InvalidLine, &mut ended)).count();
        assert_eq!(allowed, BURST as usize);
        assert!(ended.is_none());
        assert!(l.allow(Kind::ReadError, &mut ended), "kinds are limited apart");
        let due = l.due(true);
        assert_eq!(due.len(), 1);
        let v: serde_json::Value = serde_json::from_slice(&due[0]).unwrap();
        assert_eq!(v["kind"], "suppressed");
        assert_eq!(v["of"], "invalid_line");
        assert_eq!(v["count"], 950);
        assert!(l.due(true).is_empty(), "counted once");
    }
}
