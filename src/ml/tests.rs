//! Redis-ML commands against the worked examples of REDIS-ML.md and every error case.

use super::*;

/// Runs a command line (split on spaces, as `command_line` does).
fn cmd(line: &str) -> Reply {
    let args: Vec<&[u8]> = line.split(' ').filter(|a| !a.is_empty()).map(str::as_bytes).collect();
    execute(&args)
}

fn g17(v: f64) -> String {
    let mut out = Vec::new();
    fmt_g17(v, &mut out);
    String::from_utf8(out).unwrap()
}

/// A reply as text: numbers as the bulk strings Redis-ML sends.
fn show(r: &Reply) -> String {
    match r {
        Reply::Ok => "OK".into(),
        Reply::Num(v) => format!("\"{}\"", g17(*v)),
        Reply::Int(n) => n.to_string(),
        Reply::Array(v) => v.iter().map(show).collect::<Vec<_>>().join(", "),
        Reply::Error(e) => e.to_string(),
    }
}

fn check(line: &str, expected: &str) {
    assert_eq!(show(&cmd(line)), expected, "{line}");
}

fn check_err(line: &str, prefix: &str) {
    let got = show(&cmd(line));
    assert!(
        got.starts_with(prefix),
        "{line}: expected an error starting {prefix:?}, got {got:?}"
    );
}

#[test]
fn worked_examples() {
    for t in 0..2 {
        check(
            &format!("ML.FOREST.ADD wf {t} . NUMERIC 1 0.1 .l LEAF 1 .r LEAF 0"),
            "OK",
        );
    }
    check("ML.FOREST.ADD wf 2 . NUMERIC 1 0.1 .l LEAF 0 .r LEAF 1", "OK");
    check("ML.FOREST.RUN wf 1:0.01 CLASSIFICATION", "\"1\"");
    check("ML.FOREST.RUN wf 1:0.2 CLASSIFICATION", "\"0\"");
    check("ML.FOREST.RUN wf 1:0.2", "\"0\"");
    check("ML.FOREST.RUN wf 1:0.01 REGRESSION", &format!("\"{}\"", g17(2.0 / 3.0)));
    check("ML.LINREG.SET wl 2 3 4 5", "OK");
    check("ML.LINREG.PREDICT wl 1 1 1", "\"14\"");
    check("ML.LOGREG.SET wg 0 2 2", "OK");
    check("ML.LOGREG.PREDICT wg -3 1", "\"0.017986209962091559\"");
    check("ML.MATRIX.SET wa 2 3 1 2 5 3 4 6", "OK");
    check("ML.MATRIX.SET wb 3 2 1 2 3 4 7 1", "OK");
    check("ML.MATRIX.MULTIPLY wa wb wab", "OK");
    check("ML.MATRIX.GET wab", "2, 2, \"42\", \"15\", \"57\", \"28\"");
    check("ML.KMEANS.SET wk 2 3 1 1 2 2 5 4", "OK");
    check("ML.KMEANS.PREDICT wk 1 3 5", "1");
}

#[test]
fn matrix_add_scale_and_errors() {
    check("ML.MATRIX.SET ma 2 2 1 2 3 4", "OK");
    check("ML.MATRIX.SET mb 2 2 10 20 30 40", "OK");
    check("ML.MATRIX.ADD ma mb ms", "OK");
    check("ML.MATRIX.GET ms", "2, 2, \"11\", \"22\", \"33\", \"44\"");
    check("ML.MATRIX.SCALE ms 0.5", "OK");
    check("ML.MATRIX.GET ms", "2, 2, \"5.5\", \"11\", \"16.5\", \"22\"");
    check("ML.MATRIX.SET mc 1 2 1 2", "OK");
    check_err("ML.MATRIX.ADD ma mc mx", "ERR cannot add a 2 x 2 matrix and a 1 x 2");
    check_err("ML.MATRIX.MULTIPLY ma mc mx", "ERR cannot multiply");
    check_err(
        "ML.MATRIX.SET md 2 2 1 2 3",
        "ERR a 2 x 2 matrix needs 4 entries, got 3",
    );
    check_err("ML.MATRIX.GET nothing-here", "WRONGTYPE");
    check_err("ML.MATRIX.SET ma x 2 1 2", "ERR invalid row count");
    check_err(
        "ML.MATRIX.SCALE ma",
        "ERR wrong number of arguments for 'ml.matrix.scale'",
    );
    check("ML.LINREG.SET mlin 1 2", "OK");
    check_err("ML.MATRIX.GET mlin", "WRONGTYPE");
    check_err("ML.MATRIX.SCALE mlin 2", "WRONGTYPE");
}

#[test]
fn regression_errors_and_common_length() {
    check("ML.LOGREG.SET rg 1 1 1", "OK");
    // Sum over the common length: the original read one coefficient past the end.
    check(
        "ML.LOGREG.PREDICT rg 0 0 5",
        &format!("\"{}\"", g17(1.0 / (1.0 + (-1.0f64).exp()))),
    );
    // One regression type, as Redis-ML's: a logistic model predicts linearly too.
    check("ML.LINREG.PREDICT rg 1", "\"2\"");
    check_err("ML.LOGREG.PREDICT missing-key 1", "WRONGTYPE");
    check_err(
        "ML.LOGREG.SET rg 1",
        "ERR wrong number of arguments for 'ml.logreg.set'",
    );
    check_err("ML.LOGREG.SET rg 1 abc", "ERR invalid coefficient: 'abc'");
    check_err("ML.LOGREG.PREDICT rg x", "ERR invalid feature: 'x'");
    check_err("ML.KMEANS.SET rk 2 2 1 2 3", "ERR K-means needs k * dims = 2 * 2");
    check("ML.KMEANS.SET rk 2 2 0 0 10 10", "OK");
    check_err("ML.LINREG.SET rk 1 2", "WRONGTYPE");
    check_err("ML.KMEANS.PREDICT rk 1", "ERR K-means model has 2 dimensions, got 1");
    // A tie goes to the lower index.
    check("ML.KMEANS.PREDICT rk 5 5", "0");
    check_err("ML.NOSUCH x", "ERR unknown command 'ML.NOSUCH'");
}

#[test]
fn forest_errors() {
    check_err(
        "ML.FOREST.ADD fe 0 .x LEAF 1",
        "ERR Tree node path containes wrong characters",
    );
    check_err("ML.FOREST.ADD fe 0 . SPLIT 1 2", "ERR Wrong node type 'SPLIT'");
    check_err("ML.FOREST.ADD fe 0 .l LEAF 1", "ERR parent of node '.l' does not exist");
    check_err("ML.FOREST.ADD fe 1 . LEAF 1", "ERR Generic");
    check_err("ML.FOREST.ADD fe 0 . LEAF abc", "ERR invalid leaf value: 'abc'");
    // A split without both children: the key is removed.
    check("ML.FOREST.ADD fe 0 . LEAF 1", "OK");
    check("ML.FOREST.RUN fe 1:1 REGRESSION", "\"1\"");
    check_err(
        "ML.FOREST.ADD fe 0 . NUMERIC 1 0.5 .l LEAF 1",
        "ERR Tree contains null nodes",
    );
    check_err("ML.FOREST.RUN fe 1:1 REGRESSION", "WRONGTYPE");
    check("ML.FOREST.ADD fe 0 . NUMERIC 1 0.5 .l LEAF 1 .r LEAF 2", "OK");
    check_err(
        "ML.FOREST.RUN fe 1 REGRESSION",
        "ERR Feature vector parsing failed: '1'",
    );
    check_err("ML.FOREST.RUN fe :3 REGRESSION", "ERR Feature vector parsing failed");
    check_err("ML.FOREST.RUN fe 1:1 regression", "ERR unknown mode 'regression'");
    check_err("ML.FOREST.RUN fe", "ERR wrong number of arguments for 'ml.forest.run'");
    check("ML.LINREG.SET fl 1 2", "OK");
    check_err("ML.FOREST.ADD fl 0 . LEAF 1", "WRONGTYPE");
    check_err("ML.FOREST.RUN fl 1:1", "WRONGTYPE");
}

/// Arguments as `command()` sends them (binary-safe, empty ones kept): only white space at
/// the end is no argument (a model file's `" \n"`); an empty one elsewhere is an error, not a
/// shift of the others, and keys are taken as they are.
#[test]
fn empty_arguments_are_errors_and_keys_are_exact() {
    let run = |args: &[&str]| show(&execute(&args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>()));
    assert!(
        run(&["ML.LINREG.SET", "el", "", "3", "4"]).starts_with("ERR"),
        "an empty number"
    );
    assert!(run(&["ML.MATRIX.SET", "em", "1", "2", "", "5", "6"]).starts_with("ERR"));
    assert_eq!(run(&["ML.FOREST.ADD", "ef", "0", ".", "LEAF", "1", " \n"]), "OK");
    // An empty sample has no features (all 0); the mode stays the mode.
    assert_eq!(run(&["ML.FOREST.RUN", "ef", "", "REGRESSION"]), "\"1\"");
    // The empty key and a key with spaces are keys of their own.
    assert_eq!(run(&["ML.LINREG.SET", "", "1", "2"]), "OK");
    assert_eq!(run(&["ML.LINREG.SET", " ek ", "5", "1"]), "OK");
    assert_eq!(run(&["ML.LINREG.SET", "ek", "7", "1"]), "OK");
    assert_eq!(run(&["ML.LINREG.PREDICT", "", "1"]), "\"3\"");
    assert_eq!(run(&["ML.LINREG.PREDICT", " ek ", "1"]), "\"6\"");
    assert_eq!(run(&["ML.LINREG.PREDICT", "ek", " 1\n"]), "\"8\"");
}

#[test]
fn forest_paths_types_and_features() {
    // Case-insensitive node type prefixes and path letters; the root character is free.
    check(
        "ML.FOREST.ADD fp 0 x num 2 5 xL leaf 10 xR Cat 3 1:2 xrl LEAF 20 xrr l 30",
        "OK",
    );
    // Slot 2 <= 5: left.
    check("ML.FOREST.RUN fp 2:5 REGRESSION", "\"10\"");
    // Categoric: left iff equal to one of the categories; missing features are 0.
    check("ML.FOREST.RUN fp 2:6,3:2 REGRESSION", "\"20\"");
    check("ML.FOREST.RUN fp 2:6 REGRESSION", "\"30\"");
    // "2.9" and "02" name slot 2 ((int)atof), names match exactly, unknown names are ignored.
    check("ML.FOREST.RUN fp 2.9:6,03:1,zzz:9 REGRESSION", "\"20\"");
    // Re-adding a split keeps its children; re-adding a node as a leaf drops its subtree.
    check("ML.FOREST.ADD fp 0 . NUMERIC 2 7", "OK");
    check("ML.FOREST.RUN fp 2:6 REGRESSION", "\"10\"");
    check("ML.FOREST.ADD fp 0 .r LEAF 40", "OK");
    check("ML.FOREST.RUN fp 2:8 REGRESSION", "\"40\"");
    // Named features.
    check("ML.FOREST.ADD fn 0 . NUMERIC entropy 3.5 .l LEAF 0 .r LEAF 1", "OK");
    check("ML.FOREST.RUN fn entropy:3.6,len:4 REGRESSION", "\"1\"");
    check("ML.FOREST.RUN fn len:4 REGRESSION", "\"0\"");
    // A model file line ends in " \n": the white-space token is not an argument.
    let line = "ML.FOREST.ADD fw 0 . NUMERIC 1 0.5 .l LEAF 0.25 .r LEAF 0.75 \n";
    assert_eq!(show(&cmd(line)), "OK");
    check("ML.FOREST.RUN fw 1:0.1 REGRESSION", "\"0.25\"");
}

#[test]
fn classification_with_stats() {
    // Two trees vote class 0 by leaf value, one tree's STATS favour class 2 strongly.
    check("ML.FOREST.ADD fs 0 . LEAF 0", "OK");
    check("ML.FOREST.ADD fs 1 . LEAF 0", "OK");
    check("ML.FOREST.ADD fs 2 . LEAF 2 STATS 0:0:10", "OK");
    check("ML.FOREST.ADD fs 3 . LEAF 2 STATS 0:0:10", "OK");
    // Totals: class 0 = 2, class 2 = 2: a tie goes to the lowest class.
    check("ML.FOREST.RUN fs 1:0", "\"0\"");
    check("ML.FOREST.ADD fs 4 . LEAF 1 STATS 1:1:2", "OK");
    // class 0: 2.25, class 1: 0.25, class 2: 2.5.
    check("ML.FOREST.RUN fs 1:0", "\"2\"");
}

#[test]
fn g17_matches_printf() {
    for (v, s) in [
        (14.0, "14"),
        (0.01798620996209156, "0.017986209962091559"),
        (0.1, "0.10000000000000001"),
        (1e17, "1e+17"),
        (1.5e-5, "1.5e-05"),
        (2.0 / 3.0, "0.66666666666666663"),
        (123456789012345678.0, "1.2345678901234568e+17"),
        (-2.5, "-2.5"),
        (0.0001, "0.0001"),
        (1e16, "10000000000000000"),
        (f64::INFINITY, "inf"),
    ] {
        assert_eq!(g17(v), s, "{v:e}");
    }
}

#[test]
fn atof_reads_prefixes() {
    for (s, v) in [
        ("1.5", 1.5),
        ("  -2e3x", -2000.0),
        ("abc", 0.0),
        ("3.", 3.0),
        (".5", 0.5),
        ("1e", 1.0),
        ("", 0.0),
        ("0x10", 16.0),
        ("0X1p4", 16.0),
        (" +16", 16.0),
        ("infinity", f64::INFINITY),
    ] {
        assert_eq!(atof(s.as_bytes()), v, "{s:?}");
    }
}

#[test]
fn concurrent_add_while_running_sees_complete_models() {
    // Two versions of a one-tree forest whose every leaf is the version number: a run must
    // give 1 or 2, never a mix or an error.
    let v =
        |k: u32| format!("ML.FOREST.ADD cc 0 . NUMERIC 1 0.5 .l NUMERIC 2 0.5 .ll LEAF {k} .lr LEAF {k} .r LEAF {k}");
    check(&v(1), "OK");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 1000 {
                    let r = forest_run_sample(b"cc", b"1:0.1,2:0.9", Mode::Regression).unwrap();
                    assert!(r == 1.0 || r == 2.0, "{r}");
                    n += 1;
                }
                n
            })
        })
        .collect();
    for i in 0..2000 {
        check(&v(1 + i % 2), "OK");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() >= 1000);
    }
}

/// The fixtures `tests/fixtures/ml/gen.py` wrote with scikit-learn: a model file and
/// samples with sklearn's predictions.
fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ml")
        .join(name)
}

fn samples(name: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let v: Vec<(String, String)> = text
        .lines()
        .map(|l| {
            let (s, e) = l.split_once('\t').expect("sample<TAB>expected");
            (s.to_string(), e.to_string())
        })
        .collect();
    assert_eq!(v.len(), 1000, "{name}");
    v
}

#[test]
fn sklearn_regression_forest_matches() {
    let n = crate::lua::ml::load_forest_file(&fixture("reg.model")).unwrap();
    assert_eq!(n, 5);
    let e = get(b"reg").expect("a model under reg");
    let Model::Forest(f) = &e.model else {
        panic!("not a forest")
    };
    assert!(f.trees.iter().all(|t| t.depth() >= 10), "depths");
    for (sample, expected) in samples("reg.samples") {
        let want: f64 = expected.parse().unwrap();
        let got = forest_run_sample(b"reg", sample.as_bytes(), Mode::Regression).unwrap();
        assert!((got - want).abs() < 1e-9, "{sample}: {got} vs sklearn {want}");
    }
}

#[test]
fn sklearn_classification_forest_matches() {
    assert_eq!(crate::lua::ml::load_forest_file(&fixture("clf.model")).unwrap(), 5);
    let mut classes = std::collections::BTreeSet::new();
    for (sample, expected) in samples("clf.samples") {
        let got = forest_run_sample(b"clf", sample.as_bytes(), Mode::Classification).unwrap();
        assert_eq!(got.to_string(), expected, "{sample}");
        classes.insert(expected);
    }
    assert_eq!(classes.len(), 3, "the samples cover every class");
}
