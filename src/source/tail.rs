//! `tail://` input: follow a file as it grows. At end of file it polls; a file that shrank
//! was truncated and is read again from the start; a path that now names another file was
//! rotated: the old file is read to its end first (nothing written before the rotation is
//! lost), then the new one from its start. With a checkpoint (see `checkpoint`), it resumes
//! where the outputs had got to, also in a file rotated while the engine was stopped.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use super::Router;
use super::checkpoint::{Checkpoint, FileId, find_by_id};
use super::framer::Framer;

fn identity(m: &std::fs::Metadata) -> FileId {
    FileId::of(m)
}

/// Records where the events routed so far end, when the input keeps a checkpoint.
fn note(ckpt: &mut Option<&mut Checkpoint>, router: &Router, id: FileId, offset: u64) {
    if let Some(c) = ckpt.as_deref_mut() {
        c.note(router.seq(), id, offset);
    }
}

fn save(ckpt: &mut Option<&mut Checkpoint>, router: &Router, force: bool) {
    if let Some(c) = ckpt.as_deref_mut() {
        match c.save(force) {
            Ok(()) => c.last_error = None,
            Err(e) => {
                // Reported once per distinct failure, not at every attempt.
                let msg = format!("{}: {e}", c.state_path.display());
                if c.last_error.as_deref() != Some(msg.as_str()) {
                    router.report("checkpoint_error", 0, 0, 0, &msg);
                    c.last_error = Some(msg);
                }
            }
        }
    }
}

/// Reads the rest of the file that was rotated away while the engine was stopped.
fn finish_rotated(
    old: &Path,
    id: FileId,
    offset: u64,
    max_line: usize,
    router: &mut Router,
    ckpt: &mut Option<&mut Checkpoint>,
) {
    let Ok(mut f) = File::open(old) else { return };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return;
    }
    let mut framer = Framer::new(max_line);
    framer.reset(offset);
    while let Ok(n) = framer.fill(&mut f, router) {
        if n == 0 {
            break;
        }
        router.add_bytes(n);
        note(ckpt, router, id, framer.consumed());
    }
    framer.finish(router);
    router.flush();
    note(ckpt, router, id, framer.consumed());
}

/// Follows `path` until the engine stops. `from_start` is the `<` suffix; a saved checkpoint
/// takes precedence over it.
pub fn follow(
    path: &Path,
    from_start: bool,
    max_line: usize,
    poll: Duration,
    router: &mut Router,
    mut ckpt: Option<&mut Checkpoint>,
) {
    let mut framer = Framer::new(max_line);
    let resume = ckpt.as_deref_mut().and_then(|c| c.load());
    let mut reported_missing = false;
    // Wait for the file to exist.
    let mut file = loop {
        if router.stopping() {
            return;
        }
        let r = File::open(path);
        router.opened();
        match r {
            Ok(f) => {
                router.set_missing(false);
                break f;
            }
            Err(e) => {
                router.set_missing(true);
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
    let mut id = file.metadata().map(|m| identity(&m)).unwrap_or_default();
    match resume {
        Some((saved, offset)) if saved == id => {
            // Same file: go on from the checkpoint (from the start if it was truncated since).
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let at = if offset <= len { offset } else { 0 };
            if file.seek(SeekFrom::Start(at)).is_ok() {
                framer.reset(at);
            }
        }
        Some((saved, offset)) => {
            // Rotated while stopped: the rest of the old file first, then the new one.
            match find_by_id(path, saved) {
                Some(old) => finish_rotated(&old, saved, offset, max_line, router, &mut ckpt),
                None => router.report(
                    "checkpoint_file_gone",
                    0,
                    offset,
                    0,
                    &format!(
                        "{}: the checkpointed file (inode {}) is gone; reading the current file from its start",
                        path.display(),
                        saved.ino
                    ),
                ),
            }
        }
        None => {
            if !from_start && let Ok(end) = file.seek(SeekFrom::End(0)) {
                framer.reset(end);
            }
        }
    }
    note(&mut ckpt, router, id, framer.consumed());
    loop {
        match framer.fill(&mut file, router) {
            Ok(n) if n > 0 => {
                router.add_bytes(n);
                note(&mut ckpt, router, id, framer.consumed());
                save(&mut ckpt, router, false);
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
        save(&mut ckpt, router, false);
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
                note(&mut ckpt, router, id, framer.consumed());
                match File::open(crate::privilege::host_path(path)) {
                    Ok(f) => {
                        file = f;
                        id = file.metadata().map(|m| identity(&m)).unwrap_or_default();
                        framer.reset(0);
                        note(&mut ckpt, router, id, 0);
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
                        note(&mut ckpt, router, id, 0);
                    }
                }
            }
            Err(_) => {
                // The path is gone (rotated, new file not there yet): keep reading the old one.
            }
        }
    }
}
