//! Alert delivery end to end, against real servers: `moto_server` (SNS with an SQS queue
//! subscribed to each topic) and a local HTTP server for webhooks.
//!
//! A scripted burst replayed through the `alerts` plugin must produce exactly the expected
//! alerts in the queues (count, subjects, attributes), once, also when the same log runs
//! again over the same store; an SNS outage (a forwarder in front of moto taken down) must
//! leave alerts dead-lettered in the store and then deliver each exactly once, both when
//! SNS comes back during the run and at the next start.

mod common;

use common::moto::{Forwarder, Moto};
use common::server::wait_until;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Message time of the first message; a multiple of every window used.
const T0: i64 = 1_732_700_040_000;
/// Made-up credentials; the secret must never show in the process's output.
const KEY_ID: &str = "AKIASTREAMTAPTEST01";
const SECRET: &str = "sEcReT/streamtap+never+in+logs";

/// The burst: (channel, text, ms after T0), in message-time order.
fn burst(filler: usize) -> Vec<(String, String, i64)> {
    let mut m = Vec::new();
    // #pixelqueen: 25 messages in the first 10 s window → one hype alert.
    for i in 0..25 {
        m.push(("pixelqueen".into(), format!("POG pog {i}"), i * 200));
    }
    // #lune_fr: 22 messages in the same window, 3 of them about a raid → hype + raid.
    for i in 0..22 {
        let text = if i % 7 == 3 {
            format!("RAID incoming {i}")
        } else {
            format!("allez {i}")
        };
        m.push(("lune_fr".into(), text, 100 + i * 300));
    }
    // #calmchan: never enough.
    for i in 0..5 {
        m.push(("calmchan".into(), format!("hello {i}"), 500 + i * 1000));
    }
    // #pixelqueen again, two windows later → a second hype alert.
    for i in 0..20 {
        m.push(("pixelqueen".into(), format!("again {i}"), 20_000 + i * 100));
    }
    // Filler that fires nothing, to make a paced run last.
    for i in 0..filler {
        m.push((
            "calmchan".into(),
            format!("quiet {i}"),
            40_000 + i as i64 * 1000,
        ));
    }
    m.sort_by_key(|(_, _, t)| *t);
    m
}

/// (subject, channel, rule, severity, dedupe key) of every alert the burst must fire.
fn expected_hype() -> Vec<(String, &'static str, &'static str, &'static str, String)> {
    let mut v = vec![
        (
            "[info] hype: #pixelqueen 20 messages in 10s".to_owned(),
            "pixelqueen",
            "hype",
            "info",
            format!("hype:pixelqueen:{T0}"),
        ),
        (
            "[info] hype: #pixelqueen 20 messages in 10s".to_owned(),
            "pixelqueen",
            "hype",
            "info",
            format!("hype:pixelqueen:{}", T0 + 20_000),
        ),
        (
            "[info] hype: #lune_fr 20 messages in 10s".to_owned(),
            "lune_fr",
            "hype",
            "info",
            format!("hype:lune_fr:{T0}"),
        ),
    ];
    v.sort();
    v
}

fn expected_raids() -> Vec<(String, &'static str, &'static str, &'static str, String)> {
    vec![(
        "[critical] raid: #lune_fr 3 messages in 1m".to_owned(),
        "lune_fr",
        "raid",
        "critical",
        format!("raid:lune_fr:{}", T0 - T0 % 60_000),
    )]
}

fn write_log(path: &Path, filler: usize) {
    let mut s = String::new();
    for (i, (ch, text, dt)) in burst(filler).iter().enumerate() {
        s.push_str(&common::irc_line(i, ch, text, T0 + dt));
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

/// A pipeline with the alerts plugin; `sns` is the `[alerts.sns.*]` and routing part.
fn write_pipeline(d: &Path, rate: &str, alerts: &str) {
    let wasm = common::plugin("alerts", &[]);
    std::fs::copy(&wasm, d.join("alerts.wasm")).unwrap();
    std::fs::write(
        d.join("p.toml"),
        format!(
            r#"[source.replay]
path = "chat.log"
rate = {rate}

[transport.memory]
batch_size = 16

[[steps]]
name = "alerts"
uses = "alerts.wasm"

[[steps.with.rules]]
name = "hype"
window = "10s"
threshold = 20
topic = "hype"
severity = "info"

[[steps.with.rules]]
name = "raid"
channels = ["lune_*"]
window = "1m"
threshold = 3
keyword = "raid"
topic = "raids"
severity = "critical"

[sink.sqlite]
path = "out.db"

{alerts}
"#
        ),
    )
    .unwrap();
}

fn sns_alerts(endpoint: &str, hype: &str, raids: &str, delivery: &str) -> String {
    format!(
        r#"[alerts.topics.hype]
to = ["console", "sns.hype"]

[alerts.topics.raids]
to = ["sns.raids"]

[alerts.sns.hype]
topic_arn = "{hype}"
endpoint_url = "{endpoint}"

[alerts.sns.raids]
topic_arn = "{raids}"
endpoint_url = "{endpoint}"
timeout = "3s"

[alerts.delivery]
{delivery}
"#
    )
}

fn streamtap_cmd(d: &Path) -> Command {
    let mut c = Command::new(common::streamtap_bin());
    c.args(["run", "p.toml", "--no-reload", "--quiet"])
        .current_dir(d)
        .env(
            "STREAMTAP_CACHE_DIR",
            common::target_dir().join("test-plugin-cache"),
        )
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", common::moto::REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN");
    c
}

/// Runs to the end; asserts success and that the secret key never shows.
fn run(d: &Path) -> String {
    let out = streamtap_cmd(d).output().unwrap();
    check_output(&out)
}

fn check_output(out: &Output) -> String {
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "streamtap failed\nstdout:\n{so}\nstderr:\n{se}"
    );
    assert!(
        !so.contains(SECRET) && !se.contains(SECRET),
        "the AWS secret key leaked into the output"
    );
    format!("{so}\n--- stderr ---\n{se}")
}

/// (subject, channel, rule, severity, dedupe key) of each SNS envelope, sorted.
fn received(msgs: &[serde_json::Value]) -> Vec<(String, String, String, String, String)> {
    let attr = |m: &serde_json::Value, k: &str| {
        let a = &m["MessageAttributes"][k];
        assert_eq!(a["Type"], "String", "attribute {k} in {m}");
        a["Value"].as_str().unwrap_or_default().to_owned()
    };
    let mut v: Vec<_> = msgs
        .iter()
        .map(|m| {
            let body = m["Message"].as_str().unwrap();
            let key = body
                .lines()
                .find_map(|l| l.strip_prefix("Alert id: "))
                .unwrap_or_else(|| panic!("no alert id in {body}"))
                .to_owned();
            let channel = attr(m, "channel");
            assert!(
                body.contains(&format!("https://twitch.tv/{channel}")),
                "no channel link in {body}"
            );
            assert!(body.contains("Rule: "), "{body}");
            (
                m["Subject"].as_str().unwrap().to_owned(),
                channel,
                attr(m, "rule"),
                attr(m, "severity"),
                key,
            )
        })
        .collect();
    v.sort();
    v
}

fn as_owned(
    v: Vec<(String, &str, &str, &str, String)>,
) -> Vec<(String, String, String, String, String)> {
    v.into_iter()
        .map(|(a, b, c, d, e)| (a, b.into(), c.into(), d.into(), e))
        .collect()
}

/// Delivery rows by (sink, status) → count.
fn deliveries(db: &Path) -> BTreeMap<(String, String), i64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut st = conn
        .prepare("SELECT sink, status, COUNT(*) FROM alert_deliveries GROUP BY sink, status")
        .unwrap();
    st.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn row(sink: &str, status: &str, n: i64) -> ((String, String), i64) {
    ((sink.into(), status.into()), n)
}

#[test]
fn burst_publishes_exactly_the_expected_alerts_once() {
    let moto = Moto::start();
    let hype = moto.create_topic("hype");
    let raids = moto.create_topic("raids");
    let hype_q = moto.subscribed_queue("hype-q", &hype);
    let raids_q = moto.subscribed_queue("raids-q", &raids);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_log(&d.join("chat.log"), 0);
    write_pipeline(
        d,
        "\"max\"",
        &sns_alerts(&moto.url(), &hype, &raids, "shutdown_timeout = \"20s\""),
    );

    let out = run(d);
    assert!(out.contains("alerts fired: 4 (delivered 4)"), "{out}");
    assert!(
        out.contains("left in the store for the next run: 0 pending, 0 dead letters"),
        "{out}"
    );
    assert!(
        out.contains("sns.hype 3 delivered, 0 failed attempts, 0 dead-lettered"),
        "{out}"
    );
    assert_eq!(out.matches("ALERT [info] hype #").count(), 3, "{out}");

    let h = moto.drain_queue(&hype_q);
    assert_eq!(received(&h), as_owned(expected_hype()), "{h:#?}");
    let r = moto.drain_queue(&raids_q);
    assert_eq!(received(&r), as_owned(expected_raids()), "{r:#?}");
    assert_eq!(
        deliveries(&d.join("out.db")),
        BTreeMap::from([
            row("console", "delivered", 3),
            row("sns.hype", "delivered", 3),
            row("sns.raids", "delivered", 1),
        ])
    );

    // The same log over the same store: nothing new fires, nothing is sent again.
    let again = run(d);
    assert!(again.contains("alerts fired: 0 (delivered 0)"), "{again}");
    assert!(moto.drain_queue(&hype_q).is_empty());
    assert!(moto.drain_queue(&raids_q).is_empty());
    assert!(!again.contains("ALERT ["), "{again}");
}

/// Delivery settings that dead-letter fast and retry dead letters often.
const FAST: &str = "max_attempts = 2\ninitial_backoff = \"50ms\"\nmax_backoff = \"100ms\"\n\
                    dead_letter_interval = \"400ms\"\nshutdown_timeout = \"10s\"";

#[test]
fn sns_outage_dead_letters_then_delivers_each_alert_exactly_once() {
    let moto = Moto::start();
    let hype = moto.create_topic("hype");
    let raids = moto.create_topic("raids");
    let hype_q = moto.subscribed_queue("hype-q", &hype);
    let raids_q = moto.subscribed_queue("raids-q", &raids);
    // SNS is down from the start: connections to the forwarder are refused.
    let fwd = Forwarder::new(moto.port, false);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 72 burst messages, then filler: at 60 msg/s the run lasts about 10 s.
    write_log(&d.join("chat.log"), 540);
    write_pipeline(d, "60", &sns_alerts(&fwd.url(), &hype, &raids, FAST));
    let db = d.join("out.db");
    let child = streamtap_cmd(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child = Arc::new(Mutex::new(Some(child)));
    let guard = KillOnDrop(child.clone());

    // Every SNS delivery dead-lettered in the store; the console, unaffected, delivered.
    let seen = wait_until(
        "dead-lettered SNS deliveries",
        Duration::from_secs(60),
        || {
            if !db.exists() {
                return None;
            }
            let rows = deliveries(&db);
            let want = BTreeMap::from([
                row("console", "delivered", 3),
                row("sns.hype", "dead_letter", 3),
                row("sns.raids", "dead_letter", 1),
            ]);
            (rows == want).then_some(rows)
        },
    );
    assert_eq!(seen.len(), 3);
    let errors: Vec<String> = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut st = conn
            .prepare("SELECT last_error FROM alert_deliveries WHERE status = 'dead_letter'")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(
        errors.iter().all(|e| e.contains("connection failed")),
        "{errors:?}"
    );
    assert!(
        moto.drain_queue(&hype_q).is_empty(),
        "delivered during the outage"
    );

    // SNS is back: the dead letters go out at their slower cadence, during the run.
    fwd.up();
    wait_until("delivery after the outage", Duration::from_secs(30), || {
        let rows = deliveries(&db);
        (rows
            == BTreeMap::from([
                row("console", "delivered", 3),
                row("sns.hype", "delivered", 3),
                row("sns.raids", "delivered", 1),
            ]))
        .then_some(())
    });
    let still_running = child
        .lock()
        .unwrap()
        .as_mut()
        .unwrap()
        .try_wait()
        .unwrap()
        .is_none();
    assert!(
        still_running,
        "the run ended before SNS came back; lengthen the filler"
    );
    let c = child.lock().unwrap().take().unwrap();
    drop(guard);
    let out = check_output(&c.wait_with_output().unwrap());
    assert!(out.contains("alerts fired: 4 (delivered 4)"), "{out}");
    assert!(out.contains("sns.hype 3 delivered"), "{out}");
    assert!(out.contains("3 dead-lettered"), "{out}");
    assert!(
        out.contains("left in the store for the next run: 0 pending, 0 dead letters"),
        "{out}"
    );
    assert!(out.contains("alert delivery dead-lettered"), "{out}");

    assert_eq!(
        received(&moto.drain_queue(&hype_q)),
        as_owned(expected_hype())
    );
    assert_eq!(
        received(&moto.drain_queue(&raids_q)),
        as_owned(expected_raids())
    );
}

#[test]
fn alerts_left_at_shutdown_are_delivered_by_the_next_run() {
    let moto = Moto::start();
    let hype = moto.create_topic("hype");
    let raids = moto.create_topic("raids");
    let hype_q = moto.subscribed_queue("hype-q", &hype);
    let raids_q = moto.subscribed_queue("raids-q", &raids);
    let fwd = Forwarder::new(moto.port, false);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_log(&d.join("chat.log"), 0);
    let delivery = "max_attempts = 3\ninitial_backoff = \"100ms\"\nmax_backoff = \"200ms\"\n\
                    dead_letter_interval = \"1h\"\nshutdown_timeout = \"500ms\"";
    write_pipeline(
        d,
        "\"max\"",
        &sns_alerts(&fwd.url(), &hype, &raids, delivery),
    );

    // SNS down for the whole first run: the alerts stay in the store.
    let first = run(d);
    assert!(first.contains("alerts fired: 4 (delivered 0)"), "{first}");
    assert!(
        first.contains("alert deliveries left in the store at shutdown"),
        "{first}"
    );
    let rows = deliveries(&d.join("out.db"));
    assert_eq!(rows.get(&("console".into(), "delivered".into())), Some(&3));
    let undelivered: i64 = rows
        .iter()
        .filter(|((s, st), _)| s.starts_with("sns.") && st != "delivered")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(undelivered, 4, "{rows:?}");
    assert!(moto.drain_queue(&hype_q).is_empty());

    // SNS back; the next run (same log: nothing new fires) resumes them, dead letters
    // included although their hour-long retry interval has not passed.
    fwd.up();
    let second = run(d);
    assert!(second.contains("alerts fired: 0 (delivered 4)"), "{second}");
    assert!(second.contains("resuming alert deliveries"), "{second}");
    assert_eq!(
        received(&moto.drain_queue(&hype_q)),
        as_owned(expected_hype())
    );
    assert_eq!(
        received(&moto.drain_queue(&raids_q)),
        as_owned(expected_raids())
    );
    assert_eq!(
        deliveries(&d.join("out.db")),
        BTreeMap::from([
            row("console", "delivered", 3),
            row("sns.hype", "delivered", 3),
            row("sns.raids", "delivered", 1),
        ])
    );
    // And a third run has nothing to send.
    let third = run(d);
    assert!(third.contains("alerts fired: 0 (delivered 0)"), "{third}");
    assert!(moto.drain_queue(&hype_q).is_empty());
}

struct KillOnDrop(Arc<Mutex<Option<std::process::Child>>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A tiny HTTP/1.1 server: answers 500 to the first `fail_first` POSTs, then 200, and
/// records every body with the status it got.
struct Hook {
    port: u16,
    got: Arc<Mutex<Vec<(u16, serde_json::Value)>>>,
}

impl Hook {
    fn start(fail_first: usize) -> Hook {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<(u16, serde_json::Value)>>> = Arc::default();
        let g = got.clone();
        // Lives until the test process ends; it only ever blocks in accept.
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                let g = g.clone();
                std::thread::spawn(move || serve(conn, g, fail_first));
            }
        });
        Hook { port, got }
    }
}

fn serve(
    conn: std::net::TcpStream,
    got: Arc<Mutex<Vec<(u16, serde_json::Value)>>>,
    fail_first: usize,
) {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).unwrap();
        let mut g = got.lock().unwrap();
        let status = if g.len() < fail_first { 500 } else { 200 };
        g.push((status, serde_json::from_slice(&body).unwrap()));
        drop(g);
        let reason = if status == 200 {
            "OK"
        } else {
            "Internal Server Error"
        };
        let _ = write!(w, "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\n\r\n");
    }
}

#[test]
fn webhook_gets_each_alert_once_after_a_failed_attempt() {
    let hook = Hook::start(1);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_log(&d.join("chat.log"), 0);
    write_pipeline(
        d,
        "\"max\"",
        &format!(
            "[alerts]\ndefault = [\"webhook.ops\"]\n\n[alerts.webhook.ops]\nurl = \"http://127.0.0.1:{}/hooks/streamtap\"\n\n[alerts.delivery]\ninitial_backoff = \"50ms\"\nshutdown_timeout = \"10s\"\n",
            hook.port
        ),
    );
    let out = run(d);
    assert!(out.contains("alerts fired: 4 (delivered 4)"), "{out}");
    assert!(
        out.contains("webhook.ops 4 delivered, 1 failed attempts, 0 dead-lettered"),
        "{out}"
    );
    let got = hook.got.lock().unwrap().clone();
    assert_eq!(got.len(), 5, "{got:#?}");
    assert_eq!(got[0].0, 500);
    let mut accepted: Vec<String> = got
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b["dedupe_key"].as_str().unwrap().to_owned())
        .collect();
    accepted.sort();
    let mut want: Vec<String> = expected_hype()
        .into_iter()
        .chain(expected_raids())
        .map(|e| e.4)
        .collect();
    want.sort();
    assert_eq!(accepted, want);
    // The refused one was sent again and accepted.
    let first_key = got[0].1["dedupe_key"].as_str().unwrap();
    assert!(accepted.iter().any(|k| k == first_key));
    let raid = got
        .iter()
        .map(|(_, b)| b)
        .find(|b| b["rule"] == "raid")
        .unwrap();
    assert_eq!(raid["channel"], "lune_fr");
    assert_eq!(raid["severity"], "critical");
    assert_eq!(raid["channel_url"], "https://twitch.tv/lune_fr");
    assert!(raid["text"].as_str().unwrap().contains("raid: #lune_fr"));
}
