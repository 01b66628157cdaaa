//! The whole system on one machine (`make e2e`; part of `make test`): the deployment of
//! `common::system` (mock Twitch with 2,000 channels, one live and recorded, two
//! collectors, tansu, two processors with sentiment, translate, a tagging plugin, analytics
//! and alert rules, SecantusDB, moto SNS → SQS, Prometheus) runs two phases of chat with a
//! burst each. Between them, with chat still flowing, a plugin is replaced (the tagger,
//! v1 → v2) and the hype alert rule is edited from "never" to 200 messages in 20 s, both
//! hot-reloaded by the processors. Then every message the mock sent must be stored exactly
//! once with every plugin's fields, the second burst (and only it) must reach the SQS queue
//! once, the live channel's recording must be there with a sane duration, and Prometheus
//! must show every instance up.

mod common;

use common::system::{
    BURST_CHANNEL, HYPE_THRESHOLD, LIVE_CHANNEL, POOL, STREAM_ID, System, replace_file,
    translation_of,
};
use mongodb::bson::Document;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Chat messages per second of the steady load, spread over every channel.
const RATE: usize = 200;
/// Length of each chat phase: the first burst's 20 s window must have closed before the
/// rule edit, or the edited rule would fire on the count it already holds.
const PHASE_SECS: u64 = 45;
/// Messages of one burst, all in one message-time window of the hype rule.
const BURST: usize = 250;

/// `streamtap_reloads_total{result="ok"}` of the instance serving metrics on `port`.
fn reloads_ok(port: u16) -> f64 {
    common::run::scrape(port)
        .and_then(|t| common::run::series(&t, "streamtap_reloads_total{result=\"ok\"}"))
        .unwrap_or(0.0)
}

/// Keeps chat flowing until every processor (metrics on `ports`) has swapped in `more`
/// generations past `before`; returns how long that took, in ms.
fn chat_until_reloaded(
    sys: &mut System,
    ports: &[u16],
    before: &[f64],
    more: f64,
    what: &str,
) -> u128 {
    let t = Instant::now();
    while !ports
        .iter()
        .zip(before)
        .all(|(p, b)| reloads_ok(*p) >= b + more)
    {
        sys.send_spread(RATE / 10);
        sys.assert_running(what);
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "reload of {what} not seen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    t.elapsed().as_millis()
}

fn str_field<'a>(d: &'a Document, path: &[&str]) -> Option<&'a str> {
    let (last, init) = path.split_last()?;
    let mut cur = d;
    for k in init {
        cur = cur.get_document(k).ok()?;
    }
    cur.get_str(last).ok()
}

#[test]
fn the_whole_system_on_one_machine() {
    let t0 = Instant::now();
    let mut sys = System::start();

    // Phase 1: steady chat, and a burst the hype rule (threshold out of reach) ignores.
    sys.chat_for(PHASE_SECS, RATE, |s, sec| {
        if sec == 1 {
            s.send_to(BURST_CHANNEL, BURST);
        }
    });

    // Hot reload with chat flowing: the tagger plugin v1 → v2, then the alert rule.
    let stored_before_reload: HashSet<String> = sys
        .stored_ids()
        .expect("MongoDB answers")
        .into_keys()
        .collect();
    let ports: Vec<u16> = sys.processors.iter().map(|p| p.metrics_port).collect();
    let before: Vec<f64> = ports.iter().map(|p| reloads_ok(*p)).collect();
    let v2 = std::fs::read(common::plugin("versioned", &["v2"])).unwrap();
    replace_file(&sys.dir().join("plugins/tagger.wasm"), &v2);
    let plugin_reload_ms = chat_until_reloaded(&mut sys, &ports, &before, 1.0, "the plugin");
    sys.write_pipelines(HYPE_THRESHOLD, "");
    let rule_reload_ms = chat_until_reloaded(&mut sys, &ports, &before, 2.0, "the alert rule");
    let first_after_reload = sys.sent.len();
    let sent_before_phase2: HashSet<String> = sys.sent.keys().cloned().collect();

    // Phase 2: steady chat, and a burst the edited rule alerts on, once.
    sys.chat_for(PHASE_SECS, RATE, |s, sec| {
        if sec == 1 {
            s.send_to(BURST_CHANNEL, BURST);
        }
    });
    // The stream ends: the recorder closes its file.
    sys.helix.set_offline(LIVE_CHANNEL);

    let drain = sys.wait_all_stored(Duration::from_secs(120));
    let up = sys.up().expect("Prometheus answers");
    assert_eq!(up.len(), 4, "{up:?}");
    assert!(up.values().all(|v| *v), "an instance is down: {up:?}");

    // The alert: wait for it, then a little longer for a second one that must not come.
    let mut alerts = Vec::new();
    let t = Instant::now();
    while alerts.is_empty() && t.elapsed() < Duration::from_secs(30) {
        alerts.extend(sys.drain_alerts());
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(5));
    alerts.extend(sys.drain_alerts());

    eprintln!(
        "{:.0}s: stored and alerted; stopping",
        t0.elapsed().as_secs_f64()
    );
    let summaries = sys.stop_all();
    eprintln!("{:.0}s: stopped", t0.elapsed().as_secs_f64());
    let ids = sys.stored_ids().expect("MongoDB answers");

    // Every message the mock sent is stored exactly once; nothing else is.
    let sent: HashSet<String> = sys.sent.keys().cloned().collect();
    let stored: HashSet<String> = ids.keys().cloned().collect();
    let lost: Vec<&String> = sent.difference(&stored).collect();
    let extra: Vec<&String> = stored.difference(&sent).collect();
    let twice: Vec<(&String, &usize)> = ids.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        lost.is_empty(),
        "{} lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        extra.is_empty(),
        "stored but never sent: {:?}",
        &extra[..extra.len().min(5)]
    );
    assert!(twice.is_empty(), "stored more than once: {twice:?}");

    // With every plugin's fields.
    let docs = sys.all("messages");
    let mut langs: HashMap<&str, usize> = HashMap::new();
    let mut versions: HashMap<String, usize> = HashMap::new();
    for d in &docs {
        let id = d.get_str("_id").unwrap();
        let line = &POOL[sys.sent[id].line];
        let f = d
            .get_document("fields")
            .unwrap_or_else(|_| panic!("{id}: no fields"));
        let s = f
            .get_document("sentiment")
            .unwrap_or_else(|_| panic!("{id}: no sentiment"));
        for k in ["compound", "pos", "neu", "neg"] {
            let v = s
                .get_f64(k)
                .unwrap_or_else(|_| panic!("{id}: sentiment.{k}: {s}"));
            assert!((-1.0..=1.0).contains(&v), "{id}: sentiment.{k} = {v}");
        }
        assert!(
            ["positive", "neutral", "negative"].contains(&s.get_str("label").unwrap_or("")),
            "{id}: {s}"
        );
        let lang = f
            .get_str("lang")
            .unwrap_or_else(|_| panic!("{id}: no lang: {f}"));
        *langs.entry(line.lang).or_default() += 1;
        if !["en", "und"].contains(&line.lang) {
            assert_eq!(lang, line.lang, "{id}: {:?}", line.text);
            assert_eq!(
                str_field(f, &["translation", "text"]),
                Some(translation_of(line.text).as_str()),
                "{id}: {f}"
            );
        }
        assert_eq!(f.get_str("tag").ok(), Some("e2e"), "{id}: {f}");
        let version = f
            .get_str("version")
            .unwrap_or_else(|_| panic!("{id}: no version"));
        *versions.entry(version.to_owned()).or_default() += 1;
        if stored_before_reload.contains(id) {
            assert_eq!(version, "v1", "{id} was stored before the plugin reload");
        }
        if !sent_before_phase2.contains(id) {
            assert_eq!(
                version, "v2",
                "{id} was sent after both processors reloaded"
            );
        }
    }
    assert!(versions.get("v1").copied().unwrap_or(0) > 0, "{versions:?}");
    assert!(versions.get("v2").copied().unwrap_or(0) > 0, "{versions:?}");
    assert!(
        sys.translate.violations().is_empty(),
        "{:?}",
        sys.translate.violations()
    );

    eprintln!("{:.0}s: messages checked", t0.elapsed().as_secs_f64());
    // The analytics windows count every chat message once.
    let stats = sys.all("channel_stats");
    let in_windows: i64 = stats
        .iter()
        .filter(|d| d.get_str("channel") != Ok(LIVE_CHANNEL))
        .map(|d| d.get_i64("messages").unwrap_or(0))
        .sum();
    let chat_outside_live = docs
        .iter()
        .filter(|d| d.get_str("channel") != Ok(LIVE_CHANNEL))
        .count() as i64;
    assert_eq!(
        in_windows, chat_outside_live,
        "channel_stats vs stored messages"
    );

    // One alert for the second burst, none for the first.
    assert_eq!(alerts.len(), 1, "SNS notifications in SQS: {alerts:#?}");
    let body = alerts[0]["Message"].as_str().unwrap_or_default();
    assert!(body.contains(BURST_CHANNEL), "{body}");
    let stored_alerts = sys.all("alerts");
    assert_eq!(stored_alerts.len(), 1, "{stored_alerts:?}");
    let key = stored_alerts[0].get_str("_id").unwrap().to_owned();
    assert!(key.starts_with(&format!("hype:{BURST_CHANNEL}:")), "{key}");
    assert!(
        body.contains(&key),
        "the notification names its dedupe key {key}: {body}"
    );

    // The live channel's recording: one file, as long as the stream was watched.
    let rec = sys.dir().join("rec").join(LIVE_CHANNEL);
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&rec)
        .unwrap_or_else(|e| panic!("{}: {e}", rec.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ts"))
        .collect();
    assert!(
        files.iter().all(|f| f
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(STREAM_ID)),
        "{files:?}"
    );
    let seconds: f64 = files.iter().map(|f| common::media::duration_s(f)).sum();
    let wall = t0.elapsed().as_secs_f64();
    assert!(
        seconds >= 2.0 * PHASE_SECS as f64 * 0.8 && seconds <= wall,
        "recorded {seconds:.1}s of media in a {wall:.0}s run: {files:?}"
    );
    let recordings = sys.all("recordings");
    assert!(
        recordings.iter().any(|r| r.get_str("_id") == Ok(STREAM_ID)),
        "{recordings:?}"
    );

    eprintln!(
        "e2e: {} sent, {} stored, 0 lost, 0 duplicates ({} of them after the reload); versions {versions:?}; langs {langs:?}; \
         plugin reload seen in {plugin_reload_ms} ms, rule reload in {rule_reload_ms} ms; drained {:.1}s after chat stopped; \
         recording {seconds:.1}s of media; 1 alert; {:.0}s in all",
        sent.len(),
        stored.len(),
        sent.len() - first_after_reload,
        drain.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    for (name, summary) in summaries {
        eprintln!("{name}: {}", summary.trim());
    }
}
