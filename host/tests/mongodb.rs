//! The MongoDB sink against a real MongoDB-wire server (SecantusDB, started here on
//! 127.0.0.1): idempotent writes, the document layout, an outage and restart, and
//! `streamtap run`/`query` with `[sink.mongodb]`.

mod common;

use common::server::{Server, secantus};
use std::collections::BTreeMap;
use std::time::Duration;
use streamtap::pipeline::chain::ChainOutput;
use streamtap::sinks::mongodb::MongoSink;
use streamtap::sinks::sqlite::Query;
use streamtap_plugin_sdk::{ChatMessage, Value};

fn msg(i: usize, channel: &str, kind: &str) -> ChatMessage {
    let mut fields = BTreeMap::new();
    fields.insert(
        "sentiment".to_owned(),
        Value::map([("compound", Value::Float(i as f64 / 1000.0))]),
    );
    ChatMessage {
        id: format!("id-{i:06}"),
        kind: kind.into(),
        channel: channel.into(),
        channel_id: format!("{}", channel.len()),
        user: format!("user{}", i % 7),
        user_id: format!("{}", i % 7),
        display_name: format!("User{}", i % 7),
        text: format!("message {i}"),
        ts_ms: 1_732_700_000_000 + i as i64,
        badges: vec![],
        emotes: vec![],
        fields,
    }
}

fn output(range: std::ops::Range<usize>) -> ChainOutput {
    ChainOutput {
        messages: range
            .map(|i| {
                let kind = if i % 10 == 9 { "usernotice" } else { "privmsg" };
                msg(i, if i % 2 == 0 { "alpha" } else { "beta" }, kind)
            })
            .collect(),
        ..ChainOutput::default()
    }
}

async fn sink(server: &Server) -> MongoSink {
    let s = MongoSink::connect(
        &format!("mongodb://{}", server.addr()),
        "streamtap_test",
        Duration::from_secs(2),
    )
    .await
    .expect("connect");
    s.ensure_indexes().await.expect("indexes");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_idempotent_and_split_messages_from_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = secantus(dir.path());
    let s = sink(&server).await;

    let w = s.write(&output(0..1000)).await.expect("first write");
    assert_eq!(w.result.inserted, 1000);
    assert_eq!(w.result.duplicates, 0);
    assert_eq!(s.count("messages").await.unwrap(), 900);
    assert_eq!(s.count("events").await.unwrap(), 100);

    // A redelivery overlapping the first write: only the new half is stored.
    let w = s
        .write(&output(500..1500))
        .await
        .expect("overlapping write");
    assert_eq!((w.result.inserted, w.result.duplicates), (500, 500));
    assert_eq!(s.count("messages").await.unwrap(), 1350);
    assert_eq!(s.count("events").await.unwrap(), 150);

    // The stored shape is the SQLite sink's: plugin fields on top, `ts` as RFC 3339.
    let rows = s
        .query(&Query {
            channel: Some("beta".into()),
            since_ms: None,
            limit: Some(3),
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2]["id"], "id-001497");
    assert_eq!(rows[2]["channel"], "beta");
    assert_eq!(rows[2]["sentiment"]["compound"], 1.497);
    assert_eq!(rows[2]["ts"], "2024-11-27T09:33:21.497Z");
    let counts = s.counts_by_channel().await.unwrap();
    assert_eq!(
        counts,
        vec![("alpha".to_owned(), 750), ("beta".to_owned(), 600)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_transiently_and_nothing_is_lost_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = secantus(dir.path());
    let s = sink(&server).await;
    s.write(&output(0..200)).await.expect("before the outage");

    server.kill();
    let e = s
        .write(&output(200..400))
        .await
        .expect_err("server is down");
    assert!(e.is_transient(), "{e}");
    let shown = e.to_string();
    assert!(shown.contains("streamtap_test.messages"), "{shown}");

    server.restart();
    // The same batch again, as the runner retries it: stored once.
    let w = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match s.write(&output(200..400)).await {
                Ok(w) => break w,
                Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => panic!("permanent error after restart: {e}"),
            }
        }
    })
    .await
    .expect("writes resume after the restart");
    assert_eq!(w.result.inserted + w.result.duplicates, 200);
    assert_eq!(
        s.count("messages").await.unwrap() + s.count("events").await.unwrap(),
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_connection_string_is_refused_without_echoing_credentials() {
    let e = MongoSink::connect("mongodb://alice:s3cret@", "x", Duration::from_secs(1))
        .await
        .err()
        .expect("no host");
    let shown = e.to_string();
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("mongodb://***@"), "{shown}");
}

/// `streamtap run` into MongoDB at 2,000 msg/s while the server is killed and restarted
/// mid-run: every message is stored exactly once, and `streamtap query` reads them back.
#[test]
fn run_survives_a_mongodb_outage_and_query_reads_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = secantus(dir.path());
    let sentiment = common::plugin("sentiment", &[]);
    common::write_log(
        &dir.path().join("chat.log"),
        6000,
        &["alpha", "beta", "gamma"],
    );
    let pipeline = format!(
        r#"
name = "mongo"
[source.replay]
path = "chat.log"
rate = 2000
[[steps]]
uses = "{}"
[sink.mongodb]
uri_secret = {{ env = "STREAMTAP_TEST_MONGODB_URI" }}
database = "outage"
max_delay = "100ms"
timeout = "1s"
retry_initial = "100ms"
retry_max = "500ms"
"#,
        sentiment.display()
    );
    std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
    let uri = format!("mongodb://{}", server.addr());
    let child = std::process::Command::new(common::streamtap_bin())
        .args(["run", "p.toml", "--no-reload", "--quiet"])
        .current_dir(dir.path())
        .env(
            "STREAMTAP_CACHE_DIR",
            common::target_dir().join("test-plugin-cache"),
        )
        .env("STREAMTAP_TEST_MONGODB_URI", &uri)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start streamtap");
    std::thread::sleep(Duration::from_millis(1200));
    server.kill();
    std::thread::sleep(Duration::from_millis(1500));
    server.restart();
    let out = child.wait_with_output().expect("run finishes");
    let summary = common::stdout_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("6000 received"), "{summary}");
    assert!(summary.contains("6000 stored"), "{summary}\n{stderr}");
    assert!(
        stderr.contains("writing to the sink failed; retrying"),
        "the outage was not noticed: {stderr}"
    );
    assert!(!stderr.contains(&uri) || !uri.contains('@'));

    // Read back through the CLI (same pipeline file, same secret).
    let q = std::process::Command::new(common::streamtap_bin())
        .args(["query", "p.toml", "--channel", "beta", "--format", "jsonl"])
        .current_dir(dir.path())
        .env("STREAMTAP_TEST_MONGODB_URI", &uri)
        .output()
        .unwrap();
    let rows = common::stdout_ok(&q);
    let rows: Vec<serde_json::Value> = rows
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2000);
    assert!(
        rows.iter().all(|r| r["sentiment"]["label"].is_string()),
        "{}",
        rows[0]
    );
    let ids: std::collections::BTreeSet<_> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2000);
}

/// The same replay through analytics and an alert rule into SQLite and into MongoDB: the
/// `channel_stats` windows are identical, and `streamtap report` draws from MongoDB with
/// the alert marker.
#[test]
fn channel_stats_and_report_match_the_sqlite_sink() {
    let dir = tempfile::tempdir().unwrap();
    let server = secantus(dir.path());
    let analytics = common::plugin("analytics", &[]);
    let alerts = common::plugin("alerts", &[]);
    common::write_log(
        &dir.path().join("chat.log"),
        3000,
        &["alpha", "beta", "gamma"],
    );
    let pipeline = |sink: &str| {
        format!(
            r#"
name = "stats"
[source.replay]
path = "chat.log"
rate = "max"
[[steps]]
uses = "{}"
with = {{ window = "1s", grace = "0s" }}
[[steps]]
uses = "{}"
[[steps.with.rules]]
name = "hype"
channels = ["alpha"]
window = "10s"
threshold = 500
topic = "hype"
{sink}
"#,
            analytics.display(),
            alerts.display()
        )
    };
    let d = dir.path();
    std::fs::write(
        d.join("sqlite.toml"),
        pipeline("[sink.sqlite]\npath = \"s.db\""),
    )
    .unwrap();
    std::fs::write(
        d.join("mongo.toml"),
        pipeline(&format!(
            "[sink.mongodb]\nuri = \"mongodb://{}\"\ndatabase = \"stats\"",
            server.addr()
        )),
    )
    .unwrap();
    for p in ["sqlite.toml", "mongo.toml"] {
        let out = common::stdout_ok(&common::streamtap(d, &["run", p, "--no-reload", "--quiet"]));
        assert!(out.contains("3000 stored"), "{p}: {out}");
        assert!(
            out.contains("ALERT") && out.contains("#alpha"),
            "{p}: {out}"
        );
    }
    let sqlite_windows =
        streamtap::sinks::sqlite::channel_windows(&d.join("s.db"), None, None).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mongo_windows = rt.block_on(async {
        let s = MongoSink::connect(
            &format!("mongodb://{}", server.addr()),
            "stats",
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        s.channel_windows(None, None).await.unwrap()
    });
    assert_eq!(sqlite_windows.len(), 9, "{sqlite_windows:?}");
    assert_eq!(mongo_windows, sqlite_windows);

    let out = common::stdout_ok(&common::streamtap(
        d,
        &["report", "mongo.toml", "--out", "r.html"],
    ));
    assert!(
        out.contains("3 channel(s), 9 window(s), 1 alert marker(s)"),
        "{out}"
    );
    let html = std::fs::read_to_string(d.join("r.html")).unwrap();
    for needle in ["alpha", "beta", "gamma", "hype"] {
        assert!(html.contains(needle), "{needle} missing from the report");
    }
}
