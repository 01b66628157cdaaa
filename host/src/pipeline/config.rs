//! Pipeline files: the TOML a user writes, parsed strictly.
//!
//! Every table denies unknown keys and every field is documented here; `docs/PIPELINE.md`
//! is the user-facing reference. Components are chosen by sub-table name
//! (`[source.replay]`, `[sink.sqlite]`), which keeps each component's own keys checked with
//! exact line and column positions. Errors name the file, line, column and the offending
//! key or value. Config holds no runtime state: components are built from it.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A pipeline file that failed to load.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
}

impl ConfigError {
    fn at(file: &Path, text: &str, span: Option<std::ops::Range<usize>>, message: String) -> Self {
        let (line, column) = span.map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        ConfigError::Invalid {
            file: file.display().to_string(),
            line,
            column,
            message,
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// A whole pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Pipeline name for logs. Default: the file's stem.
    #[serde(default)]
    pub name: Option<String>,
    /// Where messages come from (exactly one sub-table, e.g. `[source.replay]`).
    pub source: SourceConfig,
    /// How messages travel from the source to the steps. Default: `[transport.memory]`.
    #[serde(default)]
    pub transport: TransportConfig,
    /// The processing steps, in order.
    #[serde(default)]
    pub steps: Vec<StepConfig>,
    /// Where processed messages are stored (exactly one sub-table, e.g. `[sink.sqlite]`).
    pub sink: SinkConfig,
    /// Where alerts raised by steps are delivered. Default: the console.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// The Prometheus endpoint. Absent: no endpoint (the embedded default).
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Records live streams of channels marked `record = true`. Absent: no recording.
    #[serde(default)]
    pub recorder: Option<RecorderConfig>,
}

/// `[recorder]`: streamlink recordings of live channels (see `crate::recorder`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecorderConfig {
    /// Directory of the recordings, one sub-directory per channel; relative to the pipeline
    /// file. Default `recordings`.
    #[serde(default = "default_recorder_dir")]
    pub dir: PathBuf,
    /// The streamlink program. Default `streamlink` (found on `PATH`).
    #[serde(default = "default_streamlink")]
    pub streamlink: PathBuf,
    /// What streamlink opens; `{channel}` becomes the login. Default
    /// `https://www.twitch.tv/{channel}`.
    #[serde(default = "default_recorder_url")]
    pub url: String,
    /// Stream quality (streamlink's `STREAM` argument). Default `best`.
    #[serde(default = "default_quality")]
    pub quality: String,
    /// Extra streamlink arguments, before the URL, e.g. `["--twitch-disable-ads",
    /// "--stream-timeout", "60"]`. Default none.
    #[serde(default)]
    pub args: Vec<String>,
    /// Value of streamlink's `--twitch-api-header` (e.g. `Authorization=OAuth TOKEN`) from
    /// the environment or a file; handed over in a private config file, not the command
    /// line. Default none.
    #[serde(default)]
    pub api_header: Option<SecretRef>,
    /// Most recordings at once. Default 10.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// No new recording starts when the disk under `dir` has less free space (MiB).
    /// Default 2048.
    #[serde(default = "default_min_free_disk_mb")]
    pub min_free_disk_mb: u64,
    /// First pause before restarting a streamlink that exited while live. Default `2s`.
    #[serde(default = "default_restart_min")]
    pub restart_min: DurationValue,
    /// Longest restart pause. Default `60s`.
    #[serde(default = "default_restart_max")]
    pub restart_max: DurationValue,
    /// Time streamlink gets to close its file after SIGTERM before SIGKILL. Default `10s`.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: DurationValue,
    /// Lines of each streamlink's output kept (the last one explains its exit). Default 50.
    #[serde(default = "default_log_lines")]
    pub log_lines: usize,
}

fn default_recorder_dir() -> PathBuf {
    PathBuf::from("recordings")
}
fn default_streamlink() -> PathBuf {
    PathBuf::from("streamlink")
}
fn default_recorder_url() -> String {
    "https://www.twitch.tv/{channel}".into()
}
fn default_quality() -> String {
    "best".into()
}
fn default_max_concurrent() -> usize {
    10
}
fn default_min_free_disk_mb() -> u64 {
    2048
}
fn default_restart_min() -> DurationValue {
    DurationValue(Duration::from_secs(2))
}
fn default_restart_max() -> DurationValue {
    DurationValue(Duration::from_secs(60))
}
fn default_stop_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(10))
}
fn default_log_lines() -> usize {
    50
}

/// Source components.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Replays a log of raw Twitch IRC lines.
    Replay(ReplayConfig),
    /// Live Twitch chat through the `twitch-irc` client.
    Twitch(TwitchConfig),
}

/// How the `twitch` source reaches the chat server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TwitchConnection {
    /// IRC over TLS (Twitch: `irc.chat.twitch.tv:6697`).
    #[default]
    Tls,
    /// IRC over secure WebSocket (Twitch: `wss://irc-ws.chat.twitch.tv:443`).
    Wss,
    /// Plain IRC over TCP: only to a loopback address (a local test server), since it
    /// would send a token in clear text.
    Tcp,
    /// Plain WebSocket: only to a loopback address, like `tcp`.
    Ws,
}

impl TwitchConnection {
    /// Twitch's own server for this connection kind.
    pub fn default_server(self) -> &'static str {
        match self {
            TwitchConnection::Tls => "irc.chat.twitch.tv:6697",
            TwitchConnection::Wss => "irc-ws.chat.twitch.tv:443",
            TwitchConnection::Tcp => "irc.chat.twitch.tv:6667",
            TwitchConnection::Ws => "irc-ws.chat.twitch.tv:80",
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_secure(self) -> bool {
        matches!(self, TwitchConnection::Tls | TwitchConnection::Wss)
    }
}

/// `[source.twitch]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwitchConfig {
    /// Channels to read: logins (with or without `#`, any case), or tables
    /// `{ login = "name", record = true }`. Editing the list while the pipeline runs joins
    /// and parts live.
    pub channels: Vec<Spanned<ChannelEntry>>,
    /// `tls` (default), `wss`, or `tcp`/`ws` (plain, loopback servers only).
    #[serde(default)]
    pub connection: TwitchConnection,
    /// `host:port` of the chat server. Default: Twitch's server for `connection`.
    #[serde(default)]
    pub server: Option<Spanned<String>>,
    /// Login name. Default: an anonymous read-only `justinfanNNNNN` login. Requires `token`.
    #[serde(default)]
    pub login: Option<String>,
    /// OAuth token (with or without `oauth:`) from the environment or a file, never the
    /// pipeline text: `token = { env = "TWITCH_OAUTH_TOKEN" }`. Requires `login`.
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// Most JOINs sent per `join_window` (Twitch: 20 per 10 s per account; 2000 for
    /// verified bots).
    #[serde(default = "default_join_limit")]
    pub join_limit: u32,
    /// The window `join_limit` applies to. Default `10s`.
    #[serde(default = "default_join_window")]
    pub join_window: DurationValue,
    /// First reconnect delay bound: the n-th consecutive reconnect waits a random time up to
    /// `reconnect_min * 2^(n-1)`, capped at `reconnect_max`. Default `1s`.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min: DurationValue,
    /// Longest reconnect delay. Default `60s`.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max: DurationValue,
    /// Chat lines read and not yet taken by the pipeline that wait in memory (~500 bytes
    /// each). Beyond them lines go to a spill file, so connections keep being read while
    /// the pipeline is slower than chat. Default 50,000, at least 1.
    #[serde(default = "default_buffer_lines")]
    pub buffer_lines: usize,
    /// Directory of the spill file (created there and unlinked at once: it never shows up
    /// and needs no clean-up), relative to the pipeline file. Default: the system's
    /// temporary directory (`$TMPDIR` or `/tmp`).
    #[serde(default)]
    pub spill_dir: Option<PathBuf>,
    /// Most megabytes of chat the spill file holds; when full, connections are no longer
    /// read until the pipeline catches up (Twitch may then drop them: gaps are recorded).
    /// `0` turns spilling off. Default 4096.
    #[serde(default = "default_spill_max_mb")]
    pub spill_max_mb: u64,
    /// Stream status (live/offline, stream id, title, game) from the Helix API for the same
    /// channels: `[source.twitch.helix]`. Default: off, chat only.
    #[serde(default)]
    pub helix: Option<Box<HelixConfig>>,
}

/// `[source.twitch.helix]`: polls Get Streams for the source's channels (this shard's).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelixConfig {
    /// The application's client id (public; sent as `Client-Id`).
    pub client_id: Spanned<String>,
    /// The application's client secret, from the environment or a file, never the pipeline
    /// text: `client_secret = { env = "TWITCH_CLIENT_SECRET" }`.
    pub client_secret: SecretRef,
    /// Base URL of the Helix API. Default `https://api.twitch.tv/helix`.
    #[serde(default = "default_helix_api_url")]
    pub api_url: String,
    /// OAuth token endpoint for the client-credentials flow. Default
    /// `https://id.twitch.tv/oauth2/token`.
    #[serde(default = "default_helix_token_url")]
    pub token_url: String,
    /// Time between two polls of every channel. Default `60s`, at least `1s`.
    #[serde(default = "default_helix_interval")]
    pub interval: DurationValue,
    /// Helix points per minute for this client id, shared by every instance using it
    /// (Twitch: 800). Each Get Streams request (up to 100 channels) costs one.
    #[serde(default = "default_helix_points")]
    pub points_per_minute: u32,
    /// Where the budget is kept: `auto` (default: in MongoDB when the sink is
    /// `[sink.mongodb]`, so all instances writing there share it; else in this process),
    /// `local`, or `mongodb`.
    #[serde(default)]
    pub budget: HelixBudget,
    /// Time limit of one HTTP request. Default `10s`.
    #[serde(default = "default_helix_timeout")]
    pub timeout: DurationValue,
}

/// Where the Helix rate-limit budget lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HelixBudget {
    /// `mongodb` when the sink is MongoDB, `local` otherwise.
    #[default]
    Auto,
    /// A limiter in this process only: right for one instance per client id.
    Local,
    /// A bucket document in the sink's MongoDB database, shared by every instance.
    Mongodb,
}

/// Twitch's Helix rate limit for an app access token: 800 points per minute.
pub const HELIX_POINTS_PER_MINUTE: u32 = 800;

fn default_helix_api_url() -> String {
    "https://api.twitch.tv/helix".to_owned()
}
fn default_helix_token_url() -> String {
    "https://id.twitch.tv/oauth2/token".to_owned()
}
fn default_helix_interval() -> DurationValue {
    DurationValue(Duration::from_secs(60))
}
fn default_helix_points() -> u32 {
    HELIX_POINTS_PER_MINUTE
}
fn default_helix_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(10))
}

/// One entry of `[source.twitch] channels`.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelEntry {
    /// `"name"`.
    Login(String),
    /// `{ login = "name", record = true }`.
    Options(ChannelOptions),
}

/// The table form of a channel entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelOptions {
    /// The channel's login.
    pub login: String,
    /// Record its live streams with streamlink (needs `[recorder]` and
    /// `[source.twitch.helix]`). Default false.
    #[serde(default)]
    pub record: bool,
}

impl ChannelEntry {
    /// The login as written.
    pub fn login(&self) -> &str {
        match self {
            ChannelEntry::Login(l) => l,
            ChannelEntry::Options(o) => &o.login,
        }
    }

    pub fn record(&self) -> bool {
        matches!(self, ChannelEntry::Options(o) if o.record)
    }
}

impl<'de> Deserialize<'de> for ChannelEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Hand-written rather than `untagged`, so a bad table keeps its precise error
        // ("unknown field `recrod`") instead of "did not match any variant".
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ChannelEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a channel login or { login = \"name\", record = true }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ChannelEntry, E> {
                Ok(ChannelEntry::Login(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ChannelEntry, A::Error> {
                ChannelOptions::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ChannelEntry::Options)
            }
        }
        d.deserialize_any(V)
    }
}

/// Twitch's documented default: 20 JOINs per 10 seconds per account.
pub const TWITCH_JOIN_LIMIT: u32 = 20;
/// The window of [`TWITCH_JOIN_LIMIT`].
pub const TWITCH_JOIN_WINDOW: Duration = Duration::from_secs(10);

fn default_join_limit() -> u32 {
    TWITCH_JOIN_LIMIT
}
fn default_join_window() -> DurationValue {
    DurationValue(TWITCH_JOIN_WINDOW)
}
fn default_reconnect_min() -> DurationValue {
    DurationValue(Duration::from_secs(1))
}
fn default_reconnect_max() -> DurationValue {
    DurationValue(Duration::from_secs(60))
}
/// Chat lines held in memory by default (`buffer_lines`).
pub const DEFAULT_BUFFER_LINES: usize = 50_000;
fn default_buffer_lines() -> usize {
    DEFAULT_BUFFER_LINES
}
fn default_spill_max_mb() -> u64 {
    4096
}

impl TwitchConfig {
    /// The configured channels, normalised (lowercase, no `#`), in file order, unique.
    pub fn channel_logins(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.channels
            .iter()
            .map(|c| normalise_channel(c.get_ref().login()))
            .filter(|c| seen.insert(c.clone()))
            .collect()
    }

    /// The channels marked `record = true`, normalised.
    pub fn recorded_logins(&self) -> BTreeSet<String> {
        self.channels
            .iter()
            .filter(|c| c.get_ref().record())
            .map(|c| normalise_channel(c.get_ref().login()))
            .collect()
    }

    /// `host:port` to connect to.
    pub fn server_addr(&self) -> String {
        self.server
            .as_ref()
            .map(|s| s.get_ref().clone())
            .unwrap_or_else(|| self.connection.default_server().to_owned())
    }

    /// Everything but the channel list, for telling a live channel edit from a change
    /// that needs a restart.
    pub fn without_channels(&self) -> TwitchConfig {
        TwitchConfig {
            channels: Vec::new(),
            ..self.clone()
        }
    }
}

/// A channel login as Twitch uses it: lowercase, without `#`.
pub fn normalise_channel(c: &str) -> String {
    c.trim().trim_start_matches('#').to_ascii_lowercase()
}

/// Twitch logins: 1..25 of `[a-z0-9_]`.
fn valid_login(c: &str) -> bool {
    (1..=25).contains(&c.len())
        && c.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
}

/// `[source.replay]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// Log file of raw IRC lines with tags, relative to the pipeline file.
    pub path: PathBuf,
    /// Messages per second (a number), or `"max"` for as fast as the pipeline takes them.
    #[serde(default)]
    pub rate: Rate,
    /// Start again at the top when the log ends. Replayed copies get ids suffixed `~N` and
    /// timestamps shifted by the log's span, so they are stored as new messages.
    #[serde(default, rename = "loop")]
    pub repeat: bool,
}

/// Replay speed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Rate {
    /// No pacing.
    #[default]
    Max,
    /// Messages per second.
    PerSecond(f64),
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than an untagged enum, so a wrong type (`rate = true`) reads
        // "invalid type: boolean `true`, expected ..." instead of "did not match any variant".
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Rate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of messages per second or \"max\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Rate, E> {
                if s == "max" {
                    return Ok(Rate::Max);
                }
                Err(E::custom(format!(
                    "invalid rate {s:?}: expected a number of messages per second or \"max\""
                )))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Rate, E> {
                if n > 0.0 && n.is_finite() {
                    return Ok(Rate::PerSecond(n));
                }
                Err(E::custom(format!(
                    "invalid rate {n}: must be a positive number of messages per second"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Rate, E> {
                self.visit_f64(n as f64)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Rate, E> {
                self.visit_f64(n as f64)
            }
        }
        d.deserialize_any(V)
    }
}

/// Transport components.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TransportConfig {
    /// In-process bounded queue.
    Memory(MemoryConfig),
    /// Kafka topic between `streamtap collect` and `streamtap process`.
    Kafka(KafkaConfig),
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig::Memory(MemoryConfig::default())
    }
}

/// `[transport.memory]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Queue capacity in messages; a full queue makes the source wait (no drops).
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    /// Most messages handed to the steps in one batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_capacity() -> usize {
    10_000
}
fn default_batch_size() -> usize {
    256
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            capacity: default_capacity(),
            batch_size: default_batch_size(),
        }
    }
}

/// `[transport.kafka]`: collectors publish to `topic`, processors consume it in a group.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `"host:port"` or `"host:port,host:port"`.
    pub brokers: Spanned<String>,
    /// Topic chat events are published to and consumed from. Default `"streamtap.chat"`.
    #[serde(default = "default_kafka_topic")]
    pub topic: Spanned<String>,
    /// Topic undecodable payloads and `on_error = "dead-letter"` messages go to, with
    /// headers `reason`, `plugin`, `version`. Default `"streamtap.dead-letter"`.
    #[serde(default = "default_kafka_dead_letter_topic")]
    pub dead_letter_topic: Spanned<String>,
    /// Consumer group of `streamtap process`: processes in one group share the partitions.
    /// Default `"streamtap-processors"`.
    #[serde(default = "default_kafka_group_id")]
    pub group_id: String,
    /// Batch compression of the producer: `none`, `gzip`, `snappy` or `lz4` (default).
    #[serde(default)]
    pub compression: KafkaCompression,
    /// Messages the collector's producer holds unacknowledged (e.g. while the broker is
    /// down) before the source is made to wait. Default 100000.
    #[serde(default = "default_kafka_producer_buffer")]
    pub producer_buffer: usize,
    /// Most records the processor takes in one batch. Default 500.
    #[serde(default = "default_kafka_batch_size")]
    pub batch_size: usize,
    /// After a batch's first record, how long the processor waits for more. Default `50ms`.
    #[serde(default = "default_kafka_batch_wait")]
    pub batch_wait: DurationValue,
    /// How long the group waits for a processor that stopped answering (crashed, killed)
    /// before its partitions go to the others: Kafka's `session.timeout.ms`. Must lie in
    /// the broker's allowed range (Apache Kafka: 6s to 30m). Default `45s`.
    #[serde(default = "default_kafka_session_timeout")]
    pub session_timeout: DurationValue,
}

impl KafkaConfig {
    /// `brokers` as librdkafka wants it: entries trimmed, comma-separated.
    pub fn broker_list(&self) -> String {
        self.brokers
            .get_ref()
            .split(',')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Producer compression codecs (zstd is not built into the bundled librdkafka).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KafkaCompression {
    /// Uncompressed batches.
    None,
    /// gzip: smallest, most CPU.
    Gzip,
    /// snappy.
    Snappy,
    /// lz4: cheap on CPU, and chat text compresses well with it.
    #[default]
    Lz4,
}

fn default_kafka_topic() -> Spanned<String> {
    Spanned::new(0..0, "streamtap.chat".into())
}
fn default_kafka_dead_letter_topic() -> Spanned<String> {
    Spanned::new(0..0, "streamtap.dead-letter".into())
}
fn default_kafka_group_id() -> String {
    "streamtap-processors".into()
}
fn default_kafka_producer_buffer() -> usize {
    crate::transport::kafka::DEFAULT_QUEUE_MESSAGES
}
fn default_kafka_batch_size() -> usize {
    500
}
fn default_kafka_batch_wait() -> DurationValue {
    DurationValue(Duration::from_millis(50))
}
fn default_kafka_session_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(45))
}

/// Whether `t` is a legal Kafka topic name (1 to 249 of `[a-zA-Z0-9._-]`, not `.`/`..`).
fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Whether every comma-separated entry of `b` is `host:port`.
fn valid_brokers(b: &str) -> bool {
    !b.trim().is_empty()
        && b.split(',').all(|e| {
            let e = e.trim();
            !e.contains(['/', '@', ' '])
                && e.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
        })
}

fn validate_kafka(file: &Path, text: &str, k: &KafkaConfig) -> Result<(), ConfigError> {
    let err = |span, msg| Err(ConfigError::at(file, text, span, msg));
    let at = |key: &str| {
        value_at(
            text,
            &[At::Key("transport"), At::Key("kafka"), At::Key(key)],
        )
    };
    if !valid_brokers(k.brokers.get_ref()) {
        return err(
            Some(k.brokers.span()),
            format!(
                "transport.kafka: brokers {:?} must be host:port entries separated by commas (no scheme)",
                k.brokers.get_ref()
            ),
        );
    }
    for (key, t) in [
        ("topic", &k.topic),
        ("dead_letter_topic", &k.dead_letter_topic),
    ] {
        if !valid_topic(t.get_ref()) {
            return err(
                at(key).0,
                format!(
                    "transport.kafka: {key} {:?} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)",
                    t.get_ref()
                ),
            );
        }
    }
    if k.topic.get_ref() == k.dead_letter_topic.get_ref() {
        return err(
            at("dead_letter_topic").0,
            format!(
                "transport.kafka: dead_letter_topic {:?} must differ from topic",
                k.dead_letter_topic.get_ref()
            ),
        );
    }
    if k.group_id.is_empty() {
        return err(
            at("group_id").0,
            "transport.kafka: group_id \"\" must not be empty".into(),
        );
    }
    for (key, v) in [
        ("producer_buffer", k.producer_buffer),
        ("batch_size", k.batch_size),
    ] {
        if v == 0 {
            return err(
                at(key).0,
                format!("transport.kafka: {key} 0 must be at least 1"),
            );
        }
    }
    let st = k.session_timeout.0;
    if st < Duration::from_secs(1) || st > Duration::from_secs(3600) {
        let (span, shown) = at("session_timeout");
        return err(
            span,
            format!(
                "transport.kafka: session_timeout {} must be between 1s and 1h",
                shown.unwrap_or_default()
            ),
        );
    }
    if k.batch_wait.0 > Duration::from_secs(10) {
        let (span, shown) = at("batch_wait");
        return err(
            span,
            format!(
                "transport.kafka: batch_wait {} must be at most 10s",
                shown.unwrap_or_default()
            ),
        );
    }
    Ok(())
}

/// What happens to a message when its step fails on it (trap, timeout, out of memory,
/// plugin error, bad output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Pass the message on unchanged by this step.
    #[default]
    Skip,
    /// Drop the message (counted and logged).
    Drop,
    /// Store the message in the dead-letter table with the reason, plugin and version.
    DeadLetter,
}

/// A secret's source: never written in the pipeline text itself.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretRef {
    /// Read from this environment variable.
    Env(String),
    /// Read from this file (relative to the pipeline file), trailing newline trimmed.
    File(PathBuf),
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The derived enum would read a bare string as a variant name and quote it in
        // "unknown variant `<the token>`": a secret pasted into the file would land in the
        // error and the log. A bare string is refused without showing it.
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case", deny_unknown_fields)]
        enum Tagged {
            Env(String),
            File(PathBuf),
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("{ env = \"VAR\" } or { file = \"path\" }")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(
                    "a secret must not be written in the pipeline file (value not shown): use { env = \"VAR\" } or { file = \"path\" }",
                ))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<SecretRef, A::Error> {
                Tagged::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(|t| {
                    match t {
                        Tagged::Env(v) => SecretRef::Env(v),
                        Tagged::File(p) => SecretRef::File(p),
                    }
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// One `[[steps]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Unique step name (`[a-z0-9_-]`). Default: the plugin file's stem.
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// Plugin component (`.wasm`), relative to the pipeline file.
    pub uses: Spanned<PathBuf>,
    /// Config handed to the plugin's `init`, as JSON.
    #[serde(default)]
    pub with: toml::Table,
    /// Keys added to `with` from the environment or files, so secrets stay out of the
    /// pipeline text: `secrets = { api_key = { env = "LT_API_KEY" } }`.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretRef>,
    /// Wall-clock budget of one call into the plugin. Default `100ms`.
    #[serde(default = "default_deadline")]
    pub deadline: DurationValue,
    /// Plugin memory cap. Default `64MiB`, at most `1GiB`.
    #[serde(default = "default_memory")]
    pub memory_limit: ByteSize,
    /// What happens to a message the step fails on. Default `skip`.
    #[serde(default)]
    pub on_error: OnError,
    /// Hosts (`host` or `host:port`) the plugin may reach over HTTP. Default: none.
    #[serde(default)]
    pub allow_http: Vec<Spanned<String>>,
    /// Timeout of one HTTP request. Default `5s`.
    #[serde(default = "default_http_timeout")]
    pub http_timeout: DurationValue,
    /// Largest HTTP response body accepted. Default `1MiB`.
    #[serde(default = "default_http_max")]
    pub http_max_response: ByteSize,
    /// Size cap of the step's key-value state. Default `64MiB`.
    #[serde(default = "default_memory")]
    pub state_limit: ByteSize,
}

fn default_deadline() -> DurationValue {
    DurationValue(Duration::from_millis(100))
}
fn default_memory() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_http_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(5))
}
fn default_http_max() -> ByteSize {
    ByteSize(1 << 20)
}

/// Sink components.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// Embedded SQLite database.
    Sqlite(SqliteConfig),
    /// MongoDB (or a wire-compatible server).
    Mongodb(MongoConfig),
}

/// `[sink.sqlite]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// Database file, relative to the pipeline file; created when missing.
    pub path: PathBuf,
}

/// `[sink.mongodb]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// Connection string without credentials, e.g. `"mongodb://127.0.0.1:27017"`. A string
    /// carrying a user or password is refused: put it in `uri_secret` instead.
    #[serde(default)]
    pub uri: Option<Spanned<String>>,
    /// The whole connection string from the environment or a file, for deployments whose
    /// string carries credentials: `uri_secret = { env = "STREAMTAP_MONGODB_URI" }`.
    #[serde(default)]
    pub uri_secret: Option<SecretRef>,
    /// Database holding the collections. Default `"streamtap"`.
    #[serde(default = "default_mongo_database")]
    pub database: String,
    /// Most documents in one `insert_many`; more wait for the next write. Default 1000.
    #[serde(default = "default_mongo_max_batch")]
    pub max_batch: usize,
    /// Longest a processed message waits for its batch to fill before it is written.
    /// Default `500ms`.
    #[serde(default = "default_mongo_max_delay")]
    pub max_delay: DurationValue,
    /// How long one attempt may wait for a reachable server before it counts as failed and
    /// is retried. Default `5s`.
    #[serde(default = "default_mongo_timeout")]
    pub timeout: DurationValue,
    /// First retry delay after a failed write; doubles (with jitter) up to `retry_max`.
    /// Default `200ms`.
    #[serde(default = "default_mongo_retry_initial")]
    pub retry_initial: DurationValue,
    /// Longest delay between retries. Default `10s`.
    #[serde(default = "default_mongo_retry_max")]
    pub retry_max: DurationValue,
    /// Local SQLite file holding this processor's alert outbox (deliveries pending, dead
    /// letters), relative to the pipeline file. Default `.streamtap/alert-outbox.db`.
    #[serde(default = "default_alert_outbox")]
    pub alert_outbox: PathBuf,
}

fn default_alert_outbox() -> PathBuf {
    PathBuf::from(".streamtap/alert-outbox.db")
}

fn default_mongo_database() -> String {
    "streamtap".into()
}
fn default_mongo_max_batch() -> usize {
    1000
}
fn default_mongo_max_delay() -> DurationValue {
    DurationValue(Duration::from_millis(500))
}
fn default_mongo_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(5))
}
fn default_mongo_retry_initial() -> DurationValue {
    DurationValue(Duration::from_millis(200))
}
fn default_mongo_retry_max() -> DurationValue {
    DurationValue(Duration::from_secs(10))
}

impl SecretRef {
    /// Reads the secret; errors name where it was looked for, never the value.
    pub fn resolve(&self, pipeline: &Pipeline) -> Result<String, String> {
        match self {
            SecretRef::Env(var) => {
                std::env::var(var).map_err(|_| format!("environment variable {var:?} is not set"))
            }
            SecretRef::File(p) => {
                let path = pipeline.resolve(p);
                std::fs::read_to_string(&path)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
            }
        }
    }
}

/// `[alerts]`: which sinks each alert topic goes to, the sinks themselves, and how
/// delivery is retried.
///
/// Sinks are named by kind: `console`, `sns.NAME` for `[alerts.sns.NAME]`, `webhook.NAME`
/// for `[alerts.webhook.NAME]`, so several SNS topics (one per theme of channels, say) can
/// sit side by side and routes read unambiguously.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Delivery for topics not listed in `topics`. Default `["console"]`.
    #[serde(default = "default_alert_sinks")]
    pub default: Vec<Spanned<String>>,
    /// Delivery per alert topic: `[alerts.topics.hype] to = ["console", "sns.hype"]`.
    #[serde(default)]
    pub topics: BTreeMap<String, AlertRoute>,
    /// Amazon SNS sinks by name: `[alerts.sns.hype] topic_arn = "arn:aws:sns:..."`.
    #[serde(default)]
    pub sns: BTreeMap<String, SnsSinkConfig>,
    /// HTTP webhook sinks by name: `[alerts.webhook.ops] url = "https://..."`.
    #[serde(default)]
    pub webhook: BTreeMap<String, WebhookSinkConfig>,
    /// Retry, dead-letter and shutdown behaviour of delivery.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            default: default_alert_sinks(),
            topics: BTreeMap::new(),
            sns: BTreeMap::new(),
            webhook: BTreeMap::new(),
            delivery: DeliveryConfig::default(),
        }
    }
}

fn default_alert_sinks() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "console".to_owned())]
}

/// `[alerts.topics.NAME]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRoute {
    /// Delivery sinks for this topic (`console`, `sns.NAME`, `webhook.NAME`).
    pub to: Vec<Spanned<String>>,
}

/// `[alerts.sns.NAME]`: publishes to one SNS topic. Credentials come from the standard AWS
/// chain (environment, profile, SSO, instance role), never from the pipeline file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsSinkConfig {
    /// The topic's ARN, `arn:aws:sns:REGION:ACCOUNT:NAME`; a name ending in `.fifo` is a
    /// FIFO topic (message group: the channel; deduplication id: the alert's dedupe key).
    pub topic_arn: Spanned<String>,
    /// AWS region of the client. Default: the region in `topic_arn`.
    #[serde(default)]
    pub region: Option<Spanned<String>>,
    /// Endpoint URL overriding AWS's (LocalStack, moto): `"http://127.0.0.1:4566"`.
    /// Default: the region's SNS endpoint.
    #[serde(default)]
    pub endpoint_url: Option<Spanned<String>>,
    /// Timeout of one publish (connect + request). Default `10s`.
    #[serde(default = "default_sink_timeout")]
    pub timeout: DurationValue,
}

/// `[alerts.webhook.NAME]`: POSTs each alert as a JSON object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// `http://` or `https://` URL; any 2xx answer counts as delivered.
    pub url: Spanned<String>,
    /// Timeout of one request. Default `10s`.
    #[serde(default = "default_sink_timeout")]
    pub timeout: DurationValue,
}

fn default_sink_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(10))
}

/// `[alerts.delivery]`: how failed deliveries are retried.
///
/// A failed delivery is retried after `initial_backoff`, doubling up to `max_backoff`,
/// each wait randomised to between half and all of it (jitter, so many alerts failing
/// together do not retry in lockstep). After `max_attempts` failures the delivery is a
/// dead letter: kept in the store and retried every `dead_letter_interval` until it
/// succeeds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Attempts before a delivery becomes a dead letter (at least 1). Default `5`.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait after the first failure. Default `1s`.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: DurationValue,
    /// Longest wait between attempts before dead-lettering. Default `1m`.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: DurationValue,
    /// Retry cadence of dead letters. Default `5m`.
    #[serde(default = "default_dead_letter_interval")]
    pub dead_letter_interval: DurationValue,
    /// At shutdown, how long to keep delivering what is pending before leaving it in the
    /// store for the next run. Default `5s`.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: DurationValue,
}

fn default_max_attempts() -> u32 {
    5
}
fn default_initial_backoff() -> DurationValue {
    DurationValue(Duration::from_secs(1))
}
fn default_max_backoff() -> DurationValue {
    DurationValue(Duration::from_secs(60))
}
fn default_dead_letter_interval() -> DurationValue {
    DurationValue(Duration::from_secs(300))
}
fn default_shutdown_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(5))
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            max_attempts: default_max_attempts(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            dead_letter_interval: default_dead_letter_interval(),
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint serving `/metrics`, `/health` and `/ready`. Loopback by
    /// default so a laptop run never exposes it; port 0 picks a free port (logged).
    #[serde(default = "default_metrics_listen")]
    pub listen: std::net::SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
        }
    }
}

/// 9464: a port Prometheus exporters commonly use, clear of Kafka's and MongoDB's.
fn default_metrics_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// Alert sink kinds this build knows; `sns` and `webhook` sinks are named `KIND.NAME`.
pub const ALERT_SINK_KINDS: &[&str] = &["console", "sns.NAME", "webhook.NAME"];

/// A duration written as `"100ms"`, `"5s"`, `"2m"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(DurationValue)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?}: {e} (write e.g. \"100ms\", \"5s\")"
                ))
            })
    }
}

/// A size written as `"64MiB"`, `"512KiB"`, `"1GB"` or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

impl ByteSize {
    fn parse(s: &str) -> Result<u64, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid size {s:?}: expected e.g. \"64MiB\""))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" => 1_000,
            "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            u => {
                return Err(format!(
                    "invalid size {s:?}: unknown unit {u:?} (use B, KB, KiB, MB, MiB, GB, GiB)"
                ));
            }
        };
        n.checked_mul(mult)
            .ok_or_else(|| format!("invalid size {s:?}: too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than an untagged enum, so a wrong type gets a clear message.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64MiB\" or a number of bytes")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map(ByteSize).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {n}: must not be negative")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A step after validation: paths resolved, name decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    /// Absolute or pipeline-relative path resolved against the pipeline's directory.
    pub plugin_path: PathBuf,
    pub config: StepConfig,
}

/// A validated pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// The file it came from.
    pub file: PathBuf,
    pub name: String,
    pub source: SourceConfig,
    pub transport: TransportConfig,
    pub steps: Vec<Step>,
    pub sink: SinkConfig,
    pub alerts: AlertsConfig,
    pub metrics: Option<MetricsConfig>,
    pub recorder: Option<RecorderConfig>,
}

impl Pipeline {
    /// Directory relative paths in the file are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        base_dir(&self.file)
    }

    /// Resolves a path from the file against its directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        self.base_dir().join(p)
    }

    /// Reads and validates a pipeline file.
    pub fn load(file: &Path) -> Result<Pipeline, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.display().to_string(),
            source,
        })?;
        Self::parse(file, &text)
    }

    /// Validates pipeline text as if read from `file` (used for relative paths and errors).
    pub fn parse(file: &Path, text: &str) -> Result<Pipeline, ConfigError> {
        let raw: PipelineFile = toml::from_str(text)
            .map_err(|e| ConfigError::at(file, text, e.span(), e.message().trim().to_owned()))?;
        validate(file, text, raw)
    }
}

fn base_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn validate(file: &Path, text: &str, raw: PipelineFile) -> Result<Pipeline, ConfigError> {
    let err =
        |span: std::ops::Range<usize>, msg: String| ConfigError::at(file, text, Some(span), msg);
    let base = base_dir(file);

    match &raw.transport {
        TransportConfig::Memory(m) => {
            if m.capacity == 0 || m.batch_size == 0 {
                let key = if m.capacity == 0 {
                    "capacity"
                } else {
                    "batch_size"
                };
                let (span, shown) = value_at(
                    text,
                    &[At::Key("transport"), At::Key("memory"), At::Key(key)],
                );
                let shown = shown.unwrap_or_else(|| "0".into());
                return Err(ConfigError::at(
                    file,
                    text,
                    span,
                    format!("transport.memory: {key} {shown} must be at least 1"),
                ));
            }
        }
        TransportConfig::Kafka(k) => validate_kafka(file, text, k)?,
    }

    if let SourceConfig::Twitch(t) = &raw.source {
        validate_twitch(file, text, t)?;
        if let Some(h) = &t.helix
            && h.budget == HelixBudget::Mongodb
            && !matches!(raw.sink, SinkConfig::Mongodb(_))
        {
            let span = locate(
                text,
                &[
                    At::Key("source"),
                    At::Key("twitch"),
                    At::Key("helix"),
                    At::Key("budget"),
                ],
            )
            .map(|(_, v)| v);
            return Err(ConfigError::at(
                file,
                text,
                span,
                "source.twitch.helix: budget \"mongodb\" keeps the budget in the sink's database, but the sink is not [sink.mongodb]".into(),
            ));
        }
    }

    validate_recorder(file, text, &raw)?;

    let mut names = HashSet::new();
    let mut steps = Vec::with_capacity(raw.steps.len());
    for (i, sc) in raw.steps.into_iter().enumerate() {
        let uses_span = sc.uses.span();
        let plugin_path = base.join(sc.uses.get_ref());
        let name = match &sc.name {
            Some(n) => {
                let ok = !n.get_ref().is_empty()
                    && n.get_ref().chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
                    });
                if !ok {
                    return Err(err(
                        n.span(),
                        format!(
                            "invalid step name {:?}: use lowercase letters, digits, '_' and '-'",
                            n.get_ref()
                        ),
                    ));
                }
                n.get_ref().clone()
            }
            None => plugin_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let name_span = sc
            .name
            .as_ref()
            .map(|n| n.span())
            .unwrap_or(uses_span.clone());
        if !names.insert(name.clone()) {
            return Err(err(
                name_span,
                format!("duplicate step name {name:?}: step names must be unique (set `name`)"),
            ));
        }
        if !plugin_path.is_file() {
            return Err(err(
                uses_span,
                format!(
                    "step {name:?}: plugin file {:?} not found (resolved to {})",
                    sc.uses.get_ref(),
                    plugin_path.display()
                ),
            ));
        }
        let dl = sc.deadline.0;
        if dl.is_zero() || dl > Duration::from_secs(60) {
            let (span, shown) =
                value_at(text, &[At::Key("steps"), At::Index(i), At::Key("deadline")]);
            let shown = shown.unwrap_or_else(|| format!("{dl:?}"));
            return Err(ConfigError::at(
                file,
                text,
                span,
                format!("step {name:?}: deadline {shown} must be between 1ms and 60s"),
            ));
        }
        let mem = sc.memory_limit.0;
        if !((1 << 20)..=crate::plugins::MAX_MEMORY_LIMIT).contains(&mem) {
            let (span, shown) = value_at(
                text,
                &[At::Key("steps"), At::Index(i), At::Key("memory_limit")],
            );
            let shown = shown.unwrap_or_else(|| format!("{mem}"));
            return Err(ConfigError::at(
                file,
                text,
                span,
                format!("step {name:?}: memory_limit {shown} must be between 1MiB and 1GiB"),
            ));
        }
        for h in &sc.allow_http {
            let v = h.get_ref();
            let ok = !v.is_empty()
                && !v.contains(['/', '@', ' ', '?', '#'])
                && v.split(':').count() <= 2
                && v.rsplit_once(':')
                    .is_none_or(|(_, p)| p.parse::<u16>().is_ok());
            if !ok {
                return Err(err(
                    h.span(),
                    format!(
                        "step {name:?}: allow_http entry {v:?} must be a host or host:port (no scheme or path)"
                    ),
                ));
            }
        }
        // Where `steps[i].{table}.{key}` is written, for errors about that key.
        let key_in_step = |table: &str, key: &str| {
            let path = [At::Key("steps"), At::Index(i), At::Key(table), At::Key(key)];
            locate(text, &path).map(|(key_span, _)| key_span)
        };
        for key in sc.secrets.keys() {
            if sc.with.contains_key(key) {
                return Err(ConfigError::at(
                    file,
                    text,
                    key_in_step("secrets", key),
                    format!("step {name:?}: key {key:?} is set both in `with` and in `secrets`"),
                ));
            }
        }
        // A key named like a credential with a literal string value is a secret written
        // into the pipeline file (which gets committed, shared and logged); the plugin
        // cannot tell where its `with` values came from, so the host refuses it here.
        for (key, value) in &sc.with {
            // Any literal counts (a numeric PIN would be echoed by a type error just the
            // same); a table under such a name is plugin structure, not a value.
            if !value.is_table() && looks_like_secret(key) {
                return Err(ConfigError::at(
                    file,
                    text,
                    key_in_step("with", key),
                    format!(
                        "step {name:?}: `with.{key}` looks like a secret, which must not be written \
                         in the pipeline file (value not shown): use \
                         secrets = {{ {key} = {{ env = \"VAR\" }} }} or {{ file = \"path\" }}"
                    ),
                ));
            }
        }
        steps.push(Step {
            name,
            plugin_path,
            config: sc,
        });
    }

    if let SinkConfig::Mongodb(m) = &raw.sink {
        let at = |key: &str| value_at(text, &[At::Key("sink"), At::Key("mongodb"), At::Key(key)]);
        match (&m.uri, &m.uri_secret) {
            (None, None) => {
                let span = locate(text, &[At::Key("sink"), At::Key("mongodb")]).map(|(k, _)| k);
                return Err(ConfigError::at(
                    file,
                    text,
                    span,
                    "[sink.mongodb] needs `uri` (e.g. \"mongodb://127.0.0.1:27017\") or `uri_secret`".into(),
                ));
            }
            (Some(u), Some(_)) => {
                return Err(err(
                    u.span(),
                    "[sink.mongodb] sets both `uri` and `uri_secret`; keep one".into(),
                ));
            }
            (Some(u), None) => {
                if let Err(msg) = crate::sinks::mongodb::check_public_uri(u.get_ref()) {
                    return Err(err(u.span(), format!("[sink.mongodb] uri: {msg}")));
                }
            }
            (None, Some(_)) => {}
        }
        if m.max_batch == 0 {
            let (span, _) = at("max_batch");
            return Err(ConfigError::at(
                file,
                text,
                span,
                "[sink.mongodb] max_batch = 0: must be at least 1".into(),
            ));
        }
        if m.retry_initial.0.is_zero() || m.retry_max.0 < m.retry_initial.0 {
            let (span, _) = at("retry_max");
            return Err(ConfigError::at(
                file,
                text,
                span,
                format!(
                    "[sink.mongodb] retry delays: retry_initial ({:?}) must be above zero and at most retry_max ({:?})",
                    m.retry_initial.0, m.retry_max.0
                ),
            ));
        }
    }

    validate_alerts(file, text, &raw.alerts)?;

    let name = raw.name.unwrap_or_else(|| {
        file.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".into())
    });
    Ok(Pipeline {
        file: file.to_owned(),
        name,
        source: raw.source,
        transport: raw.transport,
        steps,
        sink: raw.sink,
        alerts: raw.alerts,
        metrics: raw.metrics,
        recorder: raw.recorder,
    })
}

/// Names may be part of sink names (`sns.NAME`) and delivery rows, so keep them plain.
fn valid_sink_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Checks an SNS topic ARN (`arn:PARTITION:sns:REGION:ACCOUNT:NAME`) and returns its region.
pub fn sns_arn_region(arn: &str) -> Result<&str, String> {
    let parts: Vec<&str> = arn.split(':').collect();
    let [prefix, partition, service, region, account, name] = parts[..] else {
        return Err(format!(
            "topic_arn {arn:?} is not an SNS topic ARN (expected arn:aws:sns:REGION:ACCOUNT:NAME)"
        ));
    };
    if prefix != "arn" || !partition.starts_with("aws") || service != "sns" {
        return Err(format!(
            "topic_arn {arn:?} is not an SNS topic ARN (expected arn:aws:sns:REGION:ACCOUNT:NAME)"
        ));
    }
    if region.is_empty()
        || !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!("topic_arn {arn:?}: invalid region {region:?}"));
    }
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "topic_arn {arn:?}: account {account:?} must be 12 digits"
        ));
    }
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    if base.is_empty()
        || name.len() > 256
        || !base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "topic_arn {arn:?}: invalid topic name {name:?} (letters, digits, '-', '_', optional .fifo; at most 256)"
        ));
    }
    Ok(region)
}

/// `http://host[:port][/path]` or `https://...`, with a host.
fn valid_http_url(u: &str) -> bool {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"));
    match rest {
        Some(r) => {
            let host = r.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !host.contains(char::is_whitespace) && !host.contains('@')
        }
        None => false,
    }
}

fn validate_alerts(file: &Path, text: &str, a: &AlertsConfig) -> Result<(), ConfigError> {
    let err =
        |span: std::ops::Range<usize>, msg: String| ConfigError::at(file, text, Some(span), msg);
    let key_span = |path: &[At<'_>]| locate(text, path).map(|(k, _)| k);
    for (kind, names) in [
        ("sns", a.sns.keys().collect::<Vec<_>>()),
        ("webhook", a.webhook.keys().collect()),
    ] {
        for n in names {
            if !valid_sink_name(n) {
                return Err(ConfigError::at(
                    file,
                    text,
                    key_span(&[At::Key("alerts"), At::Key(kind), At::Key(n)]),
                    format!(
                        "alerts.{kind}: invalid sink name {n:?}: use lowercase letters, digits, '_' and '-'"
                    ),
                ));
            }
        }
    }
    for (name, c) in &a.sns {
        let arn = c.topic_arn.get_ref();
        let arn_region = sns_arn_region(arn)
            .map_err(|m| err(c.topic_arn.span(), format!("alerts.sns.{name}: {m}")))?;
        if let Some(r) = &c.region
            && r.get_ref() != arn_region
        {
            return Err(err(
                r.span(),
                format!(
                    "alerts.sns.{name}: region {:?} differs from the region {arn_region:?} in topic_arn (SNS topics are regional)",
                    r.get_ref()
                ),
            ));
        }
        if let Some(u) = &c.endpoint_url
            && !valid_http_url(u.get_ref())
        {
            return Err(err(
                u.span(),
                format!(
                    "alerts.sns.{name}: endpoint_url {:?} must be an http:// or https:// URL",
                    u.get_ref()
                ),
            ));
        }
        check_positive(
            file,
            text,
            &["alerts", "sns", name.as_str(), "timeout"],
            c.timeout,
        )?;
    }
    for (name, c) in &a.webhook {
        if !valid_http_url(c.url.get_ref()) {
            return Err(err(
                c.url.span(),
                format!(
                    "alerts.webhook.{name}: url {:?} must be an http:// or https:// URL",
                    c.url.get_ref()
                ),
            ));
        }
        check_positive(
            file,
            text,
            &["alerts", "webhook", name.as_str(), "timeout"],
            c.timeout,
        )?;
    }
    for s in a
        .default
        .iter()
        .chain(a.topics.values().flat_map(|r| r.to.iter()))
    {
        let v = s.get_ref().as_str();
        let known = match v.split_once('.') {
            None => v == "console",
            Some(("sns", n)) => a.sns.contains_key(n),
            Some(("webhook", n)) => a.webhook.contains_key(n),
            Some(_) => false,
        };
        if !known {
            let mut available = vec!["console".to_owned()];
            available.extend(a.sns.keys().map(|n| format!("sns.{n}")));
            available.extend(a.webhook.keys().map(|n| format!("webhook.{n}")));
            return Err(err(
                s.span(),
                format!(
                    "unknown alert sink {v:?} (available: {}; define sns.NAME in [alerts.sns.NAME], webhook.NAME in [alerts.webhook.NAME])",
                    available.join(", ")
                ),
            ));
        }
    }
    let d = &a.delivery;
    if d.max_attempts == 0 {
        let (span, _) = value_at(
            text,
            &[
                At::Key("alerts"),
                At::Key("delivery"),
                At::Key("max_attempts"),
            ],
        );
        return Err(ConfigError::at(
            file,
            text,
            span,
            "alerts.delivery: max_attempts 0 must be at least 1".into(),
        ));
    }
    for (key, v) in [
        ("initial_backoff", d.initial_backoff),
        ("max_backoff", d.max_backoff),
        ("dead_letter_interval", d.dead_letter_interval),
    ] {
        check_positive(file, text, &["alerts", "delivery", key], v)?;
    }
    if d.max_backoff.0 < d.initial_backoff.0 {
        let (span, shown) = value_at(
            text,
            &[
                At::Key("alerts"),
                At::Key("delivery"),
                At::Key("max_backoff"),
            ],
        );
        return Err(ConfigError::at(
            file,
            text,
            span,
            format!(
                "alerts.delivery: max_backoff {} is shorter than initial_backoff",
                shown.unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

/// A duration at `path` (all keys) that must be longer than zero.
fn check_positive(
    file: &Path,
    text: &str,
    path: &[&str],
    v: DurationValue,
) -> Result<(), ConfigError> {
    if !v.0.is_zero() {
        return Ok(());
    }
    let at: Vec<At<'_>> = path.iter().map(|k| At::Key(k)).collect();
    let (span, shown) = value_at(text, &at);
    Err(ConfigError::at(
        file,
        text,
        span,
        format!(
            "{}: {} {} must be longer than zero",
            path[..path.len() - 1].join("."),
            path[path.len() - 1],
            shown.unwrap_or_else(|| "0s".into())
        ),
    ))
}

fn validate_twitch(file: &Path, text: &str, t: &TwitchConfig) -> Result<(), ConfigError> {
    let key_err = |key: &str, msg: String| {
        let span =
            locate(text, &[At::Key("source"), At::Key("twitch"), At::Key(key)]).map(|(_, v)| v);
        ConfigError::at(file, text, span, msg)
    };
    for c in &t.channels {
        let login = normalise_channel(c.get_ref().login());
        if !valid_login(&login) {
            return Err(ConfigError::at(
                file,
                text,
                Some(c.span()),
                format!(
                    "source.twitch: invalid channel {:?}: a Twitch login is 1 to 25 letters, digits or '_'",
                    c.get_ref().login()
                ),
            ));
        }
    }
    let server = t.server_addr();
    let host = match server.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => {
            h.trim_start_matches('[').trim_end_matches(']').to_owned()
        }
        _ => {
            return Err(key_err(
                "server",
                format!("source.twitch: server {server:?} must be host:port"),
            ));
        }
    };
    if !t.connection.is_secure() {
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(key_err(
                "connection",
                format!(
                    "source.twitch: a plain (unencrypted) connection is only allowed to a loopback server, not {server:?}; use \"tls\" or \"wss\""
                ),
            ));
        }
    }
    match (&t.login, &t.token) {
        (Some(_), None) => {
            return Err(key_err(
                "login",
                "source.twitch: `login` needs a `token` (or remove both for anonymous read-only chat)".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(key_err(
                "token",
                "source.twitch: `token` needs the `login` it belongs to".into(),
            ));
        }
        (Some(l), Some(_)) if !valid_login(&l.to_ascii_lowercase()) => {
            return Err(key_err(
                "login",
                format!("source.twitch: invalid login {l:?}"),
            ));
        }
        _ => {}
    }
    if t.join_limit == 0 {
        return Err(key_err(
            "join_limit",
            "source.twitch: join_limit 0 must be at least 1".into(),
        ));
    }
    if t.join_window.0.is_zero() {
        return Err(key_err(
            "join_window",
            "source.twitch: join_window must be longer than 0".into(),
        ));
    }
    if t.buffer_lines == 0 {
        return Err(key_err(
            "buffer_lines",
            "source.twitch: buffer_lines 0 must be at least 1".into(),
        ));
    }
    if let Some(h) = &t.helix {
        validate_helix(file, text, h)?;
    }
    if t.reconnect_min.0.is_zero() || t.reconnect_min.0 > t.reconnect_max.0 {
        return Err(key_err(
            "reconnect_min",
            format!(
                "source.twitch: reconnect_min {:?} must be above 0 and at most reconnect_max {:?}",
                t.reconnect_min.0, t.reconnect_max.0
            ),
        ));
    }
    Ok(())
}

fn validate_helix(file: &Path, text: &str, h: &HelixConfig) -> Result<(), ConfigError> {
    let key_err = |key: &str, msg: String| {
        let span = locate(
            text,
            &[
                At::Key("source"),
                At::Key("twitch"),
                At::Key("helix"),
                At::Key(key),
            ],
        )
        .map(|(_, v)| v);
        ConfigError::at(file, text, span, msg)
    };
    if h.client_id.get_ref().trim().is_empty() {
        return Err(key_err(
            "client_id",
            "source.twitch.helix: client_id is empty".into(),
        ));
    }
    for (key, url) in [("api_url", &h.api_url), ("token_url", &h.token_url)] {
        if !valid_http_url(url) {
            return Err(key_err(
                key,
                format!("source.twitch.helix: {key} {url:?} must be an http:// or https:// URL"),
            ));
        }
    }
    if h.interval.0 < Duration::from_secs(1) {
        return Err(key_err(
            "interval",
            format!(
                "source.twitch.helix: interval {:?} must be at least 1s",
                h.interval.0
            ),
        ));
    }
    if h.points_per_minute == 0 {
        return Err(key_err(
            "points_per_minute",
            "source.twitch.helix: points_per_minute 0 must be at least 1".into(),
        ));
    }
    if h.timeout.0.is_zero() {
        return Err(key_err(
            "timeout",
            "source.twitch.helix: timeout must be longer than 0".into(),
        ));
    }
    Ok(())
}

fn validate_recorder(file: &Path, text: &str, raw: &PipelineFile) -> Result<(), ConfigError> {
    let twitch = match &raw.source {
        SourceConfig::Twitch(t) => Some(t),
        SourceConfig::Replay(_) => None,
    };
    if raw.recorder.is_none()
        && let Some(c) = twitch.and_then(|t| t.channels.iter().find(|c| c.get_ref().record()))
    {
        return Err(ConfigError::at(
            file,
            text,
            Some(c.span()),
            format!(
                "source.twitch: channel {:?} has record = true, but there is no [recorder] section",
                c.get_ref().login()
            ),
        ));
    }
    let Some(r) = &raw.recorder else {
        return Ok(());
    };
    let key_err = |key: Option<&str>, msg: String| {
        let mut path = vec![At::Key("recorder")];
        path.extend(key.map(At::Key));
        let span = locate(text, &path).map(|(k, v)| if key.is_some() { v } else { k });
        ConfigError::at(file, text, span, msg)
    };
    if twitch.and_then(|t| t.helix.as_ref()).is_none() {
        return Err(key_err(
            None,
            "recorder: needs [source.twitch] with [source.twitch.helix], which says when channels go live".into(),
        ));
    }
    if r.max_concurrent == 0 {
        return Err(key_err(
            Some("max_concurrent"),
            "recorder: max_concurrent 0 must be at least 1".into(),
        ));
    }
    for (key, v) in [("url", &r.url), ("quality", &r.quality)] {
        if v.trim().is_empty() {
            return Err(key_err(Some(key), format!("recorder: {key} is empty")));
        }
    }
    if r.restart_min.0.is_zero() || r.restart_min.0 > r.restart_max.0 {
        return Err(key_err(
            Some("restart_min"),
            format!(
                "recorder: restart_min {:?} must be above 0 and at most restart_max {:?}",
                r.restart_min.0, r.restart_max.0
            ),
        ));
    }
    if r.stop_timeout.0.is_zero() {
        return Err(key_err(
            Some("stop_timeout"),
            "recorder: stop_timeout must be longer than 0".into(),
        ));
    }
    if let Some(bad) = r.args.iter().find(|a| {
        matches!(
            a.as_str(),
            "-o" | "--output" | "-O" | "--stdout" | "--config"
        )
    }) {
        return Err(key_err(
            Some("args"),
            format!(
                "recorder: args must not contain {bad:?}: the recorder sets the output and config itself"
            ),
        ));
    }
    Ok(())
}

/// Reads a secret named in the pipeline file (environment variable or file).
pub fn read_secret(pipeline: &Pipeline, r: &SecretRef) -> Result<String, String> {
    r.resolve(pipeline)
}

/// Whether a `with` key names a credential: its last word (camelCase and `-` split like
/// `_`) is `token`, `password`, `passwd`, `secret` or `credentials`, or it ends in
/// `api_key`, `apikey`, `auth_key`, `access_key`, `secret_key` or `private_key`. Keys
/// such as `dedupe_key` or `cache_key` are not credentials and pass.
fn looks_like_secret(key: &str) -> bool {
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if (c == '_' || c == '-' || (c.is_uppercase() && prev_lower)) && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        if c != '_' && c != '-' {
            word.extend(c.to_lowercase());
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let last = words.last().map(String::as_str).unwrap_or("");
    let pair = match words.as_slice() {
        [.., a, b] => format!("{a}_{b}"),
        _ => String::new(),
    };
    matches!(
        last,
        "token" | "password" | "passwd" | "secret" | "credentials" | "apikey"
    ) || matches!(
        pair.as_str(),
        "api_key" | "auth_key" | "access_key" | "secret_key" | "private_key"
    )
}

/// One step of a path into the document, for [`locate`].
enum At<'a> {
    Key(&'a str),
    Index(usize),
}

/// Spans of a key and of its value, found by path (`steps`, 2, `deadline`) in the parsed
/// text: for errors found after deserialization, where serde no longer has positions.
/// Works for `[table]` headers, dotted keys and inline tables alike.
fn locate(text: &str, path: &[At<'_>]) -> Option<(Range<usize>, Range<usize>)> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut spans = (doc.span(), doc.span());
    let root = DeValue::Table(doc.into_inner());
    let mut cur = &root;
    for at in path {
        match (at, cur) {
            (At::Key(k), DeValue::Table(t)) => {
                let (key, value) = t.iter().find(|(key, _)| key.get_ref() == k)?;
                spans = (key.span(), value.span());
                cur = value.get_ref();
            }
            (At::Index(i), DeValue::Array(_)) => {
                let value = cur.get(*i)?;
                spans = (value.span(), value.span());
                cur = value.get_ref();
            }
            _ => return None,
        }
    }
    Some(spans)
}

/// Span of the value at `path` and its text as written (quotes included), to quote it in
/// an error exactly as the user wrote it.
fn value_at(text: &str, path: &[At<'_>]) -> (Option<Range<usize>>, Option<String>) {
    let span = locate(text, path).map(|(_, value)| value);
    let shown = span.clone().and_then(|s| text.get(s)).map(str::to_owned);
    (span, shown)
}

/// Converts a step's `with` table (plus resolved secrets) to the JSON handed to `init`.
pub fn step_config_json(pipeline: &Pipeline, step: &Step) -> Result<String, String> {
    let mut v = serde_json::to_value(&step.config.with).map_err(|e| {
        format!(
            "step {:?}: `with` cannot be converted to JSON: {e}",
            step.name
        )
    })?;
    if let serde_json::Value::Object(map) = &mut v {
        for (key, r) in &step.config.secrets {
            let secret = r
                .resolve(pipeline)
                .map_err(|e| format!("step {:?}: secret {key:?}: {e}", step.name))?;
            map.insert(key.clone(), serde_json::Value::String(secret));
        }
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_are_recognised_and_ordinary_keys_pass() {
        for k in [
            "api_key",
            "API_KEY",
            "apiKey",
            "api-key",
            "apikey",
            "deepl_api_key",
            "token",
            "accessToken",
            "oauth_token",
            "password",
            "db_password",
            "passwd",
            "secret",
            "client_secret",
            "secret_key",
            "access_key",
            "private_key",
            "auth_key",
            "credentials",
        ] {
            assert!(looks_like_secret(k), "{k} should count as a credential");
        }
        for k in [
            "target",
            "dedupe_key",
            "cache_key",
            "key",
            "keyword",
            "tokens",
            "max_tokens",
            "token_count",
            "secrets_dir",
            "url",
            "backend",
            "timeout_ms",
        ] {
            assert!(!looks_like_secret(k), "{k} is not a credential");
        }
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("64MiB").unwrap(), 64 << 20);
        assert_eq!(ByteSize::parse("10").unwrap(), 10);
        assert!(ByteSize::parse("10 parsecs").is_err());
    }
}
