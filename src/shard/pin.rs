//! CPU pinning plan: which core each reader and worker thread is pinned to.

use core_affinity::CoreId;

/// Parses `--cores` ("0,2-5") into CPU ids.
pub fn parse_cores(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("--cores: bad CPU list item {part:?} (expected N or N-M)");
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
        return Err("--cores: empty CPU list".into());
    }
    Ok(out)
}

/// The CPUs this process may run on.
pub fn available() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|v| v.into_iter().map(|c| c.id).collect())
        .unwrap_or_default()
}

/// Pins the calling thread to `cpu`; returns false when the OS refused.
pub fn pin_current(cpu: usize) -> bool {
    core_affinity::set_for_current(CoreId { id: cpu })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_ranges() {
        assert_eq!(parse_cores("0,2-4, 7").unwrap(), vec![0, 2, 3, 4, 7]);
        assert!(parse_cores("3-1").is_err());
        assert!(parse_cores("x").is_err());
        assert!(parse_cores("").is_err());
    }
}
