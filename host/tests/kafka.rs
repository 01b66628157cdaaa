//! The Kafka transport's building blocks against a real broker (`tansu`, started per test):
//! schema round trip and poison reporting, producer → consumer group with acks and
//! restarts (at-least-once, no redelivery past committed offsets), per-channel order,
//! dead letters, and an independent client (`kcat`) reading what we produce.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::server::Server;
use common::tansu;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use streamtap::transport::kafka::{
    self, Batch, ConsumerOptions, DeadLetterProducer, DecodeError, KafkaConsumer, KafkaProducer,
    ProducerOptions,
};
use streamtap_plugin_sdk::{Badge, ChatMessage, Emote, Value};

/// Generous bound for a broker round trip in tests (group joins take a few seconds).
const PATIENCE: Duration = Duration::from_secs(90);
/// How long the broker or MongoDB is down in the outage tests.
const OUTAGE: Duration = Duration::from_secs(15);

fn msg(channel: &str, seq: i64) -> ChatMessage {
    ChatMessage {
        id: format!("{channel}-{seq}"),
        kind: "privmsg".into(),
        channel: channel.into(),
        channel_id: format!("id-{channel}"),
        user: format!("user{}", seq % 17),
        user_id: format!("{}", 1000 + seq % 17),
        display_name: format!("User{}", seq % 17),
        text: format!("hello {seq} Kappa ✓"),
        ts_ms: 1_700_000_000_000 + seq,
        badges: vec![Badge {
            name: "subscriber".into(),
            version: "12".into(),
        }],
        emotes: vec![Emote {
            id: "25".into(),
            start: 6 + seq.to_string().len() as u32,
            end: 10 + seq.to_string().len() as u32,
        }],
        fields: [
            ("seq".to_string(), Value::Int(seq)),
            ("score".to_string(), Value::Float(0.5)),
            (
                "tags".to_string(),
                Value::List(vec![Value::Str("a".into())]),
            ),
        ]
        .into_iter()
        .collect(),
    }
}

fn seq_of(m: &ChatMessage) -> i64 {
    match m.fields.get("seq") {
        Some(Value::Int(i)) => *i,
        other => panic!("message {} has no seq: {other:?}", m.id),
    }
}

async fn produce(brokers: &str, topic: &str, msgs: &[ChatMessage]) -> Vec<(i32, i64)> {
    let p = KafkaProducer::new(&ProducerOptions::new(brokers, topic)).expect("producer");
    let mut pending = Vec::with_capacity(msgs.len());
    for m in msgs {
        pending.push(p.send(m).await.expect("enqueue"));
    }
    let mut out = Vec::with_capacity(pending.len());
    for d in pending {
        out.push(
            tokio::time::timeout(PATIENCE, d.wait())
                .await
                .expect("delivery in time")
                .expect("delivered"),
        );
    }
    out
}

async fn next(c: &KafkaConsumer, limit: Duration) -> Option<Batch> {
    tokio::time::timeout(limit, c.next_batch())
        .await
        .ok()
        .map(|b| b.expect("consume"))
}

/// Reads batches until `n` messages (plus poison) have come, acking each when `ack`.
async fn consume(c: &KafkaConsumer, n: usize, ack: bool) -> (Vec<ChatMessage>, Vec<kafka::Poison>) {
    let mut got = Vec::new();
    let mut poison = Vec::new();
    while got.len() < n {
        let b = next(c, PATIENCE)
            .await
            .unwrap_or_else(|| panic!("only {} of {n} messages arrived", got.len()));
        got.extend(b.messages.into_iter().map(|r| r.message));
        poison.extend(b.poison);
        if ack {
            c.ack(b.token).await.expect("ack");
        }
    }
    (got, poison)
}

fn setup(partitions: u32, topic: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = tansu::broker(&dir.path().join("tansu"));
    tansu::create_topic(&b, topic, partitions);
    (dir, b)
}

#[test]
fn schema_round_trips_and_poison_names_field_and_value() {
    let m = msg("forsen", 42);
    let bytes = kafka::encode(&m);
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["v"], 1);
    assert_eq!(json["ts"], 1_700_000_000_042i64);
    assert_eq!(json["badges"][0]["name"], "subscriber");
    assert_eq!(kafka::decode(&bytes).unwrap(), m);
    assert_eq!(kafka::key(&m), "forsen");

    let cases: &[(&[u8], &str)] = &[
        (b"not json", "payload is not JSON"),
        (b"[1,2]", "payload is not a JSON object: [1,2]"),
        (br#"{"v":2}"#, "field `v` has unsupported schema version 2"),
        (br#"{"v":1}"#, "field `ts` is missing"),
        (
            br#"{"v":1,"ts":"yesterday"}"#,
            "field `ts` has invalid value \"yesterday\"",
        ),
    ];
    for (payload, want) in cases {
        let e = kafka::decode(payload).unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} should contain {want:?}");
    }
    let mut bad: serde_json::Value = json.clone();
    bad["emotes"][0]["start"] = serde_json::json!(-3);
    let e = kafka::decode(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
    assert_eq!(
        e,
        DecodeError::Invalid {
            field: "emotes[0].start".into(),
            value: "-3".into(),
            expected: "an integer 0..=4294967295"
        }
    );
    let mut bad = json;
    bad["user"] = serde_json::json!(7);
    assert!(
        kafka::decode(&serde_json::to_vec(&bad).unwrap())
            .unwrap_err()
            .to_string()
            .contains("field `user` has invalid value 7")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_offsets_are_not_redelivered_and_channel_order_holds() {
    let (_dir, broker) = setup(4, "chat");
    let brokers = broker.addr();
    let channels: Vec<String> = (0..12).map(|i| format!("chan{i}")).collect();
    let msgs: Vec<ChatMessage> = (0..5_000)
        .map(|i| msg(&channels[i as usize % channels.len()], i))
        .collect();
    let placed = produce(&brokers, "chat", &msgs).await;
    let partitions: HashSet<i32> = placed.iter().map(|p| p.0).collect();
    assert!(
        partitions.len() > 1,
        "all channels landed in {partitions:?}"
    );
    // Same key, same partition.
    let mut part_of: BTreeMap<&str, i32> = BTreeMap::new();
    for (m, (p, _)) in msgs.iter().zip(&placed) {
        assert_eq!(
            *part_of.entry(&m.channel).or_insert(*p),
            *p,
            "{}",
            m.channel
        );
    }

    let c = KafkaConsumer::new(&ConsumerOptions::new(&brokers, "g1", "chat")).expect("consumer");
    let (got, poison) = consume(&c, 5_000, true).await;
    assert!(poison.is_empty(), "{poison:?}");
    assert_eq!(got.len(), 5_000, "duplicates or extras");
    let ids: HashSet<&str> = got.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), 5_000);
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for m in &got {
        let s = seq_of(m);
        if let Some(prev) = last.insert(&m.channel, s) {
            assert!(prev < s, "{}: {s} after {prev}", m.channel);
        }
    }
    assert_eq!(got.iter().find(|m| m.id == "chan3-3").unwrap(), &msgs[3]);
    drop(c);

    // Restart: only what was produced since comes, nothing before the committed offsets.
    let more: Vec<ChatMessage> = (5_000..5_100)
        .map(|i| msg(&channels[i as usize % channels.len()], i))
        .collect();
    produce(&brokers, "chat", &more).await;
    let c = KafkaConsumer::new(&ConsumerOptions::new(&brokers, "g1", "chat")).expect("consumer");
    let (got, _) = consume(&c, 100, true).await;
    let want: HashSet<&str> = more.iter().map(|m| m.id.as_str()).collect();
    let seen: HashSet<&str> = got.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(got.len(), 100, "redelivered: {:?}", seen.difference(&want));
    assert_eq!(seen, want);
    assert!(
        next(&c, Duration::from_secs(5)).await.is_none(),
        "more messages after the committed ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_come_again_after_restart() {
    let (_dir, broker) = setup(4, "chat");
    let brokers = broker.addr();
    let msgs: Vec<ChatMessage> = (0..400).map(|i| msg(&format!("c{}", i % 7), i)).collect();
    produce(&brokers, "chat", &msgs).await;
    let want: HashSet<String> = msgs.iter().map(|m| m.id.clone()).collect();

    let c = KafkaConsumer::new(&ConsumerOptions::new(&brokers, "g2", "chat")).expect("consumer");
    let (got, _) = consume(&c, 400, false).await;
    assert_eq!(
        got.iter().map(|m| m.id.clone()).collect::<HashSet<_>>(),
        want
    );
    drop(c);

    // Nothing was acked: a new member of the group gets all of them again.
    let c = KafkaConsumer::new(&ConsumerOptions::new(&brokers, "g2", "chat")).expect("consumer");
    let (got, _) = consume(&c, 400, true).await;
    assert_eq!(got.len(), 400);
    assert_eq!(
        got.iter().map(|m| m.id.clone()).collect::<HashSet<_>>(),
        want
    );
    drop(c);

    // Now acked: a third start sees nothing.
    let c = KafkaConsumer::new(&ConsumerOptions::new(&brokers, "g2", "chat")).expect("consumer");
    assert!(next(&c, Duration::from_secs(8)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_surfaced_with_offset_and_dead_lettered_and_the_partition_flows() {
    let (_dir, broker) = setup(1, "chat");
    tansu::create_topic(&broker, "chat-dlq", 1);
    let brokers = broker.addr();
    let before: Vec<ChatMessage> = (0..10).map(|i| msg("x", i)).collect();
    let after: Vec<ChatMessage> = (10..20).map(|i| msg("x", i)).collect();
    produce(&brokers, "chat", &before).await;
    let raw: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let bad = br#"{"v":1,"id":"zzz","ts":"soon"}"#;
    let bad_offset = raw
        .send(
            FutureRecord::to("chat").key("x").payload(&bad[..]),
            Duration::from_secs(30),
        )
        .await
        .expect("raw send")
        .offset;
    produce(&brokers, "chat", &after).await;

    let c = KafkaConsumer::new(&ConsumerOptions::new(&brokers, "g3", "chat")).expect("consumer");
    let (got, poison) = consume(&c, 20, false).await;
    assert_eq!(
        got.iter().map(seq_of).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    assert_eq!(poison.len(), 1, "{poison:?}");
    let p = &poison[0];
    assert_eq!((p.partition, p.offset), (0, bad_offset));
    assert_eq!(p.payload, bad);
    assert_eq!(p.key.as_deref(), Some(&b"x"[..]));
    assert!(
        p.error
            .to_string()
            .contains("field `ts` has invalid value \"soon\""),
        "{}",
        p.error
    );

    let dlq = DeadLetterProducer::new(&brokers, "chat-dlq").expect("dlq");
    dlq.send(p.key.as_deref(), &p.payload, &p.error.to_string(), "", "")
        .await
        .expect("dead-lettered");
    dlq.send(Some(b"x"), b"{}", "step refused", "sentiment", "0.3.1")
        .await
        .expect("dead-lettered");

    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&["chat-dlq"]).unwrap();
    let mut dead = Vec::new();
    while dead.len() < 2 {
        let m = tokio::time::timeout(PATIENCE, reader.recv())
            .await
            .expect("dead letter in time")
            .expect("dead letter");
        let h = m.headers().expect("headers");
        let hdr: BTreeMap<String, String> = h
            .iter()
            .map(|h| {
                (
                    h.key.to_string(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        dead.push((m.payload().unwrap_or_default().to_vec(), hdr));
    }
    assert_eq!(dead[0].0, bad);
    assert!(
        dead[0].1["reason"].contains("field `ts`"),
        "{:?}",
        dead[0].1
    );
    assert_eq!(dead[1].1["plugin"], "sentiment");
    assert_eq!(dead[1].1["version"], "0.3.1");
    assert_eq!(dead[1].1["reason"], "step refused");
}

/// An independent client reads what the collector published: `streamtap collect` replays
/// a chat log into tansu, and Debian's `kcat` 1.7.1 (with the librdkafka streamtap
/// bundles, see [`tansu::bundled_librdkafka`]) consumes the topic: every record is the
/// documented JSON schema (`v` = 1), keyed by its channel, and together they are the log's
/// messages, each once.
#[test]
fn kcat_reads_what_the_collector_published() {
    const N: usize = 500;
    let (dir, broker) = setup(2, "chat");
    let d = dir.path();
    common::write_log(&d.join("chat.log"), N, &["alpha", "beta", "gamma"]);
    split_pipeline(d, &broker.addr(), "");
    common::stdout_ok(
        &streamtap_cmd(d, &["collect", "p.toml", "--quiet"])
            .output()
            .unwrap(),
    );
    let text = std::fs::read_to_string(d.join("chat.log")).unwrap();
    let (want, bad) = streamtap::sources::replay::parse_log(&d.join("chat.log"), &text);
    assert!(bad.is_empty(), "{bad:?}");
    let out = tansu::kcat(&tansu::bundled_librdkafka(), &broker.addr())
        .args(["-t", "chat", "-C", "-e", "-q", "-f", "%k\t%s\n"])
        .output()
        .expect("run kcat");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (k, json) = line.split_once('\t').expect("key\tvalue");
        let v: serde_json::Value = serde_json::from_str(json).expect("kcat output is JSON");
        assert_eq!(v["v"], 1, "{json}");
        assert_eq!(v["channel"], k, "{json}");
        let m = kafka::decode(json.as_bytes()).expect("decodes");
        assert!(got.insert(m.id.clone(), m).is_none(), "a record twice");
    }
    assert_eq!(got.len(), N);
    for m in want {
        assert_eq!(got.get(&m.id), Some(&m), "{}", m.id);
    }
}

// ---------------------------------------------------------------------------------------------
// `streamtap collect` / `streamtap process`

/// A `[transport.kafka]` pipeline: replay `chat.log` → `chat` → `steps` → SQLite `out.db`.
fn split_pipeline(dir: &std::path::Path, brokers: &str, steps: &str) -> std::path::PathBuf {
    split_pipeline_with(dir, brokers, "", "", steps, SQLITE_SINK)
}

const SQLITE_SINK: &str = "[sink.sqlite]\npath = \"out.db\"";

/// [`split_pipeline`] with extra `[source.replay]` and `[transport.kafka]` keys.
fn split_pipeline_with(
    dir: &std::path::Path,
    brokers: &str,
    source_extra: &str,
    kafka_extra: &str,
    steps: &str,
    sink: &str,
) -> std::path::PathBuf {
    let p = dir.join("p.toml");
    std::fs::write(
        &p,
        format!(
            r#"
name = "split"
[source.replay]
path = "chat.log"
{source_extra}
[transport.kafka]
brokers = "{brokers}"
topic = "chat"
dead_letter_topic = "chat-dlq"
group_id = "processors"
batch_size = 1000
# A killed processor's partitions move on quickly.
session_timeout = "6s"
{kafka_extra}
{steps}
{sink}
"#
        ),
    )
    .unwrap();
    p
}

/// After a `kill -9` of a processor, waits until the group has dropped it (the pipeline's
/// `session_timeout` plus a margin) before a new one joins. Observed with tansu 0.6: a
/// member that joins while the dead one's session is still open can wait minutes (up to
/// what looks like the 300 s rebalance timeout, `max.poll.interval.ms`) for its
/// partitions; Apache Kafka evicts the dead member at session expiry. Real deployments
/// restart a crashed processor after a delay of its own (systemd `RestartSec`, k8s
/// backoff), so this is the shape the tests exercise.
fn wait_out_the_dead_member() {
    std::thread::sleep(Duration::from_secs(8));
}

fn streamtap_cmd(dir: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(common::streamtap_bin());
    c.args(args)
        .current_dir(dir)
        .env(
            "STREAMTAP_CACHE_DIR",
            common::target_dir().join("test-plugin-cache"),
        )
        .env("RUST_LOG", "info,rdkafka=warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c
}

/// The ids of every message in a MongoDB store, duplicates included.
fn mongo_ids(
    rt: &tokio::runtime::Runtime,
    db: &streamtap::sinks::mongodb::MongoSink,
) -> Vec<String> {
    rt.block_on(db.query(&streamtap::sinks::sqlite::Query {
        channel: None,
        since_ms: None,
        limit: None,
    }))
    .expect("query")
    .into_iter()
    .map(|r| r["id"].as_str().unwrap().to_owned())
    .collect()
}

/// Messages in the SQLite store (0 before the processor created it).
fn stored(dir: &std::path::Path) -> u64 {
    streamtap::sinks::sqlite::count(&dir.join("out.db"), "messages").unwrap_or(0)
}

/// A running `streamtap` whose stderr goes to a file (a pipe nobody reads would fill up
/// and stall a chatty process). Killed when dropped; a failing test prints its log.
struct Proc {
    child: Option<std::process::Child>,
    log: std::path::PathBuf,
}

fn spawn_proc(dir: &std::path::Path, args: &[&str]) -> Proc {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = dir.join(format!("streamtap-{}-{n}.log", args[0]));
    let child = streamtap_cmd(dir, args)
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start streamtap");
    Proc {
        child: Some(child),
        log,
    }
}

impl Proc {
    fn id(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL (`kill -9`).
    fn kill(&mut self) -> std::io::Result<()> {
        self.child.as_mut().expect("running").kill()
    }

    /// Waits for the exit; the output's stderr is the log file.
    fn wait_with_output(mut self) -> std::io::Result<std::process::Output> {
        let mut out = self.child.take().expect("running").wait_with_output()?;
        out.stderr = std::fs::read(&self.log).unwrap_or_default();
        Ok(out)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if std::thread::panicking() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(60)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                eprintln!("--- {} (last 60 lines) ---\n{tail}", self.log.display());
            }
        }
    }
}

/// Stops a processor the way a deployment does (SIGTERM: drain, store, commit, exit).
fn terminate(p: Proc) -> std::process::Output {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &p.id().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -TERM failed");
    p.wait_with_output().expect("processor exits")
}

fn stored_ids(dir: &std::path::Path) -> Vec<String> {
    let out = common::streamtap(dir, &["query", "p.toml", "--format", "jsonl"]);
    common::stdout_ok(&out)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn expected_ids(n: usize) -> HashSet<String> {
    (0..n).map(|i| format!("msg-{i:06}")).collect()
}

const SPLIT_N: usize = 20_000;

/// The split deployment end to end: `collect` publishes a 20,000-message replay,
/// `process` stores each exactly once, commits its offsets, and a second `process` in the
/// same group finds nothing left.
#[test]
fn collect_then_process_stores_every_message_exactly_once() {
    let (dir, broker) = setup(4, "chat");
    tansu::create_topic(&broker, "chat-dlq", 1);
    let noop = common::plugin("noop", &[]);
    common::write_log(
        &dir.path().join("chat.log"),
        SPLIT_N,
        &["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta"],
    );
    split_pipeline(
        dir.path(),
        &broker.addr(),
        &format!("[[steps]]\nuses = \"{}\"", noop.display()),
    );

    let t = std::time::Instant::now();
    let out = streamtap_cmd(dir.path(), &["collect", "p.toml", "--quiet"])
        .output()
        .unwrap();
    let collect_secs = t.elapsed().as_secs_f64();
    let summary = common::stdout_ok(&out);
    assert!(
        summary.contains(&format!(
            "{SPLIT_N} received, {SPLIT_N} published to topic \"chat\""
        )),
        "{summary}"
    );

    let t = std::time::Instant::now();
    let child = spawn_proc(dir.path(), &["process", "p.toml", "--quiet", "--no-reload"]);
    common::server::wait_until("every message stored", PATIENCE * 2, || {
        (stored(dir.path()) >= SPLIT_N as u64).then_some(())
    });
    let process_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "collect: {SPLIT_N} messages in {collect_secs:.2}s ({:.0}/s); process (incl. group join): {process_secs:.2}s ({:.0}/s)",
        SPLIT_N as f64 / collect_secs,
        SPLIT_N as f64 / process_secs
    );
    let out = terminate(child);
    let summary = common::stdout_ok(&out);
    assert!(
        summary.contains(&format!("{SPLIT_N} received, {SPLIT_N} processed")),
        "{summary}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        summary.contains(&format!("{SPLIT_N} stored, 0 already stored")),
        "{summary}"
    );

    let ids = stored_ids(dir.path());
    assert_eq!(ids.len(), SPLIT_N, "rows in the store");
    let unique: HashSet<String> = ids.into_iter().collect();
    assert_eq!(unique, expected_ids(SPLIT_N));

    // Offsets were committed after the store acknowledged: a new member of the group gets
    // only what was published since.
    let late: Vec<ChatMessage> = (0..10).map(|i| msg("late", i)).collect();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(produce(&broker.addr(), "chat", &late));
    let child = spawn_proc(dir.path(), &["process", "p.toml", "--quiet", "--no-reload"]);
    common::server::wait_until("the late messages stored", PATIENCE, || {
        (stored(dir.path()) >= SPLIT_N as u64 + 10).then_some(())
    });
    let out = terminate(child);
    let summary = common::stdout_ok(&out);
    assert!(summary.contains("10 received, 10 processed"), "{summary}");
    assert!(summary.contains("10 stored, 0 already stored"), "{summary}");
    assert_eq!(stored(dir.path()), SPLIT_N as u64 + 10);
}

/// Reads `n` records from the dead-letter topic: (key, payload, headers).
async fn dead_letters(
    brokers: &str,
    topic: &str,
    n: usize,
) -> Vec<(Vec<u8>, Vec<u8>, BTreeMap<String, String>)> {
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&[topic]).unwrap();
    let mut dead = Vec::new();
    while dead.len() < n {
        let m = tokio::time::timeout(PATIENCE, reader.recv())
            .await
            .expect("dead letter in time")
            .expect("dead letter");
        let hdr: BTreeMap<String, String> = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        dead.push((
            m.key().unwrap_or_default().to_vec(),
            m.payload().unwrap_or_default().to_vec(),
            hdr,
        ));
    }
    dead
}

/// An undecodable record produced straight to the topic and a message a step fails on
/// (`on_error = "dead-letter"`) both land on the dead-letter topic with `reason`,
/// `plugin` and `version` headers; everything around them, in the same partitions, is
/// stored.
#[test]
fn process_dead_letters_poison_and_failed_steps_and_the_partition_keeps_flowing() {
    let (dir, broker) = setup(2, "chat");
    tansu::create_topic(&broker, "chat-dlq", 1);
    let brokers = broker.addr();
    let hostile = common::plugin("hostile", &[]);
    split_pipeline(
        dir.path(),
        &brokers,
        &format!(
            "[[steps]]\nuses = \"{}\"\non_error = \"dead-letter\"",
            hostile.display()
        ),
    );
    let mut msgs: Vec<ChatMessage> = (0..3_000).map(|i| msg(&format!("p{}", i % 5), i)).collect();
    msgs[1_500].text = "trap".into();
    let (before, after) = msgs.split_at(1_000);
    let bad = br#"{"v":1,"id":"poison","ts":"soon"}"#;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        produce(&brokers, "chat", before).await;
        let raw: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        raw.send(
            FutureRecord::to("chat").key("p0").payload(&bad[..]),
            Duration::from_secs(30),
        )
        .await
        .expect("raw send");
        produce(&brokers, "chat", after).await;
    });

    let child = spawn_proc(dir.path(), &["process", "p.toml", "--quiet", "--no-reload"]);
    common::server::wait_until("the good messages stored", PATIENCE * 2, || {
        (stored(dir.path()) >= 2_999).then_some(())
    });
    let out = terminate(child);
    let summary = common::stdout_ok(&out);
    assert!(
        summary.contains("2999 stored") && summary.contains("2 dead-lettered"),
        "{summary}"
    );
    let ids: HashSet<String> = stored_ids(dir.path()).into_iter().collect();
    let want: HashSet<String> = msgs
        .iter()
        .filter(|m| m.text != "trap")
        .map(|m| m.id.clone())
        .collect();
    assert_eq!(ids, want);

    let dead = rt.block_on(dead_letters(&brokers, "chat-dlq", 2));
    let (poison, failed): (Vec<_>, Vec<_>) = dead.iter().partition(|d| d.1 == bad);
    assert_eq!((poison.len(), failed.len()), (1, 1), "{dead:?}");
    let (key, _, hdr) = poison[0];
    assert_eq!(key, b"p0");
    assert!(
        hdr["reason"].contains("field `ts` has invalid value \"soon\""),
        "{hdr:?}"
    );
    assert_eq!((hdr["plugin"].as_str(), hdr["version"].as_str()), ("", ""));
    let (key, payload, hdr) = failed[0];
    assert_eq!(key, b"p0");
    let m = kafka::decode(payload).expect("a dead-lettered message keeps the v1 schema");
    assert_eq!(m, msgs[1_500]);
    assert_eq!(hdr["plugin"], "hostile", "{hdr:?}");
    assert!(!hdr["version"].is_empty(), "{hdr:?}");
    assert!(hdr["reason"].starts_with("trap:"), "{hdr:?}");
}

/// `kill -9` of the processor mid-stream, three times: after each restart the group
/// resumes from the last committed offsets, redelivering what was processed but not yet
/// committed; the store's id dedupe absorbs it, and in the end every message is stored
/// exactly once and none is missing.
#[test]
fn process_killed_mid_stream_loses_nothing_and_stores_each_message_once() {
    let (dir, broker) = setup(4, "chat");
    tansu::create_topic(&broker, "chat-dlq", 1);
    let noop = common::plugin("noop", &[]);
    common::write_log(
        &dir.path().join("chat.log"),
        SPLIT_N,
        &["alpha", "beta", "gamma", "delta", "eps"],
    );
    split_pipeline(
        dir.path(),
        &broker.addr(),
        &format!("[[steps]]\nuses = \"{}\"", noop.display()),
    );
    let out = streamtap_cmd(dir.path(), &["collect", "p.toml", "--quiet"])
        .output()
        .unwrap();
    common::stdout_ok(&out);

    let mut redelivered = 0u64;
    for (round, at) in [3_000u64, 8_000, 14_000].into_iter().enumerate() {
        let mut child = spawn_proc(dir.path(), &["process", "p.toml", "--quiet", "--no-reload"]);
        common::server::wait_until(
            &format!("{at} stored before kill {round}"),
            PATIENCE * 2,
            || (stored(dir.path()) >= at).then_some(()),
        );
        child.kill().expect("kill -9 the processor");
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "killed processor exited cleanly");
        wait_out_the_dead_member();
        eprintln!(
            "killed processor {round} with {} stored",
            stored(dir.path())
        );
    }
    let child = spawn_proc(dir.path(), &["process", "p.toml", "--quiet", "--no-reload"]);
    common::server::wait_until("every message stored", PATIENCE * 2, || {
        (stored(dir.path()) >= SPLIT_N as u64).then_some(())
    });
    // Let anything redelivered beyond the store's count drain through, then stop.
    std::thread::sleep(Duration::from_secs(3));
    let out = terminate(child);
    let summary = common::stdout_ok(&out);
    if let Some(n) = summary
        .split(" already stored")
        .next()
        .and_then(|s| s.rsplit(", ").next())
        .and_then(|s| s.parse::<u64>().ok())
    {
        redelivered += n;
    }
    eprintln!("last processor: {summary}");
    let ids = stored_ids(dir.path());
    assert_eq!(ids.len(), SPLIT_N, "rows in the store");
    let unique: HashSet<String> = ids.into_iter().collect();
    assert_eq!(unique, expected_ids(SPLIT_N));
    eprintln!("redelivered after the last kill and already stored: {redelivered}");
}

/// The broker is killed (-9) while `collect` publishes and comes back 15 s later: the
/// producer's small buffer fills, the source waits (counted), and once the broker is back
/// every message is published; `process` then stores each exactly once.
#[test]
fn collect_rides_out_a_broker_outage_with_backpressure_and_loses_nothing() {
    let (dir, mut broker) = setup(4, "chat");
    tansu::create_topic(&broker, "chat-dlq", 1);
    common::write_log(
        &dir.path().join("chat.log"),
        SPLIT_N,
        &["alpha", "beta", "gamma", "delta", "eps"],
    );
    split_pipeline_with(
        dir.path(),
        &broker.addr(),
        "rate = 4000",
        "producer_buffer = 500",
        "",
        SQLITE_SINK,
    );
    let collector = spawn_proc(dir.path(), &["collect", "p.toml", "--quiet"]);
    std::thread::sleep(Duration::from_millis(1500));
    broker.kill();
    std::thread::sleep(OUTAGE);
    broker.restart();
    let out = collector.wait_with_output().unwrap();
    let summary = common::stdout_ok(&out);
    assert!(
        summary.contains(&format!(
            "{SPLIT_N} received, {SPLIT_N} published to topic \"chat\""
        )),
        "{summary}"
    );
    let waits: u64 = summary
        .split("the source waited ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no backpressure count in {summary}"));
    assert!(waits > 0, "the outage never filled the buffer: {summary}");

    let child = spawn_proc(dir.path(), &["process", "p.toml", "--quiet", "--no-reload"]);
    common::server::wait_until("every message stored", PATIENCE * 2, || {
        (stored(dir.path()) >= SPLIT_N as u64).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let out = terminate(child);
    let summary = common::stdout_ok(&out);
    eprintln!("{summary}");
    let ids = stored_ids(dir.path());
    assert_eq!(ids.len(), SPLIT_N, "rows in the store");
    let unique: HashSet<String> = ids.into_iter().collect();
    assert_eq!(unique, expected_ids(SPLIT_N));
}

/// Into MongoDB (SecantusDB): a 20,000-message topic, the processor `kill -9`ed five times
/// at random points mid-stream (the seed is printed; `KILL_SEED` replays a run) and
/// restarted; the `_id` (message id) dedupe absorbs the redelivery and the store ends with
/// every message exactly once.
#[test]
fn process_into_mongodb_killed_mid_stream_stores_each_message_once() {
    let (dir, broker) = setup(4, "chat");
    tansu::create_topic(&broker, "chat-dlq", 1);
    let mongo = common::server::secantus(dir.path());
    let uri = format!("mongodb://{}", mongo.addr());
    common::write_log(
        &dir.path().join("chat.log"),
        SPLIT_N,
        &["alpha", "beta", "gamma", "delta"],
    );
    split_pipeline_with(
        dir.path(),
        &broker.addr(),
        "",
        "",
        "",
        &format!("[sink.mongodb]\nuri = \"{uri}\"\ndatabase = \"split\"\nmax_delay = \"100ms\""),
    );
    let out = streamtap_cmd(dir.path(), &["collect", "p.toml", "--quiet"])
        .output()
        .unwrap();
    common::stdout_ok(&out);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(async {
        streamtap::sinks::mongodb::MongoSink::connect(&uri, "split", Duration::from_secs(5))
            .await
            .expect("connect")
    });
    let count = || rt.block_on(db.count("messages")).unwrap_or(0);
    let seed = std::env::var("KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("KILL_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    // Five kills spread over the stream, each at a random count in its stretch.
    let points: Vec<u64> = (0..5)
        .map(|k| 1_000 + k * 3_500 + rng.u64(0..3_000))
        .collect();
    for (round, at) in points.into_iter().enumerate() {
        let mut child = spawn_proc(dir.path(), &["process", "p.toml", "--quiet", "--no-reload"]);
        common::server::wait_until(
            &format!("{at} in MongoDB before kill {round}"),
            PATIENCE * 2,
            || (count() >= at).then_some(()),
        );
        child.kill().expect("kill -9 the processor");
        let _ = child.wait_with_output().unwrap();
        eprintln!("killed processor {round} with {} in MongoDB", count());
        wait_out_the_dead_member();
    }
    let child = spawn_proc(dir.path(), &["process", "p.toml", "--quiet", "--no-reload"]);
    common::server::wait_until("every message in MongoDB", PATIENCE * 2, || {
        (count() >= SPLIT_N as u64).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let out = terminate(child);
    let summary = common::stdout_ok(&out);
    eprintln!("last processor: {summary}");
    assert_eq!(count(), SPLIT_N as u64);
    let ids: Vec<String> = mongo_ids(&rt, &db).into_iter().collect();
    assert_eq!(ids.len(), SPLIT_N);
    let unique: HashSet<String> = ids.into_iter().collect();
    assert_eq!(unique, expected_ids(SPLIT_N));
}

/// `collect`/`process` refuse an in-process pipeline, naming what to do instead.
#[test]
fn commands_and_transports_must_match() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chat.log"), "").unwrap();
    std::fs::write(
        dir.path().join("mem.toml"),
        "[source.replay]\npath = \"chat.log\"\n[sink.sqlite]\npath = \"out.db\"\n",
    )
    .unwrap();
    for cmd in ["collect", "process"] {
        let out = common::streamtap(dir.path(), &[cmd, "mem.toml", "--quiet"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("`streamtap {cmd}` needs `[transport.kafka]`")),
            "{err}"
        );
    }
}

/// The number before `label` in a summary line (`"… 123 received, …"`).
fn summary_count(summary: &str, label: &str) -> u64 {
    summary
        .split(label)
        .next()
        .and_then(|s| s.rsplit([' ', ',']).find(|w| !w.is_empty()))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count before {label:?} in {summary}"))
}

/// Two processors in one consumer group share the topic's partitions: both get work, and
/// together they store every message exactly once (into MongoDB, the store processors
/// share in production).
#[test]
fn two_processors_in_one_group_share_the_partitions() {
    let (dir, broker) = setup(4, "chat");
    tansu::create_topic(&broker, "chat-dlq", 1);
    let mongo = common::server::secantus(dir.path());
    let uri = format!("mongodb://{}", mongo.addr());
    let noop = common::plugin("noop", &[]);
    common::write_log(
        &dir.path().join("chat.log"),
        SPLIT_N,
        &[
            "alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta",
        ],
    );
    split_pipeline_with(
        dir.path(),
        &broker.addr(),
        "rate = 4000",
        "",
        &format!("[[steps]]\nuses = \"{}\"", noop.display()),
        &format!("[sink.mongodb]\nuri = \"{uri}\"\ndatabase = \"shared\"\nmax_delay = \"100ms\""),
    );
    // Each processor keeps its alert outbox in its own directory (it is local state).
    let (da, db_dir) = (dir.path().join("a"), dir.path().join("b"));
    for d in [&da, &db_dir] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::copy(dir.path().join("p.toml"), d.join("p.toml")).unwrap();
        std::fs::copy(dir.path().join("chat.log"), d.join("chat.log")).unwrap();
    }
    let a = spawn_proc(&da, &["process", "p.toml", "--quiet", "--no-reload"]);
    let b = spawn_proc(&db_dir, &["process", "p.toml", "--quiet", "--no-reload"]);
    // Both members in the group before anything is published.
    std::thread::sleep(Duration::from_secs(10));
    let out = streamtap_cmd(dir.path(), &["collect", "p.toml", "--quiet"])
        .output()
        .unwrap();
    common::stdout_ok(&out);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(async {
        streamtap::sinks::mongodb::MongoSink::connect(&uri, "shared", Duration::from_secs(5))
            .await
            .expect("connect")
    });
    let count = || rt.block_on(db.count("messages")).unwrap_or(0);
    common::server::wait_until("every message stored", PATIENCE * 2, || {
        (count() >= SPLIT_N as u64).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let (a, b) = (terminate(a), terminate(b));
    let (sa, sb) = (common::stdout_ok(&a), common::stdout_ok(&b));
    let (ra, rb) = (
        summary_count(&sa, " received"),
        summary_count(&sb, " received"),
    );
    eprintln!("processor a received {ra}, processor b received {rb}");
    assert!(ra > 0 && rb > 0, "one processor got nothing:\n{sa}\n{sb}");
    assert!(ra + rb >= SPLIT_N as u64);
    assert_eq!(
        summary_count(&sa, " stored,") + summary_count(&sb, " stored,"),
        SPLIT_N as u64,
        "{sa}\n{sb}"
    );
    assert_eq!(count(), SPLIT_N as u64);
    let ids: HashSet<String> = mongo_ids(&rt, &db).into_iter().collect();
    assert_eq!(ids, expected_ids(SPLIT_N));
}

/// A topic that does not exist is an error at startup naming it, for both commands
/// (instead of a collector buffering forever or a processor idling).
#[test]
fn a_missing_topic_is_refused_at_startup() {
    let (dir, broker) = setup(1, "chat");
    std::fs::write(
        dir.path().join("chat.log"),
        common::irc_line(0, "a", "hi", 0),
    )
    .unwrap();
    // `chat` exists, `chat-dlq` does not.
    split_pipeline(dir.path(), &broker.addr(), "");
    let out = common::streamtap(dir.path(), &["process", "p.toml", "--quiet"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kafka topic \"chat-dlq\" does not exist on 127.0.0.1:"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("p.toml"),
        std::fs::read_to_string(dir.path().join("p.toml"))
            .unwrap()
            .replace("topic = \"chat\"", "topic = \"chatt\""),
    )
    .unwrap();
    let out = common::streamtap(dir.path(), &["collect", "p.toml", "--quiet"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kafka topic \"chatt\" does not exist on 127.0.0.1:"),
        "{err}"
    );
}

/// While `process` stores into MongoDB, the broker is killed (-9) for 15 s and later
/// MongoDB is killed for 15 s: the processor waits out both (no commits while the store is
/// down) and every message ends up stored exactly once.
#[test]
fn process_rides_out_broker_and_mongodb_outages() {
    let (dir, mut broker) = setup(4, "chat");
    tansu::create_topic(&broker, "chat-dlq", 1);
    let mut mongo = common::server::secantus(dir.path());
    let uri = format!("mongodb://{}", mongo.addr());
    common::write_log(
        &dir.path().join("chat.log"),
        SPLIT_N,
        &["alpha", "beta", "gamma", "delta"],
    );
    split_pipeline_with(
        dir.path(),
        &broker.addr(),
        "",
        "",
        "",
        &format!(
            "[sink.mongodb]\nuri = \"{uri}\"\ndatabase = \"outages\"\nmax_delay = \"100ms\"\ntimeout = \"1s\"\nretry_initial = \"100ms\"\nretry_max = \"1s\""
        ),
    );
    let out = streamtap_cmd(dir.path(), &["collect", "p.toml", "--quiet"])
        .output()
        .unwrap();
    common::stdout_ok(&out);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(async {
        streamtap::sinks::mongodb::MongoSink::connect(&uri, "outages", Duration::from_secs(1))
            .await
            .expect("connect")
    });
    let count = || rt.block_on(db.count("messages")).unwrap_or(0);
    let child = spawn_proc(dir.path(), &["process", "p.toml", "--quiet", "--no-reload"]);
    common::server::wait_until("4000 in MongoDB", PATIENCE * 2, || {
        (count() >= 4_000).then_some(())
    });
    broker.kill();
    std::thread::sleep(OUTAGE);
    broker.restart();
    common::server::wait_until("12000 in MongoDB", PATIENCE * 2, || {
        (count() >= 12_000).then_some(())
    });
    mongo.kill();
    std::thread::sleep(OUTAGE);
    mongo.restart();
    common::server::wait_until("every message in MongoDB", PATIENCE * 2, || {
        (count() >= SPLIT_N as u64).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let out = terminate(child);
    let summary = common::stdout_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{summary}");
    assert!(
        stderr.contains("writing to the sink failed; retrying"),
        "the MongoDB outage was not noticed: {stderr}"
    );
    assert_eq!(count(), SPLIT_N as u64);
    let ids: HashSet<String> = mongo_ids(&rt, &db).into_iter().collect();
    assert_eq!(ids, expected_ids(SPLIT_N));
}

/// `streamtap run` with `[transport.kafka]`: collect and process in one process. It ends
/// once everything published was stored, with each message stored once and the offsets
/// committed (a later `process` in the group finds nothing to do).
#[test]
fn run_with_kafka_is_collect_and_process_in_one() {
    let (dir, broker) = setup(4, "chat");
    tansu::create_topic(&broker, "chat-dlq", 1);
    let noop = common::plugin("noop", &[]);
    common::write_log(
        &dir.path().join("chat.log"),
        SPLIT_N,
        &["alpha", "beta", "gamma", "delta", "eps"],
    );
    split_pipeline(
        dir.path(),
        &broker.addr(),
        &format!("[[steps]]\nuses = \"{}\"", noop.display()),
    );
    let out = streamtap_cmd(dir.path(), &["run", "p.toml", "--quiet", "--no-reload"])
        .output()
        .unwrap();
    let summary = common::stdout_ok(&out);
    assert!(
        summary.contains(&format!("{SPLIT_N} received, {SPLIT_N} processed")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("{SPLIT_N} stored, 0 already stored")),
        "{summary}"
    );
    let ids: HashSet<String> = stored_ids(dir.path()).into_iter().collect();
    assert_eq!(ids, expected_ids(SPLIT_N));

    let child = spawn_proc(dir.path(), &["process", "p.toml", "--quiet", "--no-reload"]);
    std::thread::sleep(Duration::from_secs(10));
    let out = terminate(child);
    let summary = common::stdout_ok(&out);
    assert!(summary.contains("0 received, 0 processed"), "{summary}");
}

/// Sum of `streamtap_kafka_consumer_lag` over partitions in a scrape, and how many
/// partitions have a series.
/// A split pipeline into MongoDB at `uri` with quick sink retries, written twice with
/// its own `[metrics]` port each: `q.toml` for the processor and `c.toml` for the
/// collector (one host, so different ports). Returns (processor port, collector port).
fn observed_split(d: &std::path::Path, brokers: &str, uri: &str, source_extra: &str) -> (u16, u16) {
    let p = split_pipeline_with(
        d,
        brokers,
        source_extra,
        "",
        "",
        &format!(
            "[sink.mongodb]\nuri = \"{uri}\"\ndatabase = \"observed\"\nmax_delay = \"100ms\"\ntimeout = \"1s\"\nretry_initial = \"100ms\"\nretry_max = \"1s\""
        ),
    );
    let with_metrics = |file: &str| {
        let port = common::server::free_port();
        let text = std::fs::read_to_string(&p).unwrap()
            + &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
        std::fs::write(d.join(file), text).unwrap();
        port
    };
    (with_metrics("q.toml"), with_metrics("c.toml"))
}

fn consumer_lag(port: u16) -> Option<(i64, usize)> {
    let text = common::run::scrape(port)?;
    let values: Vec<i64> = text
        .lines()
        .filter(|l| l.starts_with("streamtap_kafka_consumer_lag{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    Some((values.iter().sum(), values.len()))
}

/// The processor's per-partition consumer lag (messages in the topic not yet stored): 0
/// on an empty topic; exactly what was published while MongoDB is down (nothing is
/// committed, and the processor, blocked on the sink, no longer polls the consumer);
/// back to 0 once MongoDB returns and everything is stored; the end-to-end latency
/// histogram counts each message once and shows the outage. Every
/// `streamtap_kafka_*` series the alerting rules and dashboard use is exported.
#[test]
fn process_exports_consumer_lag_per_partition() {
    // More than the processor buffers (reader batch, queues, sink batch), so the reader
    // is blocked on the stalled sink while the lag is read.
    const N: usize = 20_000;
    let (dir, broker) = setup(4, "chat");
    let d = dir.path();
    tansu::create_topic(&broker, "chat-dlq", 1);
    let mut mongo = common::server::secantus(d);
    let uri = format!("mongodb://{}", mongo.addr());
    common::write_log(&d.join("chat.log"), N, &["alpha", "beta", "gamma", "delta"]);
    // The collector runs for ~2 s, long enough to scrape its metrics.
    let (port, collect_port) = observed_split(d, &broker.addr(), &uri, "rate = 10000");
    let processor = spawn_proc(d, &["process", "q.toml", "--quiet", "--no-reload"]);
    common::server::wait_until("lag 0 on 4 partitions", PATIENCE, || {
        (consumer_lag(port) == Some((0, 4))).then_some(())
    });

    mongo.kill();
    let collector = spawn_proc(d, &["collect", "c.toml", "--quiet"]);
    let collect_metrics = common::server::wait_until("the collector's metrics", PATIENCE, || {
        common::run::scrape(collect_port)
    });
    common::stdout_ok(&collector.wait_with_output().unwrap());
    common::server::wait_until("lag = everything published", PATIENCE, || {
        (consumer_lag(port) == Some((N as i64, 4))).then_some(())
    });
    // It stays there: nothing is committed while the store is down.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(consumer_lag(port), Some((N as i64, 4)));

    mongo.restart();
    common::server::wait_until("lag back to 0", PATIENCE, || {
        (consumer_lag(port) == Some((0, 4))).then_some(())
    });
    let processor_metrics = common::run::scrape(port).unwrap();
    // Each message's publish → stored latency observed once; most of them waited out
    // the outage (≥ 6 s above), so the median is past 5 s.
    let e2e = common::run::buckets(&processor_metrics, "streamtap_kafka_end_to_end_seconds");
    assert_eq!(e2e.last().map(|b| b.1), Some(N as f64), "{e2e:?}");
    let median = common::run::quantile(&e2e, 0.5).unwrap();
    assert!(
        median > 5.0,
        "median end-to-end {median} s with MongoDB down 6 s+"
    );
    let read = common::run::series(&processor_metrics, "streamtap_kafka_consumed_total");
    assert!(read >= Some(N as f64), "consumed {read:?} of {N}");
    assert_eq!(
        common::run::series(&processor_metrics, "streamtap_kafka_dead_lettered_total"),
        Some(0.0)
    );
    common::run::promtool_check_metrics(&processor_metrics);
    common::run::promtool_check_metrics(&collect_metrics);
    common::assert_deploy_series_exported(
        &(processor_metrics + &collect_metrics),
        &["streamtap_kafka_"],
        "`collect` or `process`",
    );
    let out = terminate(processor);
    common::stdout_ok(&out);
}

/// `/ready` of `collect` and `process` follows what each depends on: both answer 503
/// while the broker is down and 200 once it is back; an idle processor (nothing to
/// write) finds a MongoDB outage by pinging it and answers 503 until it returns.
#[test]
fn readiness_follows_the_broker_and_mongodb() {
    let (dir, mut broker) = setup(4, "chat");
    let d = dir.path();
    tansu::create_topic(&broker, "chat-dlq", 1);
    let mut mongo = common::server::secantus(d);
    let uri = format!("mongodb://{}", mongo.addr());
    common::write_log(&d.join("chat.log"), 20_000, &["alpha", "beta"]);
    // Slow, so the collector is still running through the broker outage.
    let (q, c) = observed_split(d, &broker.addr(), &uri, "rate = 50");
    let processor = spawn_proc(d, &["process", "q.toml", "--quiet", "--no-reload"]);
    let collector = spawn_proc(d, &["collect", "c.toml", "--quiet"]);
    let both = |want: bool| {
        move || {
            (common::run::ready(q) == Some(want) && common::run::ready(c) == Some(want))
                .then_some(())
        }
    };
    common::server::wait_until("both ready", PATIENCE, both(true));

    broker.kill();
    common::server::wait_until("both not ready without the broker", PATIENCE, both(false));
    broker.restart();
    common::server::wait_until("both ready with the broker back", PATIENCE, both(true));

    common::stdout_ok(&terminate(collector));
    mongo.kill();
    common::server::wait_until("idle processor not ready without MongoDB", PATIENCE, || {
        (common::run::ready(q) == Some(false)).then_some(())
    });
    mongo.restart();
    common::server::wait_until("processor ready with MongoDB back", PATIENCE, || {
        (common::run::ready(q) == Some(true)).then_some(())
    });
    common::stdout_ok(&terminate(processor));
}

/// librdkafka's mock cluster for what a real broker will not do on request: the Produce
/// requests fail with retriable errors (not leader, timeouts) and a broker goes down
/// mid-stream and comes back. Every message is still delivered, each exactly once (the
/// idempotent producer's retries do not duplicate), and the consumer group reads them all
/// back in per-channel order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_produce_errors_and_a_broker_restart_lose_and_duplicate_nothing() {
    use rdkafka::bindings::rd_kafka_resp_err_t as Err;
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::RDKafkaApiKey;
    const N: i64 = 5_000;
    let mock = MockCluster::new(3).expect("mock cluster");
    mock.create_topic("chat", 4, 3).expect("topic");
    let brokers = mock.bootstrap_servers();
    let msgs: Vec<ChatMessage> = (0..N).map(|i| msg(&format!("m{}", i % 9), i)).collect();
    // The next Produce requests fail, each with a retriable error.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            Err::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            Err::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            Err::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            Err::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
            Err::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );
    let p = KafkaProducer::new(&ProducerOptions::new(&brokers, "chat")).expect("producer");
    let mut pending = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if i == N as usize / 2 {
            mock.broker_down(2).expect("broker down");
        }
        if i == N as usize * 3 / 4 {
            mock.broker_up(2).expect("broker up");
        }
        pending.push(p.send(m).await.expect("enqueue"));
    }
    for d in pending {
        tokio::time::timeout(PATIENCE, d.wait())
            .await
            .expect("delivery in time")
            .expect("delivered despite the injected errors");
    }
    assert_eq!(p.delivered(), N as u64);

    let c = KafkaConsumer::new(&ConsumerOptions::new(&brokers, "mock-group", "chat")).unwrap();
    let (got, poison) = consume(&c, N as usize, true).await;
    assert!(poison.is_empty());
    // Nothing more: a duplicate would show up as an extra record.
    assert!(
        next(&c, Duration::from_secs(3)).await.is_none(),
        "duplicates in the topic"
    );
    let ids: HashSet<&str> = got.iter().map(|m| m.id.as_str()).collect();
    assert_eq!((got.len(), ids.len()), (N as usize, N as usize));
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for m in &got {
        let prev = last.insert(m.channel.as_str(), seq_of(m));
        assert!(prev < Some(seq_of(m)), "order broken in {}", m.channel);
    }
}
