//! Input and output URIs of config.lua (`file://`, `tail://`), with the original's path rules:
//! relative paths live under the log directory, a `<` suffix means "from the start" (inputs)
//! or "truncate" (outputs), a `>` suffix is accepted and means the default.

use std::path::{Path, PathBuf};

/// Where events come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputUri {
    /// Read a file to its end.
    File { path: PathBuf },
    /// Follow a file; `from_start` is the `<` suffix.
    Tail { path: PathBuf, from_start: bool },
}

/// Where results go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputUri {
    /// Append (or, with `<`, truncate) to a file, one event per line.
    File { path: PathBuf, truncate: bool },
}

const PLANNED: &[&str] = &["ipc://", "zfile://", "kafka://", "parquet://", "syslog://", "nats://"];

fn split_suffix(s: &str) -> (&str, Option<char>) {
    match s.chars().last() {
        Some(c @ ('<' | '>')) => (&s[..s.len() - 1], Some(c)),
        _ => (s, None),
    }
}

fn resolve(path: &str, log_dir: &Path) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    let p = Path::new(path);
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        log_dir.join(p)
    })
}

fn unsupported(uri: &str, supported: &str) -> String {
    if PLANNED.iter().any(|p| uri.starts_with(p)) {
        format!("{uri:?}: this scheme is not available in this build (supported: {supported})")
    } else {
        format!("{uri:?}: unknown scheme (supported: {supported})")
    }
}

impl InputUri {
    pub fn parse(uri: &str, log_dir: &Path) -> Result<InputUri, String> {
        if let Some(rest) = uri.strip_prefix("file://") {
            let (p, _) = split_suffix(rest);
            Ok(InputUri::File {
                path: resolve(p, log_dir).map_err(|e| format!("{uri:?}: {e}"))?,
            })
        } else if let Some(rest) = uri.strip_prefix("tail://") {
            let (p, suffix) = split_suffix(rest);
            Ok(InputUri::Tail {
                path: resolve(p, log_dir).map_err(|e| format!("{uri:?}: {e}"))?,
                from_start: suffix == Some('<'),
            })
        } else {
            Err(unsupported(uri, "file://, tail://"))
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            InputUri::File { path } | InputUri::Tail { path, .. } => path,
        }
    }
}

impl OutputUri {
    pub fn parse(uri: &str, log_dir: &Path) -> Result<OutputUri, String> {
        if let Some(rest) = uri.strip_prefix("file://") {
            let (p, suffix) = split_suffix(rest);
            Ok(OutputUri::File {
                path: resolve(p, log_dir).map_err(|e| format!("{uri:?}: {e}"))?,
                truncate: suffix == Some('<'),
            })
        } else if uri.starts_with("tail://") {
            Err(format!("{uri:?}: tail:// is an input scheme"))
        } else {
            Err(unsupported(uri, "file://"))
        }
    }
}
