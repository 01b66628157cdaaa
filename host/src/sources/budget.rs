//! The Helix rate-limit budget: a token bucket, in this process or shared by every
//! collector instance through a document in MongoDB.
//!
//! Twitch gives each client id a bucket of points (800 per minute for an app token) and
//! answers 429 when it is empty. N collector instances using one client id must together
//! stay under it, so the bucket they take from is one document in the deployment's MongoDB
//! (`rate_limits`, `_id` = `helix:<client id>`), changed by compare-and-set on a version
//! field: read, compute the refill, write back only if nobody wrote in between, else
//! retry. That needs nothing beyond single-document updates, which every MongoDB-wire
//! server has (no transactions, no pipeline updates).
//!
//! Shape: capacity `C = max(1, P/10)` and refill `(P - C)` points per minute, so that in
//! *any* 60-second window at most `C + (P - C) = P` points are taken: Twitch's own bucket
//! would allow a full burst of `P` on top of the refill, which is exactly what lets a
//! restarted fleet trip 429s.
//!
//! When Helix says the bucket is empty anyway (`Ratelimit-Remaining: 0` or a 429, e.g.
//! another application shares the client id), [`Budget::drain_until`] empties ours until
//! Twitch's reset time, for every instance.

use mongodb::bson::{Document, doc};
use std::sync::Mutex;
use std::time::Duration;

/// Why taking a point failed (the shared store is unreachable).
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("helix budget in mongodb ({op}): {reason}")]
    Store { op: &'static str, reason: String },
}

/// The bucket's parameters for `per_minute` points per minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Most points held at once.
    pub capacity: f64,
    /// Points added per millisecond.
    pub per_ms: f64,
}

impl Shape {
    pub fn per_minute(points: u32) -> Shape {
        let p = f64::from(points.max(1));
        let capacity = (p / 10.0).floor().max(1.0);
        // With P = 1 the capacity is the whole budget; refill 1 per minute anyway.
        let refill = (p - capacity).max(1.0);
        Shape {
            capacity,
            per_ms: refill / 60_000.0,
        }
    }

    /// Takes one point from a bucket holding `tokens` at `at_ms`, at `now_ms`: the tokens
    /// left, or how long to wait until one is there.
    pub fn take(&self, tokens: f64, at_ms: i64, now_ms: i64) -> Result<f64, Duration> {
        // A clock that went back (another instance's clock ahead of ours) refills nothing.
        let elapsed = (now_ms - at_ms).max(0) as f64;
        let have = (tokens + elapsed * self.per_ms).min(self.capacity);
        if have >= 1.0 {
            Ok(have - 1.0)
        } else {
            let ms = ((1.0 - have) / self.per_ms).ceil().max(1.0);
            Err(Duration::from_millis(ms as u64))
        }
    }
}

/// A bucket's state: tokens held at a time (wall clock, ms since the epoch, so instances on
/// several machines agree within their clock skew).
#[derive(Debug, Clone, Copy)]
struct Level {
    tokens: f64,
    at_ms: i64,
}

/// The budget of one client id (see the module docs).
pub struct Budget(Store);

/// Where the bucket lives.
enum Store {
    Local {
        shape: Shape,
        level: Mutex<Level>,
    },
    Shared {
        shape: Shape,
        coll: mongodb::Collection<Document>,
        key: String,
    },
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Budget {
    pub fn local(points_per_minute: u32) -> Budget {
        let shape = Shape::per_minute(points_per_minute);
        Budget(Store::Local {
            shape,
            level: Mutex::new(Level {
                tokens: shape.capacity,
                at_ms: now_ms(),
            }),
        })
    }

    /// A bucket in `db.rate_limits` for `client_id`, shared with every instance that
    /// uses the same database and client id.
    pub fn shared(db: &mongodb::Database, client_id: &str, points_per_minute: u32) -> Budget {
        Budget(Store::Shared {
            shape: Shape::per_minute(points_per_minute),
            coll: db.collection("rate_limits"),
            key: format!("helix:{client_id}"),
        })
    }

    pub fn describe(&self) -> &'static str {
        match self.0 {
            Store::Local { .. } => "local",
            Store::Shared { .. } => "mongodb",
        }
    }

    /// Takes one point, waiting for it. Returns how long it waited.
    pub async fn acquire(&self) -> Result<Duration, BudgetError> {
        let started = std::time::Instant::now();
        loop {
            let wait = match &self.0 {
                Store::Local { shape, level } => {
                    let mut l = level.lock().unwrap_or_else(|e| e.into_inner());
                    let now = now_ms();
                    match shape.take(l.tokens, l.at_ms, now) {
                        Ok(left) => {
                            *l = Level {
                                tokens: left,
                                at_ms: now.max(l.at_ms),
                            };
                            return Ok(started.elapsed());
                        }
                        Err(wait) => wait,
                    }
                }
                Store::Shared { shape, coll, key } => match take_shared(shape, coll, key).await? {
                    None => return Ok(started.elapsed()),
                    Some(wait) => wait,
                },
            };
            // A little jitter so instances waiting for the same refill do not all retry
            // the compare-and-set in the same millisecond.
            tokio::time::sleep(wait + Duration::from_millis(fastrand::u64(0..=20))).await;
        }
    }

    /// Empties the bucket until `until_ms` (Helix's `Ratelimit-Reset`): nobody takes a point
    /// before then.
    pub async fn drain_until(&self, until_ms: i64) -> Result<(), BudgetError> {
        match &self.0 {
            Store::Local { level, .. } => {
                let mut l = level.lock().unwrap_or_else(|e| e.into_inner());
                *l = Level {
                    tokens: 0.0,
                    at_ms: until_ms.max(l.at_ms),
                };
                Ok(())
            }
            Store::Shared { coll, key, .. } => {
                // `at_ms` in the future refills nothing until then (see `Shape::take`).
                coll.update_one(
                    doc! {"_id": key.as_str()},
                    doc! {"$set": {"tokens": 0.0, "at_ms": until_ms}, "$inc": {"v": 1_i64}},
                )
                .upsert(true)
                .await
                .map(|_| ())
                .map_err(|e| store_err("update", &e))
            }
        }
    }
}

fn store_err(op: &'static str, e: &mongodb::error::Error) -> BudgetError {
    BudgetError::Store {
        op,
        reason: e.kind.to_string(),
    }
}

/// One compare-and-set attempt on the shared bucket: `None` when a point was taken, else
/// how long to wait (zero after losing a race).
async fn take_shared(
    shape: &Shape,
    coll: &mongodb::Collection<Document>,
    key: &str,
) -> Result<Option<Duration>, BudgetError> {
    let now = now_ms();
    let current = coll
        .find_one(doc! {"_id": key})
        .await
        .map_err(|e| store_err("find", &e))?;
    let Some(d) = current else {
        // First user: a full bucket, minus this point. Another instance creating it at the
        // same moment makes this insert fail as a duplicate: retry on its document.
        let first = doc! {"_id": key, "tokens": shape.capacity - 1.0, "at_ms": now, "v": 0_i64};
        return match coll.insert_one(first).await {
            Ok(_) => Ok(None),
            Err(e) if is_duplicate(&e) => Ok(Some(Duration::ZERO)),
            Err(e) => Err(store_err("insert", &e)),
        };
    };
    let num = |k: &str| -> Option<f64> {
        d.get(k).and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_i64().map(|i| i as f64))
                .or_else(|| v.as_i32().map(f64::from))
        })
    };
    let (tokens, at_ms, v) = (
        num("tokens").unwrap_or(0.0),
        num("at_ms").unwrap_or(now as f64) as i64,
        num("v").unwrap_or(0.0) as i64,
    );
    match shape.take(tokens, at_ms, now) {
        Err(wait) => Ok(Some(wait)),
        Ok(left) => {
            let res = coll
                .update_one(
                    doc! {"_id": key, "v": v},
                    doc! {"$set": {"tokens": left, "at_ms": now.max(at_ms)}, "$inc": {"v": 1_i64}},
                )
                .await
                .map_err(|e| store_err("update", &e))?;
            Ok(if res.matched_count == 1 {
                None
            } else {
                Some(Duration::ZERO)
            })
        }
    }
}

fn is_duplicate(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    matches!(&*e.kind, ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == 11000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_keeps_any_minute_within_the_budget() {
        let s = Shape::per_minute(800);
        assert_eq!(s.capacity, 80.0);
        // Start full, take greedily for 60 s: at most capacity + refill = 800.
        let (mut tokens, mut at, mut taken) = (s.capacity, 0_i64, 0);
        let mut now = 0_i64;
        while now < 60_000 {
            match s.take(tokens, at, now) {
                Ok(left) => {
                    tokens = left;
                    at = now;
                    taken += 1;
                }
                Err(w) => now += w.as_millis() as i64,
            }
        }
        assert!(taken <= 800, "{taken}");
        assert!(taken >= 790, "{taken}");
    }

    #[test]
    fn tiny_budgets_still_work() {
        let s = Shape::per_minute(1);
        assert_eq!(s.capacity, 1.0);
        assert!(s.take(1.0, 0, 0).is_ok());
        let wait = s.take(0.0, 0, 0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(60));
    }

    #[test]
    fn a_clock_behind_the_bucket_refills_nothing() {
        let s = Shape::per_minute(600);
        // Drained until t = 10 s; at t = 5 s nothing is there.
        assert!(s.take(0.0, 10_000, 5_000).is_err());
        assert!(s.take(0.0, 10_000, 10_200).is_ok());
    }
}
