//! The `streamtap` command line end to end: the demo pipeline with the real plugins,
//! `query`, `check`, `plugin new` and `plugin test`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{stdout_ok as ok, streamtap};

/// `plugin test` with string-literal input lines.
fn plugin_test(wasm: &Path, args: &[&str], input: &[&str]) -> std::process::Output {
    let lines: Vec<String> = input.iter().map(|l| l.to_string()).collect();
    common::plugin_test(wasm, args, &lines)
}

/// The demo pipeline, pointed at a temporary store and run at full speed.
fn demo_copy(dir: &Path) -> std::path::PathBuf {
    for p in ["sentiment", "translate", "analytics", "alerts"] {
        common::plugin(p, &[]);
    }
    let root = common::workspace_root().canonicalize().unwrap();
    let text = std::fs::read_to_string(root.join("pipelines/demo.toml"))
        .unwrap()
        .replace("rate = 1000", "rate = \"max\"")
        .replace("\"../data/demo.db\"", "\"demo.db\"")
        // The plugins this test run built (CARGO_TARGET_DIR respected), not `<repo>/target`.
        .replace(
            "\"../target/",
            &format!("\"{}/", common::target_dir().display()),
        )
        .replace("\"../", &format!("\"{}/", root.display()));
    let f = dir.join("demo.toml");
    std::fs::write(&f, text).unwrap();
    f
}

#[test]
fn demo_pipeline_stores_every_message_with_plugin_fields() {
    let dir = tempfile::tempdir().unwrap();
    demo_copy(dir.path());
    let summary = ok(&streamtap(
        dir.path(),
        &["run", "demo.toml", "--no-reload", "--quiet"],
    ));
    // 3,000 lines, 3 of them deliberately malformed.
    assert!(summary.contains("2997 stored"), "{summary}");
    assert!(summary.contains("malformed source lines: 3"), "{summary}");
    for line in ["line 137:", "line 1500:", "line 2864:"] {
        assert!(summary.contains(line), "{line} not reported: {summary}");
    }
    assert!(
        summary.contains("ALERT [info] hype #pixelqueen"),
        "{summary}"
    );
    assert!(
        summary.contains("alerts fired: 1 (delivered 1)"),
        "{summary}"
    );
    assert!(summary.contains("#pixelqueen"), "{summary}");

    let rows = ok(&streamtap(
        dir.path(),
        &["query", "demo.toml", "--format", "jsonl"],
    ));
    let rows: Vec<serde_json::Value> = rows
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2997);
    for r in &rows {
        for k in ["id", "channel", "user", "text", "ts"] {
            assert!(
                r.get(k).is_some_and(|v| v.is_string()),
                "row lacks {k}: {r}"
            );
        }
        chrono::DateTime::parse_from_rfc3339(r["ts"].as_str().unwrap()).expect("ts is RFC 3339");
        assert!(r["sentiment"]["compound"].is_number(), "no sentiment: {r}");
        assert!(r["lang"].is_string(), "no lang: {r}");
    }
    // Detection is real: the German channel is mostly German, the Japanese lines Japanese.
    let de = rows
        .iter()
        .filter(|r| r["channel"] == "kartoffelkanal" && r["lang"] == "de")
        .count();
    assert!(
        de > 100,
        "only {de} German messages detected in #kartoffelkanal"
    );
    assert!(rows.iter().any(|r| r["lang"] == "ja"));

    // Analytics: every stored message is in exactly one window of its channel (the last
    // minute of each channel included, closed by the end-of-run flush), 11 per channel.
    let conn = rusqlite::Connection::open(dir.path().join("demo.db")).unwrap();
    let per_channel: Vec<(String, i64, i64, i64)> = conn
        .prepare(
            "SELECT s.channel, COUNT(*), SUM(s.messages), (SELECT COUNT(*) FROM messages m WHERE m.channel = s.channel)
             FROM channel_stats s GROUP BY s.channel ORDER BY s.channel",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(per_channel.len(), 5, "{per_channel:?}");
    for (channel, windows, in_windows, stored) in &per_channel {
        assert_eq!(in_windows, stored, "#{channel}: {per_channel:?}");
        assert_eq!(*windows, 11, "#{channel}: {per_channel:?}");
    }
    // The demo's report shows the hype alert.
    let report = ok(&streamtap(
        dir.path(),
        &["report", "demo.toml", "--out", "demo-report.html"],
    ));
    assert!(
        report.contains("5 channel(s), 55 window(s), 1 alert marker(s)"),
        "{report}"
    );
    let html = std::fs::read_to_string(dir.path().join("demo-report.html")).unwrap();
    assert!(html.contains("hype: #pixelqueen 150 messages in 20s"));

    let limited = ok(&streamtap(
        dir.path(),
        &[
            "query",
            "demo.toml",
            "--channel",
            "lune_fr",
            "--limit",
            "5",
            "--format",
            "table",
        ],
    ));
    assert_eq!(limited.lines().count(), 6, "{limited}");
    assert!(
        limited.lines().skip(1).all(|l| l.contains("lune_fr")),
        "{limited}"
    );

    // The store is idempotent: running the same log again stores nothing new.
    let again = ok(&streamtap(
        dir.path(),
        &["run", "demo.toml", "--no-reload", "--quiet"],
    ));
    assert!(again.contains("0 stored, 2997 already stored"), "{again}");
    assert!(
        again.contains("alerts fired: 0"),
        "the burst alert fired twice: {again}"
    );
}

#[test]
fn check_loads_every_plugin_and_names_versions() {
    let dir = tempfile::tempdir().unwrap();
    demo_copy(dir.path());
    let out = ok(&streamtap(dir.path(), &["check", "demo.toml"]));
    assert!(out.contains("ok, pipeline \"demo\", 4 step(s)"), "{out}");
    for s in ["sentiment", "lang", "analytics", "alerts"] {
        assert!(out.contains(s), "{out}");
    }
    // A step whose `with` the plugin rejects fails the check with the plugin's reason.
    let bad = std::fs::read_to_string(dir.path().join("demo.toml"))
        .unwrap()
        .replace(
            "positive_threshold = 0.05",
            "positive_threshold = 0.05, bogus = 1",
        );
    std::fs::write(dir.path().join("bad.toml"), bad).unwrap();
    let out = streamtap(dir.path(), &["check", "bad.toml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("sentiment") && err.contains("bogus"),
        "{err}"
    );
}

#[test]
fn plugin_new_scaffolds_a_crate_that_builds_tests_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&streamtap(dir.path(), &["plugin", "new", "word-count"]));
    assert!(out.contains("word-count"), "{out}");
    let crate_dir = dir.path().join("word-count");
    // Share the workspace's target dir so dependencies are not rebuilt from scratch.
    let target = common::workspace_root().join("target/scaffold");
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let status = Command::new(cargo)
        .args(["test", "--quiet"])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(&crate_dir)
        .status()
        .unwrap();
    assert!(status.success(), "native tests of the scaffold failed");
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(&crate_dir)
        .status()
        .unwrap();
    assert!(status.success(), "wasm build of the scaffold failed");
    let wasm = target.join("wasm32-wasip2/release/word_count.wasm");

    let irc = common::irc_line(7, "chan", "no match here", 1_732_700_000_000);
    let out = plugin_test(
        &wasm,
        &["--with", "words=[\"gg\",\"wp\"]"],
        &[r#"{"id":"a","text":"GG WP everyone"}"#, &irc],
    );
    let text = ok(&out);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["id"], "a");
    assert_eq!(
        lines[0]["actions"][0],
        serde_json::json!({"set": "word_count_hits", "value": 2})
    );
    assert_eq!(lines[1]["id"], "msg-000007");
    assert_eq!(lines[1]["actions"][0]["value"], 0);
}

#[test]
fn plugin_test_reports_failures_per_message() {
    let wasm = common::plugin("hostile", &[]);
    let lines: Vec<String> = ["hello", "loop", "trap", "hello"]
        .iter()
        .map(|t| format!(r#"{{"text":"{t}"}}"#))
        .collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let out = plugin_test(&wasm, &["--deadline", "50ms"], &lines);
    assert!(!out.status.success(), "failures must give a non-zero exit");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["actions"][0]["set"], "ok");
    assert_eq!(lines[1]["kind"], "timeout");
    assert_eq!(lines[2]["kind"], "trap");
    assert_eq!(
        lines[3]["actions"][0]["set"], "ok",
        "the plugin was not restarted after the trap"
    );
}

#[test]
fn plugin_test_prints_what_flush_emits_at_the_end_of_input() {
    let wasm = common::plugin("analytics", &[]);
    let lines = [
        r#"{"channel":"a","user":"u1","text":"hi","ts":"2024-11-27T09:33:01Z"}"#,
        r#"{"channel":"a","user":"u2","text":"yo","ts":"2024-11-27T09:33:02Z"}"#,
    ];
    let out = plugin_test(&wasm, &["--with", "metrics=false"], &lines);
    let text = ok(&out);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0]["actions"], serde_json::json!([]), "{text}");
    let flush = lines[2]["flush"].as_array().expect("a flush line");
    assert_eq!(flush.len(), 1, "{text}");
    let rec = &flush[0]["record"];
    assert_eq!(rec["table"], "channel_stats");
    assert_eq!(rec["key"], "a:1732699980000");
    assert_eq!(rec["value"]["messages"], 2);
}
