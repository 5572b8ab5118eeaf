//! Tests of config.lua loading and validation: every problem reported at once, by key.

use std::path::Path;

use super::*;

/// Builds a root with `config.lua` = `src` and the given scripts, and loads it.
fn check(src: &str, scripts: &[&str]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in ["config", "filter", "analyzer"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("config/config.lua"), src).unwrap();
    for s in scripts {
        std::fs::write(root.join(s), "function setup() end function loop(m) end").unwrap();
    }
    Config::load(root, Path::new("/tmp/dfm-logs"), None)
}

/// A script path that is a directory is said to be one, not "not found".
#[test]
fn a_script_that_is_a_directory_is_named_as_one() {
    let src = GOOD.replace("script = \"a.lua\"", "script = \"dir.lua\"");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in ["config", "filter", "analyzer", "analyzer/dir.lua"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("config/config.lua"), src).unwrap();
    std::fs::write(root.join("filter/f.lua"), "function setup() end function loop(m) end").unwrap();
    let e = Config::load(root, Path::new("/tmp/dfm-logs"), None).unwrap_err();
    assert_eq!(
        e.errors,
        vec!["analyzers[1].script: analyzer/dir.lua is a directory, not a script".to_string()]
    );
}

const GOOD: &str = r#"
inputs = { { tag = "eve", uri = "tail://eve.json<", script = "f.lua", default_analyzer = "a" } }
analyzers = { { tag = "a", script = "a.lua", default_analyzer = "", default_output = "out" } }
outputs = { { tag = "out", uri = "file:///tmp/out.json<", ordered = false } }
stats_interval = 5
"#;

#[test]
fn a_good_config_loads_with_resolved_paths() {
    let cfg = check(GOOD, &["filter/f.lua", "analyzer/a.lua"]).unwrap();
    assert_eq!(
        cfg.inputs[0].uri,
        InputUri::Tail {
            path: "/tmp/dfm-logs/eve.json".into(),
            from_start: true
        }
    );
    assert!(cfg.inputs[0].script.ends_with("filter/f.lua"));
    assert_eq!(
        cfg.outputs[0].uri,
        OutputUri::File {
            path: "/tmp/out.json".into(),
            truncate: true
        }
    );
    assert!(!cfg.outputs[0].ordered);
    assert_eq!(cfg.stats_interval, Duration::from_secs(5));
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let src = r#"
inputs = { { tag = "eve", uri = "nats://x", script = "missing.lua" } }
analyzers = { { tag = "a", script = "a.lua", default_analyzer = "", default_output = "nope" },
              { tag = 7, script = "foo.lua", default_analyzer = "", default_output = "" } }
outputs = { { tag = "out", uri = "bogus://y" } }
max_line_bytes = 3
"#;
    let e = check(src, &["analyzer/a.lua"]).unwrap_err();
    let all = e.errors.join("\n");
    for want in [
        "inputs[1].uri: \"nats://x\": this scheme is not available",
        "inputs[1].script: filter/missing.lua not found",
        "inputs[1].default_analyzer: missing",
        "analyzers[2].script: analyzer/foo.lua not found",
        "outputs[1].uri: \"bogus://y\": unknown scheme",
        "max_line_bytes: must be between",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}

#[test]
fn config_lua_cannot_reach_files_or_load_code() {
    let e = check(
        &format!("dofile('/etc/passwd')\n{GOOD}"),
        &["filter/f.lua", "analyzer/a.lua"],
    )
    .unwrap_err();
    assert!(e.errors.join("\n").contains("dofile"), "{:?}", e.errors);
    let e = check(
        &format!("x = loadstring('return 1')\n{GOOD}"),
        &["filter/f.lua", "analyzer/a.lua"],
    )
    .unwrap_err();
    assert!(e.errors.join("\n").contains("loadstring"), "{:?}", e.errors);
}

#[test]
fn redis_timeouts_are_read_and_checked() {
    let cfg = check(
        &format!("redis_timeout_ms = 250\n{GOOD}"),
        &["filter/f.lua", "analyzer/a.lua"],
    )
    .unwrap();
    assert_eq!(cfg.redis_timeout, Duration::from_millis(250));
    assert_eq!(cfg.redis_connect_timeout, Duration::from_secs(2));
    assert_eq!(cfg.redis_host, "managed", "no Redis named means managed Redis");
    assert_eq!(cfg.redis, super::types::RedisTarget::Managed);
    assert_eq!(cfg.redis_timeouts().io, Duration::from_millis(250));
    let tcp = check(
        &format!("redis_host = \"10.0.0.5\"\nredis_port = 6380\n{GOOD}"),
        &["filter/f.lua", "analyzer/a.lua"],
    )
    .unwrap();
    assert_eq!(tcp.redis, super::types::RedisTarget::Tcp("10.0.0.5".into(), 6380));
    let unix = check(
        &format!("redis_host = \"/run/redis.sock\"\nredis_port = 0\n{GOOD}"),
        &["filter/f.lua", "analyzer/a.lua"],
    )
    .unwrap();
    assert_eq!(unix.redis, super::types::RedisTarget::Unix("/run/redis.sock".into()));
    // A port out of range is an error (70000 was taken as 65535 by the scripts, and named as
    // 70000 by `check`).
    for port in ["70000", "0", "-1"] {
        let e = check(
            &format!("redis_host = \"10.0.0.5\"\nredis_port = {port}\n{GOOD}"),
            &["filter/f.lua", "analyzer/a.lua"],
        )
        .unwrap_err();
        assert_eq!(
            e.errors,
            vec![format!("redis_port: must be between 1 and 65535, got {port}")],
            "{port}"
        );
    }
    let e = check(
        &format!("redis_connect_timeout_ms = 0\n{GOOD}"),
        &["filter/f.lua", "analyzer/a.lua"],
    )
    .unwrap_err();
    assert!(
        e.errors.iter().any(|l| l.starts_with("redis_connect_timeout_ms")),
        "{:?}",
        e.errors
    );
}

#[test]
fn builtin_timeouts_and_http_insecure_are_read_and_checked() {
    let scripts = &["filter/f.lua", "analyzer/a.lua"];
    let cfg = check(GOOD, scripts).unwrap();
    assert_eq!(
        (cfg.http_timeout, cfg.http_insecure, cfg.dns_timeout),
        (Duration::from_secs(10), false, Duration::from_secs(5))
    );
    let cfg = check(
        &format!("http_timeout = 2.5\ndns_timeout = 1\nhttp_insecure = true\n{GOOD}"),
        scripts,
    )
    .unwrap();
    assert_eq!(
        (cfg.http_timeout, cfg.http_insecure, cfg.dns_timeout),
        (Duration::from_millis(2500), true, Duration::from_secs(1))
    );
    let e = check(
        &format!("http_timeout = 0\ndns_timeout = -1\nhttp_insecure = \"yes\"\n{GOOD}"),
        scripts,
    )
    .unwrap_err();
    for (key, value) in [
        ("http_timeout", "got 0"),
        ("dns_timeout", "got -1"),
        ("http_insecure", "got string"),
    ] {
        assert!(
            e.errors.iter().any(|l| l.starts_with(key) && l.contains(value)),
            "no error naming {key} and {value:?}: {:?}",
            e.errors
        );
    }
}

/// Issue 15: misspelt settings (top level and in every entry) are errors naming the key and
/// the setting meant; names the file sets that are no setting at all list the known ones.
#[test]
fn unknown_keys_are_errors_with_a_suggestion() {
    let src = r#"
inputs = { { tag = "eve", uri = "tail://eve.json<", script = "f.lua", default_analyzer = "a", scirpt = "x" } }
analyzers = { { tag = "a", script = "a.lua", default_analyzer = "", default_output = "out", pipline = 64 } }
outputs = { { tag = "out", uri = "file:///tmp/out.json<", orderd = false } }
modules = { { tag = "m", module = "/x.so", modul = "y" } }
stats_intervall = 5
http_adress = "127.0.0.1:1"
pipline = 64
totally_unrelated = 1
"#;
    let e = check(src, &["filter/f.lua", "analyzer/a.lua"]).unwrap_err();
    let all = e.errors.join("\n");
    for want in [
        r#"inputs[1].scirpt: unknown setting (did you mean "script"?)"#,
        r#"analyzers[1].pipline: unknown setting (did you mean "pipeline"?)"#,
        r#"outputs[1].orderd: unknown setting (did you mean "ordered"?)"#,
        r#"modules[1].modul: unknown setting (did you mean "module"?)"#,
        r#"stats_intervall: unknown setting (did you mean "stats_interval"?)"#,
        r#"http_adress: unknown setting (did you mean "http_address"?)"#,
        "pipline: unknown setting (known: redis_host,",
        "totally_unrelated: unknown setting (known: redis_host,",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
    assert_eq!(e.errors.len(), 8, "{all}");
    // The original's ignored `responders` stays accepted.
    check(
        &format!("{GOOD}\nresponders = {{}}\n"),
        &["filter/f.lua", "analyzer/a.lua"],
    )
    .unwrap();
}

/// Two inputs, analyzers or outputs with one tag (as the engine compares them, ignoring case)
/// are an error naming both entries.
#[test]
fn duplicate_tags_are_errors() {
    let src = r#"
inputs = { { tag = "eve", uri = "tail://a.json", script = "f.lua", default_analyzer = "a" },
           { tag = "EVE", uri = "tail://b.json", script = "f.lua", default_analyzer = "a" } }
analyzers = { { tag = "a", script = "a.lua", default_analyzer = "", default_output = "out" },
              { tag = "a", script = "a.lua", default_analyzer = "", default_output = "out" } }
outputs = { { tag = "out", uri = "file:///tmp/o1.json" }, { tag = "out", uri = "file:///tmp/o2.json" } }
"#;
    let e = check(src, &["filter/f.lua", "analyzer/a.lua"]).unwrap_err();
    let all = e.errors.join("\n");
    for want in [
        r#"inputs[2].tag: "EVE" is also the tag of inputs[1]"#,
        r#"analyzers[2].tag: "a" is also the tag of analyzers[1]"#,
        r#"outputs[2].tag: "out" is also the tag of outputs[1]"#,
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
    assert_eq!(e.errors.len(), 3, "{all}");
}

/// An entry with an error still declares its tag: a missing script is one error, not also
/// "no analyzer has tag" for everything naming it; and no message shows Rust debug text.
#[test]
fn errors_do_not_cascade_and_show_no_debug_text() {
    let src = r#"
inputs = { { tag = "eve", uri = "tail://a.json", script = "f.lua", default_analyzer = "a" } }
analyzers = { { tag = "a", script = "missing.lua", default_analyzer = "", default_output = "out", pipeline = 0 } }
outputs = { { tag = "out", uri = "file:///tmp/o1.json" } }
"#;
    let e = check(src, &["filter/f.lua"]).unwrap_err();
    let all = e.errors.join("\n");
    assert_eq!(
        e.errors,
        vec![
            "analyzers[1].script: analyzer/missing.lua not found".to_string(),
            "analyzers[1].pipeline: must be an integer from 1 to 4096, got 0".to_string(),
        ],
        "{all}"
    );
}

#[test]
fn gc_pause_is_read_and_checked() {
    let scripts = &["filter/f.lua", "analyzer/a.lua"];
    assert_eq!(check(GOOD, scripts).unwrap().gc_pause, 200);
    assert_eq!(
        check(&format!("gc_pause = 400\n{GOOD}"), scripts).unwrap().gc_pause,
        400
    );
    let e = check(&format!("gc_pause = 50\n{GOOD}"), scripts).unwrap_err();
    assert!(
        e.to_string().contains("gc_pause: must be an integer from 100 to 1000"),
        "{e}"
    );
}

/// `shards` is read and checked, and a reload cannot change it (the workers keep their
/// number and their Lua states).
#[test]
fn shards_are_read_checked_and_fixed_while_running() {
    let scripts = ["filter/f.lua", "analyzer/a.lua"];
    assert_eq!(check(GOOD, &scripts).unwrap().shards, None);
    let one = check(&format!("shards = 1\n{GOOD}"), &scripts).unwrap();
    assert_eq!(one.shards, Some(1));
    for bad in ["0", "1.5", "2000", "\"2\""] {
        let e = check(&format!("shards = {bad}\n{GOOD}"), &scripts).unwrap_err();
        assert!(e.to_string().contains("shards:"), "shards = {bad}: {e}");
    }
    let running = check(GOOD, &scripts).unwrap();
    let two = || check(&format!("shards = 2\nstats_interval = 5\n{GOOD}"), &scripts).unwrap();
    match crate::reconfig::decide(&running, Some(2), || Ok(one), |_| Ok(())) {
        crate::reconfig::Decision::Refused(why) => assert!(why.starts_with("shards changed:"), "{why}"),
        _ => panic!("a reload changing shards was not refused"),
    }
    // With --shards, config.lua's shards does not apply: a reload that also sets it (here
    // with another change) is not refused for it (every reload was).
    match crate::reconfig::decide(&running, None, || Ok(two()), |_| Ok(())) {
        crate::reconfig::Decision::Rebuild(_) => {}
        _ => panic!("a reload with --shards was refused for config.lua's shards"),
    }
    // Nor when it names the number of workers running (the default may be that number).
    match crate::reconfig::decide(&running, Some(2), || Ok(two()), |_| Ok(())) {
        crate::reconfig::Decision::Rebuild(_) => {}
        _ => panic!("a reload setting shards to the running number was refused"),
    }
}

/// A reload cannot move the engine to another Redis, a cluster included: it is refused with
/// the reason (the workers keep the Redis they started with).
#[test]
fn a_reload_to_a_redis_cluster_is_refused() {
    let scripts = ["filter/f.lua", "analyzer/a.lua"];
    let running = check(GOOD, &scripts).unwrap();
    let new = check(&format!("{GOOD}redis_cluster = {{ \"127.0.0.1:7000\" }}\n"), &scripts).unwrap();
    match crate::reconfig::decide(&running, Some(1), || Ok(new), |_| Ok(())) {
        crate::reconfig::Decision::Refused(why) => assert!(why.contains("redis_cluster"), "{why}"),
        _ => panic!("a reload to a cluster was not refused"),
    }
}

/// A reload that changes only a replay's pace goes on where the file was read to.
#[test]
fn a_new_pace_keeps_the_position_of_a_replay() {
    let scripts = ["filter/f.lua", "analyzer/a.lua"];
    let with = |pace: &str| {
        check(
            &GOOD.replace("tail://eve.json<", &format!("file:///tmp/eve.json?pace={pace}")),
            &scripts,
        )
        .unwrap()
    };
    let (slow, fast) = (with("10"), with("100"));
    assert_ne!(slow.inputs[0].uri, fast.inputs[0].uri);
    let mut carry = crate::reconfig::Carry::default();
    carry.reader_stopped(
        &slow.inputs[0],
        crate::source::Stopped {
            file_pos: Some(crate::source::FilePos { offset: 4096, line: 50 }),
            ..Default::default()
        },
    );
    assert_eq!(carry.resume(&fast.inputs[0], &[]).file_pos.offset, 4096);
}

/// A default analyzer or output that names nothing runs, as in the original (the tag is only
/// a string handed to the script), with a warning for each; other dangling tags stay errors.
#[test]
fn dangling_default_tags_are_warnings() {
    let src = r#"
inputs = { { tag = "eve", uri = "tail://a.json", script = "f.lua", default_analyzer = "sink" } }
analyzers = { { tag = "a", script = "a.lua", default_analyzer = "next", default_output = "nowhere" } }
outputs = { { tag = "out", uri = "file:///tmp/o1.json" } }
"#;
    let cfg = check(src, &["filter/f.lua", "analyzer/a.lua"]).unwrap();
    assert_eq!(
        cfg.warnings,
        vec![
            format!("inputs[1].default_analyzer: no analyzer has tag \"sink\"{DANGLING}"),
            format!("analyzers[1].default_analyzer: no analyzer has tag \"next\"{DANGLING}"),
            format!("analyzers[1].default_output: no output has tag \"nowhere\"{DANGLING}"),
        ]
    );
    assert!(
        check(GOOD, &["filter/f.lua", "analyzer/a.lua"])
            .unwrap()
            .warnings
            .is_empty()
    );
    let e = check(
        &src.replace(
            "default_output = \"nowhere\" }",
            "default_output = \"out\", on_error = \"nowhere\" }",
        ),
        &["filter/f.lua", "analyzer/a.lua"],
    )
    .unwrap_err();
    assert!(e.to_string().contains("on_error: no output has tag \"nowhere\""), "{e}");
    // A tag close to one that exists (case aside) names it.
    let typo = src
        .replace("outputs = { { tag = \"out\"", "outputs = { { tag = \"Annotated\"")
        .replace("default_output = \"nowhere\"", "default_output = \"annotatd\"");
    let cfg = check(&typo, &["filter/f.lua", "analyzer/a.lua"]).unwrap();
    assert_eq!(
        cfg.warnings[2],
        format!("analyzers[1].default_output: no output has tag \"annotatd\" (did you mean \"Annotated\"?){DANGLING}")
    );
    let e = check(
        &typo.replace(
            "default_output = \"annotatd\" }",
            "default_output = \"Annotated\", on_error = \"anotated\" }",
        ),
        &["filter/f.lua", "analyzer/a.lua"],
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("no output has tag \"anotated\" (did you mean \"Annotated\"?)"),
        "{e}"
    );
}

/// An entry under a name or after a gap in `inputs`, `analyzers` or `outputs` is not in the
/// list: an error naming it (it was ignored without a word: an input never read).
#[test]
fn entries_outside_the_list_are_errors() {
    let scripts = ["filter/f.lua", "analyzer/a.lua"];
    let named = GOOD.replace(
        "inputs = { {",
        "inputs = { second = { tag = \"second\", uri = \"tail://b.json\", script = \"f.lua\", default_analyzer = \"a\" }, {",
    );
    let e = check(&named, &scripts).unwrap_err();
    assert_eq!(e.errors.len(), 1, "{:?}", e.errors);
    assert!(
        e.errors[0].starts_with("inputs.second: this entry is not in the list and would be ignored"),
        "{:?}",
        e.errors
    );
    let gap = GOOD.replace(
        "ordered = false } }",
        "ordered = false }, [3] = { tag = \"more\", uri = \"file:///tmp/more.json\" } }",
    );
    let e = check(&gap, &scripts).unwrap_err();
    assert_eq!(e.errors.len(), 1, "{:?}", e.errors);
    assert!(
        e.errors[0].starts_with("outputs[3]: this entry is not in the list"),
        "{:?}",
        e.errors
    );
    assert!(e.errors[0].contains("(entries 1 to 1)"), "{:?}", e.errors);
    // Keys written out in order are a list.
    let explicit = GOOD.replace("analyzers = { {", "analyzers = { [1] = {");
    check(&explicit, &scripts).unwrap();
}

/// An output that writes the file an input reads is refused: a truncating one emptied the
/// Suricata log at the start, an appending one fed its records back to the input without end.
#[test]
fn an_output_writing_an_inputs_file_is_refused() {
    let scripts = ["filter/f.lua", "analyzer/a.lua"];
    let own = GOOD.replace("file:///tmp/out.json<", "file://eve.json<");
    let e = check(&own, &scripts).unwrap_err();
    assert_eq!(e.errors.len(), 1, "{:?}", e.errors);
    assert!(
        e.errors[0].starts_with("outputs[1].uri: /tmp/dfm-logs/eve.json is the file inputs[1] (eve) reads: the output would empty it at the start"),
        "{:?}",
        e.errors
    );
    // A wildcard input that would match the output's file.
    let glob = GOOD
        .replace("tail://eve.json<", "tail:///tmp/dfm-glob-test/eve.*.json")
        .replace("file:///tmp/out.json<", "file:///tmp/dfm-glob-test/eve.out.json");
    let e = check(&glob, &scripts).unwrap_err();
    assert!(
        e.errors
            .iter()
            .any(|l| l.contains("feed its own records back to it without end")),
        "{:?}",
        e.errors
    );
    // Beside it, under another name: fine.
    check(&GOOD.replace("file:///tmp/out.json<", "file://eve.json.out"), &scripts).unwrap();
}

/// Two outputs writing one file, or an output writing the engine's own log or stats file, are
/// refused: their writes tore each other's lines, and the run said it wrote them all.
#[test]
fn outputs_sharing_a_file_are_refused() {
    let scripts = ["filter/f.lua", "analyzer/a.lua"];
    let two = GOOD.replace(
        r#"outputs = { { tag = "out", uri = "file:///tmp/out.json<", ordered = false } }"#,
        r#"outputs = { { tag = "out", uri = "file:///tmp/out.json<" }, { tag = "copy", uri = "zfile:///tmp/x/../out.json" } }"#,
    );
    let e = check(&two, &scripts).unwrap_err();
    assert!(
        e.errors.iter().any(|l| l
            == "outputs[2].uri: /tmp/x/../out.json is also the file of outputs[1] (out): two outputs writing one file tear each other's lines"
            || l == "outputs[2].uri: /tmp/out.json is also the file of outputs[1] (out): two outputs writing one file tear each other's lines"),
        "{:?}",
        e.errors
    );
    for (uri, what) in [
        ("file://dragonfly-mle.log<", "{log}"),
        ("file://dragonfly-mle-stats.log", "{stats}"),
    ] {
        let own = GOOD.replace("file:///tmp/out.json<", uri);
        let e = check(&own, &scripts).unwrap_err();
        assert!(
            e.errors
                .iter()
                .any(|l| l.ends_with(&format!("is the engine's own {what} file"))),
            "{uri}: {:?}",
            e.errors
        );
    }
    // Through a symbolic link to a file not made yet (the engine would make it): the link's
    // target; an input's file too.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::os::unix::fs::symlink("o.json", dir.path().join("link.json")).unwrap();
    std::os::unix::fs::symlink("in.json", dir.path().join("feed.json")).unwrap();
    let linked = GOOD.replace(
        r#"outputs = { { tag = "out", uri = "file:///tmp/out.json<", ordered = false } }"#,
        &format!(r#"outputs = {{ {{ tag = "out", uri = "file://{d}/o.json" }}, {{ tag = "copy", uri = "file://{d}/link.json" }} }}"#),
    );
    let e = check(&linked, &scripts).unwrap_err();
    assert!(
        e.errors
            .iter()
            .any(|l| l.contains("is also the file of outputs[1] (out)")),
        "{:?}",
        e.errors
    );
    let feed = GOOD
        .replace("tail://eve.json<", &format!("tail://{d}/in.json"))
        .replace("file:///tmp/out.json<", &format!("file://{d}/feed.json"));
    let e = check(&feed, &scripts).unwrap_err();
    assert!(
        e.errors.iter().any(|l| l.contains("feed its own records back")),
        "{:?}",
        e.errors
    );
    // A Parquet output's index.
    let index = GOOD.replace(
        r#"outputs = { { tag = "out", uri = "file:///tmp/out.json<", ordered = false } }"#,
        &format!(r#"outputs = {{ {{ tag = "pq", uri = "parquet://{d}/pq/ev" }}, {{ tag = "copy", uri = "file://{d}/pq/ev.index.jsonl" }} }}"#),
    );
    let e = check(&index, &scripts).unwrap_err();
    assert!(
        e.errors.iter().any(|l| l.contains("is the index of outputs[1] (pq)")),
        "{:?}",
        e.errors
    );
    // Two files side by side: fine.
    let side = GOOD.replace(
        r#"outputs = { { tag = "out", uri = "file:///tmp/out.json<", ordered = false } }"#,
        r#"outputs = { { tag = "out", uri = "file:///tmp/out.json<" }, { tag = "copy", uri = "file:///tmp/out2.json" } }"#,
    );
    check(&side, &scripts).unwrap();
}

/// An empty tag is an error: nothing can name the entry (`""` means "none" where a tag is
/// named).
#[test]
fn an_empty_tag_is_an_error() {
    let src = GOOD.replace("{ tag = \"a\", script", "{ tag = \"\", script");
    let e = check(&src, &["filter/f.lua", "analyzer/a.lua"]).unwrap_err();
    assert!(
        e.errors
            .iter()
            .any(|l| l.starts_with("analyzers[1].tag: must not be empty")),
        "{:?}",
        e.errors
    );
}
