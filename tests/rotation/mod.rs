//! `tail://` checkpoints that cannot skip: rotations while stopped and while running (two
//! within one poll, compressed, the inode reused), truncation followed by regrowth between two
//! polls, and a full disk. Every scenario must give each input line exactly once (at least
//! once after a `kill -9`), in order.

use std::io::Write;
use std::time::Duration;

use crate::util::*;

/// A tail input with a checkpoint in `run/` and an appending output (a restart adds to it).
fn tail_env(poll_ms: u64) -> (Env, String) {
    let extra = format!("tail_poll_ms = {poll_ms}");
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", &extra);
    env.config(&simple_config("tail://in.json<", "", &extra).replace("out.json<", "out.json"));
    let run = env.dir.path().join("run").to_string_lossy().into_owned();
    (env, run)
}

fn ns(env: &Env) -> Vec<u64> {
    env.lines("out.json")
        .iter()
        .map(|l| u64_member(l, "n").unwrap_or_else(|| panic!("not an event: {}", show(l))))
        .collect()
}

/// Waits until `out.json` has `n` lines, lets the engine run a little longer (to catch
/// extra lines), then stops it with SIGTERM.
fn stop_after(env: &Env, engine: &mut Running, n: usize) {
    wait_until(
        Duration::from_secs(60),
        &format!("{n} lines"),
        || env.lines("out.json").len() >= n,
        || format!("{} lines", env.lines("out.json").len()),
    );
    std::thread::sleep(Duration::from_millis(400));
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30)).assert_success();
}

/// Waits until `out.json` has `n` lines.
fn wait_lines(env: &Env, n: usize) {
    wait_until(
        Duration::from_secs(60),
        &format!("{n} lines"),
        || env.lines("out.json").len() >= n,
        || format!("{} lines", env.lines("out.json").len()),
    );
}

fn assert_each_once(env: &Env, total: usize) {
    let got = ns(env);
    let want: Vec<u64> = (0..total as u64).collect();
    if got != want {
        let missing = want.iter().filter(|n| !got.contains(n)).count();
        panic!(
            "{} lines, {missing} of {total} missing, first lines {:?}, log: {:?}",
            got.len(),
            &got[..got.len().min(5)],
            env.log_records()
        );
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// While stopped: the file grows, is copied to `in.json.1.gz` and rewritten in place (same
/// inode) with more lines than the checkpoint's offset. The rest of the old content comes from
/// the compressed copy, then the new content from its start.
#[test]
fn a_compressed_rotation_and_a_reused_inode_are_not_confused() {
    let (env, run) = tail_env(20);
    env.write_log("in.json", &numbered_lines(0, 10_000));
    let mut engine = env.spawn(&["--run-dir", &run]);
    stop_after(&env, &mut engine, 10_000);
    let ino = |p: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).unwrap().ino()
    };
    let before = ino(&env.log("in.json"));
    env.append_log("in.json", &numbered_lines(10_000, 15_000));
    std::fs::write(
        env.log("in.json.1.gz"),
        gzip(&std::fs::read(env.log("in.json")).unwrap()),
    )
    .unwrap();
    // Rewritten in place: the same inode, new content longer than the old offset.
    env.write_log("in.json", &numbered_lines(15_000, 27_000));
    assert_eq!(ino(&env.log("in.json")), before, "the test needs the inode kept");
    let mut engine = env.spawn(&["--run-dir", &run]);
    stop_after(&env, &mut engine, 27_000);
    assert_each_once(&env, 27_000);
}

/// While stopped: the file grows and is rotated, and its compressed twin is half written
/// (`gzip` still at work: it removes the plain file once the copy is whole). The rest of the
/// file comes from the plain file: the half-written copy, when taken for it, ended in a
/// `read_error` and the rest of the file was lost.
#[test]
fn a_compressed_twin_still_being_written_is_not_read_for_its_plain_file() {
    for name in ["in.json.1", "in.json-1", "in.json_1"] {
        let (env, run) = tail_env(20);
        env.write_log("in.json", &numbered_lines(0, 10_000));
        let mut engine = env.spawn(&["--run-dir", &run]);
        stop_after(&env, &mut engine, 10_000);
        env.append_log("in.json", &numbered_lines(10_000, 15_000));
        // The copy's name made first: listed before the plain file where a directory lists
        // its names in the order they were made (ext4 with few files).
        let twin = env.log(&format!("{name}.gz"));
        let whole = gzip(&std::fs::read(env.log("in.json")).unwrap());
        std::fs::write(&twin, &whole[..whole.len() * 3 / 4]).unwrap();
        std::fs::rename(env.log("in.json"), env.log(name)).unwrap();
        // As `gzip` does, the copy has the file's modification time.
        let mtime = std::fs::metadata(env.log(name)).unwrap().modified().unwrap();
        std::fs::File::options()
            .write(true)
            .open(&twin)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        env.write_log("in.json", &numbered_lines(15_000, 20_000));
        let mut engine = env.spawn(&["--run-dir", &run]);
        stop_after(&env, &mut engine, 20_000);
        assert_each_once(&env, 20_000);
        let errors = env.log_records_of("read_error");
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
}

/// After lines 0..10,000 were read: 3,000 more, then in.json -> in.json.1 and a new file of
/// 4,000, then .1 -> .2, in.json -> .1, and a new file of 3,000 (lines up to 20,000).
fn rotate_twice(env: &Env) {
    env.append_log("in.json", &numbered_lines(10_000, 13_000));
    std::fs::rename(env.log("in.json"), env.log("in.json.1")).unwrap();
    env.write_log("in.json", &numbered_lines(13_000, 17_000));
    std::fs::rename(env.log("in.json.1"), env.log("in.json.2")).unwrap();
    std::fs::rename(env.log("in.json"), env.log("in.json.1")).unwrap();
    env.write_log("in.json", &numbered_lines(17_000, 20_000));
}

/// Two rotations while stopped (in.json -> .1 -> .2): the rest of .2, all of .1, then the new
/// file.
#[test]
fn two_rotations_while_stopped_are_both_read() {
    let (env, run) = tail_env(20);
    env.write_log("in.json", &numbered_lines(0, 10_000));
    let mut engine = env.spawn(&["--run-dir", &run]);
    stop_after(&env, &mut engine, 10_000);
    rotate_twice(&env);
    let mut engine = env.spawn(&["--run-dir", &run]);
    stop_after(&env, &mut engine, 20_000);
    assert_each_once(&env, 20_000);
}

/// Two rotations while stopped, the second compressing the checkpointed file with a fresh
/// modification time (`gzip -c in.json.1 > in.json.2.gz`, as a `compresscmd` does): the
/// compressed copy is younger than the file rotated after it, which was skipped without a
/// word (its 4,000 lines lost); now the files newer than the checkpoint's save are read.
#[test]
fn a_compressed_copy_with_a_fresh_time_does_not_hide_the_next_rotation() {
    let (env, run) = tail_env(20);
    env.write_log("in.json", &numbered_lines(0, 10_000));
    let mut engine = env.spawn(&["--run-dir", &run]);
    stop_after(&env, &mut engine, 10_000);
    // The checkpoint's save time is in whole seconds: the next file is written after it.
    std::thread::sleep(Duration::from_millis(1100));
    env.append_log("in.json", &numbered_lines(10_000, 13_000));
    std::fs::rename(env.log("in.json"), env.log("in.json.1")).unwrap();
    env.write_log("in.json", &numbered_lines(13_000, 17_000));
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(
        env.log("in.json.2.gz"),
        gzip(&std::fs::read(env.log("in.json.1")).unwrap()),
    )
    .unwrap();
    std::fs::remove_file(env.log("in.json.1")).unwrap();
    std::fs::rename(env.log("in.json"), env.log("in.json.1")).unwrap();
    env.write_log("in.json", &numbered_lines(17_000, 20_000));
    let mut engine = env.spawn(&["--run-dir", &run]);
    stop_after(&env, &mut engine, 20_000);
    assert_each_once(&env, 20_000);
}

/// `create` + `compress` rotation while stopped, with `gzip`'s own file times (a compressed
/// file keeps the time of its last write), in the second the checkpoint was saved: the older
/// generation's compressed file, written before the save but in its second, was read again
/// (the save time was kept in whole seconds). The times are set to make that second exact: the
/// older file at S + 0.4 s, the checkpointed one at S + 0.5 s, the save at S + 0.6 s.
#[test]
fn a_compressed_older_generation_written_in_the_saves_second_is_not_read_again() {
    let (env, run) = tail_env(20);
    env.write_log("in.json", &numbered_lines(0, 3_000));
    let mut engine = env.spawn(&["--run-dir", &run]);
    stop_after(&env, &mut engine, 3_000);
    std::fs::rename(env.log("in.json"), env.log("in.json.1")).unwrap();
    env.write_log("in.json", &numbered_lines(3_000, 5_000));
    let mut engine = env.spawn(&["--run-dir", &run]);
    stop_after(&env, &mut engine, 5_000);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let s = now - 100;
    let at = |ms: u64| std::time::UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
    let compress = |from: &str, to: &str, ms: u64| {
        std::fs::write(env.log(to), gzip(&std::fs::read(env.log(from)).unwrap())).unwrap();
        std::fs::remove_file(env.log(from)).unwrap();
        let f = std::fs::File::options().write(true).open(env.log(to)).unwrap();
        f.set_modified(at(ms)).unwrap();
    };
    compress("in.json.1", "in.json.2.gz", 400);
    compress("in.json", "in.json.1.gz", 500);
    env.write_log("in.json", &numbered_lines(5_000, 6_000));
    // The checkpoint as saved at S + 0.6 s.
    let ckpt = tail_checkpoints(run.as_ref())
        .into_iter()
        .next()
        .expect("a tail checkpoint");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&ckpt).unwrap()).unwrap();
    let t = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{s}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    v["time"] = serde_json::Value::from(String::from_utf8(t.stdout).unwrap().trim());
    v["time_ns"] = serde_json::Value::from(s * 1_000_000_000 + 600_000_000);
    std::fs::write(&ckpt, format!("{v}\n")).unwrap();
    let mut engine = env.spawn(&["--run-dir", &run]);
    stop_after(&env, &mut engine, 6_000);
    assert_each_once(&env, 6_000);
}

/// A checkpoint saved while the followed file was empty (nothing read, no first bytes known),
/// then, while stopped, lines written to it and one rotation (copytruncate; create + compress,
/// the new file made first; a plain rename), then more lines: the lines written before the
/// rotation were lost without a word (crash audit: only the current file was read).
#[test]
fn a_rotation_while_stopped_after_a_checkpoint_on_an_empty_file_loses_nothing() {
    for style in ["copytruncate", "compress", "rename"] {
        let (env, run) = checkpointed_empty_then_1000_lines();
        match style {
            "copytruncate" => {
                std::fs::copy(env.log("in.json"), env.log("in.json.1")).unwrap();
                std::fs::File::options()
                    .write(true)
                    .open(env.log("in.json"))
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                env.append_log("in.json", &numbered_lines(1_000, 1_500));
            }
            "compress" => {
                std::fs::rename(env.log("in.json"), env.log("in.json.1")).unwrap();
                env.write_log("in.json", &numbered_lines(1_000, 1_500));
                let bytes = std::fs::read(env.log("in.json.1")).unwrap();
                std::fs::write(env.log("in.json.1.gz"), gzip(&bytes)).unwrap();
                std::fs::remove_file(env.log("in.json.1")).unwrap();
            }
            _ => {
                std::fs::rename(env.log("in.json"), env.log("in.json.1")).unwrap();
                env.write_log("in.json", &numbered_lines(1_000, 1_500));
            }
        }
        let mut engine = env.spawn(&["--run-dir", &run]);
        stop_after(&env, &mut engine, 1_500);
        assert_each_once(&env, 1_500);
    }
}

/// A checkpoint at the start of a file still empty, then, while stopped, lines written to it
/// and a rename (logrotate's `create`), with the new file still empty at the restart and the
/// writer going on in the renamed file until it reopens the path. The renamed file was read
/// once to its end at the restart: the lines written to it after were lost without a word
/// (10-70 events in 4 of 36 runs of a dateext audit with `kill -9` restarts). It is followed
/// until the new file has data.
#[test]
fn a_file_renamed_while_stopped_after_a_checkpoint_on_it_empty_is_followed_until_the_new_one_has_data() {
    let (env, run) = checkpointed_empty_then_1000_lines();
    std::fs::rename(env.log("in.json"), env.log("in.json.1")).unwrap();
    env.write_log("in.json", b"");
    let mut engine = env.spawn(&["--run-dir", &run]);
    wait_lines(&env, 1_000);
    // The writer goes on in the renamed file, then reopens the path.
    env.append_log("in.json.1", &numbered_lines(1_000, 1_200));
    std::thread::sleep(Duration::from_millis(300));
    env.append_log("in.json", &numbered_lines(1_200, 1_500));
    stop_after(&env, &mut engine, 1_500);
    assert_each_once(&env, 1_500);
}

/// A checkpoint saved on `in.json` while empty (an engine started and stopped), then lines
/// 0..1,000 written to it, after the save.
fn checkpointed_empty_then_1000_lines() -> (Env, String) {
    let (env, run) = tail_env(20);
    env.write_log("in.json", b"");
    let mut engine = env.spawn(&["--run-dir", &run]);
    stop_after(&env, &mut engine, 0);
    std::thread::sleep(Duration::from_millis(20));
    env.append_log("in.json", &numbered_lines(0, 1_000));
    (env, run)
}

/// Two rotations within one poll while running (a 2 s poll): the middle file is read too.
#[test]
fn two_rotations_within_one_poll_are_both_read() {
    let (env, run) = tail_env(2000);
    env.write_log("in.json", &numbered_lines(0, 10_000));
    let mut engine = env.spawn(&["--run-dir", &run]);
    wait_lines(&env, 10_000);
    rotate_twice(&env);
    stop_after(&env, &mut engine, 20_000);
    assert_each_once(&env, 20_000);
}

/// A rotation while the engine is still finishing the file of the previous rotation: the old
/// file gets a large chunk and is rotated at once with a new file after it, and 500 ms later
/// (while the old file is still being read) that new file is rotated too. The file in the
/// middle must be read (it was taken for "the file at the path" when the first rotation was
/// seen, and skipped).
#[test]
fn a_rotation_while_the_previous_one_is_finished_loses_nothing() {
    // A 300 ms poll: the engine looks at the path (and sees the first new file) before it
    // reads the chunk, which then takes seconds (the workers' pace).
    let (env, run) = tail_env(300);
    env.write_log("in.json", &numbered_lines(0, 100));
    let mut engine = env.spawn(&["--run-dir", &run]);
    wait_lines(&env, 100);
    env.append_log("in.json", &numbered_lines(100, 150_100));
    std::fs::rename(env.log("in.json"), env.log("in.json.1")).unwrap();
    env.write_log("in.json", &numbered_lines(150_100, 150_200));
    std::thread::sleep(Duration::from_millis(500));
    std::fs::rename(env.log("in.json.1"), env.log("in.json.2")).unwrap();
    std::fs::rename(env.log("in.json"), env.log("in.json.1")).unwrap();
    env.write_log("in.json", &numbered_lines(150_200, 150_300));
    stop_after(&env, &mut engine, 150_300);
    assert_each_once(&env, 150_300);
}

/// Truncated and rewritten past the old offset between two polls (a 2 s poll): the new
/// content is read from its start.
#[test]
fn truncation_and_regrowth_between_polls_is_seen() {
    let (env, run) = tail_env(2000);
    env.write_log("in.json", &numbered_lines(0, 10_000));
    let mut engine = env.spawn(&["--run-dir", &run]);
    wait_lines(&env, 10_000);
    env.write_log("in.json", &numbered_lines(10_000, 25_000));
    stop_after(&env, &mut engine, 25_000);
    assert_each_once(&env, 25_000);
}

/// Rotation as logrotate's `create` does it under Suricata (its own recipe): the file is
/// renamed and an empty one made at the path at once, while the writer goes on in the renamed
/// file until its HUP makes it reopen the path. What it wrote to the old file after the new
/// one appeared must be read (it was lost: the old file was finished as soon as the new one
/// was seen).
#[test]
fn a_writer_that_goes_on_in_the_renamed_file_until_it_reopens_loses_nothing() {
    let (env, run) = tail_env(100);
    let mut writer = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env.log("in.json"))
        .unwrap();
    writer.write_all(&numbered_lines(0, 100)).unwrap();
    let mut engine = env.spawn(&["--run-dir", &run]);
    wait_lines(&env, 100);
    std::fs::rename(env.log("in.json"), env.log("in.json.1")).unwrap();
    std::fs::File::create(env.log("in.json")).unwrap();
    // Several polls see the new, empty file while the writer still writes the old one.
    std::thread::sleep(Duration::from_millis(600));
    for n in (100..200).step_by(10) {
        writer.write_all(&numbered_lines(n, n + 10)).unwrap();
        std::thread::sleep(Duration::from_millis(60));
    }
    // The HUP: the writer reopens the path.
    drop(writer);
    env.append_log("in.json", &numbered_lines(200, 300));
    stop_after(&env, &mut engine, 300);
    assert_each_once(&env, 300);
}

/// The same across a restart: the file is renamed and a new empty one made while the engine
/// is stopped, and the writer goes on in the renamed file after the engine started again,
/// until it reopens the path. The restart read the renamed file to its end once and followed
/// the new one: what the writer added after was lost (crash audit, under `kill -9`).
#[test]
fn a_writer_that_goes_on_in_the_file_renamed_while_stopped_loses_nothing() {
    let (env, run) = tail_env(50);
    env.write_log("in.json", &numbered_lines(0, 100));
    let mut engine = env.spawn(&["--run-dir", &run]);
    stop_after(&env, &mut engine, 100);
    let mut writer = std::fs::OpenOptions::new()
        .append(true)
        .open(env.log("in.json"))
        .unwrap();
    writer.write_all(&numbered_lines(100, 150)).unwrap();
    std::fs::rename(env.log("in.json"), env.log("in.json.1")).unwrap();
    std::fs::File::create(env.log("in.json")).unwrap();
    let mut engine = env.spawn(&["--run-dir", &run]);
    wait_lines(&env, 150);
    // Several polls see the new, empty file while the writer still writes the old one.
    std::thread::sleep(Duration::from_millis(300));
    writer.write_all(&numbered_lines(150, 200)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(writer);
    env.append_log("in.json", &numbered_lines(200, 300));
    stop_after(&env, &mut engine, 300);
    assert_each_once(&env, 300);
}

/// `copytruncate` under a writer that keeps its own offset (Suricata's `append: no`): each
/// truncation leaves NULs up to the writer's offset. From the second rotation on, the file's
/// first bytes are those NULs before and after, so only the NULs found where data was being
/// read tell the truncation; the events not read yet are in the newest copy (they were lost,
/// reported as a hole). The engine is stopped (SIGSTOP) while the writer adds the events it
/// will not have read at the copy; at the last stop the file is cut twice (the generation
/// between the two cuts, in the newer copy only, was lost).
#[test]
fn copytruncate_under_a_writer_at_its_own_offset_loses_nothing_at_every_rotation() {
    let (env, run) = tail_env(100);
    let path = env.log("in.json");
    let mut writer = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .unwrap();
    writer.write_all(&numbered_lines(0, 100)).unwrap();
    let mut engine = env.spawn(&["--run-dir", &run]);
    let mut total = 100;
    // logrotate's copytruncate: the older copies renamed up, a copy made, the file cut.
    let mut copies = 0usize;
    let copytruncate = |copies: &mut usize| {
        for k in (1..=*copies).rev() {
            std::fs::rename(env.log(&format!("in.json.{k}")), env.log(&format!("in.json.{}", k + 1))).unwrap();
        }
        std::fs::copy(&path, env.log("in.json.1")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        *copies += 1;
    };
    // Three stops with one rotation each, then one with two (the engine behind by two
    // rotations: the generation between them is only in the second copy).
    for cuts in [1, 1, 1, 2] {
        wait_until(
            Duration::from_secs(60),
            &format!("{total} lines"),
            || env.lines("out.json").len() >= total,
            || format!("{} lines, log: {:?}", env.lines("out.json").len(), env.log_records()),
        );
        std::thread::sleep(Duration::from_millis(300));
        engine.signal(libc::SIGSTOP);
        for _ in 0..cuts {
            // Written while the engine cannot read: in the copy only.
            writer.write_all(&numbered_lines(total, total + 50)).unwrap();
            copytruncate(&mut copies);
            // The writer goes on at its offset: NULs up to it, then the new events.
            writer.write_all(&numbered_lines(total + 50, total + 100)).unwrap();
            total += 100;
        }
        engine.signal(libc::SIGCONT);
    }
    stop_after(&env, &mut engine, total);
    assert_each_once(&env, total);
}

/// A full disk (a file size limit on the engine): the checkpoint stays before the first event
/// not written. After a `kill -9` in that state and a restart without the limit, every event
/// is in the output at least once, and what is repeated is bounded.
#[test]
fn a_checkpoint_never_passes_an_event_that_was_not_written() {
    let (env, run) = tail_env(20);
    let total = 6000;
    let input = numbered_lines(0, total);
    env.write_log("in.json", &input);
    let limit: u64 = 200 * 1024;
    let mut cmd = env.command(&["--run-dir", &run]);
    with_file_size_limit(&mut cmd, limit);
    let mut engine = spawn_in(cmd, env.dir.path(), "fsize");
    wait_until(
        Duration::from_secs(60),
        "the output to fill up",
        || !env.log_records_of("output_waiting").is_empty(),
        String::new,
    );
    // Give the checkpoint time to move if it were going to.
    std::thread::sleep(Duration::from_millis(800));
    let state = std::fs::read_dir(&run)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| std::fs::read(e.path()).unwrap());
    let offset = state.as_deref().and_then(|s| u64_member(s, "offset")).unwrap_or(0);
    let written = env.lines("out.json").len();
    let checkpointed = input[..offset as usize].iter().filter(|&&c| c == b'\n').count();
    assert!(written < total, "the limit did not stop the output");
    assert!(
        checkpointed <= written,
        "the checkpoint passed {checkpointed} lines but only {written} were written"
    );
    engine.signal(libc::SIGKILL);
    let _ = engine.wait(Duration::from_secs(10));
    let mut engine = env.spawn(&["--run-dir", &run]);
    stop_after(&env, &mut engine, total);
    let got = ns(&env);
    for n in 0..total as u64 {
        assert!(got.contains(&n), "event {n} lost");
    }
    assert!(got.len() - total <= written, "{} lines for {total} events", got.len());
}

/// `tail://DIR/eve.*.json<` (Suricata's `threaded: true` output): each matching file is read
/// by its own reader, in its own order; a file that appears later is picked up; a restart
/// resumes every file at its own checkpoint (nothing repeated, nothing lost).
#[test]
fn a_wildcard_tail_reads_every_file_and_picks_up_new_ones() {
    let env = Env::new();
    let dir = env.log("suricata");
    std::fs::create_dir_all(&dir).unwrap();
    let uri = format!("tail://{}/eve.*.json<", dir.display());
    env.config(&simple_config(&uri, "", "").replace("file://out.json<", "file://out.json"));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", ANALYZER_PASS);
    let line = |file: usize, i: usize| format!("{{\"event_type\":\"flow\",\"file\":{file},\"n\":{i}}}");
    let write = |file: usize, from: usize, to: usize| {
        let lines: Vec<String> = (from..to).map(|i| line(file, i)).collect();
        env.append_log(&format!("suricata/eve.{file}.json"), &join_lines(&lines));
    };
    write(1, 0, 500);
    write(2, 0, 500);
    std::fs::write(dir.join("eve.json"), "{\"not\":\"matched\"}\n").unwrap();
    let records = || -> Vec<(u64, u64)> {
        env.lines("out.json")
            .iter()
            .map(|l| (u64_member(l, "file").unwrap(), u64_member(l, "n").unwrap()))
            .collect()
    };
    let mut engine = env.spawn(&["--shards", "2"]);
    wait_until(
        Duration::from_secs(30),
        "both files",
        || records().len() >= 1000,
        || format!("{}", records().len()),
    );
    // A third thread's file appears; the first file grows.
    write(3, 0, 300);
    write(1, 500, 700);
    wait_until(
        Duration::from_secs(30),
        "the new file",
        || records().len() >= 1500,
        || format!("{}", records().len()),
    );
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    // A restart resumes each file where it was.
    write(2, 500, 600);
    let mut engine = env.spawn(&["--shards", "2"]);
    wait_until(
        Duration::from_secs(30),
        "the restart",
        || records().len() >= 1600,
        || format!("{}", records().len()),
    );
    std::thread::sleep(Duration::from_millis(500));
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    let got = records();
    assert_eq!(got.len(), 1600, "each event once");
    for (file, count) in [(1u64, 700u64), (2, 600), (3, 300)] {
        let ns: Vec<u64> = got.iter().filter(|r| r.0 == file).map(|r| r.1).collect();
        assert_eq!(
            ns,
            (0..count).collect::<Vec<_>>(),
            "file {file}: every event, in its order"
        );
    }
    let log = std::fs::read_to_string(env.log("dragonfly-mle.log")).unwrap();
    assert!(log.contains("wildcard"), "the rebuild says why: {log}");
}

/// `file://DIR/eve.*.json`: every matching file read to its end, one input each; a pattern
/// that matches nothing is a configuration error.
#[test]
fn a_wildcard_file_input_reads_every_match() {
    let env = Env::simple("file://eve.*.json", ANALYZER_PASS, "", "");
    for f in 1..=3 {
        let lines: Vec<String> = (0..100).map(|i| format!("{{\"file\":{f},\"n\":{i}}}")).collect();
        env.write_log(&format!("eve.{f}.json"), &join_lines(&lines));
    }
    let out = env.run(&["--shards", "2"]);
    out.assert_success();
    assert_eq!(out.summary().read, 300);
    let mut got: Vec<(u64, u64)> = env
        .lines("out.json")
        .iter()
        .map(|l| (u64_member(l, "file").unwrap(), u64_member(l, "n").unwrap()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        (1..=3).flat_map(|f| (0..100).map(move |i| (f, i))).collect::<Vec<_>>()
    );
    let none = Env::simple("file://nothing.*.json", ANALYZER_PASS, "", "");
    let out = none.run(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("no file matches"), "{}", out.stderr);
}

/// A root reading `tail://DIR/eve.*.json` (no `<`, 20 ms polls) into the pass-through
/// analyzer, whose files hold `{"event_type":"flow","file":F,"n":N}` events; `appending`: the
/// output is appended to (a restart adds to it).
/// A pass-through analyzer taking 2 ms per event (a backlog for a drain to wait on).
const SLOW_PASS: &str = "function setup() end\nfunction loop(msg)\n  local t = os.clock()\n  while os.clock() - t < 0.002 do end\n  dragonfly.output_event(default_output, msg)\nend\n";

/// No (file, n) record written twice.
fn assert_none_twice(got: &[(u64, u64)]) {
    let mut seen = std::collections::BTreeSet::new();
    let twice: Vec<&(u64, u64)> = got.iter().filter(|r| !seen.insert(**r)).collect();
    assert!(
        twice.is_empty(),
        "{} events written twice, first {:?}",
        twice.len(),
        twice.first()
    );
}

/// The checkpoint files in the run directory `run`.
fn checkpoint_files(run: &std::path::Path) -> usize {
    tail_checkpoints(run).len()
}

struct Wildcard {
    env: Env,
}

impl Wildcard {
    fn new(appending: bool) -> Wildcard {
        let env = Env::new();
        let dir = env.log("suricata");
        std::fs::create_dir_all(&dir).unwrap();
        let uri = format!("tail://{}/eve.*.json", dir.display());
        let config = simple_config(&uri, "", "tail_poll_ms = 20");
        env.config(&if appending {
            config.replace("out.json<", "out.json")
        } else {
            config
        });
        env.filter("filter.lua", FILTER_TO_DEFAULT);
        env.analyzer("a.lua", ANALYZER_PASS);
        Wildcard { env }
    }

    /// With an analyzer taking 2 ms per event, follows `eve.1.json`, gives it a backlog of about
    /// 3 s, then makes `eve.2.json` (`second` events): returns once the rebuild for that new
    /// match drains the backlog, with the engine and the first `n` of the backlog.
    fn drain_under_way(&self, second: usize) -> (Running, usize) {
        self.env.analyzer("a.lua", SLOW_PASS);
        self.write(1, 0, 10);
        let engine = self.env.spawn(&["--shards", "1"]);
        let n = self.until_followed(10);
        self.write(1, n, n + 1500);
        self.write(2, 0, second);
        self.env.wait_for_record("reload", "draining", Duration::from_secs(30));
        (engine, n)
    }

    /// Appends events `from..to` to `eve.<file>.json`.
    fn write(&self, file: usize, from: usize, to: usize) {
        let lines: Vec<String> = (from..to)
            .map(|i| format!("{{\"event_type\":\"flow\",\"file\":{file},\"n\":{i}}}"))
            .collect();
        self.env
            .append_log(&format!("suricata/eve.{file}.json"), &join_lines(&lines));
    }

    /// (file, n) of each output line.
    fn records(&self) -> Vec<(u64, u64)> {
        self.env
            .lines("out.json")
            .iter()
            .map(|l| (u64_member(l, "file").unwrap(), u64_member(l, "n").unwrap()))
            .collect()
    }

    /// `eve.1.json` to `eve.3.json` followed by an engine with the run directory `run`, each
    /// with its checkpoint there.
    fn three_followed(&self, run: &std::path::Path) -> Running {
        for f in 1..=3 {
            self.write(f, 0, 10);
        }
        let engine = self.env.spawn(&["--shards", "1", "--run-dir", run.to_str().unwrap()]);
        self.until_followed(10);
        for f in 2..=3 {
            self.write(f, 100, 110);
        }
        wait_until(
            Duration::from_secs(30),
            "a checkpoint per match",
            || checkpoint_files(run) == 3 && (2..=3).all(|f| self.records().iter().any(|r| r.0 == f)),
            || {
                format!(
                    "{} checkpoints, {} records",
                    checkpoint_files(run),
                    self.records().len()
                )
            },
        );
        engine
    }

    /// Appends events `n, n+1, ...` to `eve.1.json` one at a time until one is written (the
    /// file is followed); returns the next `n`.
    fn until_followed(&self, mut n: usize) -> usize {
        wait_until(
            Duration::from_secs(30),
            "the first file followed",
            || {
                self.write(1, n, n + 1);
                n += 1;
                !self.records().is_empty()
            },
            String::new,
        );
        n
    }
}

/// Without `<`, a wildcard `tail://` follows the files there at the start from their end, but
/// a file that begins to match later is new: it is read from its start, nothing it held when
/// the engine noticed it is lost.
#[test]
fn a_wildcard_tail_reads_a_new_file_from_its_start() {
    let w = Wildcard::new(false);
    let (env, write, records) = (&w.env, |f, a, b| w.write(f, a, b), || w.records());
    write(1, 0, 200);
    let mut engine = env.spawn(&["--shards", "2"]);
    w.until_followed(200);
    write(2, 0, 300);
    wait_until(
        Duration::from_secs(30),
        "all of the new file",
        || records().iter().filter(|r| r.0 == 2).count() >= 300,
        || format!("{:?}", records().iter().filter(|r| r.0 == 2).count()),
    );
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    let got = records();
    let second: Vec<u64> = got.iter().filter(|r| r.0 == 2).map(|r| r.1).collect();
    assert_eq!(
        second,
        (0..300).collect::<Vec<u64>>(),
        "the new file from its start, once, in order"
    );
    assert!(
        got.iter().all(|r| r.0 == 2 || r.1 >= 200),
        "the first file's old lines were read"
    );
}

/// A new match rotated away while the rebuild it caused is under way (the drain waits for a
/// slow analyzer): its first generation is read from its rotated name, then the new file at
/// its path. It was lost without a word: the rebuilt pipeline read only the file then at the
/// path.
#[test]
fn a_new_match_rotated_during_its_rebuild_is_read_from_its_rotated_name() {
    let w = Wildcard::new(false);
    let env = &w.env;
    let (mut engine, _) = w.drain_under_way(100);
    let dir = env.log("suricata");
    std::fs::rename(dir.join("eve.2.json"), dir.join("eve.2.json.1")).unwrap();
    w.write(2, 100, 150);
    let second = || w.records().iter().filter(|r| r.0 == 2).count();
    wait_until(
        Duration::from_secs(60),
        "both generations of the new file",
        || second() >= 150,
        || format!("{} of 150", second()),
    );
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    let got: Vec<u64> = w.records().iter().filter(|r| r.0 == 2).map(|r| r.1).collect();
    assert_eq!(
        got,
        (0..150).collect::<Vec<u64>>(),
        "each event of both generations once, in order"
    );
}

/// Matches renamed into other matching names (logrotate's `dateext`) while a rebuild is under
/// way are handed over from their checkpoints, not read again: the renames that came during
/// the drain left their files gone from their paths when the next pipeline started, and the
/// rebuild after it read them again from their start (1,000 events written twice each).
#[test]
fn matches_renamed_during_a_rebuild_are_not_read_again() {
    let w = Wildcard::new(false);
    let env = &w.env;
    env.analyzer("a.lua", SLOW_PASS);
    for f in 1..=3 {
        w.write(f, 0, 10);
    }
    let mut engine = env.spawn(&["--shards", "1"]);
    let n = w.until_followed(10);
    for f in 2..=3 {
        w.write(f, 10, 20);
    }
    wait_until(
        Duration::from_secs(30),
        "every file followed",
        || (2..=3).all(|f| w.records().iter().any(|r| r.0 == f)),
        || format!("{:?}", w.records()),
    );
    // A backlog of about 3 s for the drain, then the renames: the first starts a rebuild, the
    // others come while it drains.
    w.write(1, n, n + 1500);
    let dir = env.log("suricata");
    let rename =
        |f: usize| std::fs::rename(dir.join(format!("eve.{f}.json")), dir.join(format!("eve.{f}-x.json"))).unwrap();
    rename(1);
    env.wait_for_record("reload", "draining", Duration::from_secs(30));
    rename(2);
    rename(3);
    // The pipeline after the drain, then the one for the other renames.
    let applied = || reloads_applied(env);
    wait_until(
        Duration::from_secs(60),
        "two rebuilds and the backlog",
        || applied() >= 2 && w.records().iter().filter(|r| r.0 == 1).count() >= 1500,
        || format!("{} rebuilds, {} records", applied(), w.records().len()),
    );
    std::thread::sleep(Duration::from_secs(2));
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    let got = w.records();
    assert_none_twice(&got);
}

/// A file that began to match while the engine was stopped (a Suricata thread's new
/// `eve.N.json`) has no checkpoint of its own while the others have theirs: the restart reads
/// it from its start (it was followed from its end: its events were skipped without a word);
/// a match followed before goes on from its checkpoint.
#[test]
fn a_wildcard_match_made_while_stopped_is_read_from_its_start() {
    let w = Wildcard::new(true);
    let (env, write, records) = (&w.env, |f, a, b| w.write(f, a, b), || w.records());
    write(1, 0, 100);
    let mut engine = env.spawn(&["--shards", "2"]);
    let n = w.until_followed(100);
    std::thread::sleep(Duration::from_millis(300));
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    let first_run = records().len();
    // While stopped: the first file grows, a second one appears.
    write(1, n, n + 50);
    write(2, 0, 300);
    let mut engine = env.spawn(&["--shards", "2"]);
    wait_until(
        Duration::from_secs(30),
        "both files' new lines",
        || records().len() >= first_run + 350,
        || format!("{} lines", records().len()),
    );
    std::thread::sleep(Duration::from_millis(300));
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    let got = &records()[first_run..];
    let second: Vec<u64> = got.iter().filter(|r| r.0 == 2).map(|r| r.1).collect();
    assert_eq!(
        second,
        (0..300).collect::<Vec<u64>>(),
        "the new file from its start, once, in order"
    );
    let first: Vec<u64> = got.iter().filter(|r| r.0 == 1).map(|r| r.1).collect();
    assert_eq!(
        first,
        (n as u64..n as u64 + 50).collect::<Vec<u64>>(),
        "the first file from its checkpoint"
    );
}

/// A file rotated into a name the wildcard also matches (logrotate's `dateext` with
/// `extension .json`: eve.0.json -> eve.0-20261205.json) is the same file, not a new one: the
/// new match goes on where the reader of eve.0.json was (its checkpoint), so what it had read
/// is not read again and what it had not is not lost; the new eve.0.json is read from its
/// start. Every line once. With a short poll the reader of eve.0.json has finished the old
/// file when the pipeline is rebuilt for the new match (which then starts at its end); with a
/// poll longer than the wildcard's 1 s look it has not (the new match goes on from its
/// checkpoint in the old file).
#[test]
fn a_file_rotated_into_a_matching_name_is_not_read_twice() {
    rotated_into_a_matching_name(50, Duration::ZERO);
}

#[test]
fn a_file_rotated_into_a_matching_name_before_its_reader_saw_it_is_not_read_twice() {
    rotated_into_a_matching_name(4000, Duration::ZERO);
}

/// The new file appears only after the pipeline was rebuilt for the renamed one: the reader of
/// eve.0.json starts again with its checkpoint in the renamed file, which is no error
/// (`checkpoint_handed_over`, it was `checkpoint_file_gone`).
#[test]
fn a_file_rotated_into_a_matching_name_then_a_new_file_later_is_no_error() {
    rotated_into_a_matching_name(50, Duration::from_secs(2));
}

fn rotated_into_a_matching_name(poll_ms: u64, new_file_after: Duration) {
    let env = Env::new();
    let dir = env.log("suricata");
    std::fs::create_dir_all(&dir).unwrap();
    let uri = format!("tail://{}/eve.*.json<", dir.display());
    env.config(&simple_config(&uri, "", &format!("tail_poll_ms = {poll_ms}")).replace("out.json<", "out.json"));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", ANALYZER_PASS);
    let run = env.dir.path().join("run").to_string_lossy().into_owned();
    env.write_log("suricata/eve.0.json", &numbered_lines(0, 1000));
    let mut engine = env.spawn(&["--run-dir", &run]);
    wait_lines(&env, 1000);
    // More lines, then at once the rotation into a matching name and a new file.
    env.append_log("suricata/eve.0.json", &numbered_lines(1000, 3000));
    std::fs::rename(dir.join("eve.0.json"), dir.join("eve.0-20261205.json")).unwrap();
    std::thread::sleep(new_file_after);
    env.write_log("suricata/eve.0.json", &numbered_lines(3000, 3500));
    wait_until(
        Duration::from_secs(60),
        "the pipeline rebuilt for the new match",
        || env.log_records_of("reload").len() >= 2,
        || format!("{:?}", env.log_records()),
    );
    std::thread::sleep(Duration::from_millis(1000));
    stop_after(&env, &mut engine, 3500);
    let mut got = ns(&env);
    got.sort();
    let want: Vec<u64> = (0..3500).collect();
    if got != want {
        let dups = got.windows(2).filter(|w| w[0] == w[1]).count();
        panic!("{} lines for 3500, {dups} repeated", got.len());
    }
    // A normal rotation is no error: the file is not gone, another match reads it.
    assert!(
        env.log_records_of("checkpoint_file_gone").is_empty(),
        "{:?}",
        env.log_records_of("checkpoint_file_gone")
    );
    if !new_file_after.is_zero() {
        assert!(
            !env.log_records_of("checkpoint_handed_over").is_empty(),
            "{:?}",
            env.log_records()
        );
    }
}

/// A file can be written, rotated and read whole between two rebuilds, never at its path when
/// a pipeline started: rotated twice (`eve.0.json` -> `eve.0.json.1`, then the next one), the
/// middle file is read to its end by the reader of `eve.0.json`. Renamed later into a name the
/// wildcard matches (a `dateext` rename after the compression step was skipped, say), it is
/// not new: it was read again from its start (1,000 events written twice).
#[test]
fn a_file_read_whole_between_rebuilds_then_renamed_into_a_matching_name_is_not_read_again() {
    let w = Wildcard::new(false);
    let env = &w.env;
    let dir = env.log("suricata");
    w.write(0, 0, 10);
    let mut engine = env.spawn(&["--shards", "1"]);
    let wait = |n: usize| {
        wait_until(
            Duration::from_secs(30),
            &format!("{n} events"),
            || w.records().len() >= n,
            || format!("{} events", w.records().len()),
        )
    };
    // Followed from its end: the first events written after the start.
    let mut k = 10;
    wait_until(
        Duration::from_secs(30),
        "the file followed",
        || {
            w.write(0, k, k + 1);
            k += 1;
            !w.records().is_empty()
        },
        String::new,
    );
    assert!(k < 100, "{k} events before the file was followed");
    std::thread::sleep(Duration::from_millis(500));
    let first = w.records().len();
    w.write(0, 100, 1000);
    wait(first + 900);
    // Two rotations to names the wildcard does not match: no rebuild.
    std::fs::rename(dir.join("eve.0.json"), dir.join("eve.0.json.1")).unwrap();
    w.write(0, 1000, 2000);
    wait(first + 1900);
    std::fs::rename(dir.join("eve.0.json"), dir.join("eve.0.json.2")).unwrap();
    w.write(0, 2000, 2500);
    wait(first + 2400);
    assert_eq!(reloads_applied(env), 0, "{:?}", env.log_records());
    // Both rotated files renamed into matching names.
    std::fs::rename(dir.join("eve.0.json.1"), dir.join("eve.0-1.json")).unwrap();
    std::fs::rename(dir.join("eve.0.json.2"), dir.join("eve.0-2.json")).unwrap();
    wait_until(
        Duration::from_secs(30),
        "the pipeline rebuilt for the new matches",
        || reloads_applied(env) >= 1,
        || format!("{:?}", env.log_records()),
    );
    std::thread::sleep(Duration::from_millis(1500));
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    let got = w.records();
    assert_none_twice(&got);
    assert_eq!(got.len(), first + 2400, "every event once");
}

/// The followed file renamed into a matching name while a rebuild drains (after the matches
/// for the next pipeline were listed) and a new file at its path: the next pipeline's reader
/// found its checkpointed file gone (`checkpoint_file_gone`) and read only the new file, and
/// the pipeline after it read the renamed file whole as a new match (its first part twice).
/// Now the reader finds the file among the wildcard's matches, goes on in it from its
/// checkpoint, then reads the new file: every event once, no error.
#[test]
fn a_match_renamed_into_a_matching_name_before_its_reader_started_is_read_once() {
    let w = Wildcard::new(false);
    let env = &w.env;
    let (mut engine, n) = w.drain_under_way(10);
    let dir = env.log("suricata");
    std::fs::rename(dir.join("eve.1.json"), dir.join("eve.1-x.json")).unwrap();
    w.write(1, 5000, 5100);
    wait_until(
        Duration::from_secs(60),
        "the backlog, the new file and the renamed one's rebuild",
        || reloads_applied(env) >= 2 && w.records().iter().filter(|r| r.0 == 1).count() >= 1600,
        || format!("{} rebuilds, {} records", reloads_applied(env), w.records().len()),
    );
    std::thread::sleep(Duration::from_secs(2));
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    let got = w.records();
    assert_none_twice(&got);
    let ones: Vec<u64> = got.iter().filter(|r| r.0 == 1).map(|r| r.1).collect();
    let want: Vec<u64> = (n as u64..n as u64 + 1500).chain(5000..5100).collect();
    assert_eq!(
        &ones[ones.len() - 1600..],
        &want[..],
        "the rest of the renamed file, then the new one"
    );
    assert!(
        env.log_records_of("checkpoint_file_gone").is_empty(),
        "{:?}",
        env.log_records_of("checkpoint_file_gone")
    );
}

/// Each match of a wildcard `tail://` has its checkpoint file; a match whose file was deleted
/// (logrotate's `rotate N` with `dateext` names the pattern matches) kept its checkpoint file
/// for good: one more file in the run directory per rotation, for the engine's life and
/// after. Now it is removed at the rebuild that drops the match. A match renamed to a name the
/// pattern does not match keeps its checkpoint (its file is still there).
#[test]
fn a_deleted_matchs_checkpoint_is_removed() {
    let w = Wildcard::new(false);
    let env = &w.env;
    let dir = env.log("suricata");
    let run = env.dir.path().join("run");
    let mut engine = w.three_followed(&run);
    let checkpoints = || checkpoint_files(&run);
    std::fs::remove_file(dir.join("eve.2.json")).unwrap();
    std::fs::rename(dir.join("eve.3.json"), dir.join("eve.3.old")).unwrap();
    wait_until(
        Duration::from_secs(30),
        "the rebuild without the two",
        || reloads_applied(env) >= 1,
        || format!("{:?}", env.log_records()),
    );
    wait_until(
        Duration::from_secs(10),
        "the deleted match's checkpoint removed",
        || checkpoints() == 2,
        || format!("{} checkpoints", checkpoints()),
    );
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    assert_eq!(checkpoints(), 2, "eve.1.json's and the renamed eve.3.json's");
}

/// A match deleted while the engine was stopped (or after a crash): its checkpoint file is
/// removed at the next start. Earlier runs' files piled up, one per rotated match, across
/// `kill -9` restarts (30 to 46 in an audit's run).
#[test]
fn a_match_deleted_while_stopped_loses_its_checkpoint_at_the_start() {
    let w = Wildcard::new(false);
    let env = &w.env;
    let dir = env.log("suricata");
    let run = env.dir.path().join("run");
    let args = ["--shards", "1", "--run-dir", run.to_str().unwrap()];
    let mut engine = w.three_followed(&run);
    let checkpoints = || checkpoint_files(&run);
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    std::fs::remove_file(dir.join("eve.2.json")).unwrap();
    // Renamed to a name the pattern does not match: still there, its checkpoint kept.
    std::fs::rename(dir.join("eve.3.json"), dir.join("eve.3.old")).unwrap();
    let mut engine = env.spawn(&args);
    w.write(1, 200, 210);
    wait_until(
        Duration::from_secs(30),
        "the restarted engine reading",
        || w.records().contains(&(1, 209)),
        || format!("{} records", w.records().len()),
    );
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    assert_eq!(checkpoints(), 2, "eve.1.json's and the renamed eve.3.json's");
}
