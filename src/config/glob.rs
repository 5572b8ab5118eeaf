//! Wildcards in the file name of `file://`, `zfile://` and `tail://` inputs
//! (`tail:///var/log/suricata/eve.*.json`, Suricata's `threaded: true` output): `*`, `?` and
//! `[...]` (`[0-9]`, `[!x]`) in the last path component; the directories are taken as written.

use std::path::{Path, PathBuf};

/// Whether the file name of `p` has wildcards.
pub(crate) fn has_wildcards(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.as_encoded_bytes().iter().any(|b| matches!(b, b'*' | b'?' | b'[')))
}

/// Mistakes in a pattern that would make it wait for, or match, nothing: a wildcard in a
/// directory (taken as written, so a directory literally named `x*` is waited for), and a `[`
/// without its `]` in the file name.
pub(crate) fn check_pattern(p: &Path) -> Result<(), String> {
    if let Some(dir) = p.parent()
        && dir.components().any(|c| {
            c.as_os_str()
                .as_encoded_bytes()
                .iter()
                .any(|b| matches!(b, b'*' | b'?'))
        })
    {
        return Err(format!(
            "wildcards are taken only in the file name, not in its directories ({})",
            p.display()
        ));
    }
    let name = p.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default();
    if let Some(open) = name.iter().position(|&b| b == b'[')
        && !name[open + 1..].contains(&b']')
    {
        return Err(format!("a [ without its ] in {}", p.display()));
    }
    Ok(())
}

/// The files that match `pattern` now, sorted by name (directories and unreadable entries
/// left out).
pub(crate) fn expand(pattern: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(pat)) = (pattern.parent(), pattern.file_name()) else {
        return Vec::new();
    };
    let host = crate::privilege::host_path(dir);
    let Ok(rd) = std::fs::read_dir(&host) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
        .filter(|e| matches(pat.as_encoded_bytes(), e.file_name().as_encoded_bytes()))
        .map(|e| dir.join(e.file_name()))
        .collect();
    out.sort();
    out
}

/// Whether the file name of `path` matches that of `pattern` (their directories are not
/// compared).
pub(crate) fn name_matches(pattern: &Path, path: &Path) -> bool {
    match (pattern.file_name(), path.file_name()) {
        (Some(p), Some(n)) => matches(p.as_encoded_bytes(), n.as_encoded_bytes()),
        _ => false,
    }
}

/// Shell-style matching of one path component.
fn matches(pat: &[u8], name: &[u8]) -> bool {
    match pat.first() {
        None => name.is_empty(),
        Some(b'*') => (0..=name.len()).any(|i| matches(&pat[1..], &name[i..])),
        Some(b'?') => !name.is_empty() && matches(&pat[1..], &name[1..]),
        Some(b'[') => {
            let Some(end) = pat.iter().skip(2).position(|&b| b == b']').map(|p| p + 2) else {
                return name.first() == Some(&b'[') && matches(&pat[1..], &name[1..]);
            };
            let Some(&c) = name.first() else { return false };
            let set = &pat[1..end];
            let (negate, set) = match set.first() {
                Some(b'!' | b'^') => (true, &set[1..]),
                _ => (false, set),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= (set[i]..=set[i + 2]).contains(&c);
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && matches(&pat[end + 1..], &name[1..])
        }
        Some(&p) => name.first() == Some(&p) && matches(&pat[1..], &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_patterns() {
        let m = |p: &str, n: &str| matches(p.as_bytes(), n.as_bytes());
        assert!(m("eve.*.json", "eve.1.json") && m("eve.*.json", "eve.12.json"));
        assert!(!m("eve.*.json", "eve.1.json.1") && !m("eve.*.json", "eve.json"));
        assert!(m("eve.?.json", "eve.3.json") && !m("eve.?.json", "eve.33.json"));
        assert!(m("eve.[0-9].json", "eve.7.json") && !m("eve.[0-9].json", "eve.x.json"));
        assert!(m("eve.[!0-9].json", "eve.x.json") && !m("eve.[!0-9].json", "eve.7.json"));
        assert!(m("*", "anything") && m("a*b*c", "aXXbYc") && !m("a*b*c", "aXXbY"));
        assert!(has_wildcards(Path::new("/x/eve.*.json")) && !has_wildcards(Path::new("/x*/eve.json")));
        assert!(check_pattern(Path::new("/x/eve.[0-9].json")).is_ok());
        assert!(
            check_pattern(Path::new("/x*/eve.json"))
                .unwrap_err()
                .contains("only in the file name")
        );
        assert!(check_pattern(Path::new("/x/?/eve.*.json")).is_err());
        assert!(
            check_pattern(Path::new("/x/eve.[0-9.json"))
                .unwrap_err()
                .contains("a [ without its ]")
        );
    }

    #[test]
    fn expands_to_the_matching_files_sorted() {
        let d = tempfile::tempdir().unwrap();
        for f in ["eve.2.json", "eve.1.json", "eve.json", "eve.1.json.1", "other.1.json"] {
            std::fs::write(d.path().join(f), b"").unwrap();
        }
        std::fs::create_dir(d.path().join("eve.9.json")).unwrap();
        let got = expand(&d.path().join("eve.*.json"));
        assert_eq!(got, vec![d.path().join("eve.1.json"), d.path().join("eve.2.json")]);
    }
}
