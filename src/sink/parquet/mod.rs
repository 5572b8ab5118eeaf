//! `parquet` output: EVE events as Parquet files with typed columns for the common fields and
//! the whole event as JSON text, rolled by rows, input bytes or age, renamed into place only
//! once complete, and described by an index that finds the files for a time range and an
//! event type without opening any of them.
//!
//! # Files
//!
//! A file is `<dir>/<prefix>-<yyyymmddThhmmssZ>-<seq>.parquet`: the UTC time its first row
//! arrived and a six-digit sequence number that continues from the highest one already in
//! `dir` for this prefix, so names sort in the order the files were started even when the
//! clock steps back. While it is being written the file is `.<name>.inprogress` (hidden, and
//! with a suffix no Parquet reader globs); [`ParquetSink::close`] writes the footer, syncs it
//! and renames it, so a reader never sees a partial file. A file is started by the first row
//! after the previous one closed, so an idle sink leaves no empty files. It is closed after
//! `max_rows` rows or `max_bytes` bytes of input JSON (checked after each row), by
//! [`ParquetSink::flush`] once it is `max_age` old, and by `close` (exit, SIGUSR1 rotation).
//! Only then are its rows readable: `sent` counts the records handed to the sink and
//! `delivered` those in completed files, and the writer holds tail checkpoints and Kafka
//! commits back until `delivered` has passed them.
//!
//! Rows are buffered and written as one row group every [`ROW_GROUP_ROWS`] rows or
//! [`ROW_GROUP_BYTES`] bytes of string data. Row groups are encoded and compressed on the
//! sink's own thread (`dfm-parquet`) while the writer thread reads the fields of the next rows,
//! and `close` waits for the file. A file that cannot be written or finished is left
//! unfinished and all its rows count as lost ([`ParquetSink::new_failures`]); the next row
//! starts a new file. A complete file that cannot be published yet (a full disk) waits and
//! is retried (see Failures). Pages are Snappy-compressed; `event`, `timestamp` and `flow_id` have no
//! dictionary (they are nearly unique) and `event` has no statistics (its min/max would be
//! two arbitrary events).
//!
//! # Columns
//!
//! | column | Parquet type | from |
//! | --- | --- | --- |
//! | `timestamp` | optional INT64 TIMESTAMP(MICROS, UTC) | `"2024-03-01T12:00:00.124448+0000"`; also `Z`, `+00:00`, `+01`, other offsets |
//! | `event_type`, `src_ip`, `dest_ip`, `proto`, `app_proto`, `in_iface`, `community_id`, `host` | optional BYTE_ARRAY STRING | JSON strings, unescaped |
//! | `src_port`, `dest_port` | optional INT32 | JSON integers that fit |
//! | `flow_id` | optional INT64 | JSON integers up to 2^63-1, exact |
//! | `event` | required BYTE_ARRAY STRING | the input line, byte for byte, without its `\n` |
//!
//! A typed column is null when its field is absent, has another JSON type, is out of range
//! or (for `timestamp`) does not parse; the `event` column still has it. A line that is not a
//! JSON object is kept with only `event` set: no event is ever dropped. The one change made to
//! an input is for a line that is not UTF-8 (never valid JSON): its invalid bytes become
//! U+FFFD, since a STRING column must hold UTF-8.
//!
//! # Index
//!
//! At close, before the rename, the sink writes a sidecar `<dir>/<name>.index.json`
//! atomically (through `.<name>.index.json.inprogress`), then renames the Parquet file, then
//! appends the same object as one line to `<dir>/<prefix>.index.jsonl`:
//!
//! ```json
//! {"file":"eve-20240301T120000Z-000001.parquet","rows":1000,"input_bytes":650000,
//!  "created":"2024-03-01T12:00:00Z","closed":"2024-03-01T12:05:00Z",
//!  "min_timestamp":"2024-03-01T12:00:00.124448Z","max_timestamp":"2024-03-01T12:04:59.000001Z",
//!  "min_timestamp_micros":1709294400124448,"max_timestamp_micros":1709294699000001,
//!  "rows_without_timestamp":0,"rows_without_event_type":0,
//!  "event_types":{"dns":600,"flow":400},
//!  "event_type_ranges":{"dns":[1709294400124448,1709294699000001],"flow":[1709294400200000,1709294698000000]}}
//! ```
//!
//! (one line in the files). Timestamps are UTC; the `*_micros` values are microseconds since
//! the Unix epoch, `null` when no row had a timestamp; a type's range is `null` when none of
//! its rows had one. [`find_files`] reads the `.jsonl`, adds any sidecar that has no line
//! there (a crash between the two writes), keeps the entries whose Parquet file exists and
//! returns those whose range for the asked type (or for all rows) meets the asked range
//! `[from, to)`. A
//! file can be returned whose rows of that type lie only on both sides of the range, never
//! the other way round: the answer holds every file with a matching row.
//!
//! # Failures
//!
//! [`ParquetSink::open`] lists the `.inprogress` files of this prefix left by a crash in
//! [`ParquetSink::stale_files`]; nothing is deleted. When writing a row group or writing a
//! file's footer fails (a full disk), that file is abandoned where it is (added to
//! `stale_files`) and the next row starts a new file; its rows are not lost: the sink keeps the
//! lines of the file being written (up to [`RETAIN_BYTES`] with those waiting), and writes the
//! rows of an abandoned file again, into a file of their own, every [`RETRY_AFTER`] until it
//! works; meanwhile `delivered` stays below them and [`ParquetSink::waiting`] says why. A row
//! whose file cannot even be created waits the same way. Only what did not fit, or what is
//! still not written at exit ([`ParquetSink::finish`], after the stop's grace), is lost
//! (counted by `new_failures`).
//!
//! A file whose data is complete but whose sidecar index or rename fails is not readable yet:
//! it is kept as it is and its publication is retried at every [`ParquetSink::flush`] (every
//! 100 ms), files in the order they were completed, while later files go on being written.
//! `delivered` stays below its rows until it is published, so tail checkpoints and Kafka
//! commits wait; the writer reports the wait once (`output_waiting`, with the error, through
//! [`ParquetSink::waiting`]) and `output_resumed` when it is published. At exit
//! ([`ParquetSink::finish`]) a file still unpublished after the stop's grace is given up: its
//! rows count as lost and it stays as `.<name>.inprogress` (a complete Parquet file: renaming
//! it to `<name>` makes it readable). A failure after the rename (the `.jsonl` append, the
//! directory sync) leaves a complete file found through its sidecar: its rows are delivered
//! and the failure is only reported (`new_failures`, with no rows lost).

pub(crate) use crate::config::types::ParquetOptions;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::ColumnPath;
use rustc_hash::FxHashMap;
use simd_json::prelude::*;
use simd_json::{Node, StaticNode, Tape};

use crate::event::fields;

mod columns;
mod encoder;
mod extract;
mod index;
#[cfg(test)]
mod tests;

use columns::*;
use encoder::*;
use extract::*;
pub use index::find_files;
use index::*;

/// A Parquet output: see the module docs.
pub struct ParquetSink {
    dir: PathBuf,
    prefix: String,
    opts: ParquetOptions,
    schema: Arc<parquet::schema::types::Type>,
    props: Arc<WriterProperties>,
    cur: Option<Current>,
    rows: Rows,
    /// Sequence number of the next file.
    next_seq: u64,
    stale: Vec<PathBuf>,
    /// Row-group size in rows; [`ROW_GROUP_ROWS`] except in tests.
    row_group_rows: usize,
    /// Parser state, reused for every line: a mutable copy of the line, simd-json's buffers
    /// and the tape (kept between lines for its allocation only).
    scratch: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: Option<Tape<'static>>,
    /// Generation of the current file, tagging the encoding thread's jobs and reports.
    generation: u64,
    enc: EncoderThread,
    /// Records handed to the sink, and how many of them are in completed (renamed) files:
    /// only those are readable, so the writer's watermark (tail checkpoints, Kafka commits)
    /// waits for `delivered` as it waits for Kafka acknowledgements.
    pub sent: u64,
    pub delivered: u64,
    /// Rows of abandoned files (a write or finish failed: the file is left unfinished), and
    /// how many of them were reported (see [`new_failures`](Self::new_failures)).
    lost: u64,
    lost_reported: u64,
    last_loss: String,
    /// Files complete on disk that could not be published yet, oldest first, and the error of
    /// the last attempt.
    unpublished: std::collections::VecDeque<Unpublished>,
    publish_error: Option<String>,
    /// Index lines not written since the last [`new_failures`](Self::new_failures).
    index_failures: u64,
    /// The lines of the file being written (while they fit in [`RETAIN_BYTES`] with `retry`),
    /// kept until it is complete so that a file that cannot be written loses nothing.
    retained: Vec<u8>,
    retained_ok: bool,
    /// Lines of files that could not be written (or created), to write again.
    retry: Retry,
    /// The highest `sent` of a published file.
    published_max: u64,
}

/// Lines of files that could not be written (or created), waiting to be written again.
#[derive(Default)]
struct Retry {
    /// The lines, each ending with `\n`, and how many.
    lines: Vec<u8>,
    rows: u64,
    /// The lowest `first_sent` among them: `delivered` stays below it.
    floor: Option<u64>,
    /// When to try next, and why the last try failed.
    at: Option<Instant>,
    error: String,
}

impl Retry {
    /// Counts `rows` more lines (appended to `lines` by the caller), the first of them the
    /// `floor`-th handed over.
    fn add(&mut self, rows: u64, floor: u64) {
        self.rows += rows;
        self.floor = Some(self.floor.map_or(floor, |f| f.min(floor)));
    }

    /// A try failed: the next one after [`RETRY_AFTER`].
    fn failed(&mut self, error: String) {
        self.error = error;
        self.at = Some(Instant::now() + RETRY_AFTER);
    }

    fn due(&self) -> bool {
        !self.lines.is_empty() && self.at.is_none_or(|t| Instant::now() >= t)
    }
}

/// The most bytes of lines the sink keeps to write again after a failure (the file being
/// written and those waiting); beyond, a file that cannot be written loses its rows (counted).
const RETAIN_BYTES: usize = 64 << 20;

/// How long a file that could not be written waits before its rows are written again.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// A file whose data is complete (footer written and synced) and that waits for its sidecar
/// index and rename.
struct Unpublished {
    cur: Current,
    closed_secs: i64,
    /// [`ParquetSink::sent`] once its last row was taken: `delivered` once it is published.
    sent_after: u64,
}

fn parquet_err(what: &str, path: &Path, e: ParquetError) -> io::Error {
    match e {
        ParquetError::External(inner) => io::Error::other(format!("{what} {}: {inner}", path.display())),
        e => io::Error::other(format!("{what} {}: {e}", path.display())),
    }
}

impl ParquetSink {
    /// The directory the files go to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory as the engine reaches it now (after a chroot, under the new root).
    fn here(&self) -> std::borrow::Cow<'_, Path> {
        crate::privilege::host_path(&self.dir)
    }

    /// Opens a sink writing into `dir` (created if needed); files are
    /// `<dir>/<prefix>-<UTC yyyymmddThhmmssZ>-<seq>.parquet`.
    pub fn open(dir: PathBuf, prefix: String, opts: ParquetOptions) -> io::Result<ParquetSink> {
        if prefix.is_empty() || prefix.starts_with('.') || prefix.contains(['/', '\\']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("parquet prefix {prefix:?} must be a plain, non-hidden file name part"),
            ));
        }
        let here = crate::privilege::host_path(&dir).into_owned();
        create_dirs_for_user(&here)?;
        // An index an earlier run as root made: the user of `--user` appends to it after the
        // drop (its lines were lost: "Permission denied").
        if let Ok(f) = File::open(here.join(format!("{prefix}.index.jsonl"))) {
            crate::privilege::give_to_target(&f);
        }
        let (stale, max_seq) = scan_dir(&here, &prefix)?;
        let schema = parse_message_type(&schema_text()).expect("the built-in schema parses");
        Ok(ParquetSink {
            dir,
            prefix,
            opts,
            schema: Arc::new(schema),
            props: Arc::new(writer_properties()),
            cur: None,
            rows: Rows::default(),
            next_seq: max_seq + 1,
            stale,
            row_group_rows: ROW_GROUP_ROWS,
            scratch: Vec::with_capacity(4096),
            buffers: simd_json::Buffers::new(4096),
            tape: Some(Tape(Vec::with_capacity(512))),
            generation: 0,
            enc: EncoderThread::spawn()?,
            lost: 0,
            lost_reported: 0,
            last_loss: String::new(),
            unpublished: Default::default(),
            publish_error: None,
            index_failures: 0,
            retained: Vec::new(),
            retained_ok: true,
            retry: Retry::default(),
            published_max: 0,
            sent: 0,
            delivered: 0,
        })
    }

    /// Unfinished files of this prefix: those a crash left before [`open`](Self::open), and
    /// those abandoned since after a write error. They are never deleted by the sink.
    #[cfg(test)]
    pub fn stale_files(&self) -> Vec<PathBuf> {
        self.stale.clone()
    }

    /// A sentence for the log about [`stale_files`](Self::stale_files), `None` when there are
    /// none.
    pub fn stale_report(&self) -> Option<String> {
        if self.stale.is_empty() {
            return None;
        }
        let list: Vec<String> = self.stale.iter().map(|p| p.display().to_string()).collect();
        Some(format!(
            "{} unfinished parquet file(s) of prefix {:?} in {} were left in place (not readable \
             as Parquet; move or delete them): {}",
            self.stale.len(),
            self.prefix,
            self.dir.display(),
            list.join(", ")
        ))
    }

    /// Adds one event: the JSON text of one EVE event, with or without its final `\n`.
    pub fn write(&mut self, line: &[u8]) -> io::Result<()> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.cur.is_none()
            && let Err(e) = self.start_file()
        {
            // Kept to write again (a full disk), while it fits.
            if !self.fits(line.len()) {
                return Err(e);
            }
            self.retry.lines.extend_from_slice(line);
            self.retry.lines.push(b'\n');
            self.retry.add(1, self.sent);
            self.retry.failed(e.to_string());
            self.sent += 1;
            self.update_delivered();
            return Ok(());
        }
        self.push_row(line);
        self.retain(line);
        self.sent += 1;
        let cur = self.cur.as_ref().expect("a file was started above");
        if cur.stats.rows >= self.opts.max_rows as u64 || cur.stats.input_bytes >= self.opts.max_bytes {
            return self.close();
        }
        if self.rows.len >= self.row_group_rows || self.rows.text.len() >= ROW_GROUP_BYTES {
            self.write_row_group()?;
        }
        Ok(())
    }

    /// Closes the current file when it has reached `max_age`. Called by the writer at least
    /// every 100 ms; costs a clock read when nothing is due.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.unpublished.is_empty() {
            self.publish();
        }
        if self.retry.due() {
            self.write_again()?;
        }
        match &self.cur {
            Some(cur) if cur.started.elapsed() >= self.opts.max_age => self.close(),
            _ => Ok(()),
        }
    }

    /// Finishes the current file: last row group, footer, sync, then its publication (sidecar
    /// index, rename, index line; retried at later flushes when it fails). Does nothing when
    /// no file is open; the next [`write`](Self::write) starts a new one.
    pub fn close(&mut self) -> io::Result<()> {
        if self.cur.is_none() {
            return Ok(());
        }
        self.write_row_group()?;
        let Some(cur) = self.cur.take() else {
            return Ok(());
        };
        let tmp = cur.tmp.clone();
        let generation = self.generation;
        let written = self.enc.send(Job::Finish(generation)).and_then(|()| {
            self.wait_finished(generation)
                .map_err(|e| parquet_err("finishing", &tmp, e))
        });
        if let Err(e) = written {
            self.abandon(cur, e);
            return Ok(());
        }
        // On disk, complete: nothing to write again.
        self.retained.clear();
        self.retained_ok = true;
        self.unpublished.push_back(Unpublished {
            cur,
            closed_secs: now_secs(),
            sent_after: self.sent,
        });
        self.publish();
        Ok(())
    }

    /// At exit: [`close`](Self::close), then gives up the files that still cannot be
    /// published: their rows count as lost (reported by [`new_failures`](Self::new_failures))
    /// and each stays complete as `.<name>.inprogress`.
    pub fn finish(&mut self) -> io::Result<()> {
        let mut closed = self.close();
        if !self.retry.lines.is_empty() {
            closed = closed.and(self.write_again());
        }
        if !self.retry.lines.is_empty() {
            let r = std::mem::take(&mut self.retry);
            self.lost += r.rows;
            self.last_loss = format!(
                "{}; files could not be written until the exit: {} row(s) are lost",
                r.error, r.rows
            );
        }
        if !self.unpublished.is_empty() {
            // Once more, a moment later: a chroot (`-c`) under way when the paths were made
            // is over then.
            std::thread::sleep(std::time::Duration::from_millis(50));
            self.publish();
        }
        while let Some(p) = self.unpublished.pop_front() {
            let rows = p.cur.stats.rows;
            self.lost += rows;
            self.last_loss = format!(
                "{}; {} is complete but could not be published before the exit: its {rows} row(s) \
                 are not readable and count as lost (renaming it to {} makes it readable)",
                self.publish_error.as_deref().unwrap_or("not published"),
                p.cur.tmp.display(),
                self.dir.join(&p.cur.name).display()
            );
            self.stale.push(p.cur.tmp);
        }
        self.publish_error = None;
        closed
    }

    /// Why rows wait: files that could not be written, or complete files that cannot be
    /// published (`None`: none waits).
    pub fn waiting(&self) -> Option<String> {
        if !self.retry.lines.is_empty() {
            return Some(format!(
                "{} row(s) of files that could not be written are kept and written again every {} s: {}",
                self.retry.rows,
                RETRY_AFTER.as_secs(),
                self.retry.error
            ));
        }
        let first = self.unpublished.front()?;
        Some(format!(
            "{} complete file(s) ({} rows) cannot be published yet, retried every flush; the first: {}: {}",
            self.unpublished.len(),
            self.unpublished.iter().map(|p| p.cur.stats.rows).sum::<u64>(),
            first.cur.tmp.display(),
            self.publish_error.as_deref().unwrap_or("not tried yet")
        ))
    }

    /// Publishes the completed files in order, up to the first that fails; `delivered` follows
    /// each one published.
    fn publish(&mut self) {
        while let Some(p) = self.unpublished.front() {
            if let Err(e) = publish_file(&self.here(), p) {
                self.publish_error = Some(e.to_string());
                return;
            }
            let p = self.unpublished.pop_front().expect("looked at above");
            self.publish_error = None;
            self.published_max = self.published_max.max(p.sent_after);
            self.update_delivered();
            if let Err(e) = self.append_index(&p) {
                // Readable and found through its sidecar: reported, nothing lost.
                self.last_loss = format!(
                    "{} is complete and indexed by its sidecar, but its index line could not be written: {e}",
                    self.dir.join(&p.cur.name).display()
                );
                self.index_failures += 1;
            }
        }
    }

    /// Appends a published file's line to `<prefix>.index.jsonl` and makes the renames durable.
    fn append_index(&self, p: &Unpublished) -> io::Result<()> {
        let mut line = index_entry(&p.cur.name, &p.cur.stats, p.cur.created_secs, p.closed_secs);
        line.push('\n');
        let jsonl = self.here().join(format!("{}.index.jsonl", self.prefix));
        let mut idx = OpenOptions::new().create(true).append(true).open(&jsonl)?;
        crate::privilege::give_to_target(&idx);
        idx.write_all(line.as_bytes())?;
        idx.sync_data()?;
        File::open(self.here())?.sync_all()
    }

    fn start_file(&mut self) -> io::Result<()> {
        let now = now_secs();
        let stamp = crate::primitives::clock::format_utc(now, "", "", "T", "Z");
        loop {
            let name = format!("{}-{stamp}-{:06}.parquet", self.prefix, self.next_seq);
            self.next_seq += 1;
            let path = self.here().join(&name);
            let tmp = self.here().join(format!(".{name}.inprogress"));
            if path.exists() {
                continue;
            }
            let file = match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("creating {}: {e}", tmp.display()))),
            };
            // Made before a privilege drop (a run that ends within milliseconds): the user
            // of `--user` owns it, as the files made after.
            crate::privilege::give_to_target(&file);
            let writer = SerializedFileWriter::new(file, self.schema.clone(), self.props.clone())
                .map_err(|e| parquet_err("starting", &tmp, e))?;
            self.generation += 1;
            self.enc.send(Job::Open(self.generation, Box::new(writer)))?;
            self.cur = Some(Current {
                name,
                tmp,
                started: Instant::now(),
                created_secs: now,
                stats: FileStats::default(),
                first_sent: self.sent,
            });
            self.retained.clear();
            self.retained_ok = true;
            return Ok(());
        }
    }

    /// Parses `line` and appends it to the row buffer and the file's index stats. Lines are
    /// JSON the engine wrote, so the fields are first read with the structural scanner (no
    /// parse tree); a line it cannot take whole (an escape in a wanted key or string, invalid
    /// UTF-8, not an object) goes through simd-json.
    fn push_row(&mut self, line: &[u8]) {
        if let Some(f) = extract_fast(line) {
            add_row(&mut self.rows, &mut self.cur, line, f, true);
            return;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(line);
        let mut tape: Tape<'_> = self.tape.take().unwrap_or(Tape(Vec::new())).reset();
        let mut f = Fields::default();
        let valid =
            simd_json::fill_tape(&mut self.scratch, &mut self.buffers, &mut tape).is_ok() && extract(&tape.0, &mut f);
        add_row(&mut self.rows, &mut self.cur, line, f, valid);
        self.tape = Some(tape.reset());
    }

    /// Hands the buffered rows to the encoding thread as one row group of the current file
    /// (after abandoning the file if an earlier group of it failed).
    fn write_row_group(&mut self) -> io::Result<()> {
        if self.rows.len == 0 {
            return Ok(());
        }
        self.check_failed();
        if self.cur.is_none() {
            self.rows.clear();
            return Ok(());
        }
        let next = self.enc.spare.try_recv().map_or_else(|_| Rows::default(), |b| *b);
        let rows = std::mem::replace(&mut self.rows, next);
        self.enc.send(Job::Group(self.generation, Box::new(rows)))
    }

    /// Abandons the current file after a failure of one of its row groups (reported by the
    /// encoding thread): its rows are lost, counted by [`new_failures`](Self::new_failures).
    fn check_failed(&mut self) {
        while let Ok(d) = self.enc.done.try_recv() {
            if let Done::Failed(g, e) = d
                && g == self.generation
                && let Some(cur) = self.cur.take()
            {
                self.rows.clear();
                let err = parquet_err("writing", &cur.tmp, e);
                self.abandon(cur, err);
            }
        }
    }

    /// `delivered`: what published files hold, below the rows waiting to be written again.
    fn update_delivered(&mut self) {
        self.delivered = match self.retry.floor {
            Some(f) => self.published_max.min(f),
            None => self.published_max,
        };
    }

    /// Whether `n` more bytes of lines fit in what the sink keeps to write again.
    fn fits(&self, n: usize) -> bool {
        self.retained.len() + self.retry.lines.len() + n < RETAIN_BYTES
    }

    /// Keeps `line` of the file being written, while it fits.
    fn retain(&mut self, line: &[u8]) {
        if !self.retained_ok {
            return;
        }
        if !self.fits(line.len()) {
            self.retained_ok = false;
            self.retained = Vec::new();
            return;
        }
        self.retained.extend_from_slice(line);
        self.retained.push(b'\n');
    }

    /// Writes the rows of files that could not be written into a file of their own (after
    /// the file being written is closed); what fails again waits for the next try.
    fn write_again(&mut self) -> io::Result<()> {
        self.close()?;
        let mut taken = std::mem::take(&mut self.retry);
        if let Err(e) = self.start_file() {
            taken.failed(e.to_string());
            self.retry = taken;
            self.update_delivered();
            return Ok(());
        }
        let floor = taken.floor.unwrap_or(self.sent);
        if let Some(cur) = self.cur.as_mut() {
            cur.first_sent = floor;
        }
        let mut pos = 0;
        for line in taken.lines.split_inclusive(|&b| b == b'\n') {
            if self.cur.is_none() {
                // The file failed: what it held went back to `retry`; the rest follows.
                let rest = &taken.lines[pos..];
                self.retry.lines.extend_from_slice(rest);
                self.retry
                    .add(rest.iter().filter(|&&b| b == b'\n').count() as u64, floor);
                break;
            }
            pos += line.len();
            let text = line.strip_suffix(b"\n").unwrap_or(line);
            self.push_row(text);
            self.retain(text);
            if self.rows.len >= self.row_group_rows || self.rows.text.len() >= ROW_GROUP_BYTES {
                self.write_row_group()?;
            }
        }
        if self.cur.is_some() {
            self.close()?;
        }
        self.update_delivered();
        Ok(())
    }

    /// Leaves `cur` unfinished (listed in the stale files); its rows are written again later
    /// when they were kept, else counted as lost.
    fn abandon(&mut self, cur: Current, err: io::Error) {
        let rows = cur.stats.rows;
        let kept = self.retained_ok && rows > 0;
        if kept {
            self.retry.lines.extend_from_slice(&self.retained);
            self.retry.add(rows, cur.first_sent);
            self.retry.failed(format!("{err} (the file is left unfinished)"));
        } else {
            self.lost += rows;
            self.last_loss = format!("{err}; the file is left unfinished and its {rows} row(s) are lost");
        }
        self.retained.clear();
        self.retained_ok = true;
        if kept {
            // Its rows are kept and written again into a file of their own: the unfinished
            // file holds nothing more (a disk full for an hour would otherwise leave a file
            // per retry behind).
            if std::fs::remove_file(&cur.tmp).is_err() {
                self.stale.push(cur.tmp);
            }
            self.update_delivered();
        } else {
            self.stale.push(cur.tmp);
        }
    }

    /// Rows lost in abandoned files since the last call, with the last failure; `Some((0, _))`
    /// for a failure that lost nothing (an index line not written).
    pub fn new_failures(&mut self) -> Option<(u64, String)> {
        if self.lost == self.lost_reported && self.index_failures == 0 {
            return None;
        }
        let n = self.lost - self.lost_reported;
        self.lost_reported = self.lost;
        self.index_failures = 0;
        Some((n, self.last_loss.clone()))
    }

    /// Waits for the encoding thread to finish file `generation`.
    fn wait_finished(&mut self, generation: u64) -> Result<(), ParquetError> {
        loop {
            match self.enc.done.recv() {
                Ok(Done::Finished(g, r)) if g == generation => return r,
                Ok(_) => continue,
                Err(_) => return Err(ParquetError::General("the parquet encoding thread has stopped".into())),
            }
        }
    }
}

impl Drop for ParquetSink {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Makes a completed file readable: its sidecar index (atomically), then the rename.
fn publish_file(dir: &Path, p: &Unpublished) -> io::Result<()> {
    let name = &p.cur.name;
    let line = index_entry(name, &p.cur.stats, p.cur.created_secs, p.closed_secs);
    let sidecar = dir.join(format!("{name}.index.json"));
    let sidecar_tmp = dir.join(format!(".{name}.index.json.inprogress"));
    write_atomic(&sidecar, &sidecar_tmp, line.as_bytes())
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", sidecar.display())))?;
    // The unfinished file's path from `dir` as it is now, not as it was when the file was
    // made: a privilege drop with `-c` may have chrooted since (a run that ended within
    // milliseconds of its start could not publish its file: "No such file or directory").
    let tmp = dir.join(format!(".{name}.inprogress"));
    fs::rename(&tmp, dir.join(name)).map_err(|e| io::Error::new(e.kind(), format!("renaming {}: {e}", tmp.display())))
}

/// Appends one row (the fields of `line`) and counts it in the current file's index stats.
/// `valid`: the line is known to be UTF-8.
fn add_row(rows: &mut Rows, cur: &mut Option<Current>, line: &[u8], f: Fields<'_>, valid: bool) {
    rows.len += 1;
    rows.ts.push(f.ts);
    rows.ports[0].push(f.ports[0]);
    rows.ports[1].push(f.ports[1]);
    rows.flow_id.push(f.flow_id);
    for (col, v) in rows.strs.iter_mut().zip(f.strs) {
        col.push(&mut rows.text, v.map(str::as_bytes));
    }
    if valid || std::str::from_utf8(line).is_ok() {
        rows.events.push(&mut rows.text, Some(line));
    } else {
        let lossy = String::from_utf8_lossy(line);
        rows.events.push(&mut rows.text, Some(lossy.as_bytes()));
    }

    if let Some(cur) = cur {
        let st = &mut cur.stats;
        st.rows += 1;
        st.input_bytes += line.len() as u64;
        match f.ts {
            Some(t) => widen(&mut st.span, t),
            None => st.rows_without_timestamp += 1,
        }
        match f.strs[STR_EVENT_TYPE] {
            Some(ty) => {
                if !st.types.contains_key(ty) {
                    st.types.insert(ty.to_owned(), TypeStats::default());
                }
                let ts = st.types.get_mut(ty).expect("inserted above");
                ts.rows += 1;
                if let Some(t) = f.ts {
                    widen(&mut ts.span, t);
                }
            }
            None => st.rows_without_event_type += 1,
        }
    }
}

fn write_atomic(path: &Path, tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::create(tmp)?;
    crate::privilege::give_to_target(&f);
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(tmp, path)
}

/// Creates `dir` and its missing parents; with a privilege drop ahead (`--user`, as root),
/// the directories made are given to that user, who writes the files into them later.
fn create_dirs_for_user(dir: &Path) -> io::Result<()> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .map(Path::to_path_buf)
        .collect();
    fs::create_dir_all(dir)?;
    if let Some(u) = crate::privilege::helper_user() {
        for d in missing {
            std::os::unix::fs::chown(&d, Some(u.uid), Some(u.gid))?;
        }
    }
    Ok(())
}

/// Lists the `.inprogress` files of `prefix` in `dir`, and the highest sequence number of any
/// file of `prefix` there (0 when none).
fn scan_dir(dir: &Path, prefix: &str) -> io::Result<(Vec<PathBuf>, u64)> {
    let mut stale = Vec::new();
    let mut max_seq = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let hidden = name.strip_prefix('.').and_then(|n| n.strip_suffix(".inprogress"));
        let base = hidden.unwrap_or(name);
        let base = base.strip_suffix(".index.json").unwrap_or(base);
        if let Some(seq) = file_seq(prefix, base) {
            max_seq = max_seq.max(seq);
            if hidden.is_some() {
                stale.push(entry.path());
            }
        }
    }
    stale.sort();
    Ok((stale, max_seq))
}

/// The sequence number of a data file name of `prefix`
/// (`<prefix>-<yyyymmddThhmmssZ>-<seq>.parquet`), `None` for any other name.
fn file_seq(prefix: &str, name: &str) -> Option<u64> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?.strip_suffix(".parquet")?;
    let (stamp, seq) = rest.split_once('-')?;
    let s = stamp.as_bytes();
    let stamp_ok = s.len() == 16
        && s[..8].iter().all(u8::is_ascii_digit)
        && s[8] == b'T'
        && s[9..15].iter().all(u8::is_ascii_digit)
        && s[15] == b'Z';
    if !stamp_ok || seq.is_empty() || !seq.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    seq.parse().ok()
}
