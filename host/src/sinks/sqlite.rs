//! The `sqlite` sink: messages, dead letters, drops, alerts and plugin records in one
//! embedded database (bundled SQLite, WAL mode).
//!
//! Writes are idempotent: `messages.id` is the primary key and inserts ignore rows that
//! exist, so a replayed or redelivered message is never stored twice. Alerts are keyed by
//! their dedupe key, and only alerts inserted for the first time are returned for delivery.
//! Plugin fields are stored as one JSON object and are queryable with `json_extract`.
//! Gap events of the `twitch` source (kind `gap`) go to the `gaps` table, keyed by channel
//! and start, so a redelivered gap is stored once. Recorder metadata (kind `recording`) goes
//! to `recordings`, one row per stream id, the update with the highest `seq` kept.
//!
//! Alert delivery is an outbox: each new alert gets one `alert_deliveries` row per sink its
//! topic routes to, written in the same transaction as the batch, so an alert stored is an
//! alert that will be delivered (see [`crate::alerts::outbox`]).

//! Records go to the generic `records` table by (table, key), except `channel_stats`
//! records (the analytics plugin's window aggregates), which get their own typed table so
//! reports and dashboards can read them with plain SQL. Their checks live in
//! [`ChannelStatsRow::from_record`]; a record that fails them is kept in `records` and
//! reported, never dropped.

use crate::alerts::Routes;
use crate::pipeline::chain::{ChainOutput, EmittedRecord, RaisedAlert};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use streamtap_plugin_sdk::{ChatMessage, Value};

/// Errors from the SQLite sink.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("sqlite database {path:?}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("sqlite database {0:?} does not exist (has the pipeline run yet?)")]
    Missing(PathBuf),
}

/// Why a `channel_stats` record could not be stored in its typed table.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("channel_stats record {key:?} from step {step:?}: field `{field}` {problem}")]
pub struct RecordError {
    /// The step that emitted the record.
    pub step: String,
    /// The record's key.
    pub key: String,
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it, quoting the value.
    pub problem: String,
}

/// The table name analytics records carry.
pub const CHANNEL_STATS: &str = "channel_stats";

/// One `channel_stats` record, checked and typed (see docs/ANALYTICS.md for the fields).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStatsRow {
    pub channel: String,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub messages: i64,
    pub unique_chatters: i64,
    /// `None` when no message in the window had a sentiment score.
    pub sentiment_mean: Option<f64>,
    pub first_time_chatters: i64,
    pub late: i64,
    /// JSON list of `{emote, count}`.
    pub top_emotes: String,
    /// JSON map language → messages.
    pub langs: String,
    /// JSON map event kind → count.
    pub events: String,
    /// JSON map of every other field of the record (`subs`, `raids`, the cap flags, ...).
    pub extra: String,
}

impl ChannelStatsRow {
    /// Checks a record's value against the `channel_stats` schema.
    pub fn from_record(r: &EmittedRecord) -> Result<Self, RecordError> {
        let err = |field: &'static str, problem: String| RecordError {
            step: r.step.clone(),
            key: r.key.clone(),
            field,
            problem,
        };
        let Value::Map(m) = &r.value else {
            return Err(err(
                "(value)",
                format!("must be a map, got {}", r.value.to_json()),
            ));
        };
        let get = |field: &'static str| m.get(field).ok_or_else(|| err(field, "is missing".into()));
        let count = |field: &'static str| match get(field)? {
            Value::Int(n) if *n >= 0 => Ok(*n),
            v => Err(err(
                field,
                format!("must be a non-negative integer, got {}", v.to_json()),
            )),
        };
        let int = |field: &'static str| match get(field)? {
            Value::Int(n) => Ok(*n),
            v => Err(err(
                field,
                format!("must be an integer, got {}", v.to_json()),
            )),
        };
        let json_of = |field: &'static str, want_list: bool| {
            let v = get(field)?;
            match (v, want_list) {
                (Value::List(_), true) | (Value::Map(_), false) => Ok(v.to_json().to_string()),
                _ => Err(err(
                    field,
                    format!(
                        "must be a {}, got {}",
                        if want_list { "list" } else { "map" },
                        v.to_json()
                    ),
                )),
            }
        };
        let channel = match get("channel")? {
            Value::Str(s) if !s.is_empty() => s.clone(),
            v => Err(err(
                "channel",
                format!("must be a non-empty string, got {}", v.to_json()),
            ))?,
        };
        let window_start_ms = int("window_start_ms")?;
        let window_end_ms = int("window_end_ms")?;
        if window_end_ms <= window_start_ms {
            return Err(err(
                "window_end_ms",
                format!("must be after window_start_ms ({window_start_ms}), got {window_end_ms}"),
            ));
        }
        let sentiment_mean = match m.get("sentiment_mean") {
            None | Some(Value::Null) => None,
            Some(Value::Float(x)) if x.is_finite() => Some(*x),
            Some(Value::Int(n)) => Some(*n as f64),
            Some(v) => Err(err(
                "sentiment_mean",
                format!("must be a finite number or null, got {}", v.to_json()),
            ))?,
        };
        const TYPED: &[&str] = &[
            "channel",
            "window_start_ms",
            "window_end_ms",
            "messages",
            "unique_chatters",
            "sentiment_mean",
            "first_time_chatters",
            "late",
            "top_emotes",
            "langs",
            "events",
        ];
        let extra = serde_json::Value::Object(
            m.iter()
                .filter(|(k, _)| !TYPED.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        );
        Ok(ChannelStatsRow {
            channel,
            window_start_ms,
            window_end_ms,
            messages: count("messages")?,
            unique_chatters: count("unique_chatters")?,
            sentiment_mean,
            first_time_chatters: count("first_time_chatters")?,
            late: count("late")?,
            top_emotes: json_of("top_emotes", true)?,
            langs: json_of("langs", false)?,
            events: json_of("events", false)?,
            extra: extra.to_string(),
        })
    }
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    channel TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    user TEXT NOT NULL,
    user_id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    text TEXT NOT NULL,
    ts INTEGER NOT NULL,
    badges TEXT NOT NULL,
    emotes TEXT NOT NULL,
    fields TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_channel_ts ON messages (channel, ts);
CREATE INDEX IF NOT EXISTS messages_ts ON messages (ts);
CREATE INDEX IF NOT EXISTS messages_user ON messages (user_id);
CREATE TABLE IF NOT EXISTS gaps (
    channel TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    from_ts INTEGER NOT NULL,
    to_ts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (channel, from_ts)
);
CREATE TABLE IF NOT EXISTS recordings (
    stream_id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    title TEXT NOT NULL,
    game TEXT NOT NULL,
    started INTEGER NOT NULL,
    ended INTEGER,
    files TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    restarts INTEGER NOT NULL,
    exits TEXT NOT NULL,
    status TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT NOT NULL,
    step TEXT NOT NULL,
    plugin TEXT NOT NULL,
    version TEXT NOT NULL,
    hash TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (id, step)
);
CREATE TABLE IF NOT EXISTS dropped (
    id TEXT NOT NULL,
    step TEXT NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (id, step)
);
CREATE TABLE IF NOT EXISTS alerts (
    dedupe_key TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    severity TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    attributes TEXT NOT NULL,
    step TEXT NOT NULL,
    message_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_deliveries (
    dedupe_key TEXT NOT NULL REFERENCES alerts (dedupe_key),
    sink TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead_letter')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    delivered_at INTEGER,
    PRIMARY KEY (dedupe_key, sink)
);
CREATE INDEX IF NOT EXISTS alert_deliveries_due ON alert_deliveries (status, next_attempt_at);
CREATE VIEW IF NOT EXISTS alert_status AS
    SELECT a.dedupe_key, a.topic, a.channel, a.title, a.at,
           CASE
               WHEN COUNT(d.sink) = 0 THEN 'no_sinks'
               WHEN SUM(d.status = 'dead_letter') > 0 THEN 'dead_letter'
               WHEN SUM(d.status = 'pending') > 0 THEN 'pending'
               ELSE 'delivered'
           END AS status,
           group_concat(d.sink || '=' || d.status, ',') AS deliveries
    FROM alerts a LEFT JOIN alert_deliveries d USING (dedupe_key)
    GROUP BY a.dedupe_key;
CREATE TABLE IF NOT EXISTS channel_stats (
    channel TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    window_end INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    unique_chatters INTEGER NOT NULL,
    sentiment_mean REAL,
    first_time_chatters INTEGER NOT NULL,
    late INTEGER NOT NULL,
    top_emotes TEXT NOT NULL,
    langs TEXT NOT NULL,
    events TEXT NOT NULL,
    extra TEXT NOT NULL,
    step TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (channel, window_start)
);
CREATE INDEX IF NOT EXISTS channel_stats_start ON channel_stats (window_start);
CREATE TABLE IF NOT EXISTS records (
    tbl TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    step TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (tbl, key)
);
";

/// What one write did.
#[derive(Debug, Default)]
pub struct WriteResult {
    /// Collection gaps stored for the first time.
    pub gaps: u64,
    /// Recording metadata updates written.
    pub recordings: u64,
    /// Messages stored for the first time.
    pub inserted: u64,
    /// Messages already stored (same id): skipped.
    pub duplicates: u64,
    /// Alerts seen for the first time (by dedupe key).
    pub new_alerts: Vec<RaisedAlert>,
    /// Outbox rows written for them (one per alert and sink).
    pub new_deliveries: u64,
    /// `channel_stats` rows written (inserted or replacing the same channel and window).
    pub channel_stats: Vec<ChannelStatsRow>,
    /// `channel_stats` records that failed the schema checks (kept in `records`).
    pub invalid_records: Vec<RecordError>,
}

/// An open SQLite sink.
pub struct SqliteSink {
    conn: Connection,
    path: PathBuf,
}

fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> SqliteError + '_ {
    move |source| SqliteError::Db {
        path: path.to_owned(),
        source,
    }
}

fn json_of_value(v: &Value) -> String {
    v.to_json().to_string()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The message as stored: core columns plus JSON columns.
fn message_json_parts(m: &ChatMessage) -> (String, String, String) {
    let badges = serde_json::Value::Array(
        m.badges
            .iter()
            .map(|b| serde_json::json!({"name": b.name, "version": b.version}))
            .collect(),
    );
    let emotes = serde_json::Value::Array(
        m.emotes
            .iter()
            .map(|e| serde_json::json!({"id": e.id, "start": e.start, "end": e.end}))
            .collect(),
    );
    let fields = serde_json::Value::Object(
        m.fields
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect(),
    );
    (badges.to_string(), emotes.to_string(), fields.to_string())
}

impl SqliteSink {
    /// Opens (creating when missing) the database and its schema.
    pub fn open(path: &Path) -> Result<Self, SqliteError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| SqliteError::Db {
                path: path.to_owned(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        }
        let conn = Connection::open(path).map_err(db_err(path))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db_err(path))?;
        conn.execute_batch(SCHEMA).map_err(db_err(path))?;
        Ok(SqliteSink {
            conn,
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes everything a batch produced in one transaction, including one pending
    /// delivery per new alert and sink `routes` names for its topic.
    pub fn write(
        &mut self,
        out: &ChainOutput,
        routes: &Routes,
    ) -> Result<WriteResult, SqliteError> {
        let path = self.path.clone();
        let e = db_err(&path);
        let tx = self.conn.transaction().map_err(&e)?;
        let mut res = WriteResult::default();
        let at = now_ms();
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO messages (id, kind, channel, channel_id, user, user_id, display_name, text, ts, badges, emotes, fields)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(&e)?;
            let mut gap = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO gaps (channel, channel_id, from_ts, to_ts, reason, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(&e)?;
            // Recording metadata: one row per stream, an older update never replaces a newer.
            let mut recording = tx
                .prepare_cached(
                    "INSERT INTO recordings (stream_id, channel, channel_id, title, game, started, ended, files, bytes, restarts, exits, status, seq, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                     ON CONFLICT (stream_id) DO UPDATE SET
                       channel = excluded.channel, channel_id = excluded.channel_id, title = excluded.title,
                       game = excluded.game, started = excluded.started, ended = excluded.ended,
                       files = excluded.files, bytes = excluded.bytes, restarts = excluded.restarts,
                       exits = excluded.exits, status = excluded.status, seq = excluded.seq, at = excluded.at
                     WHERE excluded.seq > recordings.seq",
                )
                .map_err(&e)?;
            for m in &out.messages {
                if let Some(r) = crate::recorder::recording_of(m) {
                    let json = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
                    recording
                        .execute(params![
                            r.stream_id,
                            r.channel,
                            r.channel_id,
                            r.title,
                            r.game,
                            r.started_ms,
                            r.ended_ms,
                            json(&r.files),
                            r.bytes,
                            r.restarts,
                            json(&r.exits),
                            r.status,
                            r.seq,
                            at
                        ])
                        .map_err(&e)?;
                    res.recordings += 1;
                    continue;
                }
                if let Some(g) = crate::sources::twitch::gap_of(m) {
                    res.gaps += gap
                        .execute(params![
                            g.channel,
                            g.channel_id,
                            g.from_ms,
                            g.to_ms,
                            g.reason,
                            at
                        ])
                        .map_err(&e)? as u64;
                    continue;
                }
                let (badges, emotes, fields) = message_json_parts(m);
                let n = ins
                    .execute(params![
                        m.id,
                        m.kind,
                        m.channel,
                        m.channel_id,
                        m.user,
                        m.user_id,
                        m.display_name,
                        m.text,
                        m.ts_ms,
                        badges,
                        emotes,
                        fields
                    ])
                    .map_err(&e)?;
                if n == 1 {
                    res.inserted += 1;
                } else {
                    res.duplicates += 1;
                }
            }
            let mut dl = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO dead_letters (id, step, plugin, version, hash, reason, message, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(&e)?;
            for d in &out.dead_letters {
                dl.execute(params![
                    d.msg.id,
                    d.step,
                    d.plugin,
                    d.version,
                    d.hash,
                    d.reason,
                    message_json(&d.msg).to_string(),
                    at
                ])
                .map_err(&e)?;
            }
            let mut dr = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO dropped (id, step, reason, at) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(&e)?;
            for (id, step, reason) in &out.dropped {
                dr.execute(params![id, step, reason, at]).map_err(&e)?;
            }
            let mut al = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO alerts (dedupe_key, topic, severity, title, body, attributes, step, message_id, channel, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(&e)?;
            let mut outbox = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO alert_deliveries (dedupe_key, sink, status, attempts, next_attempt_at, created_at)
                     VALUES (?1, ?2, 'pending', 0, ?3, ?3)",
                )
                .map_err(&e)?;
            for a in &out.alerts {
                // An alert without a key is keyed by where it came from, so a redelivered
                // message still cannot fire it twice.
                let key = if a.alert.dedupe_key.is_empty() {
                    format!("{}:{}:{}", a.step, a.alert.topic, a.message_id)
                } else {
                    a.alert.dedupe_key.clone()
                };
                let attrs = serde_json::Value::Object(
                    a.alert
                        .attributes
                        .iter()
                        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                        .collect(),
                );
                let n = al
                    .execute(params![
                        key,
                        a.alert.topic,
                        a.alert.severity,
                        a.alert.title,
                        a.alert.body,
                        attrs.to_string(),
                        a.step,
                        a.message_id,
                        a.channel,
                        at
                    ])
                    .map_err(&e)?;
                if n == 1 {
                    for sink in routes.sinks_for(&a.alert.topic) {
                        res.new_deliveries +=
                            outbox.execute(params![key, sink, at]).map_err(&e)? as u64;
                    }
                    res.new_alerts.push(a.clone());
                }
            }
            let mut rec = tx
                .prepare_cached(
                    "INSERT INTO records (tbl, key, value, step, at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value, step = excluded.step, at = excluded.at",
                )
                .map_err(&e)?;
            // A window re-emitted for the same channel and start (a redelivery, or a window
            // flushed at shutdown and completed after a restart) replaces the row: the
            // newest emission is the most complete.
            let mut cs = tx
                .prepare_cached(
                    "INSERT INTO channel_stats (channel, window_start, window_end, messages, unique_chatters, sentiment_mean, first_time_chatters, late, top_emotes, langs, events, extra, step, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                     ON CONFLICT (channel, window_start) DO UPDATE SET window_end = excluded.window_end,
                       messages = excluded.messages, unique_chatters = excluded.unique_chatters,
                       sentiment_mean = excluded.sentiment_mean, first_time_chatters = excluded.first_time_chatters,
                       late = excluded.late, top_emotes = excluded.top_emotes, langs = excluded.langs,
                       events = excluded.events, extra = excluded.extra, step = excluded.step, at = excluded.at",
                )
                .map_err(&e)?;
            for r in &out.records {
                if r.table == CHANNEL_STATS {
                    match ChannelStatsRow::from_record(r) {
                        Ok(row) => {
                            cs.execute(params![
                                row.channel,
                                row.window_start_ms,
                                row.window_end_ms,
                                row.messages,
                                row.unique_chatters,
                                row.sentiment_mean,
                                row.first_time_chatters,
                                row.late,
                                row.top_emotes,
                                row.langs,
                                row.events,
                                row.extra,
                                r.step,
                                at
                            ])
                            .map_err(&e)?;
                            res.channel_stats.push(row);
                            continue;
                        }
                        // Kept as it came, in the generic table, so nothing is lost.
                        Err(bad) => res.invalid_records.push(bad),
                    }
                }
                rec.execute(params![r.table, r.key, json_of_value(&r.value), r.step, at])
                    .map_err(&e)?;
            }
        }
        tx.commit().map_err(&e)?;
        Ok(res)
    }
}

/// A stored message as one JSON object: core columns, `ts` as RFC 3339, plugin fields at
/// the top level.
pub fn message_json(m: &ChatMessage) -> serde_json::Value {
    let (badges, emotes, fields) = message_json_parts(m);
    row_json(
        &m.id,
        &m.kind,
        &m.channel,
        &m.channel_id,
        &m.user,
        &m.user_id,
        &m.display_name,
        &m.text,
        m.ts_ms,
        &badges,
        &emotes,
        &fields,
    )
}

#[allow(clippy::too_many_arguments)]
fn row_json(
    id: &str,
    kind: &str,
    channel: &str,
    channel_id: &str,
    user: &str,
    user_id: &str,
    display_name: &str,
    text: &str,
    ts_ms: i64,
    badges: &str,
    emotes: &str,
    fields: &str,
) -> serde_json::Value {
    let ts = chrono::DateTime::from_timestamp_millis(ts_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    let mut obj = serde_json::Map::new();
    if let Ok(serde_json::Value::Object(f)) = serde_json::from_str(fields) {
        obj.extend(f);
    }
    let core = serde_json::json!({
        "id": id, "kind": kind, "channel": channel, "channel_id": channel_id,
        "user": user, "user_id": user_id, "display_name": display_name, "text": text,
        "ts": ts,
        "badges": serde_json::from_str::<serde_json::Value>(badges).unwrap_or_default(),
        "emotes": serde_json::from_str::<serde_json::Value>(emotes).unwrap_or_default(),
    });
    if let serde_json::Value::Object(c) = core {
        obj.extend(c);
    }
    serde_json::Value::Object(obj)
}

/// A read filter for [`query`].
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub channel: Option<String>,
    /// Only messages with `ts >= since_ms`.
    pub since_ms: Option<i64>,
    pub limit: Option<u64>,
}

/// Reads stored messages, oldest first (the newest `limit` when limited).
pub fn query(path: &Path, q: &Query) -> Result<Vec<serde_json::Value>, SqliteError> {
    if !path.exists() {
        return Err(SqliteError::Missing(path.to_owned()));
    }
    let e = db_err(path);
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(&e)?;
    let mut stmt = conn
        .prepare(
            "SELECT id, kind, channel, channel_id, user, user_id, display_name, text, ts, badges, emotes, fields
             FROM messages
             WHERE (?1 IS NULL OR channel = ?1) AND (?2 IS NULL OR ts >= ?2)
             ORDER BY ts DESC, id DESC LIMIT ?3",
        )
        .map_err(&e)?;
    let limit = q.limit.map(|l| l as i64).unwrap_or(-1);
    let rows = stmt
        .query_map(params![q.channel, q.since_ms, limit], |r| {
            Ok(row_json(
                &r.get::<_, String>(0)?,
                &r.get::<_, String>(1)?,
                &r.get::<_, String>(2)?,
                &r.get::<_, String>(3)?,
                &r.get::<_, String>(4)?,
                &r.get::<_, String>(5)?,
                &r.get::<_, String>(6)?,
                &r.get::<_, String>(7)?,
                r.get(8)?,
                &r.get::<_, String>(9)?,
                &r.get::<_, String>(10)?,
                &r.get::<_, String>(11)?,
            ))
        })
        .map_err(&e)?;
    let mut out = rows.collect::<Result<Vec<_>, _>>().map_err(&e)?;
    out.reverse();
    Ok(out)
}

/// Message counts per channel.
pub fn counts_by_channel(path: &Path) -> Result<Vec<(String, u64)>, SqliteError> {
    let e = db_err(path);
    let conn = Connection::open(path).map_err(&e)?;
    let mut stmt = conn
        .prepare("SELECT channel, COUNT(*) FROM messages GROUP BY channel ORDER BY COUNT(*) DESC")
        .map_err(&e)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
        .map_err(&e)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(&e)
}

/// Rows in a table (for summaries and tests).
pub fn count(path: &Path, table: &str) -> Result<u64, SqliteError> {
    let e = db_err(path);
    let conn = Connection::open(path).map_err(&e)?;
    // `table` comes from our own code, never from input.
    let n: Option<i64> = conn
        .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .optional()
        .map_err(&e)?;
    Ok(n.unwrap_or(0) as u64)
}

/// A stored `channel_stats` window (what `streamtap report` draws).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredWindow {
    pub channel: String,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub messages: i64,
    pub unique_chatters: i64,
    pub sentiment_mean: Option<f64>,
    /// Messages that had a sentiment score (0 when the record did not say).
    pub sentiment_count: i64,
    /// Messages per language.
    pub langs: Vec<(String, i64)>,
}

/// An alert as a report marker: when, where, what.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertMarker {
    /// Message time of the message that fired it (the store time when that message is
    /// not stored), ms since the epoch: the marker belongs on the chat's time axis.
    pub at_ms: i64,
    pub channel: String,
    pub title: String,
}

fn open_read_only(path: &Path) -> Result<Connection, SqliteError> {
    if !path.exists() {
        return Err(SqliteError::Missing(path.to_owned()));
    }
    Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(db_err(path))
}

/// `channel_stats` windows starting at or after `since_ms`, of one channel or all, by
/// channel then time. A store written before the table existed reads as empty.
pub fn channel_windows(
    path: &Path,
    channel: Option<&str>,
    since_ms: Option<i64>,
) -> Result<Vec<StoredWindow>, SqliteError> {
    let conn = open_read_only(path)?;
    let e = db_err(path);
    if !has_table(&conn, "channel_stats").map_err(&e)? {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare(
            "SELECT channel, window_start, window_end, messages, unique_chatters, sentiment_mean,
                    COALESCE(json_extract(extra, '$.sentiment_count'), 0), langs
             FROM channel_stats
             WHERE (?1 IS NULL OR channel = ?1) AND (?2 IS NULL OR window_start >= ?2)
             ORDER BY channel, window_start",
        )
        .map_err(&e)?;
    let rows = stmt
        .query_map(params![channel, since_ms], |r| {
            let langs: String = r.get(7)?;
            let langs: BTreeMap<String, i64> = serde_json::from_str(&langs).unwrap_or_default();
            Ok(StoredWindow {
                channel: r.get(0)?,
                window_start_ms: r.get(1)?,
                window_end_ms: r.get(2)?,
                messages: r.get(3)?,
                unique_chatters: r.get(4)?,
                sentiment_mean: r.get(5)?,
                sentiment_count: r.get(6)?,
                langs: langs.into_iter().collect(),
            })
        })
        .map_err(&e)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(&e)
}

/// What `channel_stats` holds, for error messages about what is not there.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ChannelStatsExtent {
    /// Channels with windows, by name.
    pub channels: Vec<String>,
    /// Start of the first and end of the last window (ms), when there is any.
    pub span: Option<(i64, i64)>,
}

/// Channels with `channel_stats` windows, and the time span the windows cover.
pub fn channel_stats_extent(path: &Path) -> Result<ChannelStatsExtent, SqliteError> {
    let conn = open_read_only(path)?;
    let e = db_err(path);
    if !has_table(&conn, "channel_stats").map_err(&e)? {
        return Ok(ChannelStatsExtent::default());
    }
    let mut stmt = conn
        .prepare("SELECT DISTINCT channel FROM channel_stats ORDER BY channel")
        .map_err(&e)?;
    let channels = stmt
        .query_map([], |r| r.get(0))
        .map_err(&e)?
        .collect::<Result<Vec<String>, _>>()
        .map_err(&e)?;
    let span: (Option<i64>, Option<i64>) = conn
        .query_row(
            "SELECT MIN(window_start), MAX(window_end) FROM channel_stats",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(&e)?;
    Ok(ChannelStatsExtent {
        channels,
        span: span.0.zip(span.1),
    })
}

/// Alerts of one channel or all, at or after `since_ms` (on the time of [`AlertMarker`]),
/// oldest first. Reads only the alerts table's identifying columns.
pub fn alert_markers(
    path: &Path,
    channel: Option<&str>,
    since_ms: Option<i64>,
) -> Result<Vec<AlertMarker>, SqliteError> {
    let conn = open_read_only(path)?;
    let e = db_err(path);
    let mut stmt = conn
        .prepare(
            "SELECT at_ms, channel, title FROM (
               SELECT COALESCE(m.ts, a.at) AS at_ms, a.channel AS channel, a.title AS title
               FROM alerts a LEFT JOIN messages m ON m.id = a.message_id)
             WHERE (?1 IS NULL OR channel = ?1) AND (?2 IS NULL OR at_ms >= ?2)
             ORDER BY at_ms, channel, title",
        )
        .map_err(&e)?;
    let rows = stmt
        .query_map(params![channel, since_ms], |r| {
            Ok(AlertMarker {
                at_ms: r.get(0)?,
                channel: r.get(1)?,
                title: r.get(2)?,
            })
        })
        .map_err(&e)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(&e)
}

fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats_record(step: &str, messages: Value) -> EmittedRecord {
        EmittedRecord {
            table: CHANNEL_STATS.into(),
            key: "c:60000".into(),
            value: Value::map([
                ("channel", Value::from("c")),
                ("window_start_ms", Value::Int(60_000)),
                ("window_end_ms", Value::Int(120_000)),
                ("messages", messages),
                ("unique_chatters", Value::Int(2)),
                ("first_time_chatters", Value::Int(0)),
                ("sentiment_mean", Value::Float(0.25)),
                ("late", Value::Int(0)),
                ("top_emotes", Value::List(vec![])),
                ("langs", Value::map([("en", Value::Int(3))])),
                ("events", Value::map::<&str, _>([])),
                ("subs", Value::Int(0)),
            ]),
            step: step.into(),
        }
    }

    fn write(sink: &mut SqliteSink, records: Vec<EmittedRecord>) -> WriteResult {
        sink.write(
            &ChainOutput {
                records,
                ..ChainOutput::default()
            },
            &crate::alerts::Routes::default(),
        )
        .unwrap()
    }

    #[test]
    fn channel_stats_are_typed_and_a_redelivery_replaces_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let mut sink = SqliteSink::open(&db).unwrap();
        let res = write(&mut sink, vec![stats_record("a", Value::Int(3))]);
        assert_eq!(res.channel_stats.len(), 1);
        assert_eq!(res.channel_stats[0].sentiment_mean, Some(0.25));
        assert_eq!(res.channel_stats[0].extra, r#"{"subs":0}"#);
        // Same channel and window again (a redelivery, or a flushed window completed
        // later): one row, holding the newest values.
        write(&mut sink, vec![stats_record("a", Value::Int(5))]);
        let w = channel_windows(&db, None, None).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(
            (w[0].messages, w[0].langs.clone()),
            (5, vec![("en".into(), 3)])
        );
        assert_eq!(count(&db, "records").unwrap(), 0);
    }

    #[test]
    fn a_bad_channel_stats_record_is_kept_in_records_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let mut sink = SqliteSink::open(&db).unwrap();
        let mut missing = stats_record("agg", Value::Int(1));
        if let Value::Map(m) = &mut missing.value {
            m.remove("unique_chatters");
        }
        let res = write(
            &mut sink,
            vec![stats_record("agg", Value::from("many")), missing],
        );
        assert!(res.channel_stats.is_empty());
        let msgs: Vec<String> = res.invalid_records.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            [
                r#"channel_stats record "c:60000" from step "agg": field `messages` must be a non-negative integer, got "many""#,
                r#"channel_stats record "c:60000" from step "agg": field `unique_chatters` is missing"#,
            ]
        );
        assert_eq!(count(&db, "channel_stats").unwrap(), 0);
        assert_eq!(
            count(&db, "records").unwrap(),
            1,
            "same (table, key): one row"
        );
        let bad = EmittedRecord {
            value: Value::Int(7),
            ..stats_record("agg", Value::Int(1))
        };
        let err = ChannelStatsRow::from_record(&bad).unwrap_err();
        assert_eq!(err.field, "(value)");
        let mut backwards = stats_record("agg", Value::Int(1));
        if let Value::Map(m) = &mut backwards.value {
            m.insert("window_end_ms".into(), Value::Int(60_000));
        }
        let err = ChannelStatsRow::from_record(&backwards).unwrap_err();
        assert_eq!(err.field, "window_end_ms");
    }
}
