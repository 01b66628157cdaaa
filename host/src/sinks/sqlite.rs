//! The `sqlite` sink: messages, dead letters, drops, alerts and plugin records in one
//! embedded database (bundled SQLite, WAL mode).
//!
//! Writes are idempotent: `messages.id` is the primary key and inserts ignore rows that
//! exist, so a replayed or redelivered message is never stored twice. Alerts are keyed by
//! their dedupe key, and only alerts inserted for the first time are returned for delivery.
//! Plugin fields are stored as one JSON object and are queryable with `json_extract`.
//! Gap events of the `twitch` source (kind `gap`) go to the `gaps` table, keyed by channel
//! and start, so a redelivered gap is stored once.

use crate::pipeline::chain::{ChainOutput, RaisedAlert};
use rusqlite::{Connection, OptionalExtension, params};
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
CREATE TABLE IF NOT EXISTS gaps (
    channel TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    from_ts INTEGER NOT NULL,
    to_ts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (channel, from_ts)
);
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
    /// Messages stored for the first time.
    pub inserted: u64,
    /// Messages already stored (same id): skipped.
    pub duplicates: u64,
    /// Collection gaps stored for the first time.
    pub gaps: u64,
    /// Alerts seen for the first time (by dedupe key): to deliver.
    pub new_alerts: Vec<RaisedAlert>,
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

    /// Writes everything a batch produced in one transaction.
    pub fn write(&mut self, out: &ChainOutput) -> Result<WriteResult, SqliteError> {
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
            for m in &out.messages {
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
                    res.new_alerts.push(a.clone());
                }
            }
            let mut rec = tx
                .prepare_cached(
                    "INSERT INTO records (tbl, key, value, step, at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value, step = excluded.step, at = excluded.at",
                )
                .map_err(&e)?;
            for r in &out.records {
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
