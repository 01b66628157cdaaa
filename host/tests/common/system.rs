//! The whole deployment on 127.0.0.1, for the end-to-end scenario (`tests/e2e.rs`) and the
//! fault drill (`tests/drill.rs`): the mock Twitch chat and Helix servers with 2,000
//! channels (one live, streamed by a local ffmpeg HLS stream), two collectors
//! (`--shard 0/2`, `1/2`), tansu, two processors in one consumer group running sentiment,
//! translate (against the LibreTranslate-compatible fake), a version-tagging plugin,
//! analytics and alert rules, SecantusDB, moto (SNS with an SQS queue subscribed) behind a
//! forwarder that can be taken down, and a Prometheus server scraping the four instances
//! with the repository's alerting rules loaded.
//!
//! Chat is driven by the test through [`System::send`], which records every message the
//! mock actually wrote to a connection: "sent" below means delivered to a collector's
//! socket, so a message sent while no connection was joined (a reconnect) is not counted
//! as lost.

use super::fake_translate::{Api, FakeTranslate};
use super::media::{self, LiveHls};
use super::mock_helix::MockHelix;
use super::mock_twitch::MockTwitch;
use super::moto::{Forwarder, Moto};
use super::run::{self, Run};
use super::server::{Server, free_port};
use super::tansu;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Channels the collectors read.
pub const CHANNELS: usize = 2000;
/// Channels the steady chat goes to (every tenth one, so both shards get some), as on
/// Twitch, where most joined channels are quiet at any moment. Each one closes analytics
/// windows, upserted into `channel_stats` and `records`; SecantusDB looks up a document
/// `_id` by scanning the collection (~40 ms at 3,000 documents, where a string `_id` takes
/// 0.5 ms), so chat on all 2,000 channels made a processor's shutdown flush take minutes.
pub const ACTIVE_CHANNELS: usize = 200;
/// The channel that is live (and recorded) for the whole run.
pub const LIVE_CHANNEL: &str = "ch0007";
/// Its Helix stream id: the recording is `rec/{LIVE_CHANNEL}/{STREAM_ID}.ts`.
pub const STREAM_ID: &str = "e2e-stream-1";
/// The channel bursts are sent to.
pub const BURST_CHANNEL: &str = "ch0042";
/// Partitions of the chat topic.
pub const PARTITIONS: u32 = 4;
const HELIX_CLIENT: &str = "e2e-client";
const HELIX_SECRET: &str = "e2e-helix-secret-value";
const SECRET_ENV: &str = "STREAMTAP_E2E_HELIX_SECRET";
/// The hype rule's window, and the burst that crosses it.
pub const HYPE_WINDOW: &str = "20s";
pub const HYPE_THRESHOLD: u64 = 200;
/// The threshold before the scenario's rule edit: never reached.
pub const HYPE_OFF: u64 = 1_000_000;

/// One line of the chat pool: language as written (what the fake translation server
/// reports), text, and the words the IRC `emotes` tag marks.
pub struct PoolLine {
    pub lang: &'static str,
    pub text: &'static str,
    pub emotes: &'static [&'static str],
}

const fn pl(lang: &'static str, text: &'static str) -> PoolLine {
    PoolLine {
        lang,
        text,
        emotes: &[],
    }
}

/// Chat the scenario sends: lines the translate plugin detects right with its defaults
/// (non-English ones are translated by the fake server), English with Twitch emotes for
/// the sentiment plugin's extension, and lines too short to detect.
pub const POOL: &[PoolLine] = &[
    pl("en", "that was the cleanest clutch I have ever seen"),
    pl("en", "this game is so bad I want a refund honestly"),
    PoolLine {
        lang: "en",
        text: "PogChamp what a play PogChamp",
        emotes: &["PogChamp"],
    },
    PoolLine {
        lang: "en",
        text: "we lost again BibleThump",
        emotes: &["BibleThump"],
    },
    pl("ru", "спасибо за стрим сегодня было круто"),
    pl("ja", "今日の配信ありがとうございました"),
    pl("ko", "오늘 방송 감사합니다 재밌었어요"),
    pl(
        "es",
        "no entiendo nada de lo que está pasando en este juego",
    ),
    pl("de", "kann mir jemand erklären was gerade passiert ist"),
    pl("fr", "je comprends rien à ce qui se passe aujourd'hui"),
    pl("pl", "dzięki za dzisiejszy stream był świetny"),
    pl("und", "gg"),
];

/// The translation the fake server gives `text` into English.
pub fn translation_of(text: &str) -> String {
    format!("[en] {text}")
}

/// Channel `i`'s login.
pub fn channel(i: usize) -> String {
    format!("ch{i:04}")
}

/// One message the mock wrote to a collector.
#[derive(Debug, Clone)]
pub struct Sent {
    pub channel: String,
    /// Index into [`POOL`].
    pub line: usize,
    /// When the test sent it.
    pub at: Instant,
}

/// A streamtap instance the system runs: its role, pipeline file and arguments, so it
/// can be killed and started again the same way.
pub struct Instance {
    pub name: String,
    pub role: &'static str,
    pub file: String,
    pub args: Vec<String>,
    pub metrics_port: u16,
    pub run: Option<Run>,
    starts: usize,
}

pub struct System {
    pub dir: tempfile::TempDir,
    pub irc: MockTwitch,
    pub helix: MockHelix,
    _hls: LiveHls,
    _http: Server,
    pub broker: Server,
    pub mongo: Server,
    moto: Moto,
    /// SNS as the processors reach it; `down()` is an SNS outage.
    pub sns: Forwarder,
    queue_url: String,
    pub translate: FakeTranslate,
    pub prometheus: Server,
    pub collectors: Vec<Instance>,
    pub processors: Vec<Instance>,
    /// Every message the mock wrote, by id.
    pub sent: BTreeMap<String, Sent>,
    seq: usize,
    rt: tokio::runtime::Runtime,
    mongo_client: mongodb::Client,
}

/// Plugin components the processors run, copied into `plugins/` of the system's
/// directory so the scenario can replace them.
fn plugins(dir: &Path) {
    std::fs::create_dir_all(dir.join("spill")).unwrap();
    let p = dir.join("plugins");
    std::fs::create_dir_all(&p).unwrap();
    for name in ["sentiment", "translate", "analytics", "alerts"] {
        std::fs::copy(super::plugin(name, &[]), p.join(format!("{name}.wasm"))).unwrap();
    }
    std::fs::copy(super::plugin("versioned", &[]), p.join("tagger.wasm")).unwrap();
    std::fs::copy(super::plugin("hostile", &[]), p.join("hostile.wasm")).unwrap();
}

/// Replaces `path` atomically (write beside it, then rename), as an editor or a build
/// that writes a new file does.
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl System {
    /// Starts every server, then the processors and collectors, and waits until every
    /// channel is joined and Prometheus sees the four instances up.
    pub fn start() -> System {
        let t0 = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        plugins(d);

        let broker = tansu::broker(&d.join("tansu"));
        tansu::create_topic(&broker, "chat", PARTITIONS);
        tansu::create_topic(&broker, "chat-dlq", 1);
        let mongo = super::server::secantus(d);

        let moto = Moto::start();
        let topic = moto.create_topic("streamtap-hype");
        let queue_url = moto.subscribed_queue("hype-inbox", &topic);
        let sns = Forwarder::new(moto.port, true);

        let langs: HashMap<String, String> = POOL
            .iter()
            .map(|l| (l.text.to_owned(), l.lang.to_owned()))
            .collect();
        let translate = FakeTranslate::start(Api::LibreTranslate, None, langs);

        let irc = MockTwitch::start();
        let helix = MockHelix::start(HELIX_CLIENT, HELIX_SECRET, 800);
        helix.set_live(LIVE_CHANNEL, STREAM_ID, "e2e live stream");
        let media_root = d.join("media");
        let hls = LiveHls::start(&media_root.join(LIVE_CHANNEL), media::SMALL);
        let http = media::http_server(&media_root);

        let collectors: Vec<Instance> = (0..2)
            .map(|i| {
                Instance::new(
                    format!("collector-{i}"),
                    "collect",
                    &["--shard".into(), format!("{i}/2")],
                )
            })
            .collect();
        let processors: Vec<Instance> = ["a", "b"]
            .iter()
            .map(|n| Instance::new(format!("processor-{n}"), "process", &[]))
            .collect();

        let prometheus = prometheus(d, &collectors, &processors);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mongo_client = rt
            .block_on(mongodb::Client::with_uri_str(format!(
                "mongodb://{}/?directConnection=true&serverSelectionTimeoutMS=2000",
                mongo.addr()
            )))
            .unwrap();
        let mut sys = System {
            dir,
            irc,
            helix,
            _hls: hls,
            _http: http,
            broker,
            mongo,
            moto,
            sns,
            queue_url,
            translate,
            prometheus,
            collectors,
            processors,
            sent: BTreeMap::new(),
            seq: 0,
            rt,
            mongo_client,
        };
        sys.write_pipelines(HYPE_OFF, "");
        // Processors first: both are in the group, with their partitions, before any chat
        // reaches the topic, so the analytics windows are not split by a rebalance.
        for i in 0..sys.processors.len() {
            sys.start_instance(Role::Processor, i);
        }
        for i in 0..sys.processors.len() {
            let (name, port) = (
                sys.processors[i].name.clone(),
                sys.processors[i].metrics_port,
            );
            sys.wait_ready(&name, port);
        }
        sys.wait_assigned();
        for i in 0..sys.collectors.len() {
            sys.start_instance(Role::Collector, i);
        }
        let all: HashSet<String> = (0..CHANNELS).map(channel).collect();
        let irc = sys.irc.clone();
        sys.wait_alive("every channel joined", Duration::from_secs(180), || {
            let joined: HashSet<String> = irc.joined().into_iter().collect();
            joined == all
        });
        let prom = sys.prometheus.port;
        sys.wait_alive(
            "Prometheus sees every instance up",
            Duration::from_secs(60),
            || sys_up(prom).is_some_and(|up| up.len() == 4 && up.values().all(|v| *v)),
        );
        eprintln!("system up in {:.1}s", t0.elapsed().as_secs_f64());
        sys
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the four pipeline files, with the hype rule at `hype_threshold` and
    /// `extra_steps` (TOML `[[steps]]` tables) after the alert step.
    pub fn write_pipelines(&self, hype_threshold: u64, extra_steps: &str) {
        for inst in self.collectors.iter().chain(&self.processors) {
            let text = self.pipeline(inst, hype_threshold, extra_steps);
            replace_file(&self.dir().join(&inst.file), text.as_bytes());
        }
    }

    /// One instance's pipeline file: the deployment's, with its own metrics port and
    /// alert outbox (every instance of the deployment shares everything else).
    fn pipeline(&self, inst: &Instance, hype_threshold: u64, extra_steps: &str) -> String {
        let channels: Vec<String> = (0..CHANNELS)
            .map(|i| match channel(i) {
                c if c == LIVE_CHANNEL => format!("{{ login = \"{c}\", record = true }}"),
                c => format!("\"{c}\""),
            })
            .collect();
        format!(
            r#"name = "e2e"

[source.twitch]
channels = [{channels}]
connection = "tcp"
server = "{irc}"
# The mock server has no join limit of its own; a verified bot's.
join_limit = 2000
reconnect_min = "200ms"
reconnect_max = "2s"
spill_dir = "spill"

[source.twitch.helix]
client_id = "{HELIX_CLIENT}"
client_secret = {{ env = "{SECRET_ENV}" }}
api_url = "{helix_api}"
token_url = "{helix_token}"
interval = "2s"

[recorder]
dir = "rec"
streamlink = "{streamlink}"
url = "hls://http://{http}/{{channel}}/live.m3u8"
args = ["--hls-live-edge", "1", "--stream-timeout", "20"]
restart_min = "300ms"
restart_max = "2s"
stop_timeout = "5s"

[transport.kafka]
brokers = "{brokers}"
topic = "chat"
dead_letter_topic = "chat-dlq"
group_id = "e2e-processors"
batch_size = 500
# A killed processor's partitions move on quickly.
session_timeout = "6s"

[[steps]]
name = "sentiment"
uses = "plugins/sentiment.wasm"

[[steps]]
name = "lang"
uses = "plugins/translate.wasm"
deadline = "3s"
allow_http = ["127.0.0.1:{translate}"]
http_timeout = "2s"
with = {{ target = "en", backend = "libretranslate", url = "http://127.0.0.1:{translate}", timeout_ms = 2000, budget_ms = 2000 }}

[[steps]]
name = "tagger"
uses = "plugins/tagger.wasm"
with = {{ tag = "e2e" }}

[[steps]]
name = "analytics"
uses = "plugins/analytics.wasm"
with = {{ window = "60s", grace = "10s" }}

[[steps]]
name = "alerts"
uses = "plugins/alerts.wasm"

[[steps.with.rules]]
name = "hype"
channels = ["*"]
window = "{HYPE_WINDOW}"
threshold = {hype_threshold}
topic = "hype"
severity = "info"

{extra_steps}

[sink.mongodb]
uri = "mongodb://{mongo}/?directConnection=true"
database = "e2e"
max_delay = "200ms"
retry_max = "2s"
alert_outbox = ".streamtap/{instance}-outbox.db"

[alerts]
default = ["console"]

[alerts.topics.hype]
to = ["sns.hype"]

[alerts.sns.hype]
topic_arn = "arn:aws:sns:us-east-1:123456789012:streamtap-hype"
endpoint_url = "{sns}"
timeout = "3s"

[alerts.delivery]
max_attempts = 50
initial_backoff = "500ms"
max_backoff = "2s"
shutdown_timeout = "5s"

[metrics]
listen = "127.0.0.1:{metrics}"
"#,
            channels = channels.join(", "),
            irc = self.irc.addr(),
            helix_api = self.helix.api_url(),
            helix_token = self.helix.token_url(),
            streamlink = super::server::venv_tool("streamlink").display(),
            http = self._http.addr(),
            brokers = self.broker.addr(),
            translate = self.translate.port,
            mongo = self.mongo.addr(),
            instance = inst.name,
            sns = self.sns.url(),
            metrics = inst.metrics_port,
        )
    }

    fn instance(&mut self, role: Role, i: usize) -> &mut Instance {
        match role {
            Role::Collector => &mut self.collectors[i],
            Role::Processor => &mut self.processors[i],
        }
    }

    /// Starts (or starts again) collector or processor `i`.
    pub fn start_instance(&mut self, role: Role, i: usize) {
        let dir = self.dir().to_owned();
        let inst = self.instance(role, i);
        assert!(inst.run.is_none(), "{} is running", inst.name);
        inst.starts += 1;
        // A restart keeps the earlier run's log beside the new one.
        let log = dir.join(format!("{}.{}.stderr.log", inst.file, inst.role));
        if inst.starts > 1 {
            let _ = std::fs::rename(
                &log,
                dir.join(format!("{}.{}.log", inst.name, inst.starts - 1)),
            );
        }
        let args: Vec<&str> = inst.args.iter().map(String::as_str).collect();
        let r = run::start_role(
            &dir,
            inst.role,
            &inst.file,
            &args,
            &[
                (SECRET_ENV, HELIX_SECRET),
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_REGION", super::moto::REGION),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
            "info,rdkafka=warn,twitch_irc=warn",
        );
        inst.run = Some(r);
    }

    /// `kill -9` of collector or processor `i`.
    pub fn kill_instance(&mut self, role: Role, i: usize) {
        let inst = self.instance(role, i);
        let mut r = inst.run.take().expect("running");
        r.child.kill().unwrap();
        r.child.wait().unwrap();
    }

    /// Stops every instance the way a deployment does (SIGINT: drain, store, commit),
    /// collectors first, and returns each one's stdout summary.
    pub fn stop_all(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for inst in self.collectors.iter_mut().chain(self.processors.iter_mut()) {
            if let Some(r) = inst.run.take() {
                let t = Instant::now();
                let (stdout, _) = r.stop();
                eprintln!("{} stopped in {:.1}s", inst.name, t.elapsed().as_secs_f64());
                out.push((inst.name.clone(), stdout));
            }
        }
        out
    }

    /// Polls `cond` every 100 ms until it holds, failing if a streamtap instance that
    /// should run exited, or after `limit`.
    pub fn wait_alive(&mut self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let until = Instant::now() + limit;
        loop {
            if cond() {
                return;
            }
            self.assert_running(what);
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fails when an instance that should be running has exited.
    pub fn assert_running(&mut self, what: &str) {
        for inst in self.collectors.iter_mut().chain(self.processors.iter_mut()) {
            if let Some(r) = inst.run.as_mut()
                && let Some(status) = r.child.try_wait().unwrap()
            {
                panic!(
                    "{} exited ({status}) while waiting for {what}\n{}",
                    inst.name,
                    r.stderr()
                );
            }
        }
    }

    fn wait_ready(&mut self, name: &str, port: u16) {
        self.wait_alive(&format!("{name} ready"), Duration::from_secs(60), || {
            run::ready(port) == Some(true)
        });
    }

    /// Waits until the running processors share the topic's partitions: each owns some,
    /// none owns one another does, and together they own them all.
    pub fn wait_assigned(&mut self) {
        let ports: Vec<u16> = self
            .processors
            .iter()
            .filter(|p| p.run.is_some())
            .map(|p| p.metrics_port)
            .collect();
        self.wait_alive(
            "the processors own every partition",
            Duration::from_secs(120),
            || {
                let mut owned = HashSet::new();
                for &port in &ports {
                    let Some(text) = run::scrape(port) else {
                        return false;
                    };
                    let mine = assigned_partitions(&text);
                    if mine.is_empty() || !mine.iter().all(|p| owned.insert(*p)) {
                        return false;
                    }
                }
                owned.len() == PARTITIONS as usize
            },
        );
    }

    /// Sends `n` messages over the [`ACTIVE_CHANNELS`] (pool lines in turn), as one write
    /// per connection; returns the ids the mock wrote to a connection.
    pub fn send_spread(&mut self, n: usize) -> Vec<String> {
        let stride = CHANNELS / ACTIVE_CHANNELS;
        let items: Vec<(String, usize)> = (0..n)
            .map(|k| {
                let seq = self.seq + k;
                (
                    channel((seq * 7919) % ACTIVE_CHANNELS * stride),
                    seq % POOL.len(),
                )
            })
            .collect();
        self.send(&items)
    }

    /// Sends `n` messages to one channel.
    pub fn send_to(&mut self, ch: &str, n: usize) -> Vec<String> {
        let items: Vec<(String, usize)> = (0..n)
            .map(|k| (ch.to_owned(), (self.seq + k) % POOL.len()))
            .collect();
        self.send(&items)
    }

    /// Sends each `(channel, pool line)` with a fresh id and the current time; records and
    /// returns the ids the mock wrote to a joined connection.
    pub fn send(&mut self, items: &[(String, usize)]) -> Vec<String> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let ids: Vec<String> = items
            .iter()
            .map(|_| {
                self.seq += 1;
                format!("e2e-{:07}", self.seq)
            })
            .collect();
        let pairs: Vec<(String, String)> = items
            .iter()
            .zip(&ids)
            .map(|((ch, line), id)| {
                let user = id.len() + ch.len() + line;
                (ch.clone(), chat_line(ch, id, user, &POOL[*line], now_ms))
            })
            .collect();
        let written = self.irc.send_many_each(&pairs);
        let at = Instant::now();
        let mut out = Vec::new();
        for (((ch, line), id), w) in items.iter().zip(ids).zip(written) {
            if w > 0 {
                let sent = Sent {
                    channel: ch.clone(),
                    line: *line,
                    at,
                };
                self.sent.insert(id.clone(), sent);
                out.push(id);
            }
        }
        out
    }

    /// Sends `per_second` spread messages every 100 ms for `secs` seconds (plus `extra`
    /// called once a second, with the second's number, for bursts and faults).
    pub fn chat_for(
        &mut self,
        secs: u64,
        per_second: usize,
        mut extra: impl FnMut(&mut System, u64),
    ) {
        let start = Instant::now();
        let mut tick = 0u64;
        while tick < secs * 10 {
            if tick.is_multiple_of(10) {
                extra(self, tick / 10);
            }
            self.send_spread(per_second / 10);
            tick += 1;
            let next = start + Duration::from_millis(100 * tick);
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            self.assert_running("chat");
        }
    }

    /// The e2e database.
    pub fn db(&self) -> mongodb::Database {
        self.mongo_client.database("e2e")
    }

    /// Runs a MongoDB future on the system's runtime.
    pub fn block_on<F: std::future::IntoFuture>(&self, f: F) -> F::Output {
        self.rt.block_on(f.into_future())
    }

    /// Every stored chat message's id with how many documents carry it (always 1 with
    /// `_id` uniqueness; counted, not assumed), or `None` while MongoDB is down.
    pub fn stored_ids(&self) -> Option<HashMap<String, usize>> {
        use futures_util::TryStreamExt;
        let coll = self.db().collection::<mongodb::bson::Document>("messages");
        self.block_on(async {
            let cursor = coll
                .find(mongodb::bson::doc! {})
                .projection(mongodb::bson::doc! {"_id": 1})
                .await
                .ok()?;
            let docs: Vec<mongodb::bson::Document> = cursor.try_collect().await.ok()?;
            let mut m = HashMap::new();
            for d in docs {
                *m.entry(d.get_str("_id").unwrap_or_default().to_owned())
                    .or_insert(0) += 1;
            }
            Some(m)
        })
    }

    /// Every document of `collection`.
    pub fn all(&self, collection: &str) -> Vec<mongodb::bson::Document> {
        use futures_util::TryStreamExt;
        let coll = self.db().collection::<mongodb::bson::Document>(collection);
        self.block_on(async {
            coll.find(mongodb::bson::doc! {})
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap()
        })
    }

    /// How many chat messages with ids in `first..=last` are stored, or `None` while
    /// MongoDB does not answer.
    pub fn stored_between(&self, first: &str, last: &str) -> Option<u64> {
        let coll = self.db().collection::<mongodb::bson::Document>("messages");
        self.block_on(
            coll.count_documents(mongodb::bson::doc! {"_id": {"$gte": first, "$lte": last}}),
        )
        .ok()
    }

    /// The id the next sent message gets.
    pub fn next_id(&self) -> String {
        format!("e2e-{:07}", self.seq + 1)
    }

    /// Waits until every sent message is stored; returns how long that took.
    pub fn wait_all_stored(&mut self, limit: Duration) -> Duration {
        let t = Instant::now();
        let want: HashSet<String> = self.sent.keys().cloned().collect();
        let mut missing: Vec<&String> = want.iter().collect();
        let until = Instant::now() + limit;
        let mut last_report = 0;
        loop {
            if let Some(ids) = self.stored_ids() {
                missing = want.iter().filter(|id| !ids.contains_key(*id)).collect();
                if missing.is_empty() {
                    return t.elapsed();
                }
            }
            self.assert_running("every message stored");
            if t.elapsed().as_secs() / 10 != last_report {
                last_report = t.elapsed().as_secs() / 10;
                let lag: Vec<String> = self
                    .processors
                    .iter()
                    .map(|p| {
                        let parts = System::scrape(p)
                            .map(|t| {
                                t.lines()
                                    .filter(|l| l.starts_with("streamtap_kafka_consumer_lag{"))
                                    .map(|l| l.replace("streamtap_kafka_consumer_lag", ""))
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            })
                            .unwrap_or_default();
                        format!("{}: {parts}", p.name)
                    })
                    .collect();
                eprintln!(
                    "waiting for storage: {} missing after {:.0}s; lag {lag:?}",
                    missing.len(),
                    t.elapsed().as_secs_f64()
                );
            }
            if Instant::now() >= until {
                missing.sort();
                let sample: Vec<(&String, &str)> = missing
                    .iter()
                    .take(10)
                    .map(|id| (*id, self.sent[*id].channel.as_str()))
                    .collect();
                panic!(
                    "{} of {} sent messages not stored after {limit:?}, e.g. {sample:?}",
                    missing.len(),
                    want.len()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Every SNS notification in the SQS queue so far (each returned once).
    pub fn drain_alerts(&self) -> Vec<serde_json::Value> {
        self.moto.drain_queue(&self.queue_url)
    }

    /// Prometheus's `up` per `job/instance`.
    pub fn up(&self) -> Option<BTreeMap<String, bool>> {
        sys_up(self.prometheus.port)
    }

    /// A scrape of an instance's `/metrics`.
    pub fn scrape(inst: &Instance) -> Option<String> {
        run::scrape(inst.metrics_port)
    }
}

/// A failed run keeps its directory (logs, pipeline files, recordings, server data) and
/// says where it is, with the missing messages' per-instance story left to read there.
impl Drop for System {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!("system directory kept: {}", self.dir.path().display());
        }
    }
}

/// Which kind of instance.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Collector,
    Processor,
}

impl Instance {
    fn new(name: String, role: &'static str, args: &[String]) -> Instance {
        Instance {
            file: format!("{name}.toml"),
            name,
            role,
            args: args.to_vec(),
            metrics_port: free_port(),
            run: None,
            starts: 0,
        }
    }
}

/// A tagged PRIVMSG of pool line `l` with id `id`.
fn chat_line(ch: &str, id: &str, user: usize, l: &PoolLine, ts_ms: i64) -> String {
    format!(
        "@badge-info=;badges=;color=#1E90FF;display-name=Viewer{user};emotes={emotes};first-msg=0;flags=;id={id};mod=0;returning-chatter=0;room-id=5{n};subscriber=0;tmi-sent-ts={ts_ms};turbo=0;user-id=9{user};user-type= :viewer{user}!viewer{user}@viewer{user}.tmi.twitch.tv PRIVMSG #{ch} :{text}",
        emotes = super::emotes_tag(l.text, l.emotes),
        n = ch.trim_start_matches("ch"),
        text = l.text,
    )
}

/// Partitions a processor's scrape shows it owns (its per-partition lag series).
pub fn assigned_partitions(scrape: &str) -> Vec<i64> {
    scrape
        .lines()
        .filter(|l| l.starts_with("streamtap_kafka_consumer_lag{"))
        .filter_map(|l| {
            let p = l.split("partition=\"").nth(1)?.split('"').next()?;
            p.parse().ok()
        })
        .collect()
}

/// A Prometheus server scraping every instance each second, with the repository's
/// alerting rules.
fn prometheus(dir: &Path, collectors: &[Instance], processors: &[Instance]) -> Server {
    let port = free_port();
    let targets = |v: &[Instance]| {
        v.iter()
            .map(|i| format!("\"127.0.0.1:{}\"", i.metrics_port))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rules = super::workspace_root()
        .join("deploy/prometheus/rules/streamtap.rules.yml")
        .canonicalize()
        .unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: streamtap-collector\n    static_configs:\n      - targets: [{c}]\n  - job_name: streamtap-processor\n    static_configs:\n      - targets: [{p}]\n",
        rules = rules.display(),
        c = targets(collectors),
        p = targets(processors),
    );
    let cfg: PathBuf = dir.join("prometheus.yml");
    std::fs::write(&cfg, config).unwrap();
    Server::start(
        "prometheus",
        Path::new("prometheus"),
        &[
            format!("--config.file={}", cfg.display()),
            format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".into(),
        ],
        port,
        &dir.join("prometheus.log"),
    )
}

/// A Prometheus HTTP API query's result vector.
pub fn prom_query(port: u16, query: &str) -> Option<Vec<serde_json::Value>> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent();
    let mut r = agent
        .get(&format!("http://127.0.0.1:{port}/api/v1/query"))
        .query("query", query)
        .call()
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
    v["data"]["result"].as_array().cloned()
}

/// `up` per `job/instance`, as Prometheus last scraped it.
fn sys_up(port: u16) -> Option<BTreeMap<String, bool>> {
    Some(
        prom_query(port, "up")?
            .iter()
            .map(|r| {
                (
                    format!(
                        "{}/{}",
                        r["metric"]["job"].as_str().unwrap_or(""),
                        r["metric"]["instance"].as_str().unwrap_or("")
                    ),
                    r["value"][1].as_str() == Some("1"),
                )
            })
            .collect(),
    )
}
