//! Kafka path benchmark (`cargo bench -p streamtap --bench kafka`, part of `make bench`),
//! on one real broker (`tansu`, SQLite storage) and one real MongoDB-wire server
//! (`secantusdb`), all on 127.0.0.1:
//!
//! 1. **Producer**: our `KafkaProducer` (JSON encoding, keyed by channel, idempotent, lz4,
//!    every delivery awaited) against `kcat -P` producing the very same key/payload bytes
//!    with the same producer settings. Messages/s, median of 3 alternating runs.
//! 2. **Consumer**: our `KafkaConsumer` (consumer group, JSON decoding, batches, an offset
//!    commit after every batch) against `kcat -G` (consumer group, auto commit) reading the
//!    same topic. Timed from the first message to the 99th percent one, so the group join
//!    and kcat's block-buffered output at its exit are left out.
//! 3. **Collector → Kafka → processor → MongoDB**: `streamtap collect` replaying the chat
//!    log as fast as it goes, `streamtap process` (no steps, MongoDB sink) already in its
//!    group: the collector's rate, the end-to-end rate (collector start → all stored), and
//!    end-to-end latency p50/p99 (publish → stored, the processor's
//!    `streamtap_kafka_end_to_end_seconds`) under that saturating load and at a paced rate
//!    of half the end-to-end throughput.
//!
//! The Debian `kcat` (1.7.1) is run with the librdkafka our build bundles (2.12.1, the
//! shared library rdkafka-sys builds beside the static one): Debian's librdkafka 2.0.2
//! cannot talk to tansu 0.6 (its ApiVersions reply fails to parse), and the same library
//! on both sides makes the ratio measure our code rather than two librdkafka versions.
//!
//! `KAFKA_BENCH_N` overrides the 100,000 messages per measurement.

#[path = "../tests/common/mod.rs"]
mod common;

use common::server::{Server, free_port, wait_until};
use common::tansu;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use streamtap::transport::kafka::{
    self, ConsumerOptions, KafkaConsumer, KafkaProducer, ProducerOptions,
};
use streamtap_plugin_sdk::ChatMessage;

const PARTITIONS: u32 = 4;
const RUNS: usize = 3;
/// Producer settings of ours (`transport::kafka::producer_config`) that change the work
/// done per message; kcat gets the same.
const PRODUCER_SETTINGS: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("compression.type", "lz4"),
    ("linger.ms", "5"),
];

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `measure(run)` → (ours, kcat's) [`RUNS`] times (each run measures both, so drift
/// hits both alike) and returns the medians.
fn alternate(what: &str, mut measure: impl FnMut(usize) -> (f64, f64)) -> (f64, f64) {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        let (o, t) = measure(run);
        eprintln!("{what} run {run}: ours {o:.0}/s, kcat {t:.0}/s");
        ours.push(o);
        theirs.push(t);
    }
    (median(ours), median(theirs))
}

fn row(name: &str, figure: String, reference: String, ratio: f64) {
    println!("| {name} | {figure} | {reference} | {ratio:.2} |");
}

/// The chat log's messages, parsed as the collector parses them.
fn messages(log: &Path) -> Vec<ChatMessage> {
    let text = std::fs::read_to_string(log).expect("chat log");
    let (msgs, bad) = streamtap::sources::replay::parse_log(log, &text);
    assert!(bad.is_empty(), "{bad:?}");
    msgs
}

fn write_log(path: &Path, from: usize, n: usize) {
    let channels: Vec<String> = (0..64).map(|c| format!("channel{c:02}")).collect();
    let mut s = String::new();
    for i in from..from + n {
        s.push_str(&common::irc_line(
            i,
            &channels[i % channels.len()],
            &format!("message {i} PogChamp that play was insane KEKW"),
            1_732_700_000_000 + i as i64,
        ));
        s.push('\n');
    }
    std::fs::write(path, s).expect("write chat log");
}

async fn ours_produce(brokers: &str, topic: &str, msgs: &[ChatMessage]) -> f64 {
    let started = Instant::now();
    let p = KafkaProducer::new(&ProducerOptions::new(brokers, topic)).expect("producer");
    let mut pending = Vec::with_capacity(msgs.len());
    for m in msgs {
        pending.push(p.send(m).await.expect("enqueue"));
    }
    for d in pending {
        d.wait().await.expect("delivered");
    }
    // Closed inside the timing, as kcat's exit is.
    drop(p);
    msgs.len() as f64 / started.elapsed().as_secs_f64()
}

/// Consumers are timed from the first message to this one, not to the last: kcat's
/// stdout to a pipe is block-buffered, so its last lines come only with its exit (group
/// leave and teardown included), which our consumer's timing would not include.
fn timed_until(n: usize) -> usize {
    n * 99 / 100
}

fn kcat_produce(lib: &Path, brokers: &str, topic: &str, input: &Path, n: usize) -> f64 {
    let started = Instant::now();
    let mut c = tansu::kcat(lib, brokers);
    c.args(["-P", "-t", topic, "-K", "\t", "-l"]).arg(input);
    for (k, v) in PRODUCER_SETTINGS {
        c.arg("-X").arg(format!("{k}={v}"));
    }
    let out = c.output().expect("run kcat -P");
    assert!(
        out.status.success(),
        "kcat -P: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    n as f64 / started.elapsed().as_secs_f64()
}

async fn ours_consume(brokers: &str, group: &str, topic: &str, n: usize) -> f64 {
    let mut opts = ConsumerOptions::new(brokers, group, topic);
    opts.batch_size = 1000;
    let c = KafkaConsumer::new(&opts).expect("consumer");
    let first = c.next_batch().await.expect("first batch");
    let started = Instant::now();
    let mut got = first.messages.len();
    let counted_from = got;
    c.ack(first.token).await.expect("ack");
    let (mut committing, mut batches) = (Duration::ZERO, 1);
    while got < timed_until(n) {
        let b = tokio::time::timeout(Duration::from_secs(60), c.next_batch())
            .await
            .unwrap_or_else(|_| panic!("our consumer stalled at {got} of {n}"))
            .expect("batch");
        assert!(b.poison.is_empty(), "poison in the bench topic");
        got += b.messages.len();
        let t = Instant::now();
        c.ack(b.token).await.expect("ack");
        committing += t.elapsed();
        batches += 1;
    }
    let elapsed = started.elapsed();
    eprintln!(
        "  our consumer: {batches} batches, {:.2} s of {:.2} s in offset commits",
        committing.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    (got - counted_from) as f64 / elapsed.as_secs_f64()
}

fn kcat_consume(lib: &Path, log: &Path, brokers: &str, group: &str, topic: &str, n: usize) -> f64 {
    let mut child = tansu::kcat(lib, brokers)
        // -e: exit at the end of every partition, which also flushes kcat's buffered
        // stdout (a pipe is block-buffered, so the last lines come only then).
        .args(["-G", group, "-o", "beginning", "-e", topic])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("kcat log"))
        .spawn()
        .expect("run kcat -G");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    lines
        .next()
        .unwrap_or_else(|| {
            panic!(
                "kcat read nothing: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
        .expect("read");
    let started = Instant::now();
    let mut got = 1;
    let mut rate = 0.0;
    while got < n {
        if got == timed_until(n) {
            rate = (got - 1) as f64 / started.elapsed().as_secs_f64();
        }
        lines
            .next()
            .unwrap_or_else(|| {
                panic!(
                    "kcat ended at {got} of {n}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
            .expect("read");
        got += 1;
    }
    assert!(
        lines.next().is_none(),
        "kcat read more than the {n} messages"
    );
    let _ = child.wait();
    rate
}

/// The processor's stored-message count and end-to-end histogram, from its `/metrics`.
fn processor_state(port: u16) -> Option<(f64, Vec<(f64, f64)>)> {
    let text = common::run::scrape(port)?;
    let stored = common::run::series(&text, "streamtap_sink_stored_total")?;
    Some((
        stored,
        common::run::buckets(&text, "streamtap_kafka_end_to_end_seconds"),
    ))
}

/// Bucket counts of `after` minus `before` (the same buckets).
fn histogram_delta(after: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|&(le, c)| {
            let b = before.iter().find(|x| x.0 == le).map_or(0.0, |x| x.1);
            (le, c - b)
        })
        .collect()
}

/// Where the split-deployment pipelines run: their directory, broker and MongoDB.
struct Deployment<'a> {
    dir: &'a Path,
    brokers: &'a str,
    mongo: &'a str,
}

/// Writes `{file}.toml`: replay `{log}.log` at `rate` → `topic` → MongoDB, metrics on `port`.
fn pipeline(at: &Deployment<'_>, file: &str, log: &str, rate: &str, topic: &str, port: u16) {
    let Deployment {
        dir,
        brokers,
        mongo,
    } = at;
    std::fs::write(
        dir.join(format!("{file}.toml")),
        format!(
            r#"name = "kafka-bench"
[source.replay]
path = "{log}.log"
rate = {rate}

[transport.kafka]
brokers = "{brokers}"
topic = "{topic}"
dead_letter_topic = "e2e-dlq"
group_id = "bench-processors"

[sink.mongodb]
uri = "mongodb://{mongo}"
database = "bench"

[metrics]
listen = "127.0.0.1:{port}"
"#
        ),
    )
    .expect("write pipeline");
}

fn streamtap(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(common::streamtap_bin());
    c.args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    c
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = env_or("KAFKA_BENCH_N", 100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let lib = tansu::bundled_librdkafka();
    let broker = tansu::broker(&d.join("tansu"));
    let brokers = broker.addr();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

    write_log(&d.join("chat.log"), 0, n);
    let msgs = messages(&d.join("chat.log"));
    let avg_payload =
        msgs.iter().map(|m| kafka::encode(m).len()).sum::<usize>() as f64 / msgs.len() as f64;
    // kcat's input: `key<TAB>payload` per line; JSON escapes tabs and newlines, so the
    // payload bytes are exactly what our producer sends.
    let mut input = std::io::BufWriter::new(std::fs::File::create(d.join("kcat.in")).unwrap());
    for m in &msgs {
        input.write_all(kafka::key(m).as_bytes()).unwrap();
        input.write_all(b"\t").unwrap();
        input.write_all(&kafka::encode(m)).unwrap();
        input.write_all(b"\n").unwrap();
    }
    input.into_inner().unwrap().sync_all().unwrap();

    let (major, version) = rdkafka::util::get_rdkafka_version();
    println!(
        "Kafka path, {n} chat messages per run ({avg_payload:.0}-byte JSON payloads, 64 channels), tansu 0.6 with {PARTITIONS} partitions, librdkafka {version} ({major:#x}) for us and for kcat 1.7.1, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("| measure | streamtap | reference | ratio |");
    println!("|---|---|---|---|");

    // 1. Producer, alternating so drift hits both alike.
    let (p_ours, p_kcat) = alternate("producer", |run| {
        let t = format!("p-kcat-{run}");
        tansu::create_topic(&broker, &t, PARTITIONS);
        let theirs = kcat_produce(&lib, &brokers, &t, &d.join("kcat.in"), n);
        let t = format!("p-ours-{run}");
        tansu::create_topic(&broker, &t, PARTITIONS);
        (rt.block_on(ours_produce(&brokers, &t, &msgs)), theirs)
    });
    row(
        "producer: messages/s (`KafkaProducer`, deliveries awaited)",
        format!("{p_ours:.0}"),
        format!("kcat -P, same bytes and settings: {p_kcat:.0}"),
        p_ours / p_kcat,
    );

    // 2. Consumer: both read the topic our producer wrote in run 0, each run a new group.
    let (c_ours, c_kcat) = alternate("consumer", |run| {
        let log = d.join(format!("kcat-{run}.log"));
        let theirs = kcat_consume(
            &lib,
            &log,
            &brokers,
            &format!("g-kcat-{run}"),
            "p-ours-0",
            n,
        );
        let group = format!("g-ours-{run}");
        (
            rt.block_on(ours_consume(&brokers, &group, "p-ours-0", n)),
            theirs,
        )
    });
    row(
        "consumer: messages/s (`KafkaConsumer`, decode + commit per batch)",
        format!("{c_ours:.0}"),
        format!("kcat -G, same topic: {c_kcat:.0}"),
        c_ours / c_kcat,
    );

    // 3. The split deployment. The collector alone first (nothing else running, as kcat
    // ran), then collector and processor together.
    let mongo: Server = common::server::secantus(d);
    let mongo_addr = mongo.addr();
    let at = Deployment {
        dir: d,
        brokers: &brokers,
        mongo: &mongo_addr,
    };
    for t in ["collect-only", "e2e"] {
        tansu::create_topic(&broker, t, PARTITIONS);
    }
    tansu::create_topic(&broker, "e2e-dlq", 1);
    let collect_port = free_port();
    pipeline(
        &at,
        "alone",
        "chat",
        "\"max\"",
        "collect-only",
        collect_port,
    );
    let started = Instant::now();
    let out = streamtap(d, &["collect", "alone.toml", "--quiet"])
        .output()
        .expect("run streamtap collect");
    assert!(out.status.success(), "streamtap collect failed");
    let collect_rate = n as f64 / started.elapsed().as_secs_f64();
    row(
        "collector: messages/s (`streamtap collect`, replay file → Kafka, whole process lifetime)",
        format!("{collect_rate:.0}"),
        format!("kcat -P: {p_kcat:.0}"),
        collect_rate / p_kcat,
    );

    let port = free_port();
    write_log(&d.join("paced.log"), n, n / 4);
    pipeline(&at, "process", "chat", "\"max\"", "e2e", port);
    let mut processor = streamtap(d, &["process", "process.toml", "--quiet", "--no-reload"])
        .spawn()
        .expect("start streamtap process");
    // In the group with every partition before the collector starts.
    wait_until(
        "the processor's partitions",
        Duration::from_secs(120),
        || {
            let text = common::run::scrape(port)?;
            let assigned = text
                .lines()
                .filter(|l| l.starts_with("streamtap_kafka_consumer_lag{"))
                .count();
            (assigned == PARTITIONS as usize).then_some(())
        },
    );
    let started = Instant::now();
    pipeline(&at, "chat", "chat", "\"max\"", "e2e", collect_port);
    let out = streamtap(d, &["collect", "chat.toml", "--quiet"])
        .output()
        .expect("run streamtap collect");
    assert!(out.status.success(), "streamtap collect failed");
    let (_, loaded) = wait_until("every message stored", Duration::from_secs(1800), || {
        let (stored, h) = processor_state(port)?;
        (stored >= n as f64).then_some((stored, h))
    });
    let e2e_rate = n as f64 / started.elapsed().as_secs_f64();
    row(
        "end to end: messages/s (collect → tansu → process → secantusdb)",
        format!("{e2e_rate:.0}"),
        format!("kcat -P: {p_kcat:.0}"),
        e2e_rate / p_kcat,
    );
    let q = |h: &[(f64, f64)], p: f64| common::run::quantile(h, p).unwrap_or(f64::NAN) * 1000.0;
    println!();
    println!(
        "End-to-end latency, publish → stored (histogram, ×1.5 buckets): saturating load p50 {:.0} ms, p99 {:.0} ms",
        q(&loaded, 0.5),
        q(&loaded, 0.99)
    );

    // Paced at half the end-to-end throughput: the latency of a system keeping up.
    let paced = (e2e_rate / 2.0).max(100.0).round();
    pipeline(
        &at,
        "paced",
        "paced",
        &paced.to_string(),
        "e2e",
        collect_port,
    );
    let out = streamtap(d, &["collect", "paced.toml", "--quiet"])
        .output()
        .expect("run streamtap collect");
    assert!(out.status.success(), "streamtap collect (paced) failed");
    let total = (n + n / 4) as f64;
    let (_, after) = wait_until(
        "every paced message stored",
        Duration::from_secs(600),
        || {
            let (stored, h) = processor_state(port)?;
            (stored >= total).then_some((stored, h))
        },
    );
    let h = histogram_delta(&after, &loaded);
    println!(
        "End-to-end latency at {paced:.0} msg/s ({} messages): p50 {:.0} ms, p99 {:.0} ms",
        n / 4,
        q(&h, 0.5),
        q(&h, 0.99)
    );
    let _ = processor.kill();
    let _ = processor.wait();
    drop(broker);
}
