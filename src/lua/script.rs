//! Opening scripts: a state with the modules and the prelude (`prelude.lua`) for each
//! input's filter and every analyzer, per worker, and what sets up and reloads a worker's
//! scripts.

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::context::WorkerCtx;
use super::ffi_util::{push_bytes, reg};
use super::state::{OnError, OnErrorAction, Role, Script, ScriptSpec, StateSettings, pcall_msg};
use super::{access, api, fast_path, proxy};

/// What went wrong with one script: the cause, named by the script's config key and tag.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{key} ({tag}): {}: {cause}", path.display())]
pub struct ScriptError {
    /// The config key (`inputs[1]`, `analyzers[2]`).
    pub key: String,
    pub tag: String,
    pub path: std::path::PathBuf,
    pub cause: ScriptCause,
}

/// Why a script could not be opened, run or set up; Lua's own messages as Lua gave them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScriptCause {
    /// Its file could not be read.
    #[error("{0}")]
    Read(String),
    #[error("cannot create a Lua state (out of memory)")]
    NoState,
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// The engine's own Lua code (the prelude, `dragonfly.ml`'s) failed to load.
    #[error("{0}")]
    Prelude(String),
    #[error("load error: {0}")]
    Load(String),
    #[error("error running the script: {0}")]
    Run(String),
    #[error("the script defines no {0}() function")]
    Missing(&'static str),
    #[error("setup() failed: {0}")]
    Setup(String),
}

impl ScriptCause {
    /// This cause, for script `i` of `role` configured as `spec`.
    pub fn of(self, role: Role, i: usize, spec: &ScriptSpec) -> ScriptError {
        ScriptError {
            key: script_key(role, i),
            tag: spec.tag.clone(),
            path: spec.path.clone(),
            cause: self,
        }
    }
}

/// The Lua side of event tables and of the FFI fast paths, and the sandbox (see the file).
const PRELUDE: &str = include_str!("prelude.lua");

/// Sets `t[name] = top of stack` (pops it); `t` is an absolute index.
unsafe fn set_field(l: *mut lua_State, t: c_int, name: &std::ffi::CStr) {
    // SAFETY: `t` is a table of this state.
    unsafe { ffi::lua_setfield(l, t, name.as_ptr()) }
}

/// `os.time()` under a test's virtual clock: the worker's place on it, in whole seconds.
unsafe extern "C-unwind" fn virtual_time(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state; the body runs behind
    // `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        super::boundary::c_entry(l, "os.time", |l| {
            let ns = super::context::with_ctx(|c| c.now_ns());
            ffi::lua_pushnumber(l, (ns / 1_000_000_000) as f64);
            Ok(1)
        })
    }
}

/// The id the next script state gets (`reg::STATE_ID`).
static NEXT_STATE_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// Runs the prelude with the engine's constants and functions in a table: the hidden keys,
/// kind codes and answers of the FFI functions are defined once, in Rust.
unsafe fn run_prelude(l: *mut lua_State) -> Result<(), ScriptCause> {
    // SAFETY: `l` is a fresh state of this thread with the modules installed.
    unsafe {
        if ffi::luaL_loadbuffer(l, PRELUDE.as_ptr().cast(), PRELUDE.len(), c"=prelude".as_ptr()) != 0 {
            return Err(ScriptCause::Prelude(pcall_msg(l)));
        }
        ffi::lua_createtable(l, 0, 40);
        let e = ffi::lua_gettop(l);
        proxy::push_mt(l);
        set_field(l, e, c"mt");
        proxy::push_line_mt(l);
        set_field(l, e, c"line_mt");
        ffi::lua_createtable(l, 0, 0);
        set_field(l, e, c"view");
        for (name, v) in [
            (c"LINE", proxy::K_LINE),
            (c"SPAN", proxy::K_SPAN),
            (c"SEAL", proxy::K_SEAL),
            (c"SET", proxy::K_SET),
            (c"CACHE", proxy::K_CACHE),
            (c"ORDER", proxy::K_ORDER),
            (c"F_ABSENT", proxy::F_ABSENT),
            (c"F_STRING", proxy::F_STRING),
            (c"F_NUMBER", proxy::F_NUMBER),
            (c"F_INT", proxy::F_INT),
            (c"F_TRUE", proxy::F_TRUE),
            (c"F_FALSE", proxy::F_FALSE),
            (c"F_NULL", proxy::F_NULL),
            (c"F_TAMPERED", proxy::F_TAMPERED),
            (c"F_OBJECT", proxy::F_OBJECT),
            (c"ADDED_NONE", fast_path::ADDED_NONE),
            (c"ADDED_NUMBER", fast_path::ADDED_NUMBER),
            (c"ADDED_STRING", fast_path::ADDED_STRING),
            (c"ADDED_TRUE", fast_path::ADDED_TRUE),
            (c"ADDED_FALSE", fast_path::ADDED_FALSE),
            (c"DONE", fast_path::DONE),
            (c"DECLINED", fast_path::DECLINED),
        ] {
            ffi::lua_pushnumber(l, v as f64);
            set_field(l, e, name);
        }
        push_bytes(l, proxy::TAMPERED_MSG.as_bytes());
        set_field(l, e, c"TAMPERED_MSG");
        for (name, f) in [
            (c"is_proxy", access::lua_is_proxy as ffi::lua_CFunction),
            (c"next_proxy", access::lua_next_proxy),
            (c"slow_index", access::slow_index),
            (c"hiredis_open", super::hiredis::open_count),
            (c"memory_file", super::builtins::memory_file),
        ] {
            ffi::lua_pushcclosure(l, f, 0);
            set_field(l, e, name);
        }
        ffi::lua_pushlightuserdata(
            l,
            NEXT_STATE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as *mut _,
        );
        ffi::lua_rawseti_(l, ffi::LUA_REGISTRYINDEX, reg::STATE_ID);
        ffi::lua_pushcclosure(l, super::boundary::finalizer_error, 0);
        set_field(l, e, c"finalizer_error");
        ffi::lua_pushlightuserdata(l, std::ptr::null_mut());
        set_field(l, e, c"null");
        for (name, p) in [
            (c"find", access::df_find as *mut std::ffi::c_void),
            (c"emit", fast_path::df_emit as *mut std::ffi::c_void),
            (c"queue", fast_path::df_queue as *mut std::ffi::c_void),
            (c"script_time", super::ffi_util::df_script_time as *mut std::ffi::c_void),
            (c"print_line", super::ffi_util::df_print_line as *mut std::ffi::c_void),
        ] {
            ffi::lua_pushlightuserdata(l, p);
            set_field(l, e, name);
        }
        super::cjson::push_state_config_address(l);
        set_field(l, e, c"cjson_cfg");
        ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, reg::HIREDIS_CONN_MT);
        push_bytes(l, b"__index");
        ffi::lua_rawget_(l, -2);
        ffi::lua_remove(l, -2);
        set_field(l, e, c"conn_methods");
        // The engine's coroutines, weak keys (reused ones stay, finished ones may go).
        ffi::lua_createtable(l, 0, 8);
        ffi::lua_createtable(l, 0, 1);
        push_bytes(l, b"k");
        set_field(l, ffi::lua_gettop(l) - 1, c"__mode");
        ffi::lua_setmetatable(l, -2);
        ffi::lua_pushvalue(l, -1);
        ffi::lua_rawseti_(l, ffi::LUA_REGISTRYINDEX, reg::ENGINE_THREADS);
        set_field(l, e, c"engine_threads");
        if crate::primitives::clock::virtual_clock().is_some() {
            ffi::lua_pushcclosure(l, virtual_time, 0);
            set_field(l, e, c"vtime");
        }
        // A second reference to the table under the chunk: the prelude leaves `dispatch` in it.
        ffi::lua_pushvalue(l, e);
        ffi::lua_insert(l, e - 1);
        if ffi::lua_pcall(l, 1, 0, 0) != 0 {
            return Err(ScriptCause::Prelude(pcall_msg(l)));
        }
        push_bytes(l, b"dispatch");
        ffi::lua_rawget_(l, -2);
        if ffi::lua_type(l, -1) != ffi::LUA_TFUNCTION {
            return Err(ScriptCause::Prelude("the prelude left no dispatch function".into()));
        }
        ffi::lua_rawseti_(l, ffi::LUA_REGISTRYINDEX, reg::DISPATCH);
        ffi::lua_pop(l, 1);
        Ok(())
    }
}

impl Script {
    /// Creates the state from the script's text, installs the modules and runs the chunk (not
    /// `setup()`). The chunk runs in script time (its
    /// memory limit applies); the caller lends the context.
    pub fn open_source(spec: &ScriptSpec, src: &[u8], settings: StateSettings) -> Result<Script, ScriptCause> {
        let Some((l, mem)) = super::ffi_util::new_state(settings.memory_limit) else {
            return Err(ScriptCause::NoState);
        };
        let s = Script {
            l,
            mem,
            tag: spec.tag.clone(),
            role: spec.role,
            calls: 0,
            errors: 0,
            out: 0,
            pipeline: spec.pipeline.max(1),
            spare_threads: Vec::new(),
            on_error: OnErrorAction::Drop,
            source_hash: source_hash(src),
            full_until: None,
        };
        // SAFETY: a fresh state, used only on this thread and closed by `Drop`.
        unsafe {
            ffi::luaL_openlibs(l);
            // The engine's positive registry slots come first (see `reg`).
            if ffi::lua_objlen(l, ffi::LUA_REGISTRYINDEX) != 0 {
                return Err(ScriptCause::Internal("the registry's first slots are taken"));
            }
            proxy::install(l);
            push_bytes(l, b"loop");
            ffi::lua_rawseti_(l, ffi::LUA_REGISTRYINDEX, reg::LOOP_KEY);
            // The modules first: the ML module takes the FFI before the prelude withdraws it,
            // and the prelude puts the FFI fast paths in front of some `dragonfly` functions.
            api::install(l);
            super::cjson::install(l, settings.precision);
            super::marshal::install(l);
            super::ml::install(l)?;
            super::hiredis::install(l);
            run_prelude(l)?;
            let set_global = |name: &std::ffi::CStr, v: &str| {
                if !v.is_empty() {
                    push_bytes(l, v.as_bytes());
                    ffi::lua_setfield(l, ffi::LUA_GLOBALSINDEX, name.as_ptr());
                }
            };
            set_global(c"default_analyzer", &spec.default_analyzer);
            if spec.role == Role::Analyzer {
                set_global(c"default_output", &spec.default_output);
            }
            let name = format!("@{}", spec.path.display());
            let cname = std::ffi::CString::new(name).unwrap_or_default();
            if ffi::luaL_loadbuffer(l, src.as_ptr().cast(), src.len(), cname.as_ptr()) != 0 {
                return Err(ScriptCause::Load(pcall_msg(l)));
            }
            let status = {
                let _script = super::ffi_util::TimeMark::script();
                ffi::lua_pcall(l, 0, 0, 0)
            };
            if status != 0 {
                return Err(ScriptCause::Run(pcall_msg(l)));
            }
            for (f, name) in [(c"setup", "setup"), (c"loop", "loop")] {
                push_global(l, f);
                let ok = ffi::lua_type(l, -1) == ffi::LUA_TFUNCTION;
                ffi::lua_pop(l, 1);
                if !ok {
                    return Err(ScriptCause::Missing(name));
                }
            }
        }
        Ok(s)
    }
}

/// Pushes the global `name` of `l` (a raw get: no metamethod of the script's runs here).
unsafe fn push_global(l: *mut lua_State, name: &std::ffi::CStr) {
    // SAFETY: `l` is a state of this thread.
    unsafe {
        push_bytes(l, name.to_bytes());
        ffi::lua_rawget_(l, ffi::LUA_GLOBALSINDEX);
    }
}

/// What a worker started last while scripts load at the start or at a rebuild ("the chunk of
/// analyzer/a.lua", "setup() of analyzer/a.lua"), for the word on a script that does not
/// return.
static LOADING: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// What [`LOADING`] says (empty before any script).
pub(crate) fn loading() -> String {
    LOADING.lock().map(|s| s.clone()).unwrap_or_default()
}

fn note_loading(what: &str, spec: &ScriptSpec) {
    if let Ok(mut s) = LOADING.lock() {
        *s = format!("{what} {} ({})", spec.path.display(), spec.tag);
    }
}

impl WorkerCtx {
    /// The text of the script of `spec`: as the pipeline's texts have it, else its file's.
    fn script_text(&self, spec: &ScriptSpec) -> Result<std::sync::Arc<[u8]>, ScriptCause> {
        match self.texts.get(&spec.path) {
            Some(t) => Ok(std::sync::Arc::clone(t)),
            None => std::fs::read(crate::privilege::host_path(&spec.path))
                .map(std::sync::Arc::from)
                .map_err(|e| ScriptCause::Read(e.to_string())),
        }
    }

    /// Opens every script of a configuration on this thread, and runs their `setup()` when
    /// `run_setup`.
    pub fn open_all(
        &mut self,
        filters: &[ScriptSpec],
        analyzers: &[ScriptSpec],
        run_setup: bool,
    ) -> Result<(), ScriptError> {
        for (role, specs) in [(Role::Filter, filters), (Role::Analyzer, analyzers)] {
            for (i, spec) in specs.iter().enumerate() {
                self.set_cur_script(role, i as u32);
                note_loading("the chunk of", spec);
                let settings = self.state_settings;
                let src = self.script_text(spec).map_err(|e| e.of(role, i, spec))?;
                let mut s = self
                    .run_script(|| Script::open_source(spec, &src, settings))
                    .map_err(|e| e.of(role, i, spec))?;
                s.on_error = self.on_error_action(spec);
                match role {
                    Role::Filter => self.filters.push(s),
                    Role::Analyzer => self.analyzers.push(s),
                }
            }
        }
        if run_setup {
            for (role, specs) in [(Role::Filter, filters), (Role::Analyzer, analyzers)] {
                for (i, spec) in specs.iter().enumerate() {
                    self.set_cur_script(role, i as u32);
                    note_loading("setup() of", spec);
                    let l = self.state(role, i as u32);
                    self.run_setup(l).map_err(|e| e.of(role, i, spec))?;
                }
            }
        }
        Ok(())
    }

    /// What a script's `on_error` means on this worker (tags the configuration checked).
    fn on_error_action(&self, spec: &ScriptSpec) -> OnErrorAction {
        let analyzer = |t: &str| (!t.is_empty()).then(|| self.analyzer_index(t.as_bytes())).flatten();
        let output = |t: &str| (!t.is_empty()).then(|| self.output_index(t.as_bytes())).flatten();
        match &spec.on_error {
            OnError::Drop => OnErrorAction::Drop,
            OnError::Output(tag) => output(tag).map_or(OnErrorAction::Drop, OnErrorAction::DeadLetter),
            OnError::Pass => match (analyzer(&spec.default_analyzer), spec.role) {
                (Some(a), _) => OnErrorAction::ToAnalyzer(a),
                (None, Role::Analyzer) => {
                    output(&spec.default_output).map_or(OnErrorAction::Drop, OnErrorAction::ToOutput)
                }
                (None, Role::Filter) => OnErrorAction::Drop,
            },
        }
    }

    /// Runs `setup()` of the state `l` (the context lent: setup may call dragonfly functions).
    fn run_setup(&mut self, l: *mut lua_State) -> Result<(), ScriptCause> {
        // SAFETY: `l` is a state of this thread.
        unsafe {
            push_global(l, c"setup");
            let status = self.run_script(|| ffi::lua_pcall(l, 0, 0, 0));
            if status != 0 {
                return Err(ScriptCause::Setup(pcall_msg(l)));
            }
            ffi::lua_pushnil(l);
            ffi::lua_setfield(l, ffi::LUA_GLOBALSINDEX, c"io".as_ptr());
        }
        Ok(())
    }

    /// Replaces this worker's scripts with new versions (`sources`: the text of every filter,
    /// then every analyzer, read once for all workers), between two events. Each script is
    /// loaded and set up in a fresh state first; one that fails keeps its old version. A
    /// pending timer moves to the new state. Returns (scripts reloaded, errors).
    pub fn reload(
        &mut self,
        filters: &[ScriptSpec],
        analyzers: &[ScriptSpec],
        sources: &[Result<Vec<u8>, ScriptCause>],
    ) -> (u64, Vec<ScriptError>) {
        let mut done = 0;
        let mut errors = Vec::new();
        let specs = filters
            .iter()
            .map(|s| (Role::Filter, s))
            .chain(analyzers.iter().map(|s| (Role::Analyzer, s)));
        for (k, (role, spec)) in specs.enumerate() {
            let i = if role == Role::Filter { k } else { k - filters.len() };
            let src = match sources.get(k) {
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    errors.push(e.clone().of(role, i, spec));
                    continue;
                }
                None => continue,
            };
            self.set_cur_script(role, i as u32);
            let settings = self.state_settings;
            let mut new = match self.run_script(|| Script::open_source(spec, src, settings)) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(e.of(role, i, spec));
                    continue;
                }
            };
            if let Err(e) = self.run_setup(new.l) {
                errors.push(e.of(role, i, spec));
                continue;
            }
            new.on_error = self.on_error_action(spec);
            let Some(slot) = self.script_mut(role, i as u32) else {
                continue;
            };
            new.calls = slot.calls;
            new.errors = slot.errors;
            new.out = slot.out;
            let old = std::mem::replace(slot, new);
            if role == Role::Analyzer
                && let Some(Some((due, r))) = self.timers.get(i).copied()
            {
                let to = self.analyzers[i].l;
                // SAFETY: both states belong to this thread; `r` is a reference in the old one.
                unsafe {
                    ffi::lua_rawgeti_(old.l, ffi::LUA_REGISTRYINDEX, r);
                    let top = ffi::lua_gettop(to);
                    match super::copy::copy_value(old.l, ffi::lua_gettop(old.l), to, 0, &mut self.cache) {
                        Ok(()) => self.timers[i] = Some((due, ffi::luaL_ref(to, ffi::LUA_REGISTRYINDEX))),
                        Err(_) => {
                            ffi::lua_settop(to, top);
                            self.timers[i] = None;
                            self.timers_pending -= 1;
                        }
                    }
                    ffi::lua_settop(old.l, 0);
                }
            }
            self.lend(move || drop(old));
            done += 1;
        }
        (done, errors)
    }
}

/// A hash of a script's text.
pub(crate) fn source_hash(src: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    src.hash(&mut h);
    h.finish()
}

impl WorkerCtx {
    /// Takes the configuration of a rebuilt pipeline (a reload that changed config.lua), between
    /// two pipelines, when no event is in flight: the new tags, and the scripts. A script whose
    /// entry (`old` spec) and text are unchanged keeps its state, with its Lua data and its
    /// pending timer; the others are opened and set up; those no longer configured are closed.
    /// The counters start again (the new pipeline's stats start from 0). Returns how many
    /// states were kept.
    #[allow(clippy::too_many_arguments)]
    pub fn reconfigure(
        &mut self,
        input_tags: Vec<String>,
        analyzer_tags: Vec<String>,
        output_tags: Vec<String>,
        ordered: bool,
        old: (&[ScriptSpec], &[ScriptSpec]),
        filters: &[ScriptSpec],
        analyzers: &[ScriptSpec],
    ) -> Result<usize, ScriptError> {
        let mut old_filters: Vec<Option<Script>> = std::mem::take(&mut self.filters).into_iter().map(Some).collect();
        let mut old_analyzers: Vec<Option<Script>> =
            std::mem::take(&mut self.analyzers).into_iter().map(Some).collect();
        let old_timers = std::mem::take(&mut self.timers);
        let n_inputs = input_tags.len();
        self.input_tags = input_tags;
        self.analyzer_tags = analyzer_tags;
        self.output_tags = output_tags;
        self.ordered = ordered;
        self.outs = (0..=n_inputs)
            .map(|i| crate::shard::OutBatch {
                input: if i == n_inputs {
                    crate::shard::NO_INPUT
                } else {
                    i as u32
                },
                ..Default::default()
            })
            .collect();
        self.counters = Default::default();
        // The Redis counts too (the connections stay): the new pipeline's stats start from 0.
        (self.redis.calls, self.redis.failures, self.redis.error_replies) = (0, 0, 0);
        self.timers = vec![None; analyzers.len()];
        if let Some(l) = self.lat.as_mut() {
            **l = super::WorkerLatency::new(filters.len() + analyzers.len());
        }
        let mut kept = 0;
        let mut fresh = Vec::new();
        for (role, specs, olds, old_specs) in [
            (Role::Filter, filters, &mut old_filters, old.0),
            (Role::Analyzer, analyzers, &mut old_analyzers, old.1),
        ] {
            for (i, spec) in specs.iter().enumerate() {
                let text = self.script_text(spec).ok();
                let same = old_specs.iter().enumerate().position(|(j, o)| {
                    o == spec
                        && olds[j]
                            .as_ref()
                            .is_some_and(|s| text.as_deref().is_some_and(|t| source_hash(t) == s.source_hash))
                });
                let s = match same.and_then(|j| olds[j].take().map(|s| (j, s))) {
                    Some((j, mut s)) => {
                        kept += 1;
                        (s.calls, s.errors, s.out) = (0, 0, 0);
                        if role == Role::Analyzer
                            && let Some(t) = old_timers.get(j).copied().flatten()
                        {
                            self.timers[i] = Some(t);
                        }
                        s
                    }
                    None => {
                        self.set_cur_script(role, i as u32);
                        note_loading("the chunk of", spec);
                        let settings = self.state_settings;
                        let src = text.ok_or_else(|| ScriptCause::Read("cannot be read".into()).of(role, i, spec))?;
                        let s = self
                            .run_script(|| Script::open_source(spec, &src, settings))
                            .map_err(|e| e.of(role, i, spec))?;
                        fresh.push((role, i));
                        s
                    }
                };
                match role {
                    Role::Filter => self.filters.push(s),
                    Role::Analyzer => self.analyzers.push(s),
                }
            }
        }
        // Indexes of analyzers and outputs may have moved: every script's on_error again.
        for (i, spec) in filters.iter().enumerate() {
            self.filters[i].on_error = self.on_error_action(spec);
        }
        for (i, spec) in analyzers.iter().enumerate() {
            self.analyzers[i].on_error = self.on_error_action(spec);
        }
        // Timers of analyzers closed now are gone with their states.
        self.timers_pending = self.timers.iter().flatten().count() as u64;
        let gone: Vec<Script> = old_filters.into_iter().chain(old_analyzers).flatten().collect();
        self.lend(move || drop(gone));
        for (role, i) in fresh {
            self.set_cur_script(role, i as u32);
            let l = self.state(role, i as u32);
            let spec = if role == Role::Filter {
                &filters[i]
            } else {
                &analyzers[i]
            };
            note_loading("setup() of", spec);
            self.run_setup(l).map_err(|e| e.of(role, i, spec))?;
        }
        Ok(kept)
    }
}

/// The config key naming script `i` of a role (`inputs[1]`, `analyzers[2]`).
pub(crate) fn script_key(role: Role, i: usize) -> String {
    match role {
        Role::Filter => format!("inputs[{}]", i + 1),
        Role::Analyzer => format!("analyzers[{}]", i + 1),
    }
}
