//! Native Redis-ML: the `ML.*` command set (forests, linear and logistic regression,
//! matrices, K-means) served in-process, with models shared by every worker.
//!
//! Models live in one process-wide store. A write builds the new model beside the old one
//! and swaps it in whole under the store's lock, so a prediction always sees a complete
//! model. Readers keep a per-thread cache of the models they use, validated by the store's
//! generation counter: a prediction takes no lock and touches no shared cache line unless
//! some model changed since the thread last looked.

pub(crate) mod forest;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

use rustc_hash::FxHashMap;

pub(crate) use forest::Forest;
pub use forest::{AttrKey, Mode};

/// An error reply; the text is what Redis-ML clients see (`ERR ...`, `WRONGTYPE ...`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MlError {
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    #[error("ERR wrong number of arguments for '{0}' command")]
    Arity(String),
    #[error("ERR Generic: tree id beyond the number of trees (use the tree count to append a tree)")]
    Generic,
    #[error("ERR Tree node path containes wrong characters: '{0}' (a root character, then l or r per level)")]
    BadPath(String),
    #[error("ERR Wrong node type '{0}' (NUMERIC, CATEGORIC or LEAF)")]
    BadNodeType(String),
    #[error("ERR parent of node '{0}' does not exist")]
    NoParent(String),
    #[error("ERR Tree contains null nodes")]
    NullNodes,
    #[error("ERR Feature vector parsing failed: '{0}' (expected name:value,name:value,...)")]
    FeatureVector(String),
    #[error("ERR invalid {0}: '{1}'")]
    Invalid(&'static str, String),
    #[error("ERR the forest has no trees")]
    Empty,
    #[error("ERR {0}")]
    Dims(String),
    #[error("ERR unknown command '{0}'")]
    UnknownCommand(String),
    #[error("ERR unknown mode '{0}' (CLASSIFICATION or REGRESSION)")]
    BadMode(String),
}

impl MlError {
    fn invalid(what: &'static str, s: &[u8]) -> MlError {
        MlError::Invalid(what, String::from_utf8_lossy(s).into_owned())
    }
}

/// A reply as Redis-ML gives it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    /// The status `OK`.
    Ok,
    /// A double, sent as a bulk string printed `%.17g`.
    Num(f64),
    Int(i64),
    Array(Vec<Reply>),
    Error(MlError),
}

impl From<Result<(), MlError>> for Reply {
    fn from(r: Result<(), MlError>) -> Reply {
        match r {
            Ok(()) => Reply::Ok,
            Err(e) => Reply::Error(e),
        }
    }
}

/// Intercept and coefficients of a linear or logistic regression.
#[derive(Clone, Debug, PartialEq)]
pub struct Reg {
    pub intercept: f64,
    pub coef: Vec<f64>,
}

impl Reg {
    /// `intercept + Σ cᵢ·xᵢ` over the common length.
    pub fn linear(&self, x: &[f64]) -> f64 {
        let mut s = self.intercept;
        for (c, v) in self.coef.iter().zip(x) {
            s += c * v;
        }
        s
    }

    /// `1 / (1 + e^-(intercept + Σ cᵢ·xᵢ))`.
    pub fn logistic(&self, x: &[f64]) -> f64 {
        1.0 / (1.0 + (-self.linear(x)).exp())
    }
}

/// A row-major `n × m` matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    pub n: usize,
    pub m: usize,
    pub data: Vec<f64>,
}

/// K-means centers, `k × dims`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct KMeans {
    pub k: usize,
    pub dims: usize,
    pub centers: Vec<f64>,
}

impl KMeans {
    /// Index of the nearest center (squared Euclidean distance; ties to the lowest index).
    pub fn nearest(&self, x: &[f64]) -> usize {
        let mut best = (0, f64::INFINITY);
        for (i, c) in self.centers.chunks_exact(self.dims).enumerate() {
            let d: f64 = c.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum();
            if d < best.1 {
                best = (i, d);
            }
        }
        best.0
    }
}

#[derive(Clone, Debug)]
pub enum Model {
    Forest(Forest),
    LinReg(Reg),
    LogReg(Reg),
    Matrix(Matrix),
    KMeans(KMeans),
}

/// A stored model; `id` is unique per stored version (a forest's layout id).
#[derive(Debug)]
pub struct Entry {
    pub id: u64,
    pub model: Model,
}

struct Store {
    map: RwLock<FxHashMap<Box<[u8]>, Arc<Entry>>>,
    /// Bumped after every change of `map`.
    generation: AtomicU64,
    next_id: AtomicU64,
}

static STORE: LazyLock<Store> = LazyLock::new(|| Store {
    map: RwLock::new(FxHashMap::default()),
    generation: AtomicU64::new(1),
    next_id: AtomicU64::new(1),
});

/// Whether `ML.*` commands sent through `hiredis` are answered in-process (the default) or
/// sent to Redis (`redis_ml = "redis"` in config.lua).
static NATIVE: AtomicBool = AtomicBool::new(true);

pub fn set_native(native: bool) {
    NATIVE.store(native, Ordering::Relaxed);
}

pub(crate) fn native() -> bool {
    NATIVE.load(Ordering::Relaxed)
}

/// Most keys a thread's cache keeps before it starts over.
const CACHE_MAX: usize = 4096;

/// A thread's view of the store: the generation it was filled at, and key -> entry or known
/// absence.
type ThreadCache = (u64, FxHashMap<Box<[u8]>, Option<Arc<Entry>>>);

/// (forest version, (feature name, dense index) by position in the sample).
type SampleOrder = (u64, Vec<(Box<[u8]>, Option<u32>)>);

thread_local! {
    static CACHE: RefCell<ThreadCache> = RefCell::new((0, FxHashMap::default()));
    /// The dense feature vector of command-path forest runs.
    static DENSE: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
    /// The names of the last sample parsed, by position, with their dense index in the forest
    /// version given first: callers send their features in the same order every time, so a
    /// comparison with the name at the same position replaces the hash lookup.
    static SAMPLE_ORDER: RefCell<SampleOrder> = const { RefCell::new((0, Vec::new())) };
    /// This thread's model calls and error replies (for the stats line).
    static COUNTS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// Counts one model call on this thread, and whether it failed.
pub(crate) fn count(failed: bool) {
    COUNTS.with(|c| {
        let (n, e) = c.get();
        c.set((n + 1, e + failed as u64));
    });
}

/// This thread's (calls, errors) so far.
pub(crate) fn counts() -> (u64, u64) {
    COUNTS.with(|c| c.get())
}

/// The entry under `key`, straight from the store.
pub fn get(key: &[u8]) -> Option<Arc<Entry>> {
    let map = STORE.map.read().unwrap_or_else(|p| p.into_inner());
    map.get(key).cloned()
}

/// Runs `f` on the entry under `key` (or `None`) through this thread's cache.
pub(crate) fn with_model<R>(key: &[u8], f: impl FnOnce(Option<&Entry>) -> R) -> R {
    let generation = STORE.generation.load(Ordering::Acquire);
    CACHE.with_borrow_mut(|(seen, cache)| {
        if *seen != generation || cache.len() >= CACHE_MAX {
            cache.clear();
            *seen = generation;
        }
        if let Some(e) = cache.get(key) {
            return f(e.as_deref());
        }
        let e = get(key);
        let r = f(e.as_deref());
        cache.insert(key.into(), e);
        r
    })
}

/// Replaces the model under `key` with what `f` makes of the current one. `NullNodes` deletes
/// the key (as Redis-ML does); other errors change nothing.
fn update(key: &[u8], f: impl FnOnce(Option<&Model>) -> Result<Model, MlError>) -> Result<(), MlError> {
    let mut map = STORE.map.write().unwrap_or_else(|p| p.into_inner());
    let r = f(map.get(key).map(|e| &e.model));
    match r {
        Ok(model) => {
            let id = STORE.next_id.fetch_add(1, Ordering::Relaxed);
            map.insert(key.into(), Arc::new(Entry { id, model }));
            STORE.generation.fetch_add(1, Ordering::Release);
            Ok(())
        }
        Err(MlError::NullNodes) => {
            map.remove(key);
            STORE.generation.fetch_add(1, Ordering::Release);
            Err(MlError::NullNodes)
        }
        Err(e) => Err(e),
    }
}

/// What a Redis command sent through `hiredis` does to the models it names, as it would have
/// done to Redis-ML's keys: `DEL`/`UNLINK` remove the models of their keys, `FLUSHDB` and
/// `FLUSHALL` every model. `args[0]` is the command's name; anything else changes nothing.
pub(crate) fn on_redis_command<'a>(mut args: impl Iterator<Item = &'a [u8]>) {
    let Some(name) = args.next() else { return };
    if !forgets_models(name) {
        return;
    }
    if name.eq_ignore_ascii_case(b"DEL") || name.eq_ignore_ascii_case(b"UNLINK") {
        for key in args {
            delete(key);
        }
    } else {
        let mut map = STORE.map.write().unwrap_or_else(|p| p.into_inner());
        if !map.is_empty() {
            map.clear();
            STORE.generation.fetch_add(1, Ordering::Release);
        }
    }
}

/// Whether Redis command `name` removes keys that may be models (see [`on_redis_command`]).
pub(crate) fn forgets_models(name: &[u8]) -> bool {
    [&b"DEL"[..], b"UNLINK", b"FLUSHDB", b"FLUSHALL"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}

/// Removes the model under `key`; whether there was one.
pub(crate) fn delete(key: &[u8]) -> bool {
    let mut map = STORE.map.write().unwrap_or_else(|p| p.into_inner());
    let had = map.remove(key).is_some();
    if had {
        STORE.generation.fetch_add(1, Ordering::Release);
    }
    had
}

// ---- Typed operations (the direct Lua API and the command path share them) ----

/// `ML.FOREST.ADD key treeid path node ...`.
pub(crate) fn forest_add(key: &[u8], treeid: &[u8], nodes: &[&[u8]]) -> Result<(), MlError> {
    update(key, |old| {
        let mut f = match old {
            None => Forest::default(),
            Some(Model::Forest(f)) => f.clone(),
            Some(_) => return Err(MlError::WrongType),
        };
        f.add(treeid, nodes)?;
        Ok(Model::Forest(f))
    })
}

/// The layout of the forest under `key`: its version id and its features in dense order.
pub fn forest_layout(key: &[u8]) -> Result<(u64, Vec<AttrKey>), MlError> {
    with_model(key, |e| match e {
        Some(Entry {
            id,
            model: Model::Forest(f),
        }) => Ok((*id, f.attrs.clone())),
        _ => Err(MlError::WrongType),
    })
}

/// Why a dense forest run gave no value.
#[derive(Debug, PartialEq)]
pub enum RunError {
    /// The forest changed since the caller fetched its layout.
    Stale,
    Ml(MlError),
}

/// Runs the forest under `key` on a dense vector laid out as version `layout` says.
pub fn forest_run_dense(key: &[u8], layout: u64, x: &[f64], mode: Mode) -> Result<f64, RunError> {
    with_model(key, |e| match e {
        Some(Entry {
            id,
            model: Model::Forest(f),
        }) => {
            if *id != layout || x.len() != f.attrs.len() {
                return Err(RunError::Stale);
            }
            f.run(x, mode).map_err(RunError::Ml)
        }
        _ => Err(RunError::Ml(MlError::WrongType)),
    })
}

/// `ML.FOREST.RUN key sample mode` with the sample as text (`name:value,...`).
pub(crate) fn forest_run_sample(key: &[u8], sample: &[u8], mode: Mode) -> Result<f64, MlError> {
    with_model(key, |e| {
        let Some(Entry {
            id,
            model: Model::Forest(f),
        }) = e
        else {
            return Err(MlError::WrongType);
        };
        DENSE.with_borrow_mut(|x| {
            SAMPLE_ORDER.with_borrow_mut(|(seen, order)| {
                if *seen != *id {
                    order.clear();
                    *seen = *id;
                }
                x.clear();
                x.resize(f.attrs.len(), 0.0);
                for (pos, pair) in sample.split(|&c| c == b',').filter(|p| !p.is_empty()).enumerate() {
                    let bad = || MlError::FeatureVector(String::from_utf8_lossy(pair).into_owned());
                    let colon = memchr::memchr(b':', pair).ok_or_else(bad)?;
                    let (name, value) = (&pair[..colon], &pair[colon + 1..]);
                    if name.is_empty() {
                        return Err(bad());
                    }
                    let index = match order.get(pos) {
                        Some((n, i)) if **n == *name => *i,
                        _ => {
                            let i = f.index_of_raw(name);
                            if pos < 256 {
                                order.truncate(pos);
                                order.push((name.into(), i));
                            }
                            i
                        }
                    };
                    if let Some(i) = index {
                        x[i as usize] = atof(value);
                    }
                }
                f.run(x, mode)
            })
        })
    })
}

/// `ML.LINREG.SET` / `ML.LOGREG.SET`.
pub(crate) fn reg_set(key: &[u8], logistic: bool, intercept: f64, coef: Vec<f64>) -> Result<(), MlError> {
    update(key, |old| {
        // One regression type, as Redis-ML's: either command sets (and predicts) either.
        if !matches!(old, None | Some(Model::LinReg(_) | Model::LogReg(_))) {
            return Err(MlError::WrongType);
        }
        let r = Reg { intercept, coef };
        Ok(if logistic { Model::LogReg(r) } else { Model::LinReg(r) })
    })
}

/// `ML.LINREG.PREDICT` / `ML.LOGREG.PREDICT`.
pub(crate) fn reg_predict(key: &[u8], logistic: bool, x: &[f64]) -> Result<f64, MlError> {
    with_model(key, |e| match e.map(|e| &e.model) {
        Some(Model::LinReg(r) | Model::LogReg(r)) if logistic => Ok(r.logistic(x)),
        Some(Model::LinReg(r) | Model::LogReg(r)) => Ok(r.linear(x)),
        _ => Err(MlError::WrongType),
    })
}

/// `ML.KMEANS.SET key k dims centers...`.
pub(crate) fn kmeans_set(key: &[u8], k: usize, dims: usize, centers: Vec<f64>) -> Result<(), MlError> {
    if k == 0 || dims == 0 || centers.len() != k * dims {
        return Err(MlError::Dims(format!(
            "K-means needs k * dims = {k} * {dims} center coordinates, got {}",
            centers.len()
        )));
    }
    update(key, |old| match old {
        None | Some(Model::KMeans(_)) => Ok(Model::KMeans(KMeans { k, dims, centers })),
        _ => Err(MlError::WrongType),
    })
}

/// `ML.KMEANS.PREDICT key x1 ... xdims`.
pub(crate) fn kmeans_predict(key: &[u8], x: &[f64]) -> Result<i64, MlError> {
    with_model(key, |e| match e.map(|e| &e.model) {
        Some(Model::KMeans(km)) => {
            if x.len() != km.dims {
                return Err(MlError::Dims(format!(
                    "K-means model has {} dimensions, got {} values",
                    km.dims,
                    x.len()
                )));
            }
            Ok(km.nearest(x) as i64)
        }
        _ => Err(MlError::WrongType),
    })
}

/// `ML.MATRIX.SET key n m entries...`.
pub(crate) fn matrix_set(key: &[u8], n: usize, m: usize, data: Vec<f64>) -> Result<(), MlError> {
    if n == 0 || m == 0 || data.len() != n * m {
        return Err(MlError::Dims(format!(
            "a {n} x {m} matrix needs {} entries, got {}",
            n.saturating_mul(m),
            data.len()
        )));
    }
    update(key, |old| match old {
        None | Some(Model::Matrix(_)) => Ok(Model::Matrix(Matrix { n, m, data })),
        _ => Err(MlError::WrongType),
    })
}

fn matrix_of(key: &[u8]) -> Result<Arc<Entry>, MlError> {
    match get(key) {
        Some(e) if matches!(e.model, Model::Matrix(_)) => Ok(e),
        _ => Err(MlError::WrongType),
    }
}

fn as_matrix(e: &Entry) -> &Matrix {
    match &e.model {
        Model::Matrix(m) => m,
        _ => unreachable!("checked by matrix_of"),
    }
}

/// `ML.MATRIX.GET key`.
pub(crate) fn matrix_get(key: &[u8]) -> Result<Matrix, MlError> {
    matrix_of(key).map(|e| as_matrix(&e).clone())
}

fn store_matrix(key: &[u8], m: Matrix) -> Result<(), MlError> {
    update(key, |old| match old {
        None | Some(Model::Matrix(_)) => Ok(Model::Matrix(m)),
        _ => Err(MlError::WrongType),
    })
}

/// `ML.MATRIX.ADD a b sum`.
pub(crate) fn matrix_add(a: &[u8], b: &[u8], dst: &[u8]) -> Result<(), MlError> {
    let (ea, eb) = (matrix_of(a)?, matrix_of(b)?);
    let (x, y) = (as_matrix(&ea), as_matrix(&eb));
    if (x.n, x.m) != (y.n, y.m) {
        return Err(MlError::Dims(format!(
            "cannot add a {} x {} matrix and a {} x {} matrix",
            x.n, x.m, y.n, y.m
        )));
    }
    let data = x.data.iter().zip(&y.data).map(|(p, q)| p + q).collect();
    store_matrix(dst, Matrix { n: x.n, m: x.m, data })
}

/// `ML.MATRIX.MULTIPLY a b product`.
pub(crate) fn matrix_multiply(a: &[u8], b: &[u8], dst: &[u8]) -> Result<(), MlError> {
    let (ea, eb) = (matrix_of(a)?, matrix_of(b)?);
    let (x, y) = (as_matrix(&ea), as_matrix(&eb));
    if x.m != y.n {
        return Err(MlError::Dims(format!(
            "cannot multiply a {} x {} matrix by a {} x {} matrix",
            x.n, x.m, y.n, y.m
        )));
    }
    let mut data = vec![0.0; x.n * y.m];
    for i in 0..x.n {
        for j in 0..y.m {
            let mut s = 0.0;
            for k in 0..x.m {
                s += x.data[i * x.m + k] * y.data[k * y.m + j];
            }
            data[i * y.m + j] = s;
        }
    }
    store_matrix(dst, Matrix { n: x.n, m: y.m, data })
}

/// `ML.MATRIX.SCALE key scalar` (in place).
pub(crate) fn matrix_scale(key: &[u8], s: f64) -> Result<(), MlError> {
    update(key, |old| match old {
        Some(Model::Matrix(m)) => Ok(Model::Matrix(Matrix {
            n: m.n,
            m: m.m,
            data: m.data.iter().map(|v| v * s).collect(),
        })),
        _ => Err(MlError::WrongType),
    })
}

// ---- The command path ----

/// Parses a number argument strictly (the whole token, as Rust reads floats).
pub(crate) fn parse_num(what: &'static str, s: &[u8]) -> Result<f64, MlError> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .ok_or_else(|| MlError::invalid(what, s))
}

fn parse_count(what: &'static str, s: &[u8]) -> Result<usize, MlError> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .ok_or_else(|| MlError::invalid(what, s))
}

fn nums(what: &'static str, args: &[&[u8]]) -> Result<Vec<f64>, MlError> {
    args.iter().map(|a| parse_num(what, a)).collect()
}

/// C's `atof`: what `strtod` reads after leading white space (decimal, hexadecimal, `inf`,
/// `nan`), else 0.
pub(crate) fn atof(s: &[u8]) -> f64 {
    let from = s.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(s.len());
    crate::primitives::strtod::strtod(&s[from..]).map_or(0.0, |(v, _)| v)
}

/// Whether `name` is an `ML.*` command (case-insensitive).
pub(crate) fn is_ml_command(name: &[u8]) -> bool {
    name.len() > 3 && name[..3].eq_ignore_ascii_case(b"ML.")
}

/// Executes one `ML.*` command (`args[0]` is its name). White-space-only arguments at the end
/// are dropped, so the trailing `" \n"` of a model file line is no argument (RedisML took it as
/// a root path); the others are trimmed of white space but the key, which is taken as it is
/// (an empty argument elsewhere is an error, as in Redis-ML, not a shift of the others).
pub(crate) fn execute(args: &[&[u8]]) -> Reply {
    let Some((&name, rest)) = args.split_first() else {
        return Reply::Error(MlError::UnknownCommand(String::new()));
    };
    let end = rest
        .iter()
        .rposition(|a| !a.trim_ascii().is_empty())
        .map_or(0, |i| i + 1);
    let a: Vec<&[u8]> = rest[..end]
        .iter()
        .enumerate()
        .map(|(i, a)| if i == 0 { *a } else { a.trim_ascii() })
        .collect();
    let upper = name.to_ascii_uppercase();
    let r = run_command(&upper, &a);
    count(r.is_err());
    match r {
        Ok(r) => r,
        Err(e) => Reply::Error(e),
    }
}

fn run_command(name: &[u8], a: &[&[u8]]) -> Result<Reply, MlError> {
    let arity = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(MlError::Arity(String::from_utf8_lossy(name).to_ascii_lowercase()))
        }
    };
    Ok(match name {
        b"ML.FOREST.ADD" => {
            arity(a.len() >= 4)?;
            forest_add(a[0], a[1], &a[2..])?;
            Reply::Ok
        }
        b"ML.FOREST.RUN" => {
            arity(matches!(a.len(), 2 | 3))?;
            let mode = match a.get(2) {
                None | Some(&b"CLASSIFICATION") => Mode::Classification,
                Some(&b"REGRESSION") => Mode::Regression,
                Some(m) => return Err(MlError::BadMode(String::from_utf8_lossy(m).into_owned())),
            };
            Reply::Num(forest_run_sample(a[0], a[1], mode)?)
        }
        b"ML.LINREG.SET" | b"ML.LOGREG.SET" => {
            let logistic = name == b"ML.LOGREG.SET";
            arity(a.len() >= 3)?;
            let intercept = parse_num("intercept", a[1])?;
            reg_set(a[0], logistic, intercept, nums("coefficient", &a[2..])?)?;
            Reply::Ok
        }
        b"ML.LINREG.PREDICT" | b"ML.LOGREG.PREDICT" => {
            let logistic = name == b"ML.LOGREG.PREDICT";
            arity(a.len() >= 2)?;
            Reply::Num(reg_predict(a[0], logistic, &nums("feature", &a[1..])?)?)
        }
        b"ML.MATRIX.SET" => {
            arity(a.len() >= 4)?;
            let (n, m) = (parse_count("row count", a[1])?, parse_count("column count", a[2])?);
            matrix_set(a[0], n, m, nums("matrix entry", &a[3..])?)?;
            Reply::Ok
        }
        b"ML.MATRIX.GET" => {
            arity(a.len() == 1)?;
            let m = matrix_get(a[0])?;
            let mut v = Vec::with_capacity(2 + m.data.len());
            v.push(Reply::Int(m.n as i64));
            v.push(Reply::Int(m.m as i64));
            v.extend(m.data.iter().map(|&x| Reply::Num(x)));
            Reply::Array(v)
        }
        b"ML.MATRIX.ADD" => {
            arity(a.len() == 3)?;
            matrix_add(a[0], a[1], a[2])?;
            Reply::Ok
        }
        b"ML.MATRIX.MULTIPLY" => {
            arity(a.len() == 3)?;
            matrix_multiply(a[0], a[1], a[2])?;
            Reply::Ok
        }
        b"ML.MATRIX.SCALE" => {
            arity(a.len() == 2)?;
            matrix_scale(a[0], parse_num("scalar", a[1])?)?;
            Reply::Ok
        }
        b"ML.KMEANS.SET" => {
            arity(a.len() >= 4)?;
            let (k, dims) = (parse_count("k", a[1])?, parse_count("dimension count", a[2])?);
            kmeans_set(a[0], k, dims, nums("center coordinate", &a[3..])?)?;
            Reply::Ok
        }
        b"ML.KMEANS.PREDICT" => {
            arity(a.len() >= 2)?;
            Reply::Int(kmeans_predict(a[0], &nums("feature", &a[1..])?)?)
        }
        _ => return Err(MlError::UnknownCommand(String::from_utf8_lossy(name).into_owned())),
    })
}

/// Writes `v` as C's `printf("%.17g", v)` does (glibc).
pub(crate) fn fmt_g17(v: f64, out: &mut Vec<u8>) {
    fmt_g(v, 17, out)
}

/// `%.{prec}g` as C's printf writes it (`prec` from 1 to 17): `prec` significant digits,
/// correctly rounded, trailing zeros dropped, exponent form below 1e-4 and from 1e`prec` up.
pub(crate) fn fmt_g(v: f64, prec: usize, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let prec = prec.clamp(1, 17);
    if v.is_nan() {
        out.extend_from_slice(if v.is_sign_negative() { b"-nan" } else { b"nan" });
        return;
    }
    if v.is_infinite() {
        out.extend_from_slice(if v < 0.0 { b"-inf" } else { b"inf" });
        return;
    }
    if v == 0.0 {
        out.extend_from_slice(if v.is_sign_negative() { b"-0" } else { b"0" });
        return;
    }
    // `prec` significant digits, correctly rounded: d.ddd...e±x.
    let mut buf = [0u8; 40];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cur, "{:.*e}", prec - 1, v.abs());
    let len = cur.position() as usize;
    let s = &buf[..len];
    let e_at = s.iter().position(|&c| c == b'e').unwrap_or(len);
    let exp: i32 = std::str::from_utf8(&s[e_at + 1..])
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let mut digits = [0u8; 17];
    let mut nd = 0;
    for &c in &s[..e_at] {
        if c.is_ascii_digit() && nd < prec {
            digits[nd] = c;
            nd += 1;
        }
    }
    // %g drops trailing zeros.
    while nd > 1 && digits[nd - 1] == b'0' {
        nd -= 1;
    }
    let d = &digits[..nd];
    if v < 0.0 {
        out.push(b'-');
    }
    if !(-4..prec as i32).contains(&exp) {
        out.push(d[0]);
        if nd > 1 {
            out.push(b'.');
            out.extend_from_slice(&d[1..]);
        }
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        let a = exp.unsigned_abs();
        if a < 10 {
            out.push(b'0');
        }
        let _ = write!(out, "{a}");
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        for i in 0..int_len {
            out.push(*d.get(i).unwrap_or(&b'0'));
        }
        if nd > int_len {
            out.push(b'.');
            out.extend_from_slice(&d[int_len..]);
        }
    } else {
        out.extend_from_slice(b"0.");
        for _ in 0..(-exp - 1) {
            out.push(b'0');
        }
        out.extend_from_slice(d);
    }
}
