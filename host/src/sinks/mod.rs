//! Sinks store what the pipeline produced.
//!
//! - [`sqlite`]: the embedded default; idempotent on message id.
//! - [`mongodb`]: the production store; idempotent on message id (`_id`), shard-friendly.
//!
//! [`Sink`] is what the run loop holds: one write call per (merged) batch, which either
//! stored everything or failed as a whole — and a failed batch can be written again
//! without storing anything twice, which is what lets the run loop retry it.

pub mod mongodb;
pub mod sqlite;

use crate::alerts::Routes;
use crate::pipeline::chain::ChainOutput;
use crate::pipeline::config::{Pipeline, SinkConfig};
use std::path::PathBuf;
use std::time::Duration;

/// Errors from opening or writing a sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Sqlite(#[from] sqlite::SqliteError),
    #[error(transparent)]
    Mongo(#[from] mongodb::MongoError),
    #[error("[sink.mongodb] uri_secret: {0}")]
    Secret(String),
    #[error("sqlite write task failed: {0}")]
    Task(String),
    #[error("the sink is not [sink.mongodb]")]
    NotMongo,
}

impl SinkError {
    /// Whether the same write can succeed later (server down, failover).
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::Mongo(e) => e.is_transient(),
            // SQLite is a local file: "database is locked" is already retried by the busy
            // timeout, anything else (disk full, corruption) needs a person.
            _ => false,
        }
    }
}

/// How a sink batches and retries, from its config.
#[derive(Debug, Clone, Copy)]
pub struct SinkPolicy {
    /// Most messages in one write.
    pub max_batch: usize,
    /// Longest a message waits for its batch to fill.
    pub max_delay: Duration,
    /// First retry delay; doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

/// A SQLite connection the sink task lends to blocking threads. In a mutex only so
/// [`Sink`] is `Sync` (the connection is not) and its async methods can be awaited on any
/// worker; only the sink task ever locks it.
type Lent = std::sync::Mutex<Option<sqlite::SqliteSink>>;

/// An open sink.
pub enum Sink {
    Sqlite(Lent),
    /// MongoDB, with a local SQLite alert outbox: alerts and their pending deliveries are
    /// recorded there *before* the batch goes to MongoDB, so an alert whose batch is
    /// redelivered (and then found already stored in MongoDB) still has its deliveries.
    Mongo {
        db: mongodb::MongoSink,
        outbox: Lent,
        outbox_path: PathBuf,
    },
}

/// Writes `out` through a lent SQLite connection on a blocking thread.
async fn write_lent(
    slot: &mut Lent,
    out: std::sync::Arc<ChainOutput>,
    routes: std::sync::Arc<Routes>,
) -> Result<sqlite::WriteResult, SinkError> {
    let taken = slot.get_mut().unwrap_or_else(|e| e.into_inner()).take();
    let s = taken.ok_or_else(|| {
        SinkError::Task("an earlier write task did not return the connection".into())
    })?;
    let (s, r) = tokio::task::spawn_blocking(move || {
        let mut s = s;
        let r = s.write(&out, &routes);
        (s, r)
    })
    .await
    .map_err(|e| SinkError::Task(e.to_string()))?;
    *slot.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(s);
    Ok(r?)
}

/// What one write did, whatever the sink.
#[derive(Debug, Default)]
pub struct Written {
    pub result: sqlite::WriteResult,
    /// Messages the store refused (they went to its dead letters instead).
    pub rejected: u64,
}

impl Sink {
    /// Opens the pipeline's sink. MongoDB is not contacted yet: see [`Sink::prepare`].
    pub async fn open(pipeline: &Pipeline) -> Result<Sink, SinkError> {
        match &pipeline.sink {
            SinkConfig::Sqlite(c) => Ok(Sink::Sqlite(std::sync::Mutex::new(Some(
                sqlite::SqliteSink::open(&pipeline.resolve(&c.path))?,
            )))),
            SinkConfig::Mongodb(c) => {
                let uri = match (&c.uri, &c.uri_secret) {
                    (Some(u), _) => u.get_ref().clone(),
                    (None, Some(secret)) => secret.resolve(pipeline).map_err(SinkError::Secret)?,
                    (None, None) => unreachable!("validated with the pipeline file"),
                };
                let outbox_path = pipeline.resolve(&c.alert_outbox);
                Ok(Sink::Mongo {
                    db: mongodb::MongoSink::connect(&uri, &c.database, c.timeout.0).await?,
                    outbox: std::sync::Mutex::new(Some(sqlite::SqliteSink::open(&outbox_path)?)),
                    outbox_path,
                })
            }
        }
    }

    /// Batching and retry policy. SQLite writes whatever the processor hands over at once.
    pub fn policy(pipeline: &Pipeline) -> SinkPolicy {
        match &pipeline.sink {
            SinkConfig::Sqlite(_) => SinkPolicy {
                max_batch: 1,
                max_delay: Duration::ZERO,
                retry_initial: Duration::from_millis(100),
                retry_max: Duration::from_secs(1),
            },
            SinkConfig::Mongodb(c) => SinkPolicy {
                max_batch: c.max_batch,
                max_delay: c.max_delay.0,
                retry_initial: c.retry_initial.0,
                retry_max: c.retry_max.0,
            },
        }
    }

    /// One-time setup needing the server (indexes); transient errors are retried by the
    /// caller like writes.
    pub async fn prepare(&self) -> Result<(), SinkError> {
        match self {
            Sink::Sqlite(_) => Ok(()),
            Sink::Mongo { db, .. } => Ok(db.ensure_indexes().await?),
        }
    }

    /// Where the data goes, for logs and the run summary (credentials redacted).
    /// The MongoDB database of a `mongodb` sink (where shared state such as the Helix
    /// budget lives); `None` for SQLite.
    pub fn mongo_database(&self) -> Option<::mongodb::Database> {
        match self {
            Sink::Mongo { db, .. } => Some(db.database()),
            Sink::Sqlite(_) => None,
        }
    }

    pub fn describe(&self, pipeline: &Pipeline) -> String {
        match (self, &pipeline.sink) {
            (Sink::Mongo { db, .. }, _) => db.target(),
            (_, SinkConfig::Sqlite(c)) => pipeline.resolve(&c.path).display().to_string(),
            (Sink::Sqlite(_), SinkConfig::Mongodb(_)) => unreachable!("sink matches its config"),
        }
    }

    /// The SQLite file holding the alert outbox the dispatcher delivers from.
    pub fn outbox_path(&self) -> Result<PathBuf, SinkError> {
        match self {
            Sink::Sqlite(s) => Self::path(s),
            Sink::Mongo { outbox_path, .. } => Ok(outbox_path.clone()),
        }
    }

    /// Writes one batch (idempotently), with one pending alert delivery per new alert and
    /// sink `routes` names for its topic.
    pub async fn write(
        &mut self,
        out: &std::sync::Arc<ChainOutput>,
        routes: &std::sync::Arc<Routes>,
    ) -> Result<Written, SinkError> {
        match self {
            Sink::Sqlite(slot) => Ok(Written {
                result: write_lent(slot, out.clone(), routes.clone()).await?,
                rejected: 0,
            }),
            Sink::Mongo { db, outbox, .. } => {
                let alerts = if out.alerts.is_empty() {
                    sqlite::WriteResult::default()
                } else {
                    let only = ChainOutput {
                        alerts: out.alerts.clone(),
                        ..ChainOutput::default()
                    };
                    write_lent(outbox, std::sync::Arc::new(only), routes.clone()).await?
                };
                let mut w = db.write(out).await?;
                // "New" is the outbox's verdict: it saw the alert first.
                w.result.new_alerts = alerts.new_alerts;
                w.result.new_deliveries = alerts.new_deliveries;
                Ok(Written {
                    result: w.result,
                    rejected: w.rejected,
                })
            }
        }
    }

    /// Stored chat messages, oldest first (the newest `limit` when limited).
    pub async fn query(&self, q: &sqlite::Query) -> Result<Vec<serde_json::Value>, SinkError> {
        match self {
            Sink::Sqlite(s) => Ok(sqlite::query(&Self::path(s)?, q)?),
            Sink::Mongo { db, .. } => Ok(db.query(q).await?),
        }
    }

    /// Message counts per channel, largest first.
    pub async fn counts_by_channel(&self) -> Result<Vec<(String, u64)>, SinkError> {
        match self {
            Sink::Sqlite(s) => Ok(sqlite::counts_by_channel(&Self::path(s)?)?),
            Sink::Mongo { db, .. } => Ok(db.counts_by_channel().await?),
        }
    }

    fn path(s: &Lent) -> Result<PathBuf, SinkError> {
        s.lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|s| s.path().to_owned())
            .ok_or_else(|| {
                SinkError::Task("the sqlite connection was lost by a failed write".into())
            })
    }

    /// Readiness: the store answers.
    pub async fn ping(&self) -> Result<(), SinkError> {
        match self {
            Sink::Sqlite(_) => Ok(()),
            Sink::Mongo { db, .. } => Ok(db.ping().await?),
        }
    }
}

/// Appends `b` to `a`: several processed batches written as one.
pub fn merge(a: &mut ChainOutput, b: ChainOutput) {
    a.messages.extend(b.messages);
    a.dropped.extend(b.dropped);
    a.dead_letters.extend(b.dead_letters);
    a.alerts.extend(b.alerts);
    a.records.extend(b.records);
}

/// Connects to the `[sink.mongodb]` database alone (without the sink's indexes and
/// outbox), for a process that shares state there but does not store (`collect`).
pub async fn open_mongo_database(pipeline: &Pipeline) -> Result<::mongodb::Database, SinkError> {
    let SinkConfig::Mongodb(c) = &pipeline.sink else {
        return Err(SinkError::NotMongo);
    };
    let uri = match (&c.uri, &c.uri_secret) {
        (Some(u), _) => u.get_ref().clone(),
        (None, Some(secret)) => secret.resolve(pipeline).map_err(SinkError::Secret)?,
        (None, None) => unreachable!("validated with the pipeline file"),
    };
    Ok(mongodb::MongoSink::connect(&uri, &c.database, c.timeout.0)
        .await?
        .database())
}
