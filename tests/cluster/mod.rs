//! The `hiredis` module against a real local Redis Cluster (three masters, `redis-server
//! --cluster-enabled yes`, `redis-cli --cluster create`): commands reach the master of their
//! key's slot, same-slot multi-key commands work and cross-slot ones are a clear error,
//! pipelined analyzers too, and a resharding while the engine runs (MOVED and ASK) loses no
//! increment.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// Three cluster-enabled `redis-server`s joined into one cluster; stopped on drop.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut ports = Vec::new();
        let mut children = Vec::new();
        for k in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let d = dir.path().join(format!("n{k}"));
            std::fs::create_dir_all(&d).unwrap();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                ])
                .args([
                    "--cluster-config-file",
                    "nodes.conf",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .current_dir(&d)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (Debian package redis-server; .ci/test installs it)");
            children.push(child);
            ports.push(port);
        }
        let c = RedisCluster {
            ports,
            children,
            _dir: dir,
        };
        for &p in &c.ports {
            let t = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
                assert!(t.elapsed() < Duration::from_secs(10), "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let nodes: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        wait_until(
            Duration::from_secs(30),
            "cluster_state:ok",
            || {
                c.ports
                    .iter()
                    .all(|&p| c.cli(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            },
            || c.cli(c.ports[0], &["CLUSTER", "INFO"]),
        );
        c
    }

    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `redis-cli -c` (follows redirections).
    pub fn get(&self, key: &str) -> String {
        let out = Command::new("redis-cli")
            .args(["-c", "-p", &self.ports[0].to_string(), "GET", key])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn seeds(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn node_id(&self, port: u16) -> String {
        self.cli(port, &["CLUSTER", "MYID"]).trim().to_string()
    }
}

/// Counts per key in the cluster (keys spread over every slot range), checks a same-slot MGET,
/// reports what a cross-slot one and an error reply say, and counts again after them.
const COUNTER: &str = r#"
local conn
function setup()
   conn = assert(hiredis.connect())
end
function loop(msg)
   local n = conn:command("INCR", "count:" .. (msg.n % 50))
   conn:command("SET", "{e" .. msg.n .. "}a", "1")
   conn:command("SET", "{e" .. msg.n .. "}b", "2")
   local both = conn:command("MGET", "{e" .. msg.n .. "}a", "{e" .. msg.n .. "}b")
   msg.mget = both[1] .. both[2]
   local r, err = conn:command("MGET", "count:1", "count:2")
   if type(r) == "table" and r.name then msg.cross = r.name else msg.cross = tostring(err or r) end
   -- An error reply (a list command on a string) is the command's, not the connection's.
   local w, werr = conn:command("LPUSH", "count:" .. (msg.n % 50), "x")
   if type(w) == "table" and w.name then msg.wrong = w.name else msg.wrong = tostring(werr or w) end
   conn:command("INCR", "after:" .. (msg.n % 50))
   msg.count = n
   dragonfly.output_event(default_output, msg)
end
"#;

fn cluster_env(c: &RedisCluster, input: &str, analyzer: &str, extra: &str) -> Env {
    Env::simple(
        input,
        analyzer,
        "",
        &format!("redis_cluster = {{ {} }}\n{extra}", c.seeds()),
    )
}

#[test]
fn commands_reach_their_slots_master_and_cross_slot_is_an_error() {
    let c = RedisCluster::start();
    let env = cluster_env(&c, "file://in.json", COUNTER, "");
    let lines: Vec<String> = (0..1000)
        .map(|i| format!("{{\"event_type\":\"flow\",\"n\":{i}}}"))
        .collect();
    env.write_log("in.json", &join_lines(&lines));
    env.run(&["--shards", "2"]).assert_success();
    let out = env.lines("out.json");
    assert_eq!(out.len(), 1000);
    for l in &out {
        let s = String::from_utf8_lossy(l);
        assert!(s.contains("\"mget\":\"12\""), "{s}");
        assert!(
            s.contains("CROSSSLOT") || s.contains("cross-slot"),
            "a cross-slot MGET says so: {s}"
        );
        assert!(s.contains("WRONGTYPE"), "an error reply reaches the script: {s}");
    }
    for k in 0..50 {
        assert_eq!(c.get(&format!("count:{k}")), "20", "count:{k}");
        assert_eq!(
            c.get(&format!("after:{k}")),
            "20",
            "after:{k}: commands after an error reply work"
        );
    }
    assert!(
        env.log_records_of("redis_lost").is_empty(),
        "an error reply drops no connection"
    );
    // The keys live on every master.
    for &p in &c.ports {
        let n: u64 = c.cli(p, &["DBSIZE"]).trim().parse().unwrap();
        assert!(n > 100, "node {p} holds {n} keys");
    }
}

/// Slots move while the engine runs (redis-cli --cluster reshard: ASK during the migration,
/// MOVED after it); a pipelined analyzer keeps counting; no increment is lost.
#[test]
fn a_resharding_while_running_loses_no_increment() {
    let c = RedisCluster::start();
    let analyzer = "function setup() conn = assert(hiredis.connect()) end\nfunction loop(msg)\n  conn:command(\"INCR\", \"r:\" .. (msg.n % 200))\n  dragonfly.output_event(default_output, msg)\nend\n";
    let env = Env::simple(
        "tail://in.json<",
        analyzer,
        "",
        &format!("redis_cluster = {{ {} }}", c.seeds()),
    );
    env.config(
        &std::fs::read_to_string(env.root.join("config/config.lua"))
            .unwrap()
            .replace("default_output = \"out\" }", "default_output = \"out\", pipeline = 8 }"),
    );
    env.write_log("in.json", b"");
    let mut engine = env.spawn(&["--shards", "2"]);
    let total = 20_000;
    let feed = |from: usize, to: usize| {
        let lines: Vec<String> = (from..to)
            .map(|i| format!("{{\"event_type\":\"flow\",\"n\":{i}}}"))
            .collect();
        env.append_log("in.json", &join_lines(&lines));
    };
    feed(0, 5000);
    let written = || env.lines("out.json").len();
    wait_until(
        Duration::from_secs(60),
        "the first events",
        || written() >= 5000,
        || written().to_string(),
    );
    // Move 3000 slots from the first master to the second while events keep coming.
    let (from, to) = (c.node_id(c.ports[0]), c.node_id(c.ports[1]));
    let reshard = Command::new("redis-cli")
        .args(["--cluster", "reshard", &format!("127.0.0.1:{}", c.ports[0])])
        .args([
            "--cluster-from",
            &from,
            "--cluster-to",
            &to,
            "--cluster-slots",
            "3000",
            "--cluster-yes",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for k in 1..4 {
        feed(k * 5000, (k + 1) * 5000);
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = reshard.wait_with_output().unwrap().status;
    assert!(status.success(), "reshard failed");
    wait_until(
        Duration::from_secs(60),
        "every event",
        || written() >= total,
        || written().to_string(),
    );
    engine.signal(libc::SIGTERM);
    let out = engine.wait(RUN_TIMEOUT);
    out.assert_success();
    assert_eq!(out.summary().script_errors, 0, "{}", out.stderr);
    for k in 0..200 {
        assert_eq!(c.get(&format!("r:{k}")), "100", "r:{k}");
    }
}
