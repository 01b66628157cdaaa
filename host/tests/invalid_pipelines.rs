//! Broken pipeline files and the errors they produce.
//!
//! Each file in `tests/pipelines/invalid/` breaks exactly one thing. The table below gives
//! the line and column the error must point at (the offending key or value) and text the
//! message must contain (quoting that key or value). Fixtures are copied into a temporary
//! directory next to an empty `plugin.wasm`: parsing only checks that a plugin file
//! exists, it does not compile it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use streamtap::pipeline::config::{
    ByteSize, ConfigError, DurationValue, KafkaCompression, MemoryConfig, OnError, Pipeline, Rate,
    ReplayConfig, SecretRef, SinkConfig, SourceConfig, SqliteConfig, TransportConfig,
};

/// `(file, line, column, message substring)`
const CASES: &[(&str, usize, usize, &str)] = &[
    // Unknown keys and components.
    (
        "unknown_top_level_key.toml",
        2,
        1,
        "unknown field `version`, expected one of `name`, `source`, `transport`, `steps`, `sink`, `alerts`, `metrics`",
    ),
    (
        "unknown_replay_key.toml",
        3,
        1,
        "unknown field `speed`, expected one of `path`, `rate`, `loop`",
    ),
    (
        "unknown_step_key.toml",
        7,
        1,
        "unknown field `timeout`, expected one of `name`, `uses`, `with`, `secrets`, `deadline`, \
         `memory_limit`, `on_error`, `allow_http`, `http_timeout`, `http_max_response`, `state_limit`",
    ),
    (
        "unknown_source_kind.toml",
        1,
        9,
        "unknown variant `kafka2`, expected `replay` or `twitch`",
    ),
    (
        "unknown_sink_kind.toml",
        4,
        7,
        "unknown variant `postgres`, expected `sqlite` or `mongodb`",
    ),
    (
        "secret_unknown_source.toml",
        7,
        25,
        "unknown variant `vault`, expected `env` or `file`",
    ),
    (
        "twitch_unknown_key.toml",
        3,
        1,
        "unknown field `oauth`, expected one of `channels`, `connection`, `server`, `login`, `token`, `join_limit`, `join_window`, `reconnect_min`, `reconnect_max`, `buffer_lines`, `spill_dir`, `spill_max_mb`, `helix`",
    ),
    // The twitch source.
    (
        "twitch_plain_remote.toml",
        3,
        14,
        "source.twitch: a plain (unencrypted) connection is only allowed to a loopback server, not \"irc.chat.twitch.tv:6667\"",
    ),
    (
        "twitch_bad_channel.toml",
        2,
        20,
        "source.twitch: invalid channel \"no spaces!\"",
    ),
    (
        "twitch_token_inline.toml",
        4,
        9,
        "a secret must not be written in the pipeline file (value not shown)",
    ),
    (
        "twitch_login_without_token.toml",
        3,
        9,
        "source.twitch: `login` needs a `token`",
    ),
    (
        "twitch_join_limit_zero.toml",
        3,
        14,
        "source.twitch: join_limit 0 must be at least 1",
    ),
    (
        "twitch_buffer_lines_zero.toml",
        3,
        16,
        "source.twitch: buffer_lines 0 must be at least 1",
    ),
    (
        "twitch_spill_max_mb_negative.toml",
        3,
        16,
        "invalid value: integer `-1`, expected u64",
    ),
    // Helix stream status.
    (
        "helix_secret_inline.toml",
        6,
        17,
        "a secret must not be written in the pipeline file (value not shown)",
    ),
    (
        "helix_interval_short.toml",
        7,
        12,
        "source.twitch.helix: interval 200ms must be at least 1s",
    ),
    (
        "helix_budget_without_mongodb.toml",
        7,
        10,
        "source.twitch.helix: budget \"mongodb\" keeps the budget in the sink's database, but the sink is not [sink.mongodb]",
    ),
    (
        "helix_bad_url.toml",
        7,
        11,
        "source.twitch.helix: api_url \"ftp://example.com\" must be an http:// or https:// URL",
    ),
    (
        "helix_unknown_key.toml",
        7,
        1,
        "unknown field `points`, expected one of `client_id`, `client_secret`, `api_url`, `token_url`, `interval`, `points_per_minute`, `budget`, `timeout`",
    ),
    // The recorder.
    (
        "record_without_recorder.toml",
        2,
        20,
        "source.twitch: channel \"kaicenat\" has record = true, but there is no [recorder] section",
    ),
    (
        "recorder_without_helix.toml",
        4,
        2,
        "recorder: needs [source.twitch] with [source.twitch.helix], which says when channels go live",
    ),
    (
        "channel_entry_unknown_key.toml",
        2,
        35,
        "unknown field `recrod`, expected `login` or `record`",
    ),
    (
        "recorder_args_output.toml",
        9,
        8,
        "recorder: args must not contain \"-o\": the recorder sets the output and config itself",
    ),
    // Wrong types and bad values.
    (
        "rate_wrong_type.toml",
        3,
        8,
        "invalid type: boolean `true`, expected a number of messages per second or \"max\"",
    ),
    (
        "rate_negative.toml",
        3,
        8,
        "invalid rate -20: must be a positive number of messages per second",
    ),
    (
        "capacity_wrong_type.toml",
        5,
        12,
        "invalid type: string \"many\", expected usize",
    ),
    (
        "capacity_zero.toml",
        5,
        12,
        "transport.memory: capacity 0 must be at least 1",
    ),
    (
        "batch_size_zero.toml",
        6,
        14,
        "transport.memory: batch_size 0 must be at least 1",
    ),
    // `[transport.kafka]`.
    (
        "kafka_unknown_key.toml",
        6,
        1,
        "unknown field `partitions`, expected one of `brokers`, `topic`, `dead_letter_topic`, \
         `group_id`, `compression`, `producer_buffer`, `batch_size`, `batch_wait`, \
         `session_timeout`",
    ),
    (
        "kafka_missing_brokers.toml",
        4,
        1,
        "missing field `brokers`",
    ),
    (
        "kafka_bad_brokers.toml",
        5,
        11,
        "transport.kafka: brokers \"kafka://broker-1:9092\" must be host:port entries separated \
         by commas (no scheme)",
    ),
    (
        "kafka_bad_topic.toml",
        6,
        9,
        "transport.kafka: topic \"chat events\" is not a Kafka topic name",
    ),
    (
        "kafka_dead_letter_same_topic.toml",
        7,
        21,
        "transport.kafka: dead_letter_topic \"chat\" must differ from topic",
    ),
    (
        "kafka_bad_compression.toml",
        6,
        15,
        "unknown variant `zstd`, expected one of `none`, `gzip`, `snappy`, `lz4`",
    ),
    (
        "kafka_producer_buffer_zero.toml",
        6,
        19,
        "transport.kafka: producer_buffer 0 must be at least 1",
    ),
    (
        "kafka_session_timeout_too_short.toml",
        6,
        19,
        "transport.kafka: session_timeout \"100ms\" must be between 1s and 1h",
    ),
    (
        "bad_duration.toml",
        6,
        12,
        "invalid duration \"fast\": expected number at 0 (write e.g. \"100ms\", \"5s\")",
    ),
    (
        "deadline_zero.toml",
        6,
        12,
        "step \"plugin\": deadline \"0ms\" must be between 1ms and 60s",
    ),
    (
        "deadline_too_long.toml",
        6,
        12,
        "step \"plugin\": deadline \"5m\" must be between 1ms and 60s",
    ),
    // The first step's deadline comes before its `uses`; the second step's is fine.
    (
        "deadline_before_uses.toml",
        6,
        12,
        "step \"sentiment\": deadline \"2m\" must be between 1ms and 60s",
    ),
    (
        "bad_memory_size.toml",
        6,
        16,
        "invalid size \"64 parsecs\": unknown unit \"parsecs\" (use B, KB, KiB, MB, MiB, GB, GiB)",
    ),
    (
        "memory_limit_wrong_type.toml",
        6,
        16,
        "invalid type: floating point `0.5`, expected a size such as \"64MiB\" or a number of bytes",
    ),
    (
        "memory_limit_too_large.toml",
        6,
        16,
        "step \"plugin\": memory_limit \"2GiB\" must be between 1MiB and 1GiB",
    ),
    (
        "bad_on_error.toml",
        6,
        12,
        "unknown variant `retry`, expected one of `skip`, `drop`, `dead-letter`",
    ),
    // Missing keys and files.
    ("missing_sink.toml", 1, 1, "missing field `sink`"),
    ("step_missing_uses.toml", 4, 1, "missing field `uses`"),
    (
        "missing_plugin.toml",
        6,
        8,
        "step \"sentiment\": plugin file \"plugins/sentiment.wasm\" not found (resolved to ",
    ),
    // Steps.
    (
        "duplicate_step_name.toml",
        9,
        8,
        "duplicate step name \"sentiment\": step names must be unique (set `name`)",
    ),
    (
        "duplicate_implicit_step_name.toml",
        9,
        8,
        "duplicate step name \"plugin\": step names must be unique (set `name`)",
    ),
    (
        "invalid_step_name.toml",
        5,
        8,
        "invalid step name \"Bad Name\": use lowercase letters, digits, '_' and '-'",
    ),
    (
        "allow_http_url.toml",
        7,
        44,
        "step \"translate\": allow_http entry \"https://x.com/api\" must be a host or host:port \
         (no scheme or path)",
    ),
    (
        "allow_http_bad_port.toml",
        7,
        15,
        "step \"translate\": allow_http entry \"libretranslate.local:99999\" must be a host or \
         host:port (no scheme or path)",
    ),
    (
        "secret_also_in_with.toml",
        8,
        13,
        "step \"translate\": key \"api_key\" is set both in `with` and in `secrets`",
    ),
    (
        "secret_literal_in_with.toml",
        7,
        25,
        "step \"translate\": `with.api_key` looks like a secret, which must not be written in \
         the pipeline file (value not shown): use secrets = { api_key = { env = \"VAR\" } } or \
         { file = \"path\" }",
    ),
    // Alerts.
    (
        "mongodb_credentials_in_uri.toml",
        5,
        7,
        "[sink.mongodb] uri: credentials in the pipeline text are refused",
    ),
    ("mongodb_no_uri.toml", 4, 7, "[sink.mongodb] needs `uri`"),
    (
        "mongodb_uri_twice.toml",
        5,
        7,
        "[sink.mongodb] sets both `uri` and `uri_secret`",
    ),
    (
        "mongodb_max_batch_zero.toml",
        6,
        13,
        "[sink.mongodb] max_batch = 0: must be at least 1",
    ),
    (
        "metrics_bad_listen.toml",
        8,
        10,
        "invalid socket address syntax",
    ),
    (
        "metrics_unknown_key.toml",
        9,
        1,
        "unknown field `path`, expected `listen`",
    ),
    (
        "unknown_alert_sink.toml",
        8,
        23,
        "unknown alert sink \"slack\" (available: console;",
    ),
    (
        "unknown_alert_topic_sink.toml",
        8,
        7,
        "unknown alert sink \"discord\" (available: console;",
    ),
    // `[alerts]`: SNS and webhook sinks, routes to them, delivery policy.
    (
        "alert_sns_bad_arn.toml",
        8,
        13,
        "alerts.sns.hype: topic_arn \"arn:aws:sqs:us-east-1:123456789012:hype\" is not an SNS topic ARN",
    ),
    (
        "alert_sns_region_mismatch.toml",
        9,
        10,
        "alerts.sns.hype: region \"eu-west-1\" differs from the region \"us-east-1\" in topic_arn",
    ),
    (
        "alert_sns_unknown_key.toml",
        9,
        1,
        "unknown field `topic`, expected one of `topic_arn`, `region`, `endpoint_url`, `timeout`",
    ),
    (
        "alert_sns_bad_endpoint.toml",
        9,
        16,
        "alerts.sns.hype: endpoint_url \"localhost:4566\" must be an http:// or https:// URL",
    ),
    (
        "alert_route_undefined_sns.toml",
        11,
        18,
        "unknown alert sink \"sns.missing\" (available: console, sns.hype;",
    ),
    (
        "alert_webhook_bad_url.toml",
        8,
        7,
        "alerts.webhook.ops: url \"ftp://alerts.example.com/hook\" must be an http:// or https:// URL",
    ),
    (
        "alert_delivery_zero_attempts.toml",
        8,
        16,
        "alerts.delivery: max_attempts 0 must be at least 1",
    ),
    (
        "alert_delivery_backoff_order.toml",
        9,
        15,
        "alerts.delivery: max_backoff \"1s\" is shorter than initial_backoff",
    ),
    (
        "alert_delivery_bad_duration.toml",
        8,
        20,
        "invalid duration \"soon\"",
    ),
    (
        "alert_sink_bad_name.toml",
        7,
        13,
        "alerts.sns: invalid sink name \"Hype\": use lowercase letters, digits, '_' and '-'",
    ),
    // Not TOML at all: an unterminated string.
    (
        "toml_syntax_error.toml",
        2,
        17,
        "invalid basic string, expected `\"`",
    ),
];

fn fixture_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/pipelines")
        .join(kind)
}

/// Copies the `.toml` fixtures of `tests/pipelines/<kind>` into a fresh temporary directory
/// that also holds an empty `plugin.wasm`; returns the directory and the file names.
fn stage(kind: &str) -> (tempfile::TempDir, BTreeSet<String>) {
    let dir = tempfile::tempdir().expect("create temporary directory");
    std::fs::write(dir.path().join("plugin.wasm"), b"").expect("write plugin.wasm");
    let mut names = BTreeSet::new();
    let src = fixture_dir(kind);
    for entry in std::fs::read_dir(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
        let path = entry.expect("read fixture directory").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::copy(&path, dir.path().join(&name)).expect("copy fixture");
            names.insert(name);
        }
    }
    (dir, names)
}

#[test]
fn every_invalid_fixture_reports_its_error_at_the_offending_key_or_value() {
    let (dir, on_disk) = stage("invalid");
    let mut failures = Vec::new();

    let in_table: BTreeSet<String> = CASES.iter().map(|c| c.0.to_owned()).collect();
    assert_eq!(in_table.len(), CASES.len(), "a fixture is listed twice");
    for name in on_disk.difference(&in_table) {
        failures.push(format!("{name}: fixture has no row in CASES"));
    }
    for name in in_table.difference(&on_disk) {
        failures.push(format!("{name}: listed in CASES but missing on disk"));
    }

    for &(name, line, column, expected) in CASES {
        let path = dir.path().join(name);
        let err = match Pipeline::load(&path) {
            Ok(_) => {
                failures.push(format!("{name}: loaded without error"));
                continue;
            }
            Err(e) => e,
        };
        let display = err.to_string();
        let ConfigError::Invalid {
            file,
            line: got_line,
            column: got_column,
            message,
        } = err
        else {
            failures.push(format!(
                "{name}: expected ConfigError::Invalid, got {err:?}"
            ));
            continue;
        };
        let mut wrong = Vec::new();
        if file != path.display().to_string() {
            wrong.push(format!("file {file:?}"));
        }
        if (got_line, got_column) != (line, column) {
            wrong.push(format!(
                "position {got_line}:{got_column}, expected {line}:{column}"
            ));
        }
        if !message.contains(expected) {
            wrong.push(format!("message does not contain {expected:?}"));
        }
        let want_display = format!("{}:{got_line}:{got_column}: {message}", path.display());
        if display != want_display {
            wrong.push(format!("Display {display:?}, expected {want_display:?}"));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{name}: {}\n    got: {got_line}:{got_column}: {message}",
                wrong.join("; ")
            ));
        }
    }

    assert!(
        failures.is_empty(),
        "{} of {} invalid pipeline fixtures failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn table_covers_at_least_sixteen_fixtures() {
    assert!(CASES.len() >= 16, "only {} cases", CASES.len());
}

#[test]
fn full_valid_fixture_parses_with_every_option_and_defaults() {
    let (dir, names) = stage("valid");
    assert!(names.contains("full.toml"), "valid fixtures: {names:?}");
    let path = dir.path().join("full.toml");
    let p = Pipeline::load(&path).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(p.file, path);
    assert_eq!(p.name, "chat-insights");
    assert_eq!(
        p.source,
        SourceConfig::Replay(ReplayConfig {
            path: "chat.log".into(),
            rate: Rate::PerSecond(250.0),
            repeat: true,
        })
    );
    assert_eq!(
        p.transport,
        TransportConfig::Memory(MemoryConfig {
            capacity: 2000,
            batch_size: 64,
        })
    );
    assert_eq!(
        p.sink,
        SinkConfig::Sqlite(SqliteConfig {
            path: "out.db".into()
        })
    );
    assert_eq!(p.resolve(Path::new("out.db")), dir.path().join("out.db"));

    assert_eq!(p.steps.len(), 2);
    let t = &p.steps[0];
    assert_eq!(t.name, "translate");
    assert_eq!(t.plugin_path, dir.path().join("plugin.wasm"));
    let c = &t.config;
    assert_eq!(c.with.get("target").and_then(|v| v.as_str()), Some("en"));
    assert_eq!(
        c.with.get("min_confidence").and_then(|v| v.as_float()),
        Some(0.8)
    );
    assert_eq!(
        c.secrets.get("api_key"),
        Some(&SecretRef::Env("LT_API_KEY".into()))
    );
    assert_eq!(
        c.secrets.get("token"),
        Some(&SecretRef::File("token.txt".into()))
    );
    assert_eq!(c.deadline, DurationValue(Duration::from_millis(250)));
    assert_eq!(c.memory_limit, ByteSize(128 << 20));
    assert_eq!(c.on_error, OnError::DeadLetter);
    let hosts: Vec<&str> = c.allow_http.iter().map(|h| h.get_ref().as_str()).collect();
    assert_eq!(hosts, ["libretranslate.local:5000", "api.example.com"]);
    assert_eq!(c.http_timeout, DurationValue(Duration::from_secs(2)));
    assert_eq!(c.http_max_response, ByteSize(512 << 10));
    assert_eq!(c.state_limit, ByteSize(1 << 20));

    // The second step sets only `uses`: name from the plugin's stem, documented defaults.
    let d = &p.steps[1];
    assert_eq!(d.name, "plugin");
    assert_eq!(d.plugin_path, dir.path().join("plugin.wasm"));
    let c = &d.config;
    assert!(c.name.is_none());
    assert!(c.with.is_empty());
    assert!(c.secrets.is_empty());
    assert_eq!(c.deadline, DurationValue(Duration::from_millis(100)));
    assert_eq!(c.memory_limit, ByteSize(64 << 20));
    assert_eq!(c.on_error, OnError::Skip);
    assert!(c.allow_http.is_empty());
    assert_eq!(c.http_timeout, DurationValue(Duration::from_secs(5)));
    assert_eq!(c.http_max_response, ByteSize(1 << 20));
    assert_eq!(c.state_limit, ByteSize(64 << 20));

    let default: Vec<&str> = p
        .alerts
        .default
        .iter()
        .map(|s| s.get_ref().as_str())
        .collect();
    assert_eq!(default, ["console"]);
    let hype: Vec<&str> = p.alerts.topics["hype"]
        .to
        .iter()
        .map(|s| s.get_ref().as_str())
        .collect();
    assert_eq!(hype, ["console"]);
    assert_eq!(
        p.metrics.map(|m| m.listen),
        Some("127.0.0.1:9555".parse().unwrap())
    );

    // `[metrics]` with no keys: the loopback default.
    let bare =
        "[source.replay]\npath = \"chat.log\"\n[sink.sqlite]\npath = \"out.db\"\n[metrics]\n";
    let p = Pipeline::parse(&dir.path().join("bare.toml"), bare).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        p.metrics.map(|m| m.listen),
        Some("127.0.0.1:9464".parse().unwrap())
    );
}

#[test]
fn a_secret_written_inline_is_refused_without_echoing_it() {
    let (dir, _) = stage("invalid");
    let err = Pipeline::load(&dir.path().join("twitch_token_inline.toml"))
        .unwrap_err()
        .to_string();
    assert!(!err.contains("abcdef123456"), "token echoed: {err}");
    let err = Pipeline::load(&dir.path().join("secret_literal_in_with.toml"))
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter2"), "api key echoed: {err}");
}

#[test]
fn kafka_transport_parses_with_every_option_and_with_defaults() {
    let (dir, names) = stage("valid");
    assert!(names.contains("kafka.toml"), "valid fixtures: {names:?}");
    let p = Pipeline::load(&dir.path().join("kafka.toml")).unwrap_or_else(|e| panic!("{e}"));
    let TransportConfig::Kafka(k) = &p.transport else {
        panic!("not kafka: {:?}", p.transport)
    };
    assert_eq!(k.broker_list(), "kafka-1:9092,kafka-2:9092");
    assert_eq!(k.topic.get_ref(), "twitch.chat.v1");
    assert_eq!(k.dead_letter_topic.get_ref(), "twitch.chat.dead");
    assert_eq!(k.group_id, "insights");
    assert_eq!(k.compression, KafkaCompression::Gzip);
    assert_eq!(k.producer_buffer, 5000);
    assert_eq!(k.batch_size, 200);
    assert_eq!(k.batch_wait, DurationValue(Duration::from_millis(20)));
    assert_eq!(k.session_timeout, DurationValue(Duration::from_secs(10)));

    let minimal = dir.path().join("minimal-kafka.toml");
    std::fs::write(
        &minimal,
        "[source.replay]\npath = \"chat.log\"\n[transport.kafka]\nbrokers = \"127.0.0.1:9092\"\n[sink.sqlite]\npath = \"out.db\"\n",
    )
    .unwrap();
    let p = Pipeline::load(&minimal).unwrap_or_else(|e| panic!("{e}"));
    let TransportConfig::Kafka(k) = &p.transport else {
        panic!("not kafka")
    };
    assert_eq!(k.topic.get_ref(), "streamtap.chat");
    assert_eq!(k.dead_letter_topic.get_ref(), "streamtap.dead-letter");
    assert_eq!(k.group_id, "streamtap-processors");
    assert_eq!(k.compression, KafkaCompression::Lz4);
    assert_eq!(k.producer_buffer, 100_000);
    assert_eq!(k.batch_size, 500);
    assert_eq!(k.batch_wait, DurationValue(Duration::from_millis(50)));
    assert_eq!(k.session_timeout, DurationValue(Duration::from_secs(45)));
}
