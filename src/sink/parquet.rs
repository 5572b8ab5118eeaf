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
//! starts a new file. Pages are Snappy-compressed; `event`, `timestamp` and `flow_id` have no
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
//! [`ParquetSink::stale_files`]; nothing is deleted. When writing a row group or closing a
//! file fails, that file is abandoned where it is (added to `stale_files`), the rows buffered
//! for it are lost, the error is returned, and the next row starts a new file. When a file
//! cannot even be created, `write` returns the error without keeping the event. A failure
//! after the rename (sidecar already written, `.jsonl` append failed) leaves a complete,
//! indexed file and is only reported.

pub use crate::config::types::ParquetOptions;
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

/// EVE fields that only this sink reads, spelled as in Suricata's schema.
const TIMESTAMP: &str = "timestamp";
const APP_PROTO: &str = "app_proto";
const IN_IFACE: &str = "in_iface";
const COMMUNITY_ID: &str = "community_id";
const HOST: &str = "host";
/// The column with the whole event.
const EVENT: &str = "event";

/// Rows buffered before they are written as one row group.
pub const ROW_GROUP_ROWS: usize = 16_384;
/// String data (`event` and the string columns) buffered before a row group is written,
/// whatever its row count.
pub const ROW_GROUP_BYTES: usize = 16 << 20;

/// Where a column's values come from in the row buffer.
#[derive(Clone, Copy)]
enum Slot {
    Timestamp,
    /// 0: `src_port`, 1: `dest_port`.
    Port(usize),
    FlowId,
    /// Index into [`Rows::strs`].
    Str(usize),
    Event,
}

const STR_EVENT_TYPE: usize = 0;
const STR_COLUMNS: usize = 8;

/// The schema, in column order; [`schema_text`] and [`write_group`] both follow it.
const COLUMNS: [(&str, Slot); 13] = [
    (TIMESTAMP, Slot::Timestamp),
    (fields::EVENT_TYPE, Slot::Str(STR_EVENT_TYPE)),
    (fields::SRC_IP, Slot::Str(1)),
    (fields::SRC_PORT, Slot::Port(0)),
    (fields::DEST_IP, Slot::Str(2)),
    (fields::DEST_PORT, Slot::Port(1)),
    (fields::PROTO, Slot::Str(3)),
    (fields::FLOW_ID, Slot::FlowId),
    (APP_PROTO, Slot::Str(4)),
    (IN_IFACE, Slot::Str(5)),
    (COMMUNITY_ID, Slot::Str(6)),
    (HOST, Slot::Str(7)),
    (EVENT, Slot::Event),
];

fn schema_text() -> String {
    let mut s = String::from("message eve {\n");
    for (name, slot) in COLUMNS {
        let ty = match slot {
            Slot::Timestamp => "optional int64 {} (TIMESTAMP(MICROS,true));",
            Slot::Port(_) => "optional int32 {};",
            Slot::FlowId => "optional int64 {};",
            Slot::Str(_) => "optional binary {} (STRING);",
            Slot::Event => "required binary {} (STRING);",
        };
        s.push_str(&ty.replace("{}", name));
        s.push('\n');
    }
    s.push('}');
    s
}

fn writer_properties() -> WriterProperties {
    let mut b = WriterProperties::builder().set_compression(Compression::SNAPPY);
    for name in [EVENT, TIMESTAMP, fields::FLOW_ID] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(name), false);
    }
    b.set_column_statistics_enabled(ColumnPath::from(EVENT), EnabledStatistics::None)
        .build()
}

/// One nullable column of integers: values of the non-null rows, a definition level per row.
struct Ints<T> {
    values: Vec<T>,
    def: Vec<i16>,
}

impl<T> Default for Ints<T> {
    fn default() -> Self {
        Ints {
            values: Vec::new(),
            def: Vec::new(),
        }
    }
}

impl<T> Ints<T> {
    fn push(&mut self, v: Option<T>) {
        match v {
            Some(v) => {
                self.values.push(v);
                self.def.push(1);
            }
            None => self.def.push(0),
        }
    }

    fn clear(&mut self) {
        self.values.clear();
        self.def.clear();
    }
}

/// One string column: byte ranges into [`Rows::text`] of the non-null rows, a definition level
/// per row (unused for the required `event` column).
#[derive(Default)]
struct Strs {
    spans: Vec<(usize, usize)>,
    def: Vec<i16>,
}

impl Strs {
    fn push(&mut self, text: &mut Vec<u8>, v: Option<&[u8]>) {
        match v {
            Some(v) => {
                let start = text.len();
                text.extend_from_slice(v);
                self.spans.push((start, text.len()));
                self.def.push(1);
            }
            None => self.def.push(0),
        }
    }

    fn clear(&mut self) {
        self.spans.clear();
        self.def.clear();
    }
}

/// The rows of the row group being built. Every buffer keeps its capacity between groups.
#[derive(Default)]
struct Rows {
    len: usize,
    /// The text of every string value of these rows, `event` included.
    text: Vec<u8>,
    ts: Ints<i64>,
    ports: [Ints<i32>; 2],
    flow_id: Ints<i64>,
    strs: [Strs; STR_COLUMNS],
    events: Strs,
}

impl Rows {
    fn clear(&mut self) {
        self.len = 0;
        self.text.clear();
        self.ts.clear();
        self.ports.iter_mut().for_each(Ints::clear);
        self.flow_id.clear();
        self.strs.iter_mut().for_each(Strs::clear);
        self.events.clear();
    }
}

/// The typed fields of one event, borrowed from the parsed line.
#[derive(Default)]
struct Fields<'a> {
    ts: Option<i64>,
    ports: [Option<i32>; 2],
    flow_id: Option<i64>,
    strs: [Option<&'a str>; STR_COLUMNS],
}

/// A closed interval of timestamps, in microseconds.
type Span = Option<(i64, i64)>;

fn widen(span: &mut Span, t: i64) {
    *span = Some(match *span {
        Some((lo, hi)) => (lo.min(t), hi.max(t)),
        None => (t, t),
    });
}

#[derive(Default)]
struct TypeStats {
    rows: u64,
    span: Span,
}

/// What the index says about one file.
#[derive(Default)]
struct FileStats {
    rows: u64,
    input_bytes: u64,
    span: Span,
    rows_without_timestamp: u64,
    rows_without_event_type: u64,
    types: FxHashMap<String, TypeStats>,
}

/// The file being written (its Parquet writer lives on the encoding thread).
struct Current {
    name: String,
    tmp: PathBuf,
    started: Instant,
    created_secs: i64,
    stats: FileStats,
}

/// Work for the encoding thread, tagged with the generation of the file it belongs to.
enum Job {
    /// The writer of a newly started file.
    Open(u64, Box<SerializedFileWriter<File>>),
    /// One row group to encode, compress and append.
    Group(u64, Box<Rows>),
    /// Write the footer and sync; answered with [`Done::Finished`].
    Finish(u64),
}

/// What the encoding thread reports.
enum Done {
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
struct EncoderThread {
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    done: std::sync::mpsc::Receiver<Done>,
    /// Emptied row buffers coming back, for reuse.
    spare: std::sync::mpsc::Receiver<Box<Rows>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl EncoderThread {
    fn spawn() -> io::Result<EncoderThread> {
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

    fn send(&self, job: Job) -> io::Result<()> {
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

fn encode_loop(
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

    /// Opens a sink writing into `dir` (created if needed); files are
    /// `<dir>/<prefix>-<UTC yyyymmddThhmmssZ>-<seq>.parquet`.
    pub fn open(dir: PathBuf, prefix: String, opts: ParquetOptions) -> io::Result<ParquetSink> {
        if prefix.is_empty() || prefix.starts_with('.') || prefix.contains(['/', '\\']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("parquet prefix {prefix:?} must be a plain, non-hidden file name part"),
            ));
        }
        fs::create_dir_all(&dir)?;
        let (stale, max_seq) = scan_dir(&dir, &prefix)?;
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
            sent: 0,
            delivered: 0,
        })
    }

    /// Unfinished files of this prefix: those a crash left before [`open`](Self::open), and
    /// those abandoned since after a write error. They are never deleted by the sink.
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
        if self.cur.is_none() {
            self.start_file()?;
        }
        self.push_row(line);
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
        match &self.cur {
            Some(cur) if cur.started.elapsed() >= self.opts.max_age => self.close(),
            _ => Ok(()),
        }
    }

    /// Finishes the current file: last row group, footer, sync, sidecar index, rename, index
    /// line. Does nothing when no file is open; the next [`write`](Self::write) starts a new
    /// one.
    pub fn close(&mut self) -> io::Result<()> {
        if self.cur.is_none() {
            return Ok(());
        }
        self.write_row_group()?;
        let Some(cur) = self.cur.take() else {
            return Ok(());
        };
        let tmp = cur.tmp.clone();
        let sent = self.sent;
        let generation = self.generation;
        let written = self.enc.send(Job::Finish(generation)).and_then(|()| {
            self.wait_finished(generation)
                .map_err(|e| parquet_err("finishing", &tmp, e))
        });
        if let Err(e) = written {
            self.abandon(cur, e);
            return Ok(());
        }
        self.finish(cur).inspect(|()| self.delivered = sent).inspect_err(|_| {
            // After the rename the data file is complete; only an index write failed.
            if tmp.exists() {
                self.stale.push(tmp);
            }
        })
    }

    fn start_file(&mut self) -> io::Result<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let stamp = crate::primitives::clock::format_utc(now, "", "", "T", "Z");
        loop {
            let name = format!("{}-{stamp}-{:06}.parquet", self.prefix, self.next_seq);
            self.next_seq += 1;
            let path = self.dir.join(&name);
            let tmp = self.dir.join(format!(".{name}.inprogress"));
            if path.exists() {
                continue;
            }
            let file = match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("creating {}: {e}", tmp.display()))),
            };
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
            });
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

    /// Leaves `cur` unfinished (listed in the stale files) and counts its rows as lost.
    fn abandon(&mut self, cur: Current, err: io::Error) {
        self.lost += cur.stats.rows;
        self.last_loss = format!(
            "{err}; the file is left unfinished and its {} row(s) are lost",
            cur.stats.rows
        );
        self.stale.push(cur.tmp);
    }

    /// Rows lost in abandoned files since the last call, with the last failure.
    pub fn new_failures(&mut self) -> Option<(u64, String)> {
        if self.lost == self.lost_reported {
            return None;
        }
        let n = self.lost - self.lost_reported;
        self.lost_reported = self.lost;
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

    /// Publishes a file the encoding thread has completed: sidecar index, rename, index line.
    fn finish(&mut self, cur: Current) -> io::Result<()> {
        let Current {
            name,
            tmp,
            created_secs,
            stats,
            ..
        } = cur;
        let closed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut line = index_entry(&name, &stats, created_secs, closed);
        let sidecar = self.dir.join(format!("{name}.index.json"));
        let sidecar_tmp = self.dir.join(format!(".{name}.index.json.inprogress"));
        write_atomic(&sidecar, &sidecar_tmp, line.as_bytes())?;
        fs::rename(&tmp, self.dir.join(&name))
            .map_err(|e| io::Error::new(e.kind(), format!("renaming {}: {e}", tmp.display())))?;
        line.push('\n');
        let jsonl = self.dir.join(format!("{}.index.jsonl", self.prefix));
        let mut idx = OpenOptions::new().create(true).append(true).open(&jsonl)?;
        idx.write_all(line.as_bytes())?;
        idx.sync_data()?;
        // Make the renames durable too.
        File::open(&self.dir)?.sync_all()
    }
}

impl Drop for ParquetSink {
    fn drop(&mut self) {
        let _ = self.close();
    }
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

/// The fields of a JSON object line read with the structural scanner, or `None` when the
/// line needs the full parser: not UTF-8, not one object, or an escape in a key or in a
/// string value that is kept. Same results as [`extract`] otherwise (last duplicate wins,
/// integers only as `I64`/`U64` would be).
fn extract_fast(line: &[u8]) -> Option<Fields<'_>> {
    use crate::event::scan;
    let text = simdutf8::basic::from_utf8(line).ok()?;
    let root = scan::skip_ws(line, 0);
    let first = scan::first_member(line, root)?;
    let mut at = Some(first);
    // Where the closing brace must be: after the last value (or at once, for `{}`).
    let mut close = first;
    if line.get(first) == Some(&b'}') {
        at = None;
    }
    let mut f = Fields::default();
    while let Some(i) = at {
        let (m, next) = scan::next_member(line, i)?;
        if m.key_escaped {
            return None;
        }
        let key = &text[m.key_start as usize..m.key_end as usize];
        let (vs, ve) = (m.val_start as usize, m.val_end as usize);
        let s = || -> Option<Option<&str>> {
            if line[vs] != b'"' {
                return Some(None);
            }
            let inner = &text[vs + 1..ve - 1];
            if inner.contains('\\') { None } else { Some(Some(inner)) }
        };
        let int = || -> Option<i64> {
            let raw = &text[vs..ve];
            let digits = raw.strip_prefix('-').unwrap_or(raw);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            raw.parse::<i64>().ok()
        };
        match key {
            TIMESTAMP => f.ts = s()?.and_then(|s| parse_timestamp_micros(s.as_bytes())),
            fields::EVENT_TYPE => f.strs[STR_EVENT_TYPE] = s()?,
            fields::SRC_IP => f.strs[1] = s()?,
            fields::DEST_IP => f.strs[2] = s()?,
            fields::PROTO => f.strs[3] = s()?,
            APP_PROTO => f.strs[4] = s()?,
            IN_IFACE => f.strs[5] = s()?,
            COMMUNITY_ID => f.strs[6] = s()?,
            HOST => f.strs[7] = s()?,
            fields::SRC_PORT => f.ports[0] = int().and_then(|v| i32::try_from(v).ok()),
            fields::DEST_PORT => f.ports[1] = int().and_then(|v| i32::try_from(v).ok()),
            fields::FLOW_ID => f.flow_id = int(),
            _ => {}
        }
        close = scan::skip_ws(line, ve);
        at = next;
    }
    // One object and nothing after it.
    if line.get(close) != Some(&b'}') || scan::skip_ws(line, close + 1) != line.len() {
        return None;
    }
    Some(f)
}

/// Fills `f` from the top-level members of the parsed event; false when it is not an object.
/// A key seen twice takes its last value.
fn extract<'a>(tape: &[Node<'a>], f: &mut Fields<'a>) -> bool {
    let Some(Node::Object { len, .. }) = tape.first() else {
        return false;
    };
    let mut i = 1;
    for _ in 0..*len {
        let Some(Node::String(key)) = tape.get(i) else {
            break;
        };
        let val = tape.get(i + 1);
        let s = || match val {
            Some(Node::String(s)) => Some(*s),
            _ => None,
        };
        match *key {
            TIMESTAMP => f.ts = s().and_then(|s| parse_timestamp_micros(s.as_bytes())),
            fields::EVENT_TYPE => f.strs[STR_EVENT_TYPE] = s(),
            fields::SRC_IP => f.strs[1] = s(),
            fields::DEST_IP => f.strs[2] = s(),
            fields::PROTO => f.strs[3] = s(),
            APP_PROTO => f.strs[4] = s(),
            IN_IFACE => f.strs[5] = s(),
            COMMUNITY_ID => f.strs[6] = s(),
            HOST => f.strs[7] = s(),
            fields::SRC_PORT => f.ports[0] = int_of(val).and_then(|v| i32::try_from(v).ok()),
            fields::DEST_PORT => f.ports[1] = int_of(val).and_then(|v| i32::try_from(v).ok()),
            fields::FLOW_ID => f.flow_id = int_of(val),
            _ => {}
        }
        i += 1 + match val {
            Some(Node::Object { count, .. } | Node::Array { count, .. }) => count + 1,
            Some(_) => 1,
            None => 0,
        };
    }
    true
}

fn int_of(n: Option<&Node<'_>>) -> Option<i64> {
    match n {
        Some(Node::Static(StaticNode::I64(v))) => Some(*v),
        Some(Node::Static(StaticNode::U64(v))) => i64::try_from(*v).ok(),
        _ => None,
    }
}

fn write_group(
    w: &mut SerializedFileWriter<File>,
    rows: &Rows,
    text: &Bytes,
    arrays: &mut Vec<ByteArray>,
) -> Result<(), ParquetError> {
    let mut rg = w.next_row_group()?;
    for (name, slot) in COLUMNS {
        let mut col = rg
            .next_column()?
            .ok_or_else(|| ParquetError::General(format!("schema has no column {name}")))?;
        match slot {
            Slot::Timestamp => {
                col.typed::<Int64Type>()
                    .write_batch(&rows.ts.values, Some(&rows.ts.def), None)?;
            }
            Slot::Port(i) => {
                let p = &rows.ports[i];
                col.typed::<Int32Type>().write_batch(&p.values, Some(&p.def), None)?;
            }
            Slot::FlowId => {
                let f = &rows.flow_id;
                col.typed::<Int64Type>().write_batch(&f.values, Some(&f.def), None)?;
            }
            Slot::Str(i) => {
                let s = &rows.strs[i];
                arrays.extend(s.spans.iter().map(|&(a, b)| ByteArray::from(text.slice(a..b))));
                col.typed::<ByteArrayType>().write_batch(arrays, Some(&s.def), None)?;
            }
            Slot::Event => {
                let s = &rows.events;
                arrays.extend(s.spans.iter().map(|&(a, b)| ByteArray::from(text.slice(a..b))));
                col.typed::<ByteArrayType>().write_batch(arrays, None, None)?;
            }
        }
        arrays.clear();
        col.close()?;
    }
    rg.close()?;
    Ok(())
}

/// Takes back the buffer behind `text` when nothing else holds a slice of it.
fn reclaim(text: Bytes) -> Vec<u8> {
    let cap = text.len();
    match text.try_into_mut() {
        Ok(b) => {
            let mut v = Vec::from(b);
            v.clear();
            v
        }
        Err(_) => Vec::with_capacity(cap),
    }
}

fn write_atomic(path: &Path, tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::create(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(tmp, path)
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

/// Parses an ISO 8601 / RFC 3339 timestamp with a UTC offset into microseconds since the Unix
/// epoch: `2024-03-01T12:00:00.124448+0000` (Suricata), `...Z`, `...+00:00`, `...-05`; the
/// `T` may be a space, the fraction may have any number of digits (truncated to
/// microseconds) or be absent. A timestamp without an offset is rejected: its zone is unknown.
pub fn parse_timestamp_micros(s: &[u8]) -> Option<i64> {
    let t = crate::event::timestamp::parse(s)?;
    Some(t.epoch_secs(t.offset?) * 1_000_000 + i64::from(t.nanos / 1000))
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn iso_micros(t: i64) -> String {
    let secs = t.div_euclid(1_000_000);
    format!(
        "{}.{:06}Z",
        crate::primitives::clock::format_utc(secs, "-", ":", "T", ""),
        t.rem_euclid(1_000_000)
    )
}

/// `s` as a JSON string, with the one escaper every output uses.
fn push_json_str(out: &mut String, s: &str) {
    let mut b = Vec::with_capacity(s.len() + 2);
    crate::primitives::json::write_str(&mut b, s.as_bytes());
    // Escaping keeps UTF-8 text UTF-8 (every escape is ASCII).
    out.push_str(&String::from_utf8_lossy(&b));
}

/// The index object of one file, on one line (see the module docs).
fn index_entry(name: &str, st: &FileStats, created: i64, closed: i64) -> String {
    use std::fmt::Write as _;
    let mut o = String::with_capacity(512);
    o.push_str("{\"file\":");
    push_json_str(&mut o, name);
    let _ = write!(o, ",\"rows\":{},\"input_bytes\":{}", st.rows, st.input_bytes);
    let _ = write!(
        o,
        ",\"created\":\"{}\",\"closed\":\"{}\"",
        crate::primitives::clock::format_utc(created, "-", ":", "T", "Z"),
        crate::primitives::clock::format_utc(closed, "-", ":", "T", "Z")
    );
    match st.span {
        Some((lo, hi)) => {
            let _ = write!(
                o,
                ",\"min_timestamp\":\"{}\",\"max_timestamp\":\"{}\",\"min_timestamp_micros\":{lo},\
                 \"max_timestamp_micros\":{hi}",
                iso_micros(lo),
                iso_micros(hi)
            );
        }
        None => o.push_str(
            ",\"min_timestamp\":null,\"max_timestamp\":null,\"min_timestamp_micros\":null,\
             \"max_timestamp_micros\":null",
        ),
    }
    let _ = write!(
        o,
        ",\"rows_without_timestamp\":{},\"rows_without_event_type\":{}",
        st.rows_without_timestamp, st.rows_without_event_type
    );
    let types: BTreeMap<&str, &TypeStats> = st.types.iter().map(|(k, v)| (k.as_str(), v)).collect();
    o.push_str(",\"event_types\":{");
    for (i, (ty, ts)) in types.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        push_json_str(&mut o, ty);
        let _ = write!(o, ":{}", ts.rows);
    }
    o.push_str("},\"event_type_ranges\":{");
    for (i, (ty, ts)) in types.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        push_json_str(&mut o, ty);
        match ts.span {
            Some((lo, hi)) => {
                let _ = write!(o, ":[{lo},{hi}]");
            }
            None => o.push_str(":null"),
        }
    }
    o.push_str("}}");
    o
}

/// One file as [`find_files`] reads it from the index.
struct IndexEntry {
    span: Span,
    /// Per event type: row count and timestamp range.
    types: Vec<(String, u64, Span)>,
}

fn parse_entry(text: &[u8]) -> Option<(String, IndexEntry)> {
    let mut buf = text.to_vec();
    let v = simd_json::to_borrowed_value(&mut buf).ok()?;
    let file = v.get("file")?.as_str()?.to_owned();
    let span_of = |lo: Option<i64>, hi: Option<i64>| lo.zip(hi);
    let span = span_of(
        v.get("min_timestamp_micros").and_then(|x| x.as_i64()),
        v.get("max_timestamp_micros").and_then(|x| x.as_i64()),
    );
    let ranges = v.get("event_type_ranges").and_then(|x| x.as_object());
    let mut types = Vec::new();
    if let Some(counts) = v.get("event_types").and_then(|x| x.as_object()) {
        for (ty, n) in counts.iter() {
            let range = match ranges {
                Some(r) => r
                    .get(ty.as_ref())
                    .and_then(|x| x.as_array())
                    .and_then(|a| span_of(a.first().and_then(|x| x.as_i64()), a.get(1).and_then(|x| x.as_i64()))),
                // Without per-type ranges the file's range is the best bound there is.
                None => span,
            };
            types.push((ty.to_string(), n.as_u64().unwrap_or(0), range));
        }
    }
    Some((file, IndexEntry { span, types }))
}

/// The data files of `prefix` in `dir` that hold a row with `from_micros <= timestamp <
/// to_micros` (and of `event_type`, when given), in name order, answered from the index only
/// (see the module docs; the answer may include a file whose rows of that type lie only
/// around the range, never miss one). Rows without a timestamp match no range.
pub fn find_files(
    dir: &Path,
    prefix: &str,
    from_micros: i64,
    to_micros: i64,
    event_type: Option<&str>,
) -> io::Result<Vec<PathBuf>> {
    let mut entries: BTreeMap<String, IndexEntry> = BTreeMap::new();
    match fs::read(dir.join(format!("{prefix}.index.jsonl"))) {
        Ok(text) => {
            // A line torn by a crash does not parse and is skipped; its sidecar stands in.
            for line in text.split(|&c| c == b'\n') {
                if let Some((file, e)) = parse_entry(line) {
                    entries.insert(file, e);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(base) = name.to_str().and_then(|n| n.strip_suffix(".index.json")) else {
            continue;
        };
        if file_seq(prefix, base).is_none() || entries.contains_key(base) {
            continue;
        }
        if let Some((file, e)) = fs::read(entry.path()).ok().and_then(|t| parse_entry(&t)) {
            entries.insert(file, e);
        }
    }
    let meets = |span: Span| span.is_some_and(|(lo, hi)| lo < to_micros && hi >= from_micros);
    let mut out = Vec::new();
    for (file, e) in entries {
        // Only names of this prefix: an index line cannot point outside `dir`.
        if file_seq(prefix, &file).is_none() {
            continue;
        }
        let hit = match event_type {
            None => meets(e.span),
            Some(want) => e.types.iter().any(|(ty, n, span)| ty == want && *n > 0 && meets(*span)),
        };
        let path = dir.join(&file);
        if hit && path.exists() {
            out.push(path);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value, json};
    use std::process::Command;
    use std::time::Duration;

    /// 2024-03-01T12:00:00Z.
    const BASE: i64 = 1_709_294_400_000_000;
    const MS: i64 = 1000;
    const TYPES: [&str; 6] = ["dns", "flow", "alert", "http", "tls", "fileinfo"];
    /// Index of the event whose timestamp is an hour before all others.
    const LATE: usize = 300;
    const LATE_TS: i64 = BASE - 3_600_000_000;

    /// One input line (as given to `write`) and the timestamp its row must hold.
    struct Input {
        line: Vec<u8>,
        ts: Option<i64>,
    }

    fn iso_with_offset(utc: i64, style: usize) -> String {
        let (off, suffix) = match style {
            1 => (0, "Z"),
            2 => (0, "+00:00"),
            3 => (3600, "+0100"),
            4 => (-5 * 3600, "-05"),
            _ => (0, "+0000"),
        };
        let local = utc + off * 1_000_000;
        format!(
            "{}.{:06}{suffix}",
            crate::primitives::clock::format_utc(local.div_euclid(1_000_000), "-", ":", "T", ""),
            local.rem_euclid(1_000_000)
        )
    }

    /// Synthetic EVE events of about 650 bytes, several types, 1 ms apart, with the odd cases
    /// the sink must survive.
    fn events(n: usize) -> Vec<Input> {
        (0..n).map(event).collect()
    }

    fn event(i: usize) -> Input {
        let mut ts = BASE + i as i64 * MS + (i as i64 * 37) % 1000;
        if i == LATE {
            ts = LATE_TS;
        }
        let ty = if i == LATE { "alert" } else { TYPES[i % TYPES.len()] };
        let style = match i % 97 {
            1 => 1,
            2 => 2,
            3 => 3,
            4 => 4,
            _ => 0,
        };
        let stamp = iso_with_offset(ts, style);
        let line: Vec<u8> = match i {
            100 => format!(r#"{{"timestamp":"{stamp}","event_type":"dns","src_ip":"10.0.0.1""#).into_bytes(),
            101 => b"[1,2,3]".to_vec(),
            108 => {
                let mut l = format!(r#"{{"timestamp":"{stamp}","event_type":"dns","host":"bad "#).into_bytes();
                l.extend_from_slice(b"\xff\xfe\"}");
                l
            }
            _ if i % 13 == 5 => format!(
                r#"{{"timestamp":"{stamp}","event_type":"stats","stats":{{"uptime":{i},"capture":{{"kernel_packets":{},"kernel_drops":0}},"decoder":{{"pkts":{},"bytes":{}}}}}}}"#,
                i * 1000,
                i * 990,
                i * 650_000
            )
            .into_bytes(),
            _ => {
                let flow_id: u64 = match i {
                    7 => (1 << 53) - 1,
                    105 => u64::MAX,
                    _ => 1_000_000_000_000 + i as u64 * 7919,
                };
                let (src_port, dest_port) = match i {
                    102 => (r#""80""#.to_string(), "70000".to_string()),
                    _ => ((1024 + i * 7 % 60000).to_string(), [53, 80, 443][i % 3].to_string()),
                };
                let stamp = if i == 104 { "not a time".to_string() } else { stamp };
                let proto = if ty == "dns" { "UDP" } else { "TCP" };
                let mut s = format!(
                    r#"{{"timestamp":"{stamp}","flow_id":{flow_id},"in_iface":"eth{}","event_type":"{ty}","src_ip":"10.0.{}.{}","src_port":{src_port},"dest_ip":"192.168.{}.{}","dest_port":{dest_port},"proto":"{proto}","community_id":"1:{:08x}Zm9vYmFyYmF6cXV4PQ==""#,
                    i % 2,
                    i % 7,
                    i % 250,
                    i % 3,
                    i % 200,
                    i * 2_654_435_761 % 0xffff_ffff
                );
                match ty {
                    "dns" => s.push_str(&format!(
                        r#","dns":{{"type":"query","id":{},"rrname":"host{i}.example.com","rrtype":"A","tx_id":0,"opcode":0}}"#,
                        i % 65536
                    )),
                    "http" => s.push_str(&format!(
                        r#","app_proto":"http","http":{{"hostname":"www.ex\"ample.com","url":"/index.html?q={i}","http_user_agent":"Mozilla/5.0 (X11; Linux x86_64)","http_method":"GET","protocol":"HTTP/1.1","status":200,"length":{}}}"#,
                        i * 3
                    )),
                    "alert" => s.push_str(&format!(
                        r#","alert":{{"action":"allowed","gid":1,"signature_id":{},"rev":3,"signature":"ET POLICY caf\u00e9 test é","category":"Potential Corporate Privacy Violation","severity":2}}"#,
                        2_000_000 + i
                    )),
                    "tls" => s.push_str(r#","app_proto":"tls","tls":{"subject":"CN=example.org","issuerdn":"CN=R3, O=Let's Encrypt, C=US","serial":"04:AB","fingerprint":"aa:bb:cc","sni":"example.org","version":"TLS 1.3"}"#),
                    _ => {}
                }
                match i {
                    103 => s.push_str(r#","host":"sensor-\"quoted\"\\\n\u0001""#),
                    107 => s.push_str(r#","event_type":"flow""#),
                    _ if i.is_multiple_of(5) => s.push_str(r#","host":"sensor-1""#),
                    _ => {}
                }
                s.push_str(r#","payload_printable":""#);
                while s.len() < 640 {
                    s.push_str("GET / HTTP/1.1 ");
                }
                s.push_str(r#"","stream":0}"#);
                s.into_bytes()
            }
        };
        let mut line = line;
        if i == 106 || i % 50 == 9 {
            line.push(b'\n');
        }
        let ts = match i {
            100 | 101 | 104 => None,
            _ => Some(ts),
        };
        Input { line, ts }
    }

    /// The row the sink must write for `input`, worked out with serde_json.
    fn expected_row(input: &Input) -> Map<String, Value> {
        let line = input.line.strip_suffix(b"\n").unwrap_or(&input.line);
        let parsed: Option<Map<String, Value>> = serde_json::from_slice::<Value>(line)
            .ok()
            .and_then(|v| v.as_object().cloned());
        let obj = parsed.as_ref();
        let mut row = Map::new();
        let ts = if obj.is_some() { input.ts } else { None };
        row.insert("timestamp".into(), ts.map_or(Value::Null, Value::from));
        for (name, slot) in COLUMNS {
            let v = obj.and_then(|o| o.get(name));
            let val = match slot {
                Slot::Timestamp => continue,
                Slot::Str(_) => v.and_then(Value::as_str).map_or(Value::Null, Value::from),
                Slot::Port(_) => v
                    .and_then(Value::as_i64)
                    .filter(|p| i32::try_from(*p).is_ok())
                    .map_or(Value::Null, Value::from),
                Slot::FlowId => v.and_then(Value::as_i64).map_or(Value::Null, Value::from),
                Slot::Event => Value::from(String::from_utf8_lossy(line).into_owned()),
            };
            row.insert(name.into(), val);
        }
        row
    }

    fn python() -> String {
        if let Ok(p) = std::env::var("DFM_PYTHON") {
            return p;
        }
        if Path::new("/tmp/dfm-venv/bin/python").exists() {
            return "/tmp/dfm-venv/bin/python".into();
        }
        "python3".into()
    }

    /// Reads `files` with pyarrow through tests/fixtures/parquet_check.py.
    fn read_back(files: &[PathBuf]) -> Value {
        let py = python();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parquet_check.py");
        let hint = "these tests read the files back with pyarrow: pip install pyarrow \
                    (python3 -m venv /tmp/dfm-venv && /tmp/dfm-venv/bin/pip install pyarrow, \
                    or set DFM_PYTHON to a python that has it)";
        let out = Command::new(&py)
            .arg(&script)
            .args(files)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {py}: {e}; {hint}"));
        assert!(
            out.status.success(),
            "{py} {} failed ({}): {}\n{hint}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("parquet_check.py prints JSON")
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn data_files(dir: &Path) -> Vec<PathBuf> {
        names(dir)
            .into_iter()
            .filter(|n| n.ends_with(".parquet") && !n.starts_with('.'))
            .map(|n| dir.join(n))
            .collect()
    }

    fn hidden(dir: &Path) -> Vec<String> {
        names(dir).into_iter().filter(|n| n.starts_with('.')).collect()
    }

    fn opts(max_rows: usize, max_bytes: u64, max_age: Duration) -> ParquetOptions {
        ParquetOptions {
            max_rows,
            max_bytes,
            max_age,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    /// Every row of `files` (in order) against `inputs`, field by field.
    fn check_rows(files: &Value, inputs: &[Input]) {
        let rows: Vec<&Value> = files["files"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|f| f["rows"].as_array().unwrap())
            .collect();
        assert_eq!(rows.len(), inputs.len(), "row count");
        for (i, (row, input)) in rows.iter().zip(inputs).enumerate() {
            let want = expected_row(input);
            let got = row.as_object().unwrap();
            assert_eq!(got.len(), COLUMNS.len(), "row {i}: columns {:?}", got.keys());
            for (k, v) in &want {
                assert_eq!(got.get(k), Some(v), "row {i}, column {k}");
            }
        }
    }

    #[test]
    fn rolls_by_rows_and_pyarrow_reads_every_field() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let inputs = events(3500);
        let mut sink = ParquetSink::open(dir.clone(), "eve".into(), opts(1000, u64::MAX, HOUR)).unwrap();
        sink.row_group_rows = 300;
        for e in &inputs {
            sink.write(&e.line).unwrap();
        }
        // Three files are complete; the fourth is still hidden.
        assert_eq!(data_files(&dir).len(), 3);
        assert_eq!(hidden(&dir).len(), 1);
        sink.close().unwrap();
        let files = data_files(&dir);
        assert_eq!(files.len(), 4);
        for (k, f) in files.iter().enumerate() {
            let name = f.file_name().unwrap().to_str().unwrap();
            assert_eq!(file_seq("eve", name), Some(k as u64 + 1), "{name}");
        }
        assert!(hidden(&dir).is_empty(), "{:?}", hidden(&dir));

        let back = read_back(&files);
        let per_file: Vec<(u64, u64)> = back["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["num_rows"].as_u64().unwrap(), f["num_row_groups"].as_u64().unwrap()))
            .collect();
        assert_eq!(per_file, [(1000, 4), (1000, 4), (1000, 4), (500, 2)]);
        let f0 = &back["files"][0];
        assert_eq!(
            f0["schema"],
            json!({
                "timestamp": "timestamp[us, tz=UTC]", "event_type": "string", "src_ip": "string",
                "src_port": "int32", "dest_ip": "string", "dest_port": "int32", "proto": "string",
                "flow_id": "int64", "app_proto": "string", "in_iface": "string",
                "community_id": "string", "host": "string", "event": "string"
            })
        );
        assert!(
            f0["codecs"].as_array().unwrap().iter().all(|c| c == "SNAPPY"),
            "{}",
            f0["codecs"]
        );
        check_rows(&back, &inputs);
        let row7 = &back["files"][0]["rows"][7];
        assert_eq!(row7["flow_id"].as_i64(), Some((1 << 53) - 1));
        let row103 = &back["files"][0]["rows"][103];
        assert_eq!(row103["host"], "sensor-\"quoted\"\\\n\u{1}");
        assert!(back["files"][0]["rows"][100]["event_type"].is_null());
        assert!(
            back["files"][0]["rows"][108]["event"]
                .as_str()
                .unwrap()
                .contains('\u{fffd}')
        );

        // The index agrees with what pyarrow read.
        let jsonl = fs::read_to_string(dir.join("eve.index.jsonl")).unwrap();
        let lines: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 4);
        for (k, (entry, (file, f))) in lines
            .iter()
            .zip(files.iter().zip(back["files"].as_array().unwrap()))
            .enumerate()
        {
            let name = file.file_name().unwrap().to_str().unwrap();
            assert_eq!(entry["file"], name);
            let sidecar: Value =
                serde_json::from_slice(&fs::read(dir.join(format!("{name}.index.json"))).unwrap()).unwrap();
            assert_eq!(&sidecar, entry);
            let rows = f["rows"].as_array().unwrap();
            assert_eq!(entry["rows"].as_u64(), Some(rows.len() as u64));
            let ts: Vec<i64> = rows.iter().filter_map(|r| r["timestamp"].as_i64()).collect();
            assert_eq!(entry["min_timestamp_micros"].as_i64(), ts.iter().min().copied());
            assert_eq!(entry["max_timestamp_micros"].as_i64(), ts.iter().max().copied());
            assert_eq!(
                entry["min_timestamp"].as_str().unwrap(),
                iso_micros(*ts.iter().min().unwrap())
            );
            let mut counts = Map::new();
            for r in rows {
                if let Some(t) = r["event_type"].as_str() {
                    let n = counts.get(t).and_then(Value::as_u64).unwrap_or(0);
                    counts.insert(t.into(), Value::from(n + 1));
                }
            }
            assert_eq!(entry["event_types"], Value::Object(counts));
            let no_ts = rows.iter().filter(|r| r["timestamp"].is_null()).count();
            assert_eq!(entry["rows_without_timestamp"].as_u64(), Some(no_ts as u64));
            let input_bytes: usize = rows.iter().map(|r| r["event"].as_str().unwrap().len()).sum();
            // Only the non-UTF-8 line (row 108) changed length: two bytes became two U+FFFD.
            let fixup = if k == 0 { 4 } else { 0 };
            assert_eq!(entry["input_bytes"].as_u64(), Some((input_bytes - fixup) as u64));
        }
    }

    #[test]
    fn rolls_by_input_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let inputs: Vec<Input> = (200..400).map(event).collect();
        let max = 10_000u64;
        let mut sink = ParquetSink::open(dir.clone(), "b".into(), opts(usize::MAX, max, HOUR)).unwrap();
        for e in &inputs {
            sink.write(&e.line).unwrap();
        }
        sink.close().unwrap();
        let files = data_files(&dir);
        let back = read_back(&files);
        check_rows(&back, &inputs);
        let all = back["files"].as_array().unwrap();
        assert!(all.len() > 5, "{} files", all.len());
        for (k, f) in all.iter().enumerate() {
            let lens: Vec<u64> = f["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["event"].as_str().unwrap().len() as u64)
                .collect();
            let total: u64 = lens.iter().sum();
            // Each file closed on the row that reached the limit, the last one at close.
            assert!(total - lens.last().unwrap() < max, "file {k}: {total}");
            if k + 1 < all.len() {
                assert!(total >= max, "file {k}: {total}");
            }
        }
    }

    #[test]
    fn rolls_by_age_with_no_new_rows() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let inputs = events(15);
        let age = Duration::from_millis(300);
        let mut sink = ParquetSink::open(dir.clone(), "t".into(), opts(usize::MAX, u64::MAX, age)).unwrap();
        let t0 = Instant::now();
        for e in &inputs[..10] {
            sink.write(&e.line).unwrap();
        }
        sink.flush().unwrap();
        if t0.elapsed() < age {
            assert!(data_files(&dir).is_empty(), "closed before max_age");
        }
        std::thread::sleep(age + Duration::from_millis(50));
        sink.flush().unwrap();
        assert_eq!(data_files(&dir).len(), 1, "flush closes an old file without new rows");
        assert!(hidden(&dir).is_empty());
        sink.flush().unwrap();
        assert_eq!(data_files(&dir).len(), 1, "an idle sink starts no empty file");
        for e in &inputs[10..] {
            sink.write(&e.line).unwrap();
        }
        sink.close().unwrap();
        let files = data_files(&dir);
        assert_eq!(files.len(), 2);
        check_rows(&read_back(&files), &inputs);
    }

    #[test]
    fn close_is_atomic_and_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let inputs = events(50);
        let mut sink = ParquetSink::open(dir.clone(), "a".into(), ParquetOptions::default()).unwrap();
        assert!(names(&dir).is_empty(), "open creates no file");
        sink.close().unwrap();
        assert!(names(&dir).is_empty(), "closing an unused sink creates no file");
        for e in &inputs {
            sink.write(&e.line).unwrap();
        }
        assert!(
            data_files(&dir).is_empty(),
            "no .parquet before close: {:?}",
            names(&dir)
        );
        let h = hidden(&dir);
        assert_eq!(h.len(), 1);
        assert!(
            h[0].starts_with(".a-") && h[0].ends_with(".parquet.inprogress"),
            "{h:?}"
        );
        sink.close().unwrap();
        let after = names(&dir);
        sink.close().unwrap();
        drop(sink);
        assert_eq!(names(&dir), after, "a second close and drop change nothing");
        let files = data_files(&dir);
        assert_eq!(files.len(), 1);
        let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(
            after,
            [name.clone(), format!("{name}.index.json"), "a.index.jsonl".to_string()]
        );
        check_rows(&read_back(&files), &inputs);
    }

    #[test]
    fn stale_files_are_reported_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let stale = dir.join(".eve-20240101T000000Z-000041.parquet.inprogress");
        let stale_idx = dir.join(".eve-20240101T000000Z-000040.parquet.index.json.inprogress");
        fs::write(&stale, b"PAR1 half").unwrap();
        fs::write(&stale_idx, b"{").unwrap();
        fs::write(dir.join(".eve-x-20240101T000000Z-000099.parquet.inprogress"), b"").unwrap();
        fs::write(dir.join("eve-20240101T000000Z-000042.parquet"), b"").unwrap();
        let mut sink = ParquetSink::open(dir.clone(), "eve".into(), ParquetOptions::default()).unwrap();
        assert_eq!(sink.stale_files(), [stale_idx.clone(), stale.clone()]);
        let report = sink.stale_report().unwrap();
        assert!(report.contains(&stale.display().to_string()), "{report}");
        sink.write(&event(0).line).unwrap();
        sink.close().unwrap();
        assert!(stale.exists() && stale_idx.exists());
        let new: Vec<String> = data_files(&dir)
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .filter(|n| n.ends_with("-000043.parquet"))
            .collect();
        assert_eq!(
            new.len(),
            1,
            "numbering continues after the highest seq: {:?}",
            names(&dir)
        );
        let clean = ParquetSink::open(tmp.path().join("new"), "eve".into(), ParquetOptions::default()).unwrap();
        assert!(clean.stale_files().is_empty() && clean.stale_report().is_none());
        assert!(ParquetSink::open(dir.clone(), "a/b".into(), ParquetOptions::default()).is_err());
        assert!(ParquetSink::open(dir, String::new(), ParquetOptions::default()).is_err());
    }

    #[test]
    fn find_files_returns_the_files_with_matching_rows() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let inputs = events(3000);
        let mut sink = ParquetSink::open(dir.clone(), "eve".into(), opts(500, u64::MAX, HOUR)).unwrap();
        for e in &inputs {
            sink.write(&e.line).unwrap();
        }
        sink.close().unwrap();
        // A sink of another prefix in the same directory must not leak into the answers.
        let mut other = ParquetSink::open(dir.clone(), "eve-x".into(), ParquetOptions::default()).unwrap();
        for e in &inputs[..100] {
            other.write(&e.line).unwrap();
        }
        other.close().unwrap();

        let files = data_files(&dir)
            .into_iter()
            .filter(|p| file_seq("eve", p.file_name().unwrap().to_str().unwrap()).is_some())
            .collect::<Vec<_>>();
        assert_eq!(files.len(), 6);
        let back = read_back(&files);
        // Ground truth from pyarrow: per file, (timestamp, event_type) of each row.
        let truth: Vec<Vec<(Option<i64>, Option<String>)>> = back["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                f["rows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| (r["timestamp"].as_i64(), r["event_type"].as_str().map(String::from)))
                    .collect()
            })
            .collect();
        let expect = |from: i64, to: i64, ty: Option<&str>| -> Vec<PathBuf> {
            files
                .iter()
                .zip(&truth)
                .filter(|(_, rows)| {
                    rows.iter().any(|(ts, t)| {
                        ts.is_some_and(|ts| from <= ts && ts < to) && ty.is_none_or(|ty| t.as_deref() == Some(ty))
                    })
                })
                .map(|(f, _)| f.clone())
                .collect()
        };
        let at = |i: usize| BASE + i as i64 * MS;
        let queries: Vec<(i64, i64, Option<&str>)> = vec![
            (i64::MIN, i64::MAX, None),
            (i64::MIN, i64::MAX, Some("stats")),
            (i64::MIN, i64::MAX, Some("nonexistent")),
            (at(0), at(3000), Some("dns")),
            (at(600), at(620), Some("dns")),
            (at(600), at(620), None),
            (at(990), at(1010), Some("flow")),
            (at(990), at(1010), None),
            (at(1499), at(2600), Some("tls")),
            (at(2990), at(4000), None),
            (at(3000), at(4000), None),
            (LATE_TS, LATE_TS + 1, Some("alert")),
            (LATE_TS, LATE_TS + 1, None),
            (LATE_TS - MS, LATE_TS + MS, Some("dns")),
            (LATE_TS + 1, LATE_TS, None),
            (at(0), at(0) + 1, None),
        ];
        let check = |label: &str| {
            for &(from, to, ty) in &queries {
                let got = find_files(&dir, "eve", from, to, ty).unwrap();
                assert_eq!(got, expect(from, to, ty), "{label}: [{from}, {to}) {ty:?}");
            }
        };
        check("jsonl and sidecars");
        assert_eq!(find_files(&dir, "eve", i64::MIN, i64::MAX, None).unwrap(), files);
        assert_eq!(
            find_files(&dir, "eve", at(1010), at(1011), None).unwrap(),
            [files[2].clone()]
        );

        // The documented over-approximation: the first file spans from the late event to its
        // last row, so a range between them names it although no row falls there.
        let gap = (LATE_TS + 60_000_000, LATE_TS + 120_000_000);
        assert!(expect(gap.0, gap.1, None).is_empty());
        assert_eq!(find_files(&dir, "eve", gap.0, gap.1, None).unwrap(), [files[0].clone()]);

        // Sidecars alone answer the same; so does the .jsonl alone, even with a torn last line.
        let jsonl = dir.join("eve.index.jsonl");
        let saved = fs::read(&jsonl).unwrap();
        fs::remove_file(&jsonl).unwrap();
        check("sidecars only");
        let mut torn = saved.clone();
        torn.extend_from_slice(b"{\"file\":\"eve-2024");
        fs::write(&jsonl, &torn).unwrap();
        let sidecars: Vec<PathBuf> = names(&dir)
            .into_iter()
            .filter(|n| n.starts_with("eve-2") && n.ends_with(".index.json"))
            .map(|n| dir.join(n))
            .collect();
        let kept: Vec<(PathBuf, Vec<u8>)> = sidecars.iter().map(|p| (p.clone(), fs::read(p).unwrap())).collect();
        sidecars.iter().for_each(|p| fs::remove_file(p).unwrap());
        check("jsonl only");
        kept.iter().for_each(|(p, b)| fs::write(p, b).unwrap());
        // An entry whose data file is gone is not returned.
        fs::remove_file(&files[1]).unwrap();
        let got = find_files(&dir, "eve", i64::MIN, i64::MAX, None).unwrap();
        assert_eq!(got.len(), 5);
        assert!(!got.contains(&files[1]));
    }

    #[test]
    fn sink_can_move_to_the_writer_thread() {
        fn send<T: Send>() {}
        send::<ParquetSink>();
    }

    #[test]
    fn timestamps() {
        let p = |s: &str| parse_timestamp_micros(s.as_bytes());
        assert_eq!(p("2024-03-01T12:00:00.124448+0000"), Some(BASE + 124_448));
        assert_eq!(p("2024-03-01T12:00:00Z"), Some(BASE));
        assert_eq!(p("2024-03-01 12:00:00.1+00:00"), Some(BASE + 100_000));
        assert_eq!(p("2024-03-01T13:00:00.000000+0100"), Some(BASE));
        assert_eq!(p("2024-03-01T13:30:00+01:30"), Some(BASE));
        assert_eq!(p("2024-03-01T07:00:00-05"), Some(BASE));
        assert_eq!(p("2024-03-01T12:00:00.1234567891Z"), Some(BASE + 123_456));
        assert_eq!(p("1969-12-31T23:59:59.5Z"), Some(-500_000));
        assert_eq!(p("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(p("2000-02-29T00:00:00Z"), Some(951_782_400_000_000));
        for bad in [
            "",
            "2023-02-29T00:00:00Z",
            "2024-03-01T12:00:00",
            "2024-03-01T12:00:00+",
            "2024-03-01T12:00:00+05:",
            "2024-03-01T12:00:00+0",
            "2024-03-01T24:00:00Z",
            "2024-13-01T12:00:00Z",
            "2024-03-01T12:00:00.Z",
            "2024-03-01T12:00:00Zjunk",
            "2024-03-01T12:00:00+24:00",
            "not a time",
            "2024-03-01T12:0:00Z",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
        assert_eq!(iso_micros(BASE + 5), "2024-03-01T12:00:00.000005Z");
        assert_eq!(iso_micros(-1), "1969-12-31T23:59:59.999999Z");
        for i in 0..500 {
            let t = BASE + i * 7_777_777_777;
            for style in 0..5 {
                assert_eq!(p(&iso_with_offset(t, style)), Some(t), "{}", iso_with_offset(t, style));
            }
        }
    }

    #[test]
    fn names_and_index_json() {
        assert_eq!(file_seq("eve", "eve-20240301T120000Z-000007.parquet"), Some(7));
        assert_eq!(file_seq("eve", "eve-x-20240301T120000Z-000007.parquet"), None);
        assert_eq!(file_seq("eve-x", "eve-20240301T120000Z-000007.parquet"), None);
        assert_eq!(file_seq("eve", "eve-20240301T120000Z-.parquet"), None);
        assert_eq!(file_seq("eve", "eve-20240301T120000Z-7.parquet.tmp"), None);
        assert_eq!(file_seq("eve", "../eve-20240301T120000Z-7.parquet"), None);
        let mut st = FileStats {
            rows: 3,
            input_bytes: 30,
            span: Some((BASE, BASE + 1)),
            rows_without_timestamp: 1,
            rows_without_event_type: 0,
            types: FxHashMap::default(),
        };
        st.types.insert(
            "we\"ird\\\n".into(),
            TypeStats {
                rows: 2,
                span: Some((BASE, BASE + 1)),
            },
        );
        st.types.insert("dns".into(), TypeStats { rows: 1, span: None });
        let line = index_entry("f.parquet", &st, BASE / 1_000_000, BASE / 1_000_000 + 60);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            json!({
                "file": "f.parquet", "rows": 3, "input_bytes": 30,
                "created": "2024-03-01T12:00:00Z", "closed": "2024-03-01T12:01:00Z",
                "min_timestamp": "2024-03-01T12:00:00.000000Z",
                "max_timestamp": "2024-03-01T12:00:00.000001Z",
                "min_timestamp_micros": BASE, "max_timestamp_micros": BASE + 1,
                "rows_without_timestamp": 1, "rows_without_event_type": 0,
                "event_types": {"dns": 1, "we\"ird\\\n": 2},
                "event_type_ranges": {"dns": null, "we\"ird\\\n": [BASE, BASE + 1]}
            })
        );
        let (file, e) = parse_entry(line.as_bytes()).unwrap();
        assert_eq!(file, "f.parquet");
        assert_eq!(e.span, Some((BASE, BASE + 1)));
        let mut types = e.types;
        types.sort();
        assert_eq!(
            types,
            [
                ("dns".to_string(), 1, None),
                ("we\"ird\\\n".to_string(), 2, Some((BASE, BASE + 1)))
            ]
        );
    }

    /// Nanoseconds of CPU this process has used, all threads (the sink's encoding thread
    /// included).
    fn process_cpu_ns() -> u64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid timespec for the call to fill.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        assert_eq!(r, 0, "clock_gettime");
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// Throughput of `write` on 200,000 typical events (about 650 bytes). Run once, in
    /// release mode:
    /// `cargo test --release --lib sink::parquet::tests::write_throughput -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement; run in release mode"]
    fn write_throughput() {
        let tmp = tempfile::tempdir().unwrap();
        let lines: Vec<Vec<u8>> = (0..200_000)
            .map(|i| {
                // Typical events only: skip the deliberately broken ones.
                let j = if (100..=108).contains(&(i % 1000)) { i + 50 } else { i };
                event(j).line
            })
            .collect();
        let bytes: usize = lines.iter().map(Vec::len).sum();
        let mut sink = ParquetSink::open(tmp.path().to_path_buf(), "bench".into(), ParquetOptions::default()).unwrap();
        // Warm up buffers and the page cache of the output directory.
        for l in &lines[..20_000] {
            sink.write(l).unwrap();
        }
        sink.close().unwrap();
        let warm = data_files(tmp.path());
        let cpu0 = process_cpu_ns();
        let t = Instant::now();
        for l in &lines {
            sink.write(l).unwrap();
        }
        let write_only = t.elapsed();
        sink.close().unwrap();
        let total = t.elapsed();
        let cpu = (process_cpu_ns() - cpu0) as f64 / 1e9;
        let wall_eps = lines.len() as f64 / total.as_secs_f64();
        // CPU time of the process (this thread and the sink's encoding thread): what the sink
        // costs, whatever else shares the machine.
        let eps = lines.len() as f64 / cpu;
        let size: u64 = data_files(tmp.path())
            .iter()
            .filter(|p| !warm.contains(p))
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        println!(
            "parquet write: {} events, {:.0} bytes/event; wall: write {:.3} s, write+close {:.3} s, \
             {wall_eps:.0} events/s; CPU {cpu:.3} s: {eps:.0} events/s, {:.1} MB/s of JSON; \
             files {:.1} MB (ratio {:.2})",
            lines.len(),
            bytes as f64 / lines.len() as f64,
            write_only.as_secs_f64(),
            total.as_secs_f64(),
            bytes as f64 / cpu / 1e6,
            size as f64 / 1e6,
            bytes as f64 / size as f64,
        );
    }

    /// The structural scanner's fields equal simd-json's for every line it takes, and it
    /// hands the others to simd-json.
    #[test]
    fn fast_extraction_matches_the_parser() {
        let cases: &[(&str, bool)] = &[
            (
                r#"{"timestamp":"2024-03-01T12:00:00.123456+0000","flow_id":1151153973373643,"event_type":"flow","src_ip":"10.0.0.1","src_port":443,"dest_ip":"10.0.0.2","dest_port":-1,"proto":"TCP","app_proto":"tls","in_iface":"eth0","community_id":"1:x=","host":"s1","flow":{"src_ip":"nested"}}"#,
                true,
            ),
            (
                r#"  { "event_type" : "dns" , "src_port" : 70000, "dest_port": 5.0, "flow_id": 18446744073709551615 }  "#,
                true,
            ),
            (
                r#"{"event_type":"a","event_type":"b","src_ip":null,"dest_ip":7,"proto":["TCP"]}"#,
                true,
            ),
            (r#"{}"#, true),
            (
                r#"{"flow_id":-9223372036854775808,"src_port":1e3,"dest_port":"80"}"#,
                true,
            ),
            (r#"{"src_ip":"10.0.0.\u0031"}"#, false),
            (r#"{"ev\u0065nt_type":"x"}"#, false),
            (r#"{"other":"esc\"aped","event_type":"kept"}"#, true),
            (r#""just a string""#, false),
            (r#"[1,2]"#, false),
            (r#"{"a":1} trailing"#, false),
        ];
        for (line, fast) in cases {
            let mut buf = line.as_bytes().to_vec();
            let mut buffers = simd_json::Buffers::new(64);
            let mut tape = Tape(Vec::new());
            let mut slow = Fields::default();
            let valid = simd_json::fill_tape(&mut buf, &mut buffers, &mut tape).is_ok() && extract(&tape.0, &mut slow);
            match extract_fast(line.as_bytes()) {
                Some(f) => {
                    assert!(*fast && valid, "{line}: taken by the scanner");
                    assert_eq!(
                        (f.ts, f.ports, f.flow_id, f.strs),
                        (slow.ts, slow.ports, slow.flow_id, slow.strs),
                        "{line}"
                    );
                }
                None => assert!(!fast, "{line}: left to simd-json"),
            }
        }
    }
}
