//! Input and output URIs of config.lua (`file://`, `zfile://`, `tail://`, `ipc://`,
//! `ipc+stream://`), with the original's path rules: relative paths live under the log
//! directory, a `<` suffix means "from the start" (inputs) or "truncate" (outputs), a `>`
//! suffix is accepted and means the default.

use std::path::{Path, PathBuf};

pub use crate::sink::IpcKind;

/// Where events come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputUri {
    /// Read a file to its end (gzip-compressed files are recognised by their magic bytes).
    File { path: PathBuf },
    /// Read a gzip file to its end (`zfile://`).
    Zfile { path: PathBuf },
    /// Follow a file; `from_start` is the `<` suffix.
    Tail { path: PathBuf, from_start: bool },
    /// Bind a unix datagram socket (`ipc://`) or listen on a unix stream socket
    /// (`ipc+stream://`).
    Ipc { path: PathBuf, kind: IpcKind },
}

/// Where results go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputUri {
    /// Append (or, with `<`, truncate) to a file, one event per line.
    File { path: PathBuf, truncate: bool },
    /// The same, gzip-compressed (`zfile://`).
    Zfile { path: PathBuf, truncate: bool },
    /// Send to a unix datagram socket (`ipc://`, one datagram per event) or a unix stream
    /// socket (`ipc+stream://`, one line per event).
    Ipc { path: PathBuf, kind: IpcKind },
}

const PLANNED: &[&str] = &["kafka://", "parquet://", "syslog://", "nats://"];

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
        } else if let Some(rest) = uri.strip_prefix("zfile://") {
            let (p, _) = split_suffix(rest);
            Ok(InputUri::Zfile {
                path: resolve(p, log_dir).map_err(|e| format!("{uri:?}: {e}"))?,
            })
        } else if let Some(rest) = uri.strip_prefix("tail://") {
            let (p, suffix) = split_suffix(rest);
            Ok(InputUri::Tail {
                path: resolve(p, log_dir).map_err(|e| format!("{uri:?}: {e}"))?,
                from_start: suffix == Some('<'),
            })
        } else if let Some((path, kind)) = ipc(uri, log_dir)? {
            Ok(InputUri::Ipc { path, kind })
        } else {
            Err(unsupported(uri, "file://, zfile://, tail://, ipc://, ipc+stream://"))
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            InputUri::File { path }
            | InputUri::Zfile { path }
            | InputUri::Tail { path, .. }
            | InputUri::Ipc { path, .. } => path,
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
        } else if let Some(rest) = uri.strip_prefix("zfile://") {
            let (p, suffix) = split_suffix(rest);
            Ok(OutputUri::Zfile {
                path: resolve(p, log_dir).map_err(|e| format!("{uri:?}: {e}"))?,
                truncate: suffix == Some('<'),
            })
        } else if uri.starts_with("tail://") {
            Err(format!("{uri:?}: tail:// is an input scheme"))
        } else if let Some((path, kind)) = ipc(uri, log_dir)? {
            Ok(OutputUri::Ipc { path, kind })
        } else {
            Err(unsupported(uri, "file://, zfile://, ipc://, ipc+stream://"))
        }
    }
}

/// `ipc://PATH` (datagram) or `ipc+stream://PATH`.
fn ipc(uri: &str, log_dir: &Path) -> Result<Option<(PathBuf, IpcKind)>, String> {
    let (rest, kind) = if let Some(r) = uri.strip_prefix("ipc+stream://") {
        (r, IpcKind::Stream)
    } else if let Some(r) = uri.strip_prefix("ipc://") {
        (r, IpcKind::Datagram)
    } else {
        return Ok(None);
    };
    let path = resolve(rest, log_dir).map_err(|e| format!("{uri:?}: {e}"))?;
    // sun_path holds 108 bytes with its terminating NUL.
    if path.as_os_str().len() > 107 {
        return Err(format!("{uri:?}: socket path longer than 107 bytes"));
    }
    Ok(Some((path, kind)))
}
