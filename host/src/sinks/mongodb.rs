//! The `mongodb` sink: the production store (official `mongodb` driver; any server speaking
//! the MongoDB wire protocol).
//!
//! ## Layout
//! One database (`[sink.mongodb] database`), these collections:
//!
//! | collection     | `_id`                         | what                                        |
//! |----------------|-------------------------------|---------------------------------------------|
//! | `messages`     | Twitch message id             | chat messages (`kind = "privmsg"`)          |
//! | `events`       | Twitch message id             | every other kind: subs, raids, moderation   |
//! | `dead_letters` | `{id, step}`                  | messages a step failed on (`dead-letter`)   |
//! | `dropped`      | `{id, step}`                  | messages a step dropped, with the reason    |
//! | `alerts`       | dedupe key                    | alerts raised by steps                      |
//! | `records`      | `{table, key}`                | records steps emitted (upserted)            |
//! | `gaps`         | `{channel, from}`             | collection gaps of the `twitch` source      |
//! | `recordings`   | stream id                     | recorder metadata (newest `seq` kept)       |
//! | `channel_stats`| `{channel, start}`            | the analytics step's windows, typed         |
//!
//! Messages and events carry `channel`, `channel_id`, `user`, `user_id`, `ts` (a BSON date
//! from `tmi-sent-ts`), `badges`, `emotes` and the plugin `fields` as a sub-document.
//!
//! ## Idempotence
//! `_id` is the Twitch message id, so a redelivered message (a Kafka consumer restarting
//! from its last committed offset) is refused by the server with E11000. Inserts are
//! unordered `insert_many`: the server tries every document and reports per-document
//! errors, which this sink sorts into *already stored* (11000) and *rejected* (anything
//! else: too large, invalid). Rejected documents go to `dead_letters` with the server's
//! reason — they are never silently dropped and never block the batch.
//!
//! ## Sharding
//! The documented shard key is `{ channel_id: "hashed" }` (see docs/MONGODB.md): one
//! message id always has the same channel id, so a redelivered message lands on the same
//! shard and `_id` uniqueness (enforced per shard) still catches it.
//!
//! ## Failures
//! Whole-batch failures (server unreachable, not primary, write concern) are *transient*:
//! the caller retries the same batch with backoff ([`MongoError::is_transient`]); since
//! writes are idempotent a retry after a partial success stores nothing twice. Failures
//! that retrying cannot fix (authentication, a bad connection string) are permanent.

use crate::pipeline::chain::ChainOutput;
use crate::sinks::sqlite::{
    AlertMarker, CHANNEL_STATS, ChannelStatsExtent, ChannelStatsRow, Query, StoredWindow,
    WriteResult,
};
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::error::{Error as DriverError, ErrorKind};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use std::collections::BTreeMap;
use std::time::Duration;
use streamtap_plugin_sdk::{Badge, ChatMessage, Emote, Value};

/// Errors from the MongoDB sink. Connection strings in messages are redacted.
#[derive(Debug, thiserror::Error)]
pub enum MongoError {
    #[error("mongodb connection string {uri:?}: {reason}")]
    Uri { uri: String, reason: String },
    #[error("mongodb {op} on {target}: {message}")]
    Server {
        op: &'static str,
        target: String,
        message: String,
        transient: bool,
    },
    #[error("mongodb {collection}: stored document {id:?} is malformed: {reason}")]
    Malformed {
        collection: &'static str,
        id: String,
        reason: String,
    },
}

impl MongoError {
    /// Whether retrying the same operation later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            MongoError::Server {
                transient: true,
                ..
            }
        )
    }
}

/// Checks a connection string written in the pipeline text: a MongoDB scheme, and no
/// credentials (those belong in `uri_secret`, outside the file).
pub fn check_public_uri(uri: &str) -> Result<(), String> {
    let Some(rest) = uri
        .strip_prefix("mongodb://")
        .or_else(|| uri.strip_prefix("mongodb+srv://"))
    else {
        return Err(format!(
            "{uri:?} is not a MongoDB connection string (it starts with mongodb:// or mongodb+srv://)"
        ));
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(
            "credentials in the pipeline text are refused; move the whole string to `uri_secret = { env = \"...\" }` or `{ file = \"...\" }`"
                .into(),
        );
    }
    if authority.is_empty() {
        return Err(format!("{uri:?} names no host"));
    }
    Ok(())
}

/// The connection string with any user and password replaced, fit for logs and errors.
pub fn redact(uri: &str) -> String {
    let (scheme, rest) = match uri.split_once("://") {
        Some(p) => p,
        None => return "<unparsable connection string>".into(),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let hosts = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    // Query options can carry secrets too (e.g. `authMechanismProperties`): keep the path only.
    let path = tail.split('?').next().unwrap_or("");
    let creds = if authority.contains('@') { "***@" } else { "" };
    format!("{scheme}://{creds}{hosts}{path}")
}

/// Whether a driver error can go away on its own (server restarting, network, failover).
fn transient(e: &DriverError) -> bool {
    !matches!(
        *e.kind,
        ErrorKind::Authentication { .. }
            | ErrorKind::InvalidArgument { .. }
            | ErrorKind::InvalidTlsConfig { .. }
            | ErrorKind::BsonSerialization(_)
    )
}

/// The driver's message without anything that could echo a connection string back.
fn describe(e: &DriverError) -> String {
    match &*e.kind {
        ErrorKind::Authentication { .. } => "authentication failed".into(),
        ErrorKind::ServerSelection { .. } => {
            "no reachable server (server selection timed out)".into()
        }
        ErrorKind::Io(io) => format!("network error: {io}"),
        ErrorKind::Command(c) => {
            format!("server error {} ({}): {}", c.code, c.code_name, c.message)
        }
        other => {
            let s = other.to_string();
            // The driver does not print passwords, but be certain.
            if s.contains('@') && s.contains("://") {
                "driver error (message withheld: it quotes a connection string)".into()
            } else {
                s
            }
        }
    }
}

/// E11000: the `_id` (or another unique key) exists.
const DUPLICATE_KEY: i32 = 11000;

/// Whether a single-document write failed because the key exists.
fn is_duplicate(e: &DriverError) -> bool {
    use mongodb::error::WriteFailure;
    matches!(&*e.kind, ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == DUPLICATE_KEY)
}

/// An open MongoDB sink.
pub struct MongoSink {
    db: Database,
    shown_uri: String,
}

/// What one write stored, beyond [`WriteResult`].
#[derive(Debug, Default)]
pub struct MongoWrite {
    pub result: WriteResult,
    /// Documents the server refused for a reason other than "already stored"; each went
    /// to `dead_letters` with the server's message.
    pub rejected: u64,
}

/// A message or event as stored.
pub fn message_doc(m: &ChatMessage) -> Document {
    let badges: Vec<Bson> = m
        .badges
        .iter()
        .map(|b| Bson::Document(doc! {"name": &b.name, "version": &b.version}))
        .collect();
    let emotes: Vec<Bson> = m
        .emotes
        .iter()
        .map(|e| Bson::Document(doc! {"id": &e.id, "start": e.start as i64, "end": e.end as i64}))
        .collect();
    let fields: Document = m
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), value_to_bson(v)))
        .collect();
    doc! {
        "_id": &m.id,
        "kind": &m.kind,
        "channel": &m.channel,
        "channel_id": &m.channel_id,
        "user": &m.user,
        "user_id": &m.user_id,
        "display_name": &m.display_name,
        "text": &m.text,
        "ts": bson::DateTime::from_millis(m.ts_ms),
        "badges": badges,
        "emotes": emotes,
        "fields": fields,
    }
}

/// The upsert of one analytics window: one document per channel and start, so a record
/// sent again for the same window replaces it (a window flushed at shutdown and completed by
/// a later run keeps the newest).
fn channel_stats_statement(
    row: &ChannelStatsRow,
    step: &str,
    now: bson::DateTime,
) -> (Document, Document) {
    let json = |s: &str| -> Bson {
        serde_json::from_str::<serde_json::Value>(s)
            .ok()
            .and_then(|v| bson::to_bson(&v).ok())
            .unwrap_or(Bson::Null)
    };
    let d = doc! {
        "channel": &row.channel,
        "window_start": bson::DateTime::from_millis(row.window_start_ms),
        "window_end": bson::DateTime::from_millis(row.window_end_ms),
        "messages": row.messages,
        "unique_chatters": row.unique_chatters,
        "sentiment_mean": row.sentiment_mean.map(Bson::Double).unwrap_or(Bson::Null),
        "first_time_chatters": row.first_time_chatters,
        "late": row.late,
        "top_emotes": json(&row.top_emotes),
        "langs": json(&row.langs),
        "events": json(&row.events),
        "extra": json(&row.extra),
        "step": step,
        "at": now,
    };
    (
        doc! {"_id": {"channel": &row.channel, "start": row.window_start_ms}},
        d,
    )
}

/// Most statements in one `update` command: analytics windows are ~1 KB, so a chunk stays
/// far below the 16 MiB message limit and the server's 100,000-statement batch limit.
const UPSERT_CHUNK: usize = 500;

/// A plugin value as BSON (integers stay 64-bit, maps become sub-documents).
pub fn value_to_bson(v: &Value) -> Bson {
    match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Int(i) => Bson::Int64(*i),
        Value::Float(f) => Bson::Double(*f),
        Value::Str(s) => Bson::String(s.clone()),
        Value::List(l) => Bson::Array(l.iter().map(value_to_bson).collect()),
        Value::Map(m) => Bson::Document(
            m.iter()
                .map(|(k, v)| (k.clone(), value_to_bson(v)))
                .collect(),
        ),
    }
}

fn bson_to_value(b: &Bson) -> Value {
    match b {
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::Int32(i) => Value::Int(i64::from(*i)),
        Bson::Int64(i) => Value::Int(*i),
        Bson::Double(f) => Value::Float(*f),
        Bson::String(s) => Value::Str(s.clone()),
        Bson::Array(l) => Value::List(l.iter().map(bson_to_value).collect()),
        Bson::Document(d) => Value::Map(
            d.iter()
                .map(|(k, v)| (k.clone(), bson_to_value(v)))
                .collect(),
        ),
        Bson::DateTime(t) => Value::Int(t.timestamp_millis()),
        other => Value::Str(other.to_string()),
    }
}

/// A stored message document back as a message (for `query` and tests).
pub fn doc_to_message(d: &Document) -> Result<ChatMessage, MongoError> {
    let id = d.get_str("_id").unwrap_or_default().to_owned();
    let bad = |reason: String| MongoError::Malformed {
        collection: "messages",
        id: id.clone(),
        reason,
    };
    let s = |k: &str| -> Result<String, MongoError> {
        d.get_str(k)
            .map(str::to_owned)
            .map_err(|e| bad(format!("field {k:?}: {e}")))
    };
    let ts_ms = d
        .get_datetime("ts")
        .map(|t| t.timestamp_millis())
        .map_err(|e| bad(format!("field \"ts\": {e}")))?;
    let mut badges = Vec::new();
    for b in d
        .get_array("badges")
        .map_err(|e| bad(format!("badges: {e}")))?
    {
        let b = b
            .as_document()
            .ok_or_else(|| bad("badges: not documents".into()))?;
        badges.push(Badge {
            name: b.get_str("name").unwrap_or_default().to_owned(),
            version: b.get_str("version").unwrap_or_default().to_owned(),
        });
    }
    let mut emotes = Vec::new();
    for e in d
        .get_array("emotes")
        .map_err(|e| bad(format!("emotes: {e}")))?
    {
        let e = e
            .as_document()
            .ok_or_else(|| bad("emotes: not documents".into()))?;
        let num = |k: &str| -> u32 {
            e.get(k)
                .and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)))
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0)
        };
        emotes.push(Emote {
            id: e.get_str("id").unwrap_or_default().to_owned(),
            start: num("start"),
            end: num("end"),
        });
    }
    let fields: BTreeMap<String, Value> = match d.get_document("fields") {
        Ok(f) => f
            .iter()
            .map(|(k, v)| (k.clone(), bson_to_value(v)))
            .collect(),
        Err(_) => BTreeMap::new(),
    };
    Ok(ChatMessage {
        id: id.clone(),
        kind: s("kind")?,
        channel: s("channel")?,
        channel_id: s("channel_id")?,
        user: s("user")?,
        user_id: s("user_id")?,
        display_name: s("display_name")?,
        text: s("text")?,
        ts_ms,
        badges,
        emotes,
        fields,
    })
}

/// Outcome of one unordered insert.
#[derive(Default)]
struct Inserted {
    inserted: u64,
    duplicates: u64,
    /// Index into the input and the server's reason.
    rejected: Vec<(usize, String)>,
}

impl MongoSink {
    /// Prepares a client; no server round trip yet (see [`MongoSink::ensure_indexes`]).
    /// `timeout` bounds how long one operation waits for a reachable server.
    pub async fn connect(uri: &str, database: &str, timeout: Duration) -> Result<Self, MongoError> {
        let shown_uri = redact(uri);
        let mut opts = ClientOptions::parse(uri)
            .await
            .map_err(|e| MongoError::Uri {
                uri: shown_uri.clone(),
                reason: describe(&e),
            })?;
        opts.app_name = Some("streamtap".into());
        opts.server_selection_timeout = Some(timeout);
        opts.connect_timeout = Some(timeout);
        let client = Client::with_options(opts).map_err(|e| MongoError::Uri {
            uri: shown_uri.clone(),
            reason: describe(&e),
        })?;
        Ok(MongoSink {
            db: client.database(database),
            shown_uri,
        })
    }

    /// Where this sink writes, credentials redacted.
    pub fn target(&self) -> String {
        format!("{}/{}", self.shown_uri, self.db.name())
    }

    /// The database handle, for other users of the deployment's MongoDB (the shared
    /// Helix budget).
    pub fn database(&self) -> Database {
        self.db.clone()
    }

    fn coll(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    fn err(&self, op: &'static str, coll: &str, e: &DriverError) -> MongoError {
        MongoError::Server {
            op,
            target: format!("{}.{coll}", self.db.name()),
            message: describe(e),
            transient: transient(e),
        }
    }

    /// Round trip to the server: the readiness check.
    pub async fn ping(&self) -> Result<(), MongoError> {
        self.db
            .run_command(doc! {"ping": 1})
            .await
            .map(|_| ())
            .map_err(|e| self.err("ping", "$cmd", &e))
    }

    /// Creates the indexes `streamtap query` and `streamtap report` use; idempotent.
    pub async fn ensure_indexes(&self) -> Result<(), MongoError> {
        let idx = |keys: Document, name: &str| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_owned()).build())
                .build()
        };
        for coll in ["messages", "events"] {
            self.coll(coll)
                .create_indexes([
                    idx(doc! {"channel": 1, "ts": 1}, "channel_ts"),
                    idx(doc! {"user_id": 1, "ts": 1}, "user_ts"),
                    idx(doc! {"ts": 1}, "ts"),
                ])
                .await
                .map_err(|e| self.err("createIndexes", coll, &e))?;
        }
        self.coll(CHANNEL_STATS)
            .create_indexes([idx(doc! {"channel": 1, "window_start": 1}, "channel_start")])
            .await
            .map_err(|e| self.err("createIndexes", CHANNEL_STATS, &e))?;
        self.coll("alerts")
            .create_indexes([idx(doc! {"channel": 1, "at": 1}, "channel_at")])
            .await
            .map_err(|e| self.err("createIndexes", "alerts", &e))?;
        Ok(())
    }

    async fn insert_unordered(
        &self,
        coll: &str,
        docs: Vec<Document>,
    ) -> Result<Inserted, MongoError> {
        let n = docs.len();
        let mut out = Inserted::default();
        if n == 0 {
            return Ok(out);
        }
        match self.coll(coll).insert_many(docs).ordered(false).await {
            Ok(r) => out.inserted = r.inserted_ids.len() as u64,
            Err(e) => match &*e.kind {
                ErrorKind::InsertMany(im) if im.write_concern_error.is_none() => {
                    let errs = im.write_errors.as_deref().unwrap_or_default();
                    for we in errs {
                        if we.code == DUPLICATE_KEY {
                            out.duplicates += 1;
                        } else {
                            out.rejected.push((
                                we.index,
                                format!(
                                    "mongodb refused the document: error {}: {}",
                                    we.code, we.message
                                ),
                            ));
                        }
                    }
                    out.inserted = (n - errs.len()) as u64;
                }
                _ => return Err(self.err("insert_many", coll, &e)),
            },
        }
        Ok(out)
    }

    /// Writes everything a batch produced. Idempotent: after a transient error the caller
    /// retries with the same output and nothing is stored twice.
    pub async fn write(&self, out: &ChainOutput) -> Result<MongoWrite, MongoError> {
        let now = bson::DateTime::now();
        let mut res = MongoWrite::default();

        // Collection gaps of the twitch source go to `gaps`, keyed by channel and start.
        let gaps: Vec<Document> = out
            .messages
            .iter()
            .filter_map(crate::sources::twitch::gap_of)
            .map(|g| {
                doc! {
                    "_id": {"channel": &g.channel, "from": bson::DateTime::from_millis(g.from_ms)},
                    "channel_id": &g.channel_id,
                    "to": bson::DateTime::from_millis(g.to_ms),
                    "reason": &g.reason,
                    "at": now,
                }
            })
            .collect();
        self.insert_unordered("gaps", gaps).await?;
        // Recording metadata: one document per stream, the highest `seq` kept.
        let mut recordings = 0;
        for r in out
            .messages
            .iter()
            .filter_map(crate::recorder::recording_of)
        {
            self.upsert_recording(&r, now).await?;
            recordings += 1;
        }
        res.result.recordings = recordings;
        // Messages and events, split by kind so chat queries never scan moderation events.
        let (chat, events): (Vec<&ChatMessage>, Vec<&ChatMessage>) = out
            .messages
            .iter()
            .filter(|m| {
                crate::sources::twitch::gap_of(m).is_none()
                    && crate::recorder::recording_of(m).is_none()
            })
            .partition(|m| m.kind == "privmsg");
        let mut refused: Vec<(&ChatMessage, String)> = Vec::new();
        for (coll, msgs) in [("messages", chat), ("events", events)] {
            let docs = msgs.iter().map(|m| message_doc(m)).collect();
            let r = self.insert_unordered(coll, docs).await?;
            res.result.inserted += r.inserted;
            res.result.duplicates += r.duplicates;
            refused.extend(r.rejected.into_iter().map(|(i, why)| (msgs[i], why)));
        }

        let mut dead: Vec<Document> = out
            .dead_letters
            .iter()
            .map(|d| {
                doc! {
                    "_id": {"id": &d.msg.id, "step": &d.step},
                    "plugin": &d.plugin, "version": &d.version, "hash": &d.hash,
                    "reason": &d.reason, "message": message_doc(&d.msg), "at": now,
                }
            })
            .collect();
        res.rejected = refused.len() as u64;
        for (m, why) in &refused {
            tracing::warn!(id = %m.id, channel = %m.channel, reason = %why, "message refused by mongodb; dead-lettered");
            // The original may be what the server refused (e.g. too large): keep the
            // identifying core and the reason, not the fields.
            let mut core = (*m).clone();
            core.fields.clear();
            dead.push(doc! {
                "_id": {"id": &m.id, "step": "sink"},
                "plugin": "", "version": "", "hash": "",
                "reason": why, "message": message_doc(&core), "at": now,
            });
        }
        let r = self.insert_unordered("dead_letters", dead).await?;
        if let Some((_, why)) = r.rejected.first() {
            return Err(MongoError::Server {
                op: "insert_many",
                target: format!("{}.dead_letters", self.db.name()),
                message: why.clone(),
                transient: false,
            });
        }

        let dropped = out
            .dropped
            .iter()
            .map(|(id, step, reason)| doc! {"_id": {"id": id, "step": step}, "reason": reason, "at": now})
            .collect();
        self.insert_unordered("dropped", dropped).await?;

        let keys: Vec<String> = out
            .alerts
            .iter()
            .map(|a| {
                if a.alert.dedupe_key.is_empty() {
                    format!("{}:{}:{}", a.step, a.alert.topic, a.message_id)
                } else {
                    a.alert.dedupe_key.clone()
                }
            })
            .collect();
        for (a, key) in out.alerts.iter().zip(&keys) {
            let attrs: Document = a
                .alert
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), Bson::String(v.clone())))
                .collect();
            let d = doc! {
                "_id": key, "topic": &a.alert.topic, "severity": &a.alert.severity,
                "title": &a.alert.title, "body": &a.alert.body, "attributes": attrs,
                "step": &a.step, "message_id": &a.message_id, "channel": &a.channel, "at": now,
            };
            let r = self.insert_unordered("alerts", vec![d]).await?;
            if r.inserted == 1 {
                res.result.new_alerts.push(a.clone());
            }
        }

        // Records are upserted in bulk: a run that closes a window for each of thousands of
        // channels at once (the analytics flush at shutdown) would otherwise pay one round
        // trip per window.
        let mut stats = Vec::new();
        let mut records = Vec::new();
        for r in &out.records {
            if r.table == CHANNEL_STATS {
                match ChannelStatsRow::from_record(r) {
                    Ok(row) => {
                        stats.push(channel_stats_statement(&row, &r.step, now));
                        res.result.channel_stats.push(row);
                        continue;
                    }
                    // Kept as it came in `records`, and reported by the caller.
                    Err(e) => res.result.invalid_records.push(e),
                }
            }
            records.push((
                doc! {"_id": {"table": &r.table, "key": &r.key}},
                doc! {"$set": {"value": value_to_bson(&r.value), "step": &r.step, "at": now}},
            ));
        }
        self.upsert_many(CHANNEL_STATS, stats).await?;
        self.upsert_many("records", records).await?;
        Ok(res)
    }

    /// Upserts `(filter, update)` pairs (an update with `$` operators, or a whole
    /// replacement document) in order, [`UPSERT_CHUNK`] statements per round trip.
    async fn upsert_many(
        &self,
        coll: &str,
        statements: Vec<(Document, Document)>,
    ) -> Result<(), MongoError> {
        for chunk in statements.chunks(UPSERT_CHUNK) {
            let updates: Vec<Document> = chunk
                .iter()
                .map(|(q, u)| doc! {"q": q, "u": u, "upsert": true, "multi": false})
                .collect();
            // Ordered: a window sent twice in one batch keeps the later version, as
            // one-by-one writes did.
            let reply = self
                .db
                .run_command(doc! {"update": coll, "updates": updates, "ordered": true})
                .await
                .map_err(|e| self.err("update", coll, &e))?;
            let target = || format!("{}.{coll}", self.db.name());
            if let Ok(errors) = reply.get_array("writeErrors")
                && let Some(Bson::Document(first)) = errors.first()
            {
                return Err(MongoError::Server {
                    op: "update",
                    target: target(),
                    message: format!(
                        "upsert {} of {} refused: error {}: {}",
                        first.get_i32("index").unwrap_or(-1),
                        chunk.len(),
                        first.get_i32("code").unwrap_or(0),
                        first.get_str("errmsg").unwrap_or("")
                    ),
                    transient: false,
                });
            }
            if let Ok(wce) = reply.get_document("writeConcernError") {
                return Err(MongoError::Server {
                    op: "update",
                    target: target(),
                    message: format!("write concern: {}", wce.get_str("errmsg").unwrap_or("")),
                    transient: true,
                });
            }
        }
        Ok(())
    }

    /// Stores a recording's metadata unless a newer update (higher `seq`) is there: the
    /// filter misses then, and the upsert's insert fails as a duplicate, which is ignored.
    async fn upsert_recording(
        &self,
        r: &crate::recorder::Recording,
        now: bson::DateTime,
    ) -> Result<(), MongoError> {
        let d = doc! {
            "channel": &r.channel,
            "channel_id": &r.channel_id,
            "title": &r.title,
            "game": &r.game,
            "started": bson::DateTime::from_millis(r.started_ms),
            "ended": r.ended_ms.map(|e| Bson::DateTime(bson::DateTime::from_millis(e))).unwrap_or(Bson::Null),
            "files": &r.files,
            "bytes": r.bytes,
            "restarts": r.restarts,
            "exits": &r.exits,
            "status": &r.status,
            "seq": r.seq,
            "at": now,
        };
        match self
            .coll("recordings")
            .replace_one(doc! {"_id": &r.stream_id, "seq": {"$lt": r.seq}}, d)
            .upsert(true)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate(&e) => Ok(()),
            Err(e) => Err(self.err("replace_one", "recordings", &e)),
        }
    }

    /// `channel_stats` windows starting at or after `since_ms`, of one channel or all, by
    /// channel then time (what `streamtap report` draws).
    pub async fn channel_windows(
        &self,
        channel: Option<&str>,
        since_ms: Option<i64>,
    ) -> Result<Vec<StoredWindow>, MongoError> {
        let mut filter = Document::new();
        if let Some(c) = channel {
            filter.insert("channel", c);
        }
        if let Some(since) = since_ms {
            filter.insert(
                "window_start",
                doc! {"$gte": bson::DateTime::from_millis(since)},
            );
        }
        let docs = self
            .find_all(
                CHANNEL_STATS,
                filter,
                doc! {"channel": 1, "window_start": 1},
            )
            .await?;
        let int = |d: &Document, k: &str| -> i64 {
            d.get(k)
                .and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)))
                .unwrap_or(0)
        };
        let time = |d: &Document, k: &str| -> i64 {
            d.get_datetime(k).map(|t| t.timestamp_millis()).unwrap_or(0)
        };
        Ok(docs
            .iter()
            .map(|d| {
                let langs = d
                    .get_document("langs")
                    .map(|l| {
                        l.iter()
                            .map(|(k, v)| {
                                let n = v.as_i64().or_else(|| v.as_i32().map(i64::from));
                                (k.clone(), n.unwrap_or(0))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                StoredWindow {
                    channel: d.get_str("channel").unwrap_or_default().to_owned(),
                    window_start_ms: time(d, "window_start"),
                    window_end_ms: time(d, "window_end"),
                    messages: int(d, "messages"),
                    unique_chatters: int(d, "unique_chatters"),
                    sentiment_mean: d.get_f64("sentiment_mean").ok(),
                    sentiment_count: d
                        .get_document("extra")
                        .map(|x| int(x, "sentiment_count"))
                        .unwrap_or(0),
                    langs,
                }
            })
            .collect())
    }

    /// Channels with `channel_stats` windows and the time span they cover.
    pub async fn channel_stats_extent(&self) -> Result<ChannelStatsExtent, MongoError> {
        let windows = self.channel_windows(None, None).await?;
        let mut channels: Vec<String> = windows.iter().map(|w| w.channel.clone()).collect();
        channels.dedup();
        let span = windows
            .iter()
            .map(|w| w.window_start_ms)
            .min()
            .zip(windows.iter().map(|w| w.window_end_ms).max());
        Ok(ChannelStatsExtent { channels, span })
    }

    /// Alerts of one channel or all at or after `since_ms`, on the time of the message
    /// that fired them (the store time when that message is not stored), oldest first.
    pub async fn alert_markers(
        &self,
        channel: Option<&str>,
        since_ms: Option<i64>,
    ) -> Result<Vec<AlertMarker>, MongoError> {
        let mut filter = Document::new();
        if let Some(c) = channel {
            filter.insert("channel", c);
        }
        let alerts = self.find_all("alerts", filter, doc! {"at": 1}).await?;
        let mut out = Vec::new();
        for a in &alerts {
            let msg_id = a.get_str("message_id").unwrap_or_default();
            let fired = self
                .coll("messages")
                .find_one(doc! {"_id": msg_id})
                .await
                .map_err(|e| self.err("find_one", "messages", &e))?
                .and_then(|m| m.get_datetime("ts").ok().map(|t| t.timestamp_millis()));
            let at_ms = fired.unwrap_or_else(|| {
                a.get_datetime("at")
                    .map(|t| t.timestamp_millis())
                    .unwrap_or(0)
            });
            if since_ms.is_some_and(|s| at_ms < s) {
                continue;
            }
            out.push(AlertMarker {
                at_ms,
                channel: a.get_str("channel").unwrap_or_default().to_owned(),
                title: a.get_str("title").unwrap_or_default().to_owned(),
            });
        }
        out.sort_by(|a, b| (a.at_ms, &a.channel, &a.title).cmp(&(b.at_ms, &b.channel, &b.title)));
        Ok(out)
    }

    async fn find_all(
        &self,
        coll: &'static str,
        filter: Document,
        sort: Document,
    ) -> Result<Vec<Document>, MongoError> {
        let c = self.coll(coll);
        let mut cursor = c
            .find(filter)
            .sort(sort)
            .await
            .map_err(|e| self.err("find", coll, &e))?;
        let mut out = Vec::new();
        while cursor
            .advance()
            .await
            .map_err(|e| self.err("find", coll, &e))?
        {
            out.push(
                cursor
                    .deserialize_current()
                    .map_err(|e| self.err("find", coll, &e))?,
            );
        }
        Ok(out)
    }

    /// Documents in a collection (summaries and tests).
    pub async fn count(&self, coll: &str) -> Result<u64, MongoError> {
        self.coll(coll)
            .count_documents(doc! {})
            .await
            .map_err(|e| self.err("count", coll, &e))
    }

    /// Stored chat messages, oldest first (the newest `limit` when limited) — the same
    /// shape as the SQLite sink's query.
    pub async fn query(&self, q: &Query) -> Result<Vec<serde_json::Value>, MongoError> {
        let mut filter = Document::new();
        if let Some(c) = &q.channel {
            filter.insert("channel", c);
        }
        if let Some(since) = q.since_ms {
            filter.insert("ts", doc! {"$gte": bson::DateTime::from_millis(since)});
        }
        let coll = self.coll("messages");
        let mut find = coll.find(filter).sort(doc! {"ts": -1, "_id": -1});
        if let Some(l) = q.limit {
            find = find.limit(i64::try_from(l).unwrap_or(i64::MAX));
        }
        let mut cursor = find.await.map_err(|e| self.err("find", "messages", &e))?;
        let mut out = Vec::new();
        while cursor
            .advance()
            .await
            .map_err(|e| self.err("find", "messages", &e))?
        {
            let d = cursor
                .deserialize_current()
                .map_err(|e| self.err("find", "messages", &e))?;
            out.push(crate::sinks::sqlite::message_json(&doc_to_message(&d)?));
        }
        out.reverse();
        Ok(out)
    }

    /// Message counts per channel, largest first.
    pub async fn counts_by_channel(&self) -> Result<Vec<(String, u64)>, MongoError> {
        let mut cursor = self
            .coll("messages")
            .aggregate([
                doc! {"$group": {"_id": "$channel", "n": {"$sum": 1}}},
                doc! {"$sort": {"n": -1, "_id": 1}},
            ])
            .await
            .map_err(|e| self.err("aggregate", "messages", &e))?;
        let mut out = Vec::new();
        while cursor
            .advance()
            .await
            .map_err(|e| self.err("aggregate", "messages", &e))?
        {
            let d = cursor
                .deserialize_current()
                .map_err(|e| self.err("aggregate", "messages", &e))?;
            let n = d
                .get("n")
                .and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)))
                .unwrap_or(0);
            out.push((
                d.get_str("_id").unwrap_or_default().to_owned(),
                u64::try_from(n).unwrap_or(0),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_uri_rules() {
        assert!(check_public_uri("mongodb://127.0.0.1:27017").is_ok());
        assert!(check_public_uri("mongodb+srv://cluster.example.net/db?retryWrites=true").is_ok());
        let e = check_public_uri("mongodb://alice:s3cret@db:27017").unwrap_err();
        assert!(e.contains("uri_secret") && !e.contains("s3cret"), "{e}");
        assert!(
            check_public_uri("postgres://x")
                .unwrap_err()
                .contains("postgres://x")
        );
        assert!(
            check_public_uri("mongodb:///db")
                .unwrap_err()
                .contains("no host")
        );
    }

    #[test]
    fn redaction_hides_user_password_and_options() {
        let r = redact(
            "mongodb://alice:s3cret@db1:27017,db2/app?authSource=admin&tlsCertificateKeyFilePassword=x",
        );
        assert_eq!(r, "mongodb://***@db1:27017,db2/app");
        assert_eq!(redact("mongodb://127.0.0.1:1"), "mongodb://127.0.0.1:1");
        assert!(!redact("nonsense").contains("nonsense"));
    }

    #[test]
    fn message_round_trips_through_bson() {
        let mut m = ChatMessage {
            id: "m1".into(),
            kind: "privmsg".into(),
            channel: "c".into(),
            channel_id: "1".into(),
            user: "u".into(),
            user_id: "2".into(),
            display_name: "U".into(),
            text: "hi Kappa".into(),
            ts_ms: 1_700_000_000_123,
            badges: vec![Badge {
                name: "sub".into(),
                version: "12".into(),
            }],
            emotes: vec![Emote {
                id: "25".into(),
                start: 3,
                end: 7,
            }],
            fields: BTreeMap::new(),
        };
        m.fields.insert(
            "sentiment".into(),
            Value::map([("compound", Value::Float(0.5)), ("n", Value::Int(1 << 40))]),
        );
        let back = doc_to_message(&message_doc(&m)).unwrap();
        assert_eq!(back, m);
    }
}
