//! Native Redis-ML benchmarks on the shipped DGA forest (5 trees of depth 15, 23 features):
//! the evaluator alone, the direct Lua API (`dragonfly.ml.forest_run`), `ML.FOREST.RUN`
//! through `hiredis` answered in-process, and the same command sent to a local
//! `redis-server` over its unix socket.
//!
//! A plain `redis-server` has no Redis-ML module, so it answers the command with an error:
//! that round trip is a lower bound for what the module would cost (it would also parse the
//! sample and walk the trees). Each iteration is one prediction.

use std::ffi::c_int;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dragonfly_mle::bench::{self as ml, AttrKey, MlMode as Mode, RedisTarget, Role, ScriptSpec, WorkerCtx};
use mlua::ffi;

const KEY: &[u8] = b"dga:tree";

/// The bench analyzer: loads the forest in setup() and defines one loop per path.
const SCRIPT: &str = r#"
local features = require 'analyzer/dga/features'
local ml = dragonfly.ml
local tables, strings = {}, {}
local conn

function setup()
   assert(ml.load_forest("analyzer/dga/dga-rf.model"))
   local first = true
   for line in io.lines("analyzer/dga/features.tsv") do
      if not first then
         local f = features.extract(line:match("^[^\t]+"))
         if f then
            tables[#tables + 1] = f
            local parts = {}
            for i, name in ipairs(features.NAMES) do parts[i] = name .. ":" .. string.format("%.17g", f[name]) end
            strings[#strings + 1] = table.concat(parts, ",")
         end
      end
      first = false
   end
   conn = assert(hiredis.connect())
end

function loop(msg) end

function bench_direct(n)
   local s, m = 0, #tables
   for i = 1, n do
      s = s + ml.forest_run("dga:tree", tables[i % m + 1], "REGRESSION")
   end
   return s
end

function bench_command(n)
   local m, last = #strings, nil
   for i = 1, n do
      last = conn:command("ML.FOREST.RUN", "dga:tree", strings[i % m + 1], "REGRESSION")
   end
   return type(last) == "table" and last.name or last
end
"#;

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// A `redis-server` on a unix socket in a temporary directory, killed on drop.
struct Redis {
    child: Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocket"])
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (Debian package redis-server)");
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, sock, _dir: dir }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls the global Lua function `name(n)` of the analyzer and returns its result as text.
fn call(c: &mut WorkerCtx, name: &std::ffi::CStr, n: u64) -> String {
    let l = c.analyzers[0].l;
    // SAFETY: the analyzer's state belongs to this thread; the stack is restored.
    unsafe {
        ffi::lua_getfield(l, ffi::LUA_GLOBALSINDEX, name.as_ptr());
        ffi::lua_pushnumber(l, n as f64);
        let r = c.lend(|| ffi::lua_pcall(l, 1, 1, 0));
        let mut len = 0usize;
        let p = ffi::lua_tolstring(l, -1, &mut len);
        let s = if p.is_null() {
            String::new()
        } else {
            String::from_utf8_lossy(std::slice::from_raw_parts(p.cast::<u8>(), len)).into_owned()
        };
        ffi::lua_settop(l, 0 as c_int);
        assert_eq!(r, 0, "{name:?}: {s}");
        s
    }
}

fn bench_ml(crit: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    std::env::set_current_dir(&root).expect("enter scripts/");
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ml_bench.lua");
    std::fs::write(&path, SCRIPT).expect("write the bench script");
    let mut c = WorkerCtx::new(vec!["in".into()], vec!["a".into()], vec!["out".into()], false);
    c.redis.target = RedisTarget::Unix(redis.sock.clone());
    let spec = ScriptSpec {
        role: Role::Analyzer,
        tag: "a".into(),
        path,
        default_analyzer: String::new(),
        default_output: "out".into(),
        pipeline: 1,
        on_error: Default::default(),
    };
    c.open_all(&[], &[spec], true).expect("open the bench script");

    // Dense vectors for the evaluator alone, from the same domains.
    let (layout, attrs) = ml::forest_layout(KEY).expect("the forest is loaded");
    let tsv = std::fs::read_to_string(root.join("analyzer/dga/features.tsv")).expect("features.tsv");
    let mut lines = tsv.lines();
    let header: Vec<&str> = lines.next().expect("header").split('\t').collect();
    let dense: Vec<Vec<f64>> = lines
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            attrs
                .iter()
                .map(|a| match a {
                    AttrKey::Name(n) => {
                        let i = header
                            .iter()
                            .position(|h| h.as_bytes() == &n[..])
                            .expect("a known feature");
                        cols[i].parse().expect("a number")
                    }
                    AttrKey::Slot(_) => 0.0,
                })
                .collect()
        })
        .collect();
    let tree_depths = match &ml::ml_get(KEY).expect("forest").model {
        ml::Model::Forest(f) => f.trees.iter().map(|t| t.depth()).collect::<Vec<_>>(),
        _ => unreachable!(),
    };
    eprintln!(
        "ml bench: forest of {} trees, depths {tree_depths:?}, {} features, {} samples",
        tree_depths.len(),
        attrs.len(),
        dense.len()
    );

    let mut g = crit.benchmark_group("ml_forest_run");
    g.throughput(Throughput::Elements(1));
    g.bench_function("evaluator", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % dense.len();
            black_box(ml::forest_run_dense(KEY, layout, black_box(&dense[i]), Mode::Regression).unwrap())
        })
    });
    g.bench_function("direct_lua_api", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            black_box(call(&mut c, c"bench_direct", iters));
            t.elapsed()
        })
    });
    g.bench_function("hiredis_in_process", |b| {
        ml::set_native(true);
        b.iter_custom(|iters| {
            let t = Instant::now();
            let last = call(&mut c, c"bench_command", iters);
            let e = t.elapsed();
            assert!(last.parse::<f64>().is_ok(), "expected a score, got {last}");
            e
        })
    });
    g.bench_function("hiredis_to_redis_server_unix_socket", |b| {
        ml::set_native(false);
        b.iter_custom(|iters| {
            let t = Instant::now();
            let last = call(&mut c, c"bench_command", iters);
            let e = t.elapsed();
            assert!(
                last.starts_with("ERR unknown command"),
                "expected Redis's own answer, got {last}"
            );
            e
        })
    });
    ml::set_native(true);
    g.finish();
    c.close();
    drop(redis);
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_ml
}
criterion_main!(benches);
