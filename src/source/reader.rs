//! A reader thread: started for one input with its rings, it reads until the input ends or the
//! pipeline stops, resuming where a previous pipeline stopped, and hands back where it stopped.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use super::checkpoint::{Checkpoint, Spot};
use super::{Diag, ReaderIo, Router, ipc};
use crate::config::{InputConfig, InputUri};
use crate::counters::{Stats, Watermarks};

/// What a reader thread is started with, besides its input and its rings.
pub(crate) struct ReaderSetup {
    pub stats: Arc<Stats>,
    pub diag: Diag,
    /// The reader stops when it is set (a stop signal or a rebuild).
    pub stop: Arc<AtomicBool>,
    /// Counts the inputs that have opened their file, socket or consumer.
    pub opened: Arc<AtomicUsize>,
    /// The writer's watermarks (checkpoints and Kafka commits wait for them).
    pub marks: Watermarks,
    /// Where tail checkpoints live.
    pub state_dir: PathBuf,
    /// Set when the pipeline ends for a rebuild: socket inputs then keep their socket.
    pub rebuilding: Arc<AtomicBool>,
    /// `--follow`: `file://` inputs are followed as `tail://PATH<` is.
    pub follow: bool,
    pub max_line: usize,
    /// `tail_poll_ms`.
    pub poll: Duration,
    /// `shutdown_grace`: how long a stop lets outputs deliver (a Kafka input waits about as
    /// long for its last commit).
    pub grace: Duration,
    pub cpu: Option<crate::primitives::pin::Pin>,
}

/// Where a `file://` input was read to: the offset after the last line handed out, and the
/// lines before it (so that reports after a reload keep the file's line numbers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FilePos {
    pub offset: u64,
    pub line: u64,
}

/// Where a reader goes on after a reload rebuilt the pipeline.
#[derive(Default)]
pub(crate) struct Resume {
    /// A `file://` input read to here.
    pub file_pos: FilePos,
    /// A followed `file://` input (`--follow`) stopped here.
    pub followed: Option<Spot>,
    /// A socket input's socket, kept open.
    pub socket: Option<ipc::Kept>,
    /// Files the other matches of its wildcard read (`tail::Start::siblings`).
    pub siblings: Vec<super::checkpoint::FileId>,
    /// Its wildcard (`tail::Start::pattern`).
    pub pattern: Option<std::path::PathBuf>,
}

/// Where a reader stopped, for the next pipeline.
#[derive(Default)]
pub(crate) struct Stopped {
    pub file_pos: Option<FilePos>,
    pub followed: Option<Spot>,
    pub socket: Option<ipc::Kept>,
    /// The files a `tail://` reader read to their end and left for the next file at its path
    /// (rotations), with their first bytes, the last few, oldest first.
    pub finished: Vec<(super::checkpoint::FileId, super::checkpoint::Fingerprint)>,
}

/// What a reader thread returns: its checkpoint (saved once everything read is written) and
/// where it stopped.
pub(crate) struct ReaderEnd {
    pub ckpt: Option<Checkpoint>,
    pub stopped: Stopped,
}

/// Starts the reader thread of input `r`: the source stage's entry point.
pub(crate) fn spawn_reader(
    r: usize,
    input: InputConfig,
    io: ReaderIo,
    setup: ReaderSetup,
    resume: Resume,
) -> std::io::Result<std::thread::JoinHandle<ReaderEnd>> {
    let mut router = Router::new(r as u32, input.tag.clone(), io, setup.stats, setup.diag, setup.stop);
    router.count_open_in(setup.opened);
    let mut ckpt = match &input.uri {
        InputUri::Tail { path, .. } => Some(Checkpoint::new(
            &setup.state_dir,
            &input.tag,
            r,
            path,
            Arc::clone(&setup.marks),
        )),
        _ => None,
    };
    let (cpu, marks, rebuilding) = (setup.cpu, setup.marks, setup.rebuilding);
    let (follow, max_line, poll, grace) = (setup.follow, setup.max_line, setup.poll, setup.grace);
    std::thread::Builder::new()
        .name(format!("dfm-reader-{r}"))
        .spawn(move || {
            if let Some(c) = cpu {
                crate::primitives::pin::pin_current(&c);
            }
            router.register();
            let how = super::Reading {
                input: r,
                follow,
                max_line,
                poll,
                grace,
                marks: &marks,
                rebuilding: &rebuilding,
            };
            let (result, stopped) = super::read_input(&input.uri, &how, &mut router, ckpt.as_mut(), resume);
            router.opened();
            if let Err(e) = result {
                router.set_missing(true);
                let what = format!("{}: {e}", input.uri.path().display());
                router.report(crate::diag::Kind::InputError, 0, 0, 0, &what);
            }
            ReaderEnd { ckpt, stopped }
        })
}
