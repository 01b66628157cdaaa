//! Stream status from the Twitch Helix API, next to the `twitch` chat source.
//!
//! Every `interval`, Get Streams is asked about this shard's channels in batches of 100
//! (one rate-limit point each, taken from the [`Budget`]). A channel that appears live, or
//! live with another stream id, yields a [`ONLINE_KIND`] event; one that disappears, an
//! [`OFFLINE_KIND`] event. The events travel with the chat messages, so any transport carries
//! them and the sink stores them in `events`; their ids (`stream.online:<stream id>`) are
//! the same from every instance and every restart, so they are stored once.
//!
//! A batch whose request failed changes nothing: a channel is only declared offline when
//! Helix answered for it. The app access token comes from the client-credentials flow and
//! is renewed before it expires, and at once on a 401. `Ratelimit-Remaining: 0` and 429
//! drain the budget until `Ratelimit-Reset`. Neither the client secret nor the token
//! appears in errors or logs (requests are described by URL, answers by status).

use super::budget::{Budget, BudgetError};
use crate::metrics::PipelineStats;
use crate::pipeline::config::HelixConfig;
use crate::sources::twitch::Shard;
use crate::transport::memory::MemorySender;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamtap_plugin_sdk::{ChatMessage, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Kind of the event "this channel went live (with this stream id)".
pub const ONLINE_KIND: &str = "stream.online";
/// Kind of the event "this stream ended".
pub const OFFLINE_KIND: &str = "stream.offline";
/// Get Streams takes at most 100 `user_login` parameters.
pub const BATCH: usize = 100;
/// Renew the token when less than this is left of its life.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// Attempts of one batch within a poll (429s and one 401 retry included).
const ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum HelixError {
    /// No answer (connection refused, timeout, TLS).
    #[error("{what} {url}: {reason}")]
    Http {
        what: &'static str,
        url: String,
        reason: String,
    },
    /// An answer that is not a success.
    #[error("{what} {url}: HTTP {status}{detail}")]
    Status {
        what: &'static str,
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{what} {url}: unreadable answer: {reason}")]
    Decode {
        what: &'static str,
        url: String,
        reason: String,
    },
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error("source.twitch.helix: cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// One live stream as Get Streams describes it (the fields we keep).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LiveStream {
    /// The stream id: what recordings are named by.
    pub id: String,
    pub user_id: String,
    pub user_login: String,
    #[serde(default)]
    pub user_name: String,
    #[serde(default)]
    pub game_id: String,
    #[serde(default)]
    pub game_name: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub viewer_count: i64,
    /// RFC 3339.
    #[serde(default)]
    pub started_at: String,
}

#[derive(Deserialize)]
struct StreamsPage {
    data: Vec<LiveStream>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: u64,
}

/// What one answer said about the rate limit.
#[derive(Debug, Default, Clone, Copy)]
struct RateHeaders {
    limit: Option<i64>,
    remaining: Option<i64>,
    /// Unix seconds.
    reset: Option<i64>,
}

/// Counters and gauges of the poller, on the run's registry.
struct HelixStats {
    requests: prometheus::IntCounterVec,
    rate_limited: prometheus::IntCounter,
    budget_wait: prometheus::Counter,
    /// Poll rounds cut short because the shared budget's store did not answer.
    budget_errors: prometheus::IntCounter,
    live: prometheus::IntGauge,
    tokens: prometheus::IntCounter,
    /// `Ratelimit-Remaining` of the last answer.
    remaining: prometheus::IntGauge,
    /// 1 for each followed channel Helix reports live, 0 otherwise (capped labels).
    channel_live: prometheus::IntGaugeVec,
    labels: crate::sources::twitch::ChannelLabels,
}

impl HelixStats {
    fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let opts = |n: &str, h: &str| prometheus::Opts::new(n, h).namespace("streamtap");
        let requests = prometheus::IntCounterVec::new(
            opts(
                "helix_requests_total",
                "Get Streams requests by outcome (ok, rate_limited, unauthorized, error).",
            ),
            &["outcome"],
        )?;
        let rate_limited = prometheus::IntCounter::with_opts(opts(
            "helix_rate_limited_total",
            "Times Helix said the budget was spent (429 or Ratelimit-Remaining 0).",
        ))?;
        let budget_wait = prometheus::Counter::with_opts(opts(
            "helix_budget_wait_seconds_total",
            "Time spent waiting for a Helix rate-limit point.",
        ))?;
        let budget_errors = prometheus::IntCounter::with_opts(opts(
            "helix_budget_errors_total",
            "Poll rounds cut short because the shared rate-limit budget (MongoDB) did not answer; no request is sent without a point.",
        ))?;
        registry.register(Box::new(budget_errors.clone()))?;
        let live = prometheus::IntGauge::with_opts(opts(
            "helix_live_channels",
            "Channels of this instance that Helix reports live.",
        ))?;
        let tokens = prometheus::IntCounter::with_opts(opts(
            "helix_tokens_total",
            "App access tokens obtained (client-credentials flow).",
        ))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(budget_wait.clone()))?;
        registry.register(Box::new(live.clone()))?;
        let remaining = prometheus::IntGauge::with_opts(opts(
            "helix_ratelimit_remaining",
            "Points left in Twitch's Helix bucket, from the last answer's Ratelimit-Remaining.",
        ))?;
        let channel_live = prometheus::IntGaugeVec::new(
            opts(
                "helix_channel_live",
                "1 when Helix reports the channel live, 0 when not (the first 1000 channels by name).",
            ),
            &["channel"],
        )?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(remaining.clone()))?;
        registry.register(Box::new(channel_live.clone()))?;
        Ok(HelixStats {
            remaining,
            channel_live,
            labels: Default::default(),
            requests,
            rate_limited,
            budget_wait,
            budget_errors,
            live,
            tokens,
        })
    }
}

/// The HTTP side: token and Get Streams, on blocking threads (ureq is synchronous).
struct Client {
    agent: ureq::Agent,
    api_url: String,
    token_url: String,
    client_id: String,
    secret: String,
    token: Option<(String, Instant)>,
}

/// The outcome of one Get Streams request.
enum Answer {
    Page(Vec<LiveStream>, RateHeaders),
    RateLimited(RateHeaders),
    Unauthorized,
}

impl Client {
    fn new(cfg: &HelixConfig, secret: String) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(cfg.timeout.0))
            .build()
            .new_agent();
        Client {
            agent,
            api_url: cfg.api_url.trim_end_matches('/').to_owned(),
            token_url: cfg.token_url.clone(),
            client_id: cfg.client_id.get_ref().trim().to_owned(),
            secret,
            token: None,
        }
    }

    /// A valid app access token, fetched when missing or about to expire.
    async fn token(&mut self, stats: &HelixStats) -> Result<String, HelixError> {
        if let Some((t, until)) = &self.token
            && Instant::now() + TOKEN_MARGIN < *until
        {
            return Ok(t.clone());
        }
        let (agent, url) = (self.agent.clone(), self.token_url.clone());
        let form = [
            ("client_id", self.client_id.clone()),
            ("client_secret", self.secret.clone()),
            ("grant_type", "client_credentials".to_owned()),
        ];
        let what = "token request";
        let u = url.clone();
        let (status, body) = tokio::task::spawn_blocking(move || {
            let mut resp = agent.post(&u).send_form(form).map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .body_mut()
                .read_to_string()
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((status, body))
        })
        .await
        .unwrap_or_else(|e| Err(format!("request task failed: {e}")))
        .map_err(|reason| HelixError::Http {
            what,
            url: url.clone(),
            reason,
        })?;
        if !(200..300).contains(&status) {
            // Twitch's error body names the problem ("invalid client secret") without
            // echoing the secret; keep it short anyway.
            return Err(HelixError::Status {
                what,
                url,
                status,
                detail: format!(": {}", body.chars().take(200).collect::<String>()),
            });
        }
        let t: TokenAnswer = serde_json::from_str(&body).map_err(|e| HelixError::Decode {
            what,
            url: url.clone(),
            reason: e.to_string(),
        })?;
        // No `expires_in` (never seen from Twitch): assume an hour, renewed on a 401.
        let life = Duration::from_secs(if t.expires_in == 0 {
            3600
        } else {
            t.expires_in
        });
        stats.tokens.inc();
        tracing::info!(
            expires_in_s = life.as_secs(),
            "helix: app access token obtained"
        );
        self.token = Some((t.access_token.clone(), Instant::now() + life));
        Ok(t.access_token)
    }

    async fn get_streams(&self, token: &str, logins: &[String]) -> Result<Answer, HelixError> {
        let mut url = format!("{}/streams?first={}", self.api_url, BATCH);
        for l in logins {
            url.push_str("&user_login=");
            url.push_str(l);
        }
        let shown = format!("{}/streams", self.api_url);
        let (agent, client_id, auth) = (
            self.agent.clone(),
            self.client_id.clone(),
            format!("Bearer {token}"),
        );
        let what = "get streams";
        let (status, headers, body) = tokio::task::spawn_blocking(move || {
            let mut resp = agent
                .get(&url)
                .header("Client-Id", &client_id)
                .header("Authorization", &auth)
                .call()
                .map_err(|e| e.to_string())?;
            let header = |n: &str| {
                resp.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<i64>().ok())
            };
            let headers = RateHeaders {
                limit: header("ratelimit-limit"),
                remaining: header("ratelimit-remaining"),
                reset: header("ratelimit-reset"),
            };
            let status = resp.status().as_u16();
            let body = resp
                .body_mut()
                .read_to_string()
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((status, headers, body))
        })
        .await
        .unwrap_or_else(|e| Err(format!("request task failed: {e}")))
        .map_err(|reason| HelixError::Http {
            what,
            url: shown.clone(),
            reason,
        })?;
        match status {
            200..=299 => {
                let page: StreamsPage =
                    serde_json::from_str(&body).map_err(|e| HelixError::Decode {
                        what,
                        url: shown.clone(),
                        reason: e.to_string(),
                    })?;
                Ok(Answer::Page(page.data, headers))
            }
            401 => Ok(Answer::Unauthorized),
            429 => Ok(Answer::RateLimited(headers)),
            _ => Err(HelixError::Status {
                what,
                url: shown,
                status,
                detail: format!(": {}", body.chars().take(200).collect::<String>()),
            }),
        }
    }
}

/// Everything the poller needs besides its config.
pub struct HelixPoller {
    pub config: HelixConfig,
    /// The client secret, already read from env/file.
    pub secret: String,
    pub budget: Budget,
    pub shard: Shard,
    pub tx: MemorySender,
    pub stats: Arc<PipelineStats>,
    /// The source's channel list (all shards; filtered here), live-edited.
    pub channels: watch::Receiver<Vec<String>>,
    pub registry: prometheus::Registry,
    /// Where the live channels are published after every poll (the recorder reads it).
    pub live: watch::Sender<crate::recorder::LiveMap>,
}

/// What changed for one channel between two answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Online(LiveStream),
    Offline { stream: LiveStream, seen_ms: i64 },
}

/// Compares what was known live in `batch` with what Helix answered, updating `known`.
pub fn diff(
    known: &mut HashMap<String, LiveStream>,
    batch: &[String],
    answer: Vec<LiveStream>,
    now_ms: i64,
) -> Vec<Change> {
    let mut live: HashMap<String, LiveStream> = answer
        .into_iter()
        .map(|s| (s.user_login.to_ascii_lowercase(), s))
        .collect();
    let mut out = Vec::new();
    for login in batch {
        match (known.remove(login), live.remove(login)) {
            (None, Some(s)) => {
                out.push(Change::Online(s.clone()));
                known.insert(login.clone(), s);
            }
            (Some(k), Some(s)) => {
                if k.id != s.id {
                    out.push(Change::Offline {
                        stream: k,
                        seen_ms: now_ms,
                    });
                    out.push(Change::Online(s.clone()));
                }
                known.insert(login.clone(), s);
            }
            (Some(k), None) => out.push(Change::Offline {
                stream: k,
                seen_ms: now_ms,
            }),
            (None, None) => {}
        }
    }
    out
}

fn rfc3339_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

impl Change {
    /// The change as an event travelling with the chat messages.
    pub fn to_message(&self) -> ChatMessage {
        let (kind, s, ts_ms) = match self {
            Change::Online(s) => (
                ONLINE_KIND,
                s,
                rfc3339_ms(&s.started_at).unwrap_or_else(now_ms),
            ),
            Change::Offline { stream, seen_ms } => (OFFLINE_KIND, stream, *seen_ms),
        };
        let mut fields = BTreeMap::new();
        let mut put = |k: &str, v: Value| {
            fields.insert(k.to_owned(), v);
        };
        put("stream_id", Value::Str(s.id.clone()));
        put("title", Value::Str(s.title.clone()));
        put("game_id", Value::Str(s.game_id.clone()));
        put("game_name", Value::Str(s.game_name.clone()));
        put("viewer_count", Value::Int(s.viewer_count));
        put("started_at", Value::Str(s.started_at.clone()));
        ChatMessage {
            id: format!("{kind}:{}", s.id),
            kind: kind.into(),
            channel: s.user_login.to_ascii_lowercase(),
            channel_id: s.user_id.clone(),
            user: String::new(),
            user_id: String::new(),
            display_name: s.user_name.clone(),
            text: s.title.clone(),
            ts_ms,
            badges: Vec::new(),
            emotes: Vec::new(),
            fields,
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Polls until `cancel` fires.
pub async fn run(p: HelixPoller, cancel: CancellationToken) -> Result<(), HelixError> {
    let stats = HelixStats::new(&p.registry)?;
    let mut client = Client::new(&p.config, p.secret.clone());
    let shard = p.shard;
    let mine = |all: &[String]| -> Vec<String> {
        let set: BTreeSet<String> = all.iter().filter(|c| shard.owns(c)).cloned().collect();
        set.into_iter().collect()
    };
    let mut channels_rx = p.channels;
    let mut channels = mine(&channels_rx.borrow_and_update());
    let mut edits_open = true;
    let mut known: HashMap<String, LiveStream> = HashMap::new();
    let mut tick = tokio::time::interval(p.config.interval.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(
        api = %client.api_url,
        channels = channels.len(),
        interval = ?p.config.interval.0,
        points_per_minute = p.config.points_per_minute,
        budget = p.budget.describe(),
        "helix stream status polling"
    );
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = channels_rx.changed(), if edits_open => {
                if changed.is_err() {
                    edits_open = false;
                    continue;
                }
                let before = std::mem::replace(&mut channels, mine(&channels_rx.borrow_and_update()));
                for c in before.iter().filter(|c| channels.binary_search(c).is_err()) {
                    // Unfollowed: no longer reported either way.
                    let _ = stats.channel_live.remove_label_values(&[c.as_str()]);
                }
                // A channel no longer listed is no longer followed: forget it silently
                // (it did not go offline).
                known.retain(|c, _| channels.binary_search(c).is_ok());
                stats.live.set(known.len() as i64);
                p.live.send_replace(known.clone().into_iter().collect());
            }
            _ = tick.tick() => {
                let poll = poll_once(&mut client, &p.budget, &stats, &channels, &mut known);
                let changes = tokio::select! {
                    _ = cancel.cancelled() => break,
                    c = poll => c,
                };
                stats.live.set(known.len() as i64);
                // Status events first, so a recording's metadata follows its stream.online.
                let live_now: crate::recorder::LiveMap = known.clone().into_iter().collect();
                for c in changes {
                    let m = c.to_message();
                    tracing::info!(kind = %m.kind, channel = %m.channel, stream_id = %c.stream_id(), "helix: stream status changed");
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        r = p.tx.send(m) => if r.is_err() { return Ok(()) },
                    }
                    p.stats.received.inc();
                }
                p.live.send_replace(live_now);
            }
        }
    }
    Ok(())
}

impl Change {
    fn stream_id(&self) -> &str {
        match self {
            Change::Online(s) | Change::Offline { stream: s, .. } => &s.id,
        }
    }
}

/// One round over every batch. Errors of one batch are logged and leave its channels as
/// they were. A budget store failure (MongoDB down) ends the round early: no request is
/// sent without a point, the rest keep their status, and the next tick tries again, so a
/// database outage pauses status polling but never stops the collector's chat.
async fn poll_once(
    client: &mut Client,
    budget: &Budget,
    stats: &HelixStats,
    channels: &[String],
    known: &mut HashMap<String, LiveStream>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for batch in channels.chunks(BATCH) {
        match fetch(client, budget, stats, batch).await {
            Ok(live) => {
                changes.extend(diff(known, batch, live, now_ms()));
                for c in batch {
                    let label = stats.labels.label(c);
                    if label != crate::sources::twitch::OTHER_CHANNELS {
                        stats
                            .channel_live
                            .with_label_values(&[label])
                            .set(i64::from(known.contains_key(c)));
                    }
                }
            }
            Err(HelixError::Budget(e)) => {
                stats.budget_errors.inc();
                tracing::warn!(error = %e, "helix: rate-limit budget unavailable; polling paused until the next round");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, channels = batch.len(), "helix: batch not polled; their status is unchanged until the next poll");
            }
        }
    }
    changes
}

/// One batch, with its retries: a 401 renews the token once, a 429 waits for the reset.
async fn fetch(
    client: &mut Client,
    budget: &Budget,
    stats: &HelixStats,
    batch: &[String],
) -> Result<Vec<LiveStream>, HelixError> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let token = client.token(stats).await.inspect_err(|_| {
            stats.requests.with_label_values(&["error"]).inc();
        })?;
        let waited = budget.acquire().await?;
        stats.budget_wait.inc_by(waited.as_secs_f64());
        let answer = client.get_streams(&token, batch).await;
        match answer {
            Ok(Answer::Page(data, h)) => {
                stats.requests.with_label_values(&["ok"]).inc();
                if let Some(r) = h.remaining {
                    stats.remaining.set(r);
                }
                if h.remaining == Some(0) {
                    // Twitch's bucket is empty (someone else uses this client id too): wait
                    // for its next point, one minute / limit.
                    stats.rate_limited.inc();
                    let point_ms = 60_000 / h.limit.filter(|l| *l > 0).unwrap_or(800);
                    budget.drain_until(now_ms() + point_ms.max(1)).await?;
                }
                return Ok(data);
            }
            Ok(Answer::Unauthorized) => {
                stats.requests.with_label_values(&["unauthorized"]).inc();
                tracing::warn!("helix: token refused (401); getting a new one");
                client.token = None;
                last = Some(HelixError::Status {
                    what: "get streams",
                    url: format!("{}/streams", client.api_url),
                    status: 401,
                    detail: String::new(),
                });
            }
            Ok(Answer::RateLimited(h)) => {
                stats.requests.with_label_values(&["rate_limited"]).inc();
                stats.rate_limited.inc();
                let until = reset_ms(h);
                tracing::warn!(
                    reset_in_ms = until - now_ms(),
                    "helix: rate limited (429); waiting for the reset"
                );
                budget.drain_until(until).await?;
                last = Some(HelixError::Status {
                    what: "get streams",
                    url: format!("{}/streams", client.api_url),
                    status: 429,
                    detail: String::new(),
                });
            }
            Err(e) => {
                stats.requests.with_label_values(&["error"]).inc();
                return Err(e);
            }
        }
    }
    Err(last.expect("at least one attempt"))
}

/// When to try again after a 429: Twitch's `Ratelimit-Reset` (Unix seconds, when its bucket
/// is full again), at most two minutes away; a second from now when Helix did not say.
fn reset_ms(h: RateHeaders) -> i64 {
    let now = now_ms();
    match h.reset {
        Some(s) if s * 1000 > now => (s * 1000).min(now + 120_000),
        _ => now + 1000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(login: &str, id: &str) -> LiveStream {
        LiveStream {
            id: id.into(),
            user_id: format!("{login}-id"),
            user_login: login.into(),
            user_name: login.to_uppercase(),
            game_id: "1".into(),
            game_name: "Just Chatting".into(),
            title: "hello".into(),
            viewer_count: 5,
            started_at: "2026-11-27T10:00:00Z".into(),
        }
    }

    #[test]
    fn diff_reports_online_new_stream_and_offline() {
        let batch: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let mut known = HashMap::new();
        let c = diff(&mut known, &batch, vec![live("a", "1"), live("B", "2")], 5);
        assert_eq!(
            c,
            vec![
                Change::Online(live("a", "1")),
                Change::Online(live("B", "2"))
            ]
        );
        // Same streams: nothing. Then a restarts as stream 3 and b ends.
        assert!(diff(&mut known, &batch, vec![live("a", "1"), live("b", "2")], 6).is_empty());
        let c = diff(&mut known, &batch, vec![live("a", "3")], 7);
        assert_eq!(
            c,
            vec![
                Change::Offline {
                    stream: live("a", "1"),
                    seen_ms: 7
                },
                Change::Online(live("a", "3")),
                Change::Offline {
                    stream: live("b", "2"),
                    seen_ms: 7
                },
            ]
        );
        assert_eq!(known.len(), 1);
    }

    #[test]
    fn events_have_stable_ids_and_the_stream_fields() {
        let m = Change::Online(live("a", "42")).to_message();
        assert_eq!(m.id, "stream.online:42");
        assert_eq!(m.kind, ONLINE_KIND);
        assert_eq!(m.channel, "a");
        assert_eq!(m.channel_id, "a-id");
        assert_eq!(m.ts_ms, rfc3339_ms("2026-11-27T10:00:00Z").unwrap());
        assert_eq!(m.fields["stream_id"], Value::Str("42".into()));
        let off = Change::Offline {
            stream: live("a", "42"),
            seen_ms: 9,
        }
        .to_message();
        assert_eq!(off.id, "stream.offline:42");
        assert_eq!(off.ts_ms, 9);
    }
}
