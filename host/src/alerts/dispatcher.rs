//! The dispatcher task: delivers outbox rows (see [`super::outbox`]) until the run stops.
//!
//! It wakes when the sink wrote new deliveries (a [`Notify`]) or when the next retry is
//! due, delivers what is due one at a time, and records each outcome before the next.
//! At start it resumes whatever earlier runs left (pending and dead letters). At shutdown
//! (`stop` cancelled, after the sink's last write) it keeps delivering *pending* rows for
//! at most `[alerts.delivery] shutdown_timeout`, then leaves the rest in the store, logging
//! how many: they are delivered by the next run.

use super::outbox::{Backlog, Due, Outbox, OutboxError, Status, after_failure};
use super::{DeliveryError, Sink};
use crate::metrics::{AlertStats, PipelineStats};
use crate::pipeline::config::DeliveryConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Rows read per query.
const BATCH: usize = 64;
/// Longest sleep with nothing due (a new delivery wakes the task earlier).
const IDLE: Duration = Duration::from_secs(60);

/// Dispatcher failures: only the store failing stops it (a sink failing is a retry).
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("alert outbox task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What a finished dispatcher left in the store.
#[derive(Debug, Default, Clone, Copy)]
pub struct DispatchReport {
    pub left: Backlog,
}

/// Delivers the outbox of one store.
pub struct Dispatcher {
    outbox: Arc<Mutex<Outbox>>,
    sinks: BTreeMap<String, Sink>,
    policy: DeliveryConfig,
    stats: Arc<AlertStats>,
    pipeline: Arc<PipelineStats>,
    wake: Arc<Notify>,
    /// Sinks named by rows but not configured, warned about once.
    unknown: Mutex<BTreeSet<String>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Dispatcher {
    pub fn new(
        store: &Path,
        sinks: BTreeMap<String, Sink>,
        policy: DeliveryConfig,
        stats: Arc<AlertStats>,
        pipeline: Arc<PipelineStats>,
        wake: Arc<Notify>,
    ) -> Result<Self, OutboxError> {
        Ok(Dispatcher {
            outbox: Arc::new(Mutex::new(Outbox::open(store)?)),
            sinks,
            policy,
            stats,
            pipeline,
            wake,
            unknown: Mutex::default(),
        })
    }

    /// Runs a store query on a blocking thread.
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Outbox) -> Result<T, OutboxError> + Send + 'static,
    ) -> Result<T, DispatchError> {
        let ob = self.outbox.clone();
        Ok(tokio::task::spawn_blocking(move || f(&ob.lock().expect("outbox lock"))).await??)
    }

    async fn refresh_gauges(&self) -> Result<Backlog, DispatchError> {
        let b = self.db(|o| o.backlog()).await?;
        self.stats
            .pending
            .set(i64::try_from(b.pending + b.dead_letter).unwrap_or(i64::MAX));
        self.stats
            .dead_letters
            .set(i64::try_from(b.dead_letter).unwrap_or(i64::MAX));
        Ok(b)
    }

    /// Delivers until `stop`, then drains within the shutdown bound.
    pub async fn run(self, stop: CancellationToken) -> Result<DispatchReport, DispatchError> {
        // A start is when a sink is most likely back (it was fixed, or the config was):
        // dead letters are retried now instead of at their slow cadence.
        let now = now_ms();
        self.db(move |o| o.resume_dead_letters(now)).await?;
        let b = self.refresh_gauges().await?;
        if b.pending + b.dead_letter > 0 {
            tracing::info!(
                pending = b.pending,
                dead_letter = b.dead_letter,
                "resuming alert deliveries from the store"
            );
        }
        loop {
            self.pass(None).await?;
            self.refresh_gauges().await?;
            if stop.is_cancelled() {
                break;
            }
            let next = self.db(|o| o.next_due(false)).await?;
            let wait = next
                .map(|t| Duration::from_millis(u64::try_from(t - now_ms()).unwrap_or(0)))
                .unwrap_or(IDLE)
                .min(IDLE);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }

        // Shutdown: pending rows get until the deadline (dead letters due meanwhile are
        // tried too, but not waited for); what is left waits for the next run.
        let deadline = Instant::now() + self.policy.shutdown_timeout.0;
        loop {
            let hit_deadline = self.pass(Some(deadline)).await?;
            let b = self.db(|o| o.backlog()).await?;
            if hit_deadline || b.pending == 0 {
                break;
            }
            let Some(next) = self.db(|o| o.next_due(true)).await? else {
                break;
            };
            let wait = Duration::from_millis(u64::try_from(next - now_ms()).unwrap_or(0));
            if Instant::now() + wait >= deadline {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        let left = self.refresh_gauges().await?;
        if left.pending + left.dead_letter > 0 {
            tracing::warn!(
                pending = left.pending,
                dead_letter = left.dead_letter,
                bound = ?self.policy.shutdown_timeout.0,
                "alert deliveries left in the store at shutdown; the next run delivers them"
            );
        }
        Ok(DispatchReport { left })
    }

    /// Attempts every due row once. With a deadline, stops there (an attempt in flight is
    /// abandoned unrecorded, so it counts as neither success nor failure) and returns true.
    async fn pass(&self, deadline: Option<Instant>) -> Result<bool, DispatchError> {
        loop {
            let now = now_ms();
            let due = self.db(move |o| o.due(now, BATCH, false)).await?;
            let n = due.len();
            for d in due {
                match deadline {
                    None => self.attempt(&d).await?,
                    Some(dl) => {
                        let left = dl.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Ok(true);
                        }
                        match tokio::time::timeout(left, self.attempt(&d)).await {
                            Ok(r) => r?,
                            Err(_) => return Ok(true),
                        }
                    }
                }
            }
            if n < BATCH {
                return Ok(false);
            }
        }
    }

    /// One delivery and its recorded outcome.
    async fn attempt(&self, d: &Due) -> Result<(), DispatchError> {
        let key = d.alert.dedupe_key.clone();
        let sink_name = d.sink.clone();
        let Some(sink) = self.sinks.get(&d.sink) else {
            let err = DeliveryError::UnknownSink {
                sink: d.sink.clone(),
            };
            if self
                .unknown
                .lock()
                .expect("unknown lock")
                .insert(d.sink.clone())
            {
                tracing::warn!(sink = %d.sink, error = %err, "alert deliveries for an unconfigured sink stay in the store");
            }
            let (next, msg) = (
                Outbox::next_at(now_ms(), self.policy.dead_letter_interval.0),
                err.to_string(),
            );
            return self
                .db(move |o| o.defer(&key, &sink_name, next, &msg))
                .await;
        };
        match sink.deliver(&d.alert).await {
            Ok(()) => {
                let now = now_ms();
                let complete = self
                    .db(move |o| o.mark_delivered(&key, &sink_name, now))
                    .await?;
                self.stats
                    .delivered
                    .with_label_values(&[d.sink.as_str()])
                    .inc();
                if complete {
                    self.pipeline.alerts_delivered.inc();
                }
                tracing::info!(sink = %d.sink, key = %d.alert.dedupe_key, attempt = d.attempts + 1, "alert delivered");
            }
            Err(e) => {
                let (status, attempts, wait) =
                    after_failure(d.status, d.attempts, &self.policy, fastrand::f64());
                let (next, msg) = (Outbox::next_at(now_ms(), wait), e.to_string());
                self.db(move |o| o.mark_failed(&key, &sink_name, status, attempts, next, &msg))
                    .await?;
                self.stats
                    .retried
                    .with_label_values(&[d.sink.as_str()])
                    .inc();
                if status == Status::DeadLetter && d.status == Status::Pending {
                    self.stats
                        .dead_lettered
                        .with_label_values(&[d.sink.as_str()])
                        .inc();
                    tracing::warn!(sink = %d.sink, key = %d.alert.dedupe_key, attempts, error = %e, retry_in = ?wait, "alert delivery dead-lettered; retrying at the dead-letter interval");
                } else {
                    tracing::warn!(sink = %d.sink, key = %d.alert.dedupe_key, attempts, error = %e, retry_in = ?wait, "alert delivery failed; will retry");
                }
            }
        }
        Ok(())
    }
}
