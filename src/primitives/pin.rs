//! CPU pinning plan: which core each reader and worker thread is pinned to.

use core_affinity::CoreId;

/// A `--cores` list that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoresError {
    #[error("--cores: bad CPU list item {0:?} (expected N or N-M)")]
    BadItem(String),
    #[error("--cores: empty CPU list")]
    Empty,
    #[error("--cores: CPU {missing} is not one this process may run on (it may use {available})")]
    Unavailable { missing: String, available: String },
}

/// `cores` when this process may run on each of them (a CPU that does not exist, or one
/// outside its affinity, was accepted and its threads left unpinned without a word).
pub fn check_available(cores: Vec<usize>) -> Result<Vec<usize>, CoresError> {
    let can = available();
    let missing: Vec<String> = cores
        .iter()
        .filter(|c| !can.is_empty() && !can.contains(c))
        .map(ToString::to_string)
        .collect();
    if missing.is_empty() {
        return Ok(cores);
    }
    let list: Vec<String> = can.iter().map(ToString::to_string).collect();
    Err(CoresError::Unavailable {
        missing: missing.join(", "),
        available: list.join(","),
    })
}

/// Parses `--cores` ("0,2-5") into CPU ids.
pub fn parse_cores(s: &str) -> Result<Vec<usize>, CoresError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || CoresError::BadItem(part.to_string());
        if let Some((a, b)) = part.split_once('-') {
            let a: usize = a.trim().parse().map_err(|_| bad())?;
            let b: usize = b.trim().parse().map_err(|_| bad())?;
            if a > b {
                return Err(bad());
            }
            out.extend(a..=b);
        } else {
            out.push(part.parse().map_err(|_| bad())?);
        }
    }
    if out.is_empty() {
        return Err(CoresError::Empty);
    }
    Ok(out)
}

/// The CPUs this process may run on.
pub(crate) fn available() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|v| v.into_iter().map(|c| c.id).collect())
        .unwrap_or_default()
}

/// Where a reader or worker thread may run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pin {
    /// Its own CPU.
    Cpu(usize),
    /// Any of these CPUs (shared with other threads).
    Set(Vec<usize>),
}

/// The placement of thread `slot` (readers first, then workers) out of `threads`, on `cpus`.
/// With a CPU per thread, each thread gets its own. With more threads than CPUs, none is
/// pinned to one CPU: fixed pins leave a reader and a worker sharing one CPU while another
/// CPU's worker waits for them (perf/README.md, "Sizes chosen by measurement"), so threads may
/// run on any CPU of the list (`None` when that is every CPU the process has).
pub(crate) fn placement(cpus: &[usize], threads: usize, slot: usize, no_pin: bool) -> Option<Pin> {
    if no_pin || cpus.is_empty() {
        return None;
    }
    if threads <= cpus.len() {
        return Some(Pin::Cpu(cpus[slot % cpus.len()]));
    }
    let mut all = available();
    all.sort_unstable();
    let mut mine = cpus.to_vec();
    mine.sort_unstable();
    mine.dedup();
    (mine != all).then_some(Pin::Set(mine))
}

/// Places the calling thread; returns false when the OS refused.
pub(crate) fn pin_current(pin: &Pin) -> bool {
    match pin {
        Pin::Cpu(cpu) => core_affinity::set_for_current(CoreId { id: *cpu }),
        Pin::Set(cpus) => {
            // SAFETY: `set` is a zeroed cpu_set_t filled with CPU_SET below the size limit;
            // sched_setaffinity(0, ...) only reads it and applies to the calling thread.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
                    libc::CPU_SET(c, &mut set);
                }
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cpu_per_thread_only_when_there_are_enough() {
        assert_eq!(placement(&[0, 1], 2, 0, false), Some(Pin::Cpu(0)));
        assert_eq!(placement(&[0, 1], 2, 1, false), Some(Pin::Cpu(1)));
        assert_eq!(placement(&[4, 5, 6], 2, 1, false), Some(Pin::Cpu(5)));
        assert_eq!(placement(&[0, 1], 2, 1, true), None);
        assert_eq!(placement(&[], 2, 1, false), None);
        // More threads than CPUs: the list as a set, or nothing when it is every CPU.
        let all = available();
        assert_eq!(placement(&all, all.len() + 1, 0, false), None);
        if all.len() > 1 {
            assert_eq!(placement(&all[..1], 2, 1, false), Some(Pin::Set(vec![all[0]])));
        }
    }

    #[test]
    fn parses_lists_and_ranges() {
        assert_eq!(parse_cores("0,2-4, 7").unwrap(), vec![0, 2, 3, 4, 7]);
        assert!(parse_cores("3-1").is_err());
        assert!(parse_cores("x").is_err());
        assert!(parse_cores("").is_err());
        // Only CPUs this process may run on.
        let can = available();
        assert_eq!(check_available(can.clone()), Ok(can.clone()));
        let beyond = can.iter().max().copied().unwrap_or(0) + 1;
        assert!(
            check_available(vec![beyond])
                .unwrap_err()
                .to_string()
                .contains(&format!("CPU {beyond} is not one")),
        );
    }
}
