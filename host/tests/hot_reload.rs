//! Hot reload under load, through the real `streamtap` binary: 20,000 messages replayed at
//! ~2,000 msg/s while the plugin is replaced (v1 → v2), the step's `with` config is edited,
//! and two broken generations (failing `init`, a file that is not a component) are rejected.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOTAL: usize = 20_000;

fn pipeline(tag: &str, fail_init: bool) -> String {
    format!(
        r#"[source.replay]
path = "chat.log"
rate = 2000

[[steps]]
name = "tagger"
uses = "plugin.wasm"
with = {{ tag = "{tag}", fail_init = {fail_init} }}

[sink.sqlite]
path = "out.db"
"#
    )
}

fn count(db: &Path, sql: &str) -> i64 {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    conn.query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

/// Polls until `cond` holds, failing if the child exits or `limit` passes.
fn wait_for(child: &mut Child, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    loop {
        if cond() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("streamtap exited ({status}) while waiting for {what}");
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Replaces a file the way `cp` does: truncate and write in place.
fn overwrite(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn reload_under_load_loses_nothing_and_processes_nothing_twice() {
    let v1 = std::fs::read(common::plugin("versioned", &[])).unwrap();
    let v2 = std::fs::read(common::plugin("versioned", &["v2"])).unwrap();
    assert_ne!(v1, v2);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::write_log(&d.join("chat.log"), TOTAL, &["alpha", "beta", "gamma"]);
    std::fs::write(d.join("plugin.wasm"), &v1).unwrap();
    let pfile = d.join("p.toml");
    std::fs::write(&pfile, pipeline("a", false)).unwrap();
    let db = d.join("out.db");
    let log = d.join("stderr.log");

    let mut child = Command::new(common::streamtap_bin())
        .args(["run", "p.toml", "--quiet"])
        .current_dir(d)
        .env("STREAMTAP_CACHE_DIR", d.join("cache"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stderr = || std::fs::read_to_string(&log).unwrap_or_default();

    wait_for(
        &mut child,
        "4,000 stored messages",
        Duration::from_secs(30),
        || count(&db, "SELECT COUNT(*) FROM messages") >= 4000,
    );
    overwrite(&d.join("plugin.wasm"), &v2);
    wait_for(
        &mut child,
        "the first v2 message",
        Duration::from_secs(15),
        || {
            count(
                &db,
                "SELECT COUNT(*) FROM messages WHERE json_extract(fields, '$.version') = 'v2'",
            ) > 0
        },
    );

    std::fs::write(&pfile, pipeline("b", false)).unwrap();
    wait_for(
        &mut child,
        "the first message tagged b",
        Duration::from_secs(15),
        || {
            count(
                &db,
                "SELECT COUNT(*) FROM messages WHERE json_extract(fields, '$.tag') = 'b'",
            ) > 0
        },
    );

    // Broken generation 1: `init` fails. The running v2/b generation must stay.
    std::fs::write(&pfile, pipeline("c", true)).unwrap();
    wait_for(
        &mut child,
        "the init failure to be reported",
        Duration::from_secs(15),
        || stderr().contains("fail_init is set"),
    );
    std::fs::write(&pfile, pipeline("b", false)).unwrap();
    // Broken generation 2: the plugin file is not a component.
    overwrite(&d.join("plugin.wasm"), b"this is not wasm");
    wait_for(
        &mut child,
        "the compile failure to be reported",
        Duration::from_secs(15),
        || stderr().contains("is not a valid streamtap component"),
    );
    let stored_at_break = count(&db, "SELECT COUNT(*) FROM messages");
    assert!(
        (stored_at_break as usize) < TOTAL,
        "the replay finished before all edits were made; the test proves nothing"
    );

    let out = child.wait_with_output().unwrap();
    let log_text = stderr();
    assert!(out.status.success(), "streamtap failed: {log_text}");
    // One process served the whole run: it was never restarted between edits.
    assert_eq!(
        log_text.matches("runner: loaded step").count(),
        1,
        "{log_text}"
    );

    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, json_extract(fields, '$.version'), json_extract(fields, '$.tag'), json_extract(fields, '$.seen') FROM messages ORDER BY ts")
        .unwrap();
    let rows: Vec<(String, String, String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();

    // Every message stored exactly once.
    assert_eq!(rows.len(), TOTAL);
    let ids: std::collections::HashSet<_> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids.len(), TOTAL);

    // One version tag per message: a v1 prefix, then v2 to the end (the broken
    // generations never ran).
    let first_v2 = rows.iter().position(|r| r.1 == "v2").unwrap();
    assert!(first_v2 > 0, "no v1 prefix");
    assert!(rows[..first_v2].iter().all(|r| r.1 == "v1"));
    assert!(
        rows[first_v2..].iter().all(|r| r.1 == "v2"),
        "a v1 message after the swap"
    );
    let first_b = rows.iter().position(|r| r.2 == "b").unwrap();
    assert!(rows[..first_b].iter().all(|r| r.2 == "a"));
    assert!(
        rows[first_b..].iter().all(|r| r.2 == "b"),
        "a message outside tag a/b order"
    );
    assert!(first_b > first_v2);

    // The step's key-value counter survived both reloads and counted each message once:
    // processed twice would skip a number, lost state would restart at 1.
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(
            r.3,
            i as i64 + 1,
            "message {} ({}) saw counter {}",
            i,
            r.0,
            r.3
        );
    }

    let rejected = log_text.matches("reload rejected").count();
    assert!(rejected >= 2, "expected two rejected reloads: {log_text}");
    assert!(
        log_text.contains("plugin.wasm"),
        "rejection does not name the file: {log_text}"
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains(&format!("{TOTAL} stored")), "{summary}");
}

/// Adding, reordering and removing steps in a running pipeline. Two steps write the same
/// field (`tag`), so the last of them wins and the stored value shows the order; the
/// hostile step's `ok` field shows whether it is in the chain.
#[test]
fn steps_can_be_added_reordered_and_removed_live() {
    let v1 = common::plugin("versioned", &[]);
    let hostile = common::plugin("hostile", &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::write_log(&d.join("chat.log"), TOTAL, &["alpha", "beta"]);
    let step = |name: &str, path: &Path, with: &str| {
        format!(
            "[[steps]]\nname = \"{name}\"\nuses = {:?}\nwith = {with}\n\n",
            path.display().to_string()
        )
    };
    let a = step("a", &v1, "{ tag = \"A\" }");
    let b = step("b", &v1, "{ tag = \"B\" }");
    let h = step("h", &hostile, "{}");
    let write = |steps: &[&str]| {
        let text = format!(
            "[source.replay]\npath = \"chat.log\"\nrate = 2000\n\n{}[sink.sqlite]\npath = \"out.db\"\n",
            steps.concat()
        );
        std::fs::write(d.join("p.toml"), text).unwrap();
    };
    write(&[&a]);
    let db = d.join("out.db");
    let mut child = Command::new(common::streamtap_bin())
        .args(["run", "p.toml", "--quiet"])
        .current_dir(d)
        .env("STREAMTAP_CACHE_DIR", d.join("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let newer = |db: &Path, after: i64, cond: &str| {
        count(
            db,
            &format!("SELECT COUNT(*) FROM messages WHERE rowid > {after} AND {cond}"),
        )
    };
    let last = |db: &Path| count(db, "SELECT COALESCE(MAX(rowid), 0) FROM messages");
    wait_for(
        &mut child,
        "the first stored messages",
        Duration::from_secs(30),
        || last(&db) > 500,
    );

    let mut expect = |steps: &[&str], cond: &str, what: &str| {
        let mark = last(&db);
        write(steps);
        wait_for(&mut child, what, Duration::from_secs(15), || {
            newer(&db, mark, cond) > 0
        });
    };
    let has_ok = "json_extract(fields, '$.ok') IS NOT NULL";
    let no_ok = "json_extract(fields, '$.ok') IS NULL";
    expect(
        &[&a, &b],
        &format!("json_extract(fields, '$.tag') = 'B' AND {no_ok}"),
        "step b added after a",
    );
    expect(
        &[&b, &a],
        &format!("json_extract(fields, '$.tag') = 'A' AND {no_ok}"),
        "steps reordered",
    );
    expect(
        &[&b, &a, &h],
        &format!("json_extract(fields, '$.tag') = 'A' AND {has_ok}"),
        "step h added",
    );
    expect(
        &[&b],
        &format!("json_extract(fields, '$.tag') = 'B' AND {no_ok}"),
        "steps a and h removed",
    );
    assert!(
        last(&db) < TOTAL as i64,
        "the replay ended before all edits; the test proves nothing"
    );

    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        count(&db, "SELECT COUNT(DISTINCT id) FROM messages"),
        TOTAL as i64
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM messages"), TOTAL as i64);
    // After the last edit only step b runs: the final message is tagged B, without `ok`.
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT COUNT(*) FROM messages WHERE rowid = (SELECT MAX(rowid) FROM messages) AND json_extract(fields, '$.tag') = 'B' AND {no_ok}"
            )
        ),
        1
    );
}
