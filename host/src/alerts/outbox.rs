//! The delivery outbox in the SQLite store: one `alert_deliveries` row per (alert, sink),
//! with status `pending`, `delivered` or `dead_letter`, attempts, last error and the time
//! of the next attempt.
//!
//! Rows are created by the sink together with the alert (see `sinks::sqlite`); this module
//! is the dispatcher's side: which rows are due, and the state transitions after an
//! attempt. The transitions are pure functions ([`after_failure`], [`backoff`]) so they are
//! unit-tested without a clock or a database.

use super::StoredAlert;
use crate::pipeline::config::DeliveryConfig;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Delivery row status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not delivered yet; retried with backoff.
    Pending,
    /// Delivered (terminal).
    Delivered,
    /// Failed `max_attempts` times; kept and retried every `dead_letter_interval`.
    DeadLetter,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::DeadLetter => "dead_letter",
        }
    }

    fn parse(s: &str) -> Status {
        match s {
            "delivered" => Status::Delivered,
            "dead_letter" => Status::DeadLetter,
            _ => Status::Pending,
        }
    }
}

/// Errors of the outbox's database.
#[derive(Debug, thiserror::Error)]
#[error("alert outbox in {path:?}: {source}")]
pub struct OutboxError {
    path: PathBuf,
    source: rusqlite::Error,
}

/// One delivery to attempt.
#[derive(Debug, Clone)]
pub struct Due {
    pub sink: String,
    pub status: Status,
    pub attempts: u32,
    pub alert: StoredAlert,
}

/// The wait before the attempt after `failures` consecutive failures (≥ 1): the initial
/// backoff doubled per failure, capped at `max`, then scaled by `0.5 + 0.5 * r` for `r` in
/// `[0, 1)` ("equal jitter": never less than half the nominal wait, so backoff still backs
/// off, and never in lockstep with other failing deliveries).
pub fn backoff(failures: u32, initial: Duration, max: Duration, r: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(32);
    let nominal = initial.saturating_mul(1u32 << exp.min(31)).min(max);
    nominal.mul_f64(0.5 + 0.5 * r.clamp(0.0, 1.0))
}

/// Row state after a failed attempt: (status, attempts, wait until the next attempt).
/// `attempts` counts every attempt, dead-letter retries included.
pub fn after_failure(
    status: Status,
    attempts: u32,
    policy: &DeliveryConfig,
    r: f64,
) -> (Status, u32, Duration) {
    let attempts = attempts.saturating_add(1);
    if status == Status::DeadLetter || attempts >= policy.max_attempts {
        // Dead letters keep their slow cadence, jittered too so a sink coming back is not
        // hit by every dead letter at the same instant.
        let wait = policy
            .dead_letter_interval
            .0
            .mul_f64(0.75 + 0.25 * r.clamp(0.0, 1.0));
        (Status::DeadLetter, attempts, wait)
    } else {
        let wait = backoff(attempts, policy.initial_backoff.0, policy.max_backoff.0, r);
        (Status::Pending, attempts, wait)
    }
}

/// Counts of rows not yet delivered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub pending: u64,
    pub dead_letter: u64,
}

/// The dispatcher's connection to the store.
pub struct Outbox {
    conn: Connection,
    path: PathBuf,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Outbox {
    /// Opens the store the sink created (its schema includes the outbox).
    pub fn open(path: &Path) -> Result<Self, OutboxError> {
        let e = |source| OutboxError {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(e)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(e)?;
        Ok(Outbox {
            conn,
            path: path.to_owned(),
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> OutboxError + '_ {
        move |source| OutboxError {
            path: self.path.clone(),
            source,
        }
    }

    /// Up to `limit` rows due at `now_ms` (pending first, then dead letters, oldest first);
    /// with `pending_only`, no dead letters.
    pub fn due(
        &self,
        now_ms: i64,
        limit: usize,
        pending_only: bool,
    ) -> Result<Vec<Due>, OutboxError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT d.sink, d.status, d.attempts, a.dedupe_key, a.topic, a.severity, a.title,
                        a.body, a.attributes, a.channel, a.at
                 FROM alert_deliveries d JOIN alerts a USING (dedupe_key)
                 WHERE d.status IN ('pending', ?3) AND d.next_attempt_at <= ?1
                 ORDER BY d.status DESC, d.next_attempt_at, d.created_at
                 LIMIT ?2",
            )
            .map_err(self.err())?;
        let dl = if pending_only {
            "pending"
        } else {
            "dead_letter"
        };
        let rows = stmt
            .query_map(params![now_ms, limit as i64, dl], |r| {
                let attrs: String = r.get(8)?;
                Ok(Due {
                    sink: r.get(0)?,
                    status: Status::parse(&r.get::<_, String>(1)?),
                    attempts: r.get::<_, i64>(2)?.try_into().unwrap_or(u32::MAX),
                    alert: StoredAlert {
                        dedupe_key: r.get(3)?,
                        topic: r.get(4)?,
                        severity: r.get(5)?,
                        title: r.get(6)?,
                        body: r.get(7)?,
                        attributes: serde_json::from_str(&attrs).unwrap_or_default(),
                        channel: r.get(9)?,
                        at_ms: r.get(10)?,
                    },
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Marks a delivery done; returns whether every sink of the alert now has it.
    pub fn mark_delivered(&self, key: &str, sink: &str, now_ms: i64) -> Result<bool, OutboxError> {
        self.conn
            .execute(
                "UPDATE alert_deliveries
                 SET status = 'delivered', attempts = attempts + 1, last_error = NULL, delivered_at = ?3
                 WHERE dedupe_key = ?1 AND sink = ?2 AND status != 'delivered'",
                params![key, sink, now_ms],
            )
            .map_err(self.err())?;
        let left: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM alert_deliveries WHERE dedupe_key = ?1 AND status != 'delivered'",
                params![key],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        Ok(left == 0)
    }

    /// Records a failed attempt with its outcome from [`after_failure`].
    pub fn mark_failed(
        &self,
        key: &str,
        sink: &str,
        status: Status,
        attempts: u32,
        next_ms: i64,
        error: &str,
    ) -> Result<(), OutboxError> {
        self.conn
            .execute(
                "UPDATE alert_deliveries
                 SET status = ?3, attempts = ?4, next_attempt_at = ?5, last_error = ?6
                 WHERE dedupe_key = ?1 AND sink = ?2 AND status != 'delivered'",
                params![key, sink, status.as_str(), attempts, next_ms, error],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Defers a row without counting an attempt (its sink is not configured any more).
    pub fn defer(
        &self,
        key: &str,
        sink: &str,
        next_ms: i64,
        error: &str,
    ) -> Result<(), OutboxError> {
        self.conn
            .execute(
                "UPDATE alert_deliveries SET next_attempt_at = ?3, last_error = ?4
                 WHERE dedupe_key = ?1 AND sink = ?2 AND status != 'delivered'",
                params![key, sink, next_ms, error],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Makes every dead letter due at `now_ms` (at start: the sink may be back).
    pub fn resume_dead_letters(&self, now_ms: i64) -> Result<u64, OutboxError> {
        self.conn
            .execute(
                "UPDATE alert_deliveries SET next_attempt_at = ?1
                 WHERE status = 'dead_letter' AND next_attempt_at > ?1",
                params![now_ms],
            )
            .map(|n| n as u64)
            .map_err(self.err())
    }

    /// When the next undelivered row is due (`pending_only`: pending rows only).
    pub fn next_due(&self, pending_only: bool) -> Result<Option<i64>, OutboxError> {
        let sql = if pending_only {
            "SELECT MIN(next_attempt_at) FROM alert_deliveries WHERE status = 'pending'"
        } else {
            "SELECT MIN(next_attempt_at) FROM alert_deliveries WHERE status != 'delivered'"
        };
        self.conn
            .query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
            .optional()
            .map(Option::flatten)
            .map_err(self.err())
    }

    /// Rows not delivered yet, by status.
    pub fn backlog(&self) -> Result<Backlog, OutboxError> {
        self.conn
            .query_row(
                "SELECT COALESCE(SUM(status = 'pending'), 0), COALESCE(SUM(status = 'dead_letter'), 0)
                 FROM alert_deliveries",
                [],
                |r| {
                    Ok(Backlog {
                        pending: r.get::<_, i64>(0)? as u64,
                        dead_letter: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .map_err(self.err())
    }

    /// Schedules a failed row's next attempt `wait` after `now_ms`.
    pub fn next_at(now_ms: i64, wait: Duration) -> i64 {
        now_ms.saturating_add(ms(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::Routes;
    use crate::pipeline::chain::{ChainOutput, RaisedAlert};
    use crate::pipeline::config::{AlertRoute, AlertsConfig, DurationValue};
    use crate::sinks::sqlite::SqliteSink;
    use streamtap_plugin_sdk::Alert;

    fn policy() -> DeliveryConfig {
        DeliveryConfig {
            max_attempts: 3,
            initial_backoff: DurationValue(Duration::from_millis(100)),
            max_backoff: DurationValue(Duration::from_secs(1)),
            dead_letter_interval: DurationValue(Duration::from_secs(60)),
            shutdown_timeout: DurationValue(Duration::from_secs(5)),
        }
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_within_bounds() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(1));
        for failures in 1..40 {
            let nominal = (i * 2u32.pow((failures - 1).min(20))).min(m);
            for k in 0..=100 {
                let r = f64::from(k) / 100.0;
                let w = backoff(failures, i, m, r);
                assert!(
                    w >= nominal / 2,
                    "{failures} {r}: {w:?} < half of {nominal:?}"
                );
                assert!(w <= nominal, "{failures} {r}: {w:?} > {nominal:?}");
                assert!(w <= m);
            }
        }
        assert_eq!(backoff(1, i, m, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(2, i, m, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(4, i, m, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(5, i, m, 1.0), m);
        assert_eq!(backoff(u32::MAX, i, m, 0.0), m / 2);
        // Random draws land in the band, not at one point.
        let draws: Vec<Duration> = (0..200)
            .map(|_| backoff(3, i, m, fastrand::f64()))
            .collect();
        assert!(draws.iter().any(|d| *d < Duration::from_millis(300)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(300)));
    }

    #[test]
    fn failures_go_pending_then_dead_letter_and_stay_there() {
        let p = policy();
        let (s, a, w) = after_failure(Status::Pending, 0, &p, 1.0);
        assert_eq!((s, a, w), (Status::Pending, 1, Duration::from_millis(100)));
        let (s, a, w) = after_failure(s, a, &p, 1.0);
        assert_eq!((s, a, w), (Status::Pending, 2, Duration::from_millis(200)));
        let (s, a, w) = after_failure(s, a, &p, 1.0);
        assert_eq!((s, a, w), (Status::DeadLetter, 3, Duration::from_secs(60)));
        let (s, a, w) = after_failure(s, a, &p, 0.0);
        assert_eq!((s, a), (Status::DeadLetter, 4));
        assert!(w >= Duration::from_secs(45) && w <= Duration::from_secs(60));
        // max_attempts = 1: the first failure dead-letters.
        let one = DeliveryConfig {
            max_attempts: 1,
            ..policy()
        };
        assert_eq!(
            after_failure(Status::Pending, 0, &one, 0.5).0,
            Status::DeadLetter
        );
    }

    fn alert(key: &str, topic: &str) -> RaisedAlert {
        RaisedAlert {
            alert: Alert {
                topic: topic.into(),
                severity: "info".into(),
                title: format!("title {key}"),
                body: "body".into(),
                dedupe_key: key.into(),
                attributes: vec![("rule".into(), "hype".into())],
            },
            step: "alerts".into(),
            message_id: format!("m-{key}"),
            channel: "pixelqueen".into(),
        }
    }

    #[test]
    fn outbox_rows_are_written_with_the_batch_and_move_through_states() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let mut cfg = AlertsConfig::default();
        let to = |v: &[&str]| AlertRoute {
            to: v
                .iter()
                .map(|s| toml::Spanned::new(0..0, (*s).to_owned()))
                .collect(),
        };
        cfg.topics.insert("hype".into(), to(&["console", "sns.a"]));
        let routes = Routes::new(&cfg);
        let mut sink = SqliteSink::open(&db).unwrap();
        let out = ChainOutput {
            alerts: vec![alert("k1", "hype"), alert("k2", "other")],
            ..Default::default()
        };
        let res = sink.write(&out, &routes).unwrap();
        assert_eq!(res.new_alerts.len(), 2);
        // k1 → console + sns.a, k2 → default console.
        assert_eq!(res.new_deliveries, 3);
        // The same alerts again: no new rows, nothing to deliver twice.
        let again = sink.write(&out, &routes).unwrap();
        assert_eq!((again.new_alerts.len(), again.new_deliveries), (0, 0));

        let ob = Outbox::open(&db).unwrap();
        let now = chrono::Utc::now().timestamp_millis() + 1;
        assert_eq!(
            ob.backlog().unwrap(),
            Backlog {
                pending: 3,
                dead_letter: 0
            }
        );
        let due = ob.due(now, 10, false).unwrap();
        assert_eq!(due.len(), 3);
        assert!(
            due.iter()
                .all(|d| d.status == Status::Pending && d.attempts == 0)
        );
        let k1 = due.iter().find(|d| d.alert.dedupe_key == "k1").unwrap();
        assert_eq!(k1.alert.rule(), "hype");
        assert_eq!(k1.alert.channel, "pixelqueen");

        // console delivered; the alert still waits for sns.a.
        assert!(!ob.mark_delivered("k1", "console", now).unwrap());
        // sns.a fails until dead-lettered.
        let p = policy();
        let (mut st, mut at) = (Status::Pending, 0);
        for _ in 0..3 {
            let (s, a, w) = after_failure(st, at, &p, 0.5);
            ob.mark_failed(
                "k1",
                "sns.a",
                s,
                a,
                Outbox::next_at(now, w),
                "sns \"sns.a\": down",
            )
            .unwrap();
            (st, at) = (s, a);
        }
        assert_eq!(st, Status::DeadLetter);
        assert_eq!(
            ob.backlog().unwrap(),
            Backlog {
                pending: 1,
                dead_letter: 1
            }
        );
        // Not due before its time; due after; the drain (pending_only) skips it.
        assert!(
            ob.due(now, 10, false)
                .unwrap()
                .iter()
                .all(|d| d.sink != "sns.a")
        );
        let later = now + 61_000;
        let due = ob.due(later, 10, false).unwrap();
        let dl = due.iter().find(|d| d.sink == "sns.a").unwrap();
        assert_eq!((dl.status, dl.attempts), (Status::DeadLetter, 3));
        assert!(
            ob.due(later, 10, true)
                .unwrap()
                .iter()
                .all(|d| d.sink != "sns.a")
        );
        // The sink is back: delivered, and the alert is complete.
        assert!(ob.mark_delivered("k1", "sns.a", later).unwrap());
        assert!(ob.mark_delivered("k2", "console", later).unwrap());
        assert_eq!(ob.backlog().unwrap(), Backlog::default());
        assert!(ob.due(later + 1_000_000, 10, false).unwrap().is_empty());
        // A delivered row never goes back.
        ob.mark_failed("k1", "sns.a", Status::Pending, 9, later, "late failure")
            .unwrap();
        assert_eq!(ob.backlog().unwrap(), Backlog::default());
        let conn = Connection::open(&db).unwrap();
        let (status, attempts, err): (String, i64, Option<String>) = conn
            .query_row(
                "SELECT status, attempts, last_error FROM alert_deliveries WHERE dedupe_key = 'k1' AND sink = 'sns.a'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((status.as_str(), attempts, err), ("delivered", 4, None));
        let view: String = conn
            .query_row(
                "SELECT status FROM alert_status WHERE dedupe_key = 'k1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(view, "delivered");
    }
}
