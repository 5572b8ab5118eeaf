//! The encoding thread: row groups encoded and compressed off the writer thread.

use super::*;

/// The file being written (its Parquet writer lives on the encoding thread).
pub(super) struct Current {
    pub(super) name: String,
    pub(super) tmp: PathBuf,
    pub(super) started: Instant,
    pub(super) created_secs: i64,
    pub(super) stats: FileStats,
    /// `ParquetSink::sent` before its first row (before the first retried row's, for a file
    /// of rows written again): `delivered` stays below it until the file is published.
    pub(super) first_sent: u64,
}

/// Work for the encoding thread, tagged with the generation of the file it belongs to.
pub(super) enum Job {
    /// The writer of a newly started file.
    Open(u64, Box<SerializedFileWriter<File>>),
    /// One row group to encode, compress and append.
    Group(u64, Box<Rows>),
    /// Write the footer and sync; answered with [`Done::Finished`].
    Finish(u64),
}

/// What the encoding thread reports.
pub(super) enum Done {
    /// A row group of this file failed; the file is abandoned.
    Failed(u64, ParquetError),
    /// The file is complete on disk (footer written, synced), or could not be.
    Finished(u64, Result<(), ParquetError>),
}

/// The thread that encodes and compresses row groups (most of a Parquet sink's work, Snappy
/// above all), so that the writer thread goes on reading fields while a group is encoded. At
/// most one group waits for it (the channel has no room: handing one over waits until the
/// previous one is taken), so a sink holds at most three groups: the one being filled, the one
/// handed over and the one being encoded.
pub(super) struct EncoderThread {
    pub(super) jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    pub(super) done: std::sync::mpsc::Receiver<Done>,
    /// Emptied row buffers coming back, for reuse.
    pub(super) spare: std::sync::mpsc::Receiver<Box<Rows>>,
    pub(super) handle: Option<std::thread::JoinHandle<()>>,
}

impl EncoderThread {
    pub(super) fn spawn() -> io::Result<EncoderThread> {
        let (jobs, rx) = std::sync::mpsc::sync_channel(0);
        let (done_tx, done) = std::sync::mpsc::channel();
        let (spare_tx, spare) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("dfm-parquet".into())
            .spawn(move || encode_loop(rx, done_tx, spare_tx))?;
        Ok(EncoderThread {
            jobs: Some(jobs),
            done,
            spare,
            handle: Some(handle),
        })
    }

    pub(super) fn send(&self, job: Job) -> io::Result<()> {
        self.jobs
            .as_ref()
            .and_then(|j| j.send(job).ok())
            .ok_or_else(|| io::Error::other("the parquet encoding thread has stopped"))
    }
}

impl Drop for EncoderThread {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub(super) fn encode_loop(
    jobs: std::sync::mpsc::Receiver<Job>,
    done: std::sync::mpsc::Sender<Done>,
    spare: std::sync::mpsc::Sender<Box<Rows>>,
) {
    let mut file: Option<(u64, Box<SerializedFileWriter<File>>)> = None;
    let mut arrays: Vec<ByteArray> = Vec::new();
    for job in jobs {
        match job {
            Job::Open(generation, w) => file = Some((generation, w)),
            Job::Group(generation, mut rows) => {
                if let Some((g, w)) = file.as_mut()
                    && *g == generation
                {
                    // The column writer takes `Bytes`; slices of one buffer cost no copy, and
                    // the buffer comes back for reuse once the writer has dropped them.
                    let text = Bytes::from(std::mem::take(&mut rows.text));
                    let res = write_group(w, &rows, &text, &mut arrays);
                    arrays.clear();
                    rows.text = reclaim(text);
                    if let Err(e) = res {
                        file = None;
                        let _ = done.send(Done::Failed(generation, e));
                    }
                }
                rows.clear();
                let _ = spare.send(rows);
            }
            Job::Finish(generation) => {
                let res = match file.take() {
                    Some((g, w)) if g == generation => w
                        .into_inner()
                        .and_then(|f| f.sync_all().map_err(|e| ParquetError::External(Box::new(e)))),
                    other => {
                        file = other;
                        Err(ParquetError::General("an earlier row group of this file failed".into()))
                    }
                };
                let _ = done.send(Done::Finished(generation, res));
            }
        }
    }
}
