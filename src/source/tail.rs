//! `tail://` input: follow a file as it grows. At end of file it polls; a file that shrank
//! was truncated and is read again from the start; a path that now names another file was
//! rotated: the old file is read to its end first (nothing written before the rotation is
//! lost), then the new one from its start.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use super::Router;
use super::framer::Framer;

fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

/// Follows `path` until the engine stops. `from_start` is the `<` suffix.
pub fn follow(path: &Path, from_start: bool, max_line: usize, poll: Duration, router: &mut Router) {
    let mut framer = Framer::new(max_line);
    let mut reported_missing = false;
    // Wait for the file to exist.
    let mut file = loop {
        if router.stopping() {
            return;
        }
        match File::open(path) {
            Ok(f) => break f,
            Err(e) => {
                if !reported_missing {
                    router.report(
                        "input_missing",
                        0,
                        0,
                        0,
                        &format!("{}: {e}; waiting for it to appear", path.display()),
                    );
                    reported_missing = true;
                }
                std::thread::sleep(poll);
            }
        }
    };
    if !from_start && let Ok(end) = file.seek(SeekFrom::End(0)) {
        framer.reset(end);
    }
    let mut id = file.metadata().map(|m| identity(&m)).unwrap_or_default();
    loop {
        match framer.fill(&mut file, router) {
            Ok(n) if n > 0 => {
                router.add_bytes(n);
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                router.report(
                    "read_error",
                    framer.line_no,
                    framer.position(),
                    0,
                    &format!("{}: {e}", path.display()),
                );
                std::thread::sleep(poll);
            }
        }
        // At the end of what is there: hand out partial batches, then look around.
        router.flush();
        if router.stopping() {
            return;
        }
        std::thread::sleep(poll);
        let now = std::fs::metadata(path);
        match now {
            Ok(m) if identity(&m) != id => {
                // Rotated: finish the old file (it may have grown before the rename).
                loop {
                    match framer.fill(&mut file, router) {
                        Ok(n) if n > 0 => router.add_bytes(n),
                        _ => break,
                    }
                }
                framer.finish(router);
                router.flush();
                match File::open(path) {
                    Ok(f) => {
                        file = f;
                        id = file.metadata().map(|m| identity(&m)).unwrap_or_default();
                        framer.reset(0);
                    }
                    Err(_) => continue,
                }
            }
            Ok(m) => {
                // Same file: shorter than what was read means it was truncated.
                if m.len() < framer.position() {
                    framer.finish(router);
                    if file.seek(SeekFrom::Start(0)).is_ok() {
                        framer.reset(0);
                    }
                }
            }
            Err(_) => {
                // The path is gone (rotated, new file not there yet): keep reading the old one.
            }
        }
    }
}
