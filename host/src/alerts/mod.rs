//! Alert delivery: routes alerts raised by steps to the sinks `[alerts]` names per topic
//! (`console`, `sns.NAME`, `webhook.NAME`), durably.
//!
//! Delivery is an outbox. The sink that stores a batch also writes, in the same
//! transaction, one `alert_deliveries` row per new alert and sink (status `pending`). The
//! [`dispatcher`] task reads those rows, delivers, and records the outcome: `delivered`,
//! or a retry time with exponential backoff and jitter, and after
//! `[alerts.delivery] max_attempts` failures `dead_letter`, retried at a slower cadence
//! until the sink answers again. Rows outlive the process, so a restart resumes them.
//!
//! Guarantees: an alert is recorded once per dedupe key (the `alerts` primary key), and
//! each (alert, sink) row is marked delivered once, after which it is never sent again.
//! The remaining window is a crash (or kill) after a sink accepted an alert and before the
//! row was marked: the next run sends it again. SNS FIFO topics close that window within
//! SNS's 5-minute deduplication interval (the dedupe key is the deduplication id); for
//! standard topics and webhooks, subscribers should treat the `dedupe_key` as idempotency
//! key. Two runs over the same store at once are not supported (both would deliver).

pub mod dispatcher;
pub mod outbox;
pub mod sns;
pub mod webhook;

use crate::pipeline::config::AlertsConfig;
use std::collections::BTreeMap;
use std::io::Write;

/// Which sinks each topic goes to, by sink name (`console`, `sns.hype`, `webhook.ops`).
#[derive(Debug, Clone, Default)]
pub struct Routes {
    default: Vec<String>,
    topics: BTreeMap<String, Vec<String>>,
}

impl Routes {
    /// The routes of a validated `[alerts]` table.
    pub fn new(cfg: &AlertsConfig) -> Self {
        let names = |v: &[toml::Spanned<String>]| -> Vec<String> {
            let mut out: Vec<String> = Vec::new();
            for s in v {
                // A sink listed twice still gets the alert once.
                if !out.contains(s.get_ref()) {
                    out.push(s.get_ref().clone());
                }
            }
            out
        };
        Routes {
            default: names(&cfg.default),
            topics: cfg
                .topics
                .iter()
                .map(|(t, r)| (t.clone(), names(&r.to)))
                .collect(),
        }
    }

    /// Sink names for `topic`.
    pub fn sinks_for(&self, topic: &str) -> &[String] {
        self.topics.get(topic).unwrap_or(&self.default)
    }

    /// Every sink name some route uses.
    pub fn all_sinks(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .default
            .iter()
            .chain(self.topics.values().flatten())
            .cloned()
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// An alert as recorded in the store: what every sink delivers.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAlert {
    pub dedupe_key: String,
    pub topic: String,
    pub severity: String,
    pub title: String,
    pub body: String,
    /// Attributes the plugin set (`channel`, `rule`, `count`, ...).
    pub attributes: BTreeMap<String, String>,
    pub channel: String,
    /// When the store recorded it (Unix ms).
    pub at_ms: i64,
}

impl StoredAlert {
    /// The rule that fired: the plugin's `rule` attribute, else the topic.
    pub fn rule(&self) -> &str {
        self.attributes
            .get("rule")
            .map(String::as_str)
            .unwrap_or(&self.topic)
    }

    /// The channel's page.
    pub fn channel_url(&self) -> String {
        format!("https://twitch.tv/{}", self.channel)
    }

    /// Recorded time as RFC 3339.
    pub fn at_rfc3339(&self) -> String {
        chrono::DateTime::from_timestamp_millis(self.at_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    }

    /// The body a person reads (SNS message, webhook `text`): the plugin's body plus what
    /// a reader needs to act on it (channel link, rule, severity, when).
    pub fn human_body(&self) -> String {
        let mut s = String::new();
        s.push_str(&self.title);
        s.push_str("\n\n");
        if !self.body.is_empty() {
            s.push_str(&self.body);
            s.push_str("\n\n");
        }
        let url = self.channel_url();
        if !self.body.contains(&url) {
            s.push_str(&format!("Channel: #{} {url}\n", self.channel));
        }
        if let Some(count) = self.attributes.get("count") {
            s.push_str(&format!("Count: {count}\n"));
        }
        s.push_str(&format!(
            "Rule: {} | Severity: {} | Topic: {}\nRaised: {}\nAlert id: {}\n",
            self.rule(),
            self.severity,
            self.topic,
            self.at_rfc3339(),
            self.dedupe_key
        ));
        s
    }
}

/// Why one delivery failed. Messages carry the service's error code and message only:
/// never request dumps, headers or credentials.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("sink {sink:?} is not configured in [alerts] any more (kept pending)")]
    UnknownSink { sink: String },
    #[error("console: {0}")]
    Console(#[from] std::io::Error),
    #[error("sns {sink:?}: {reason}")]
    Sns { sink: String, reason: String },
    #[error("webhook {sink:?}: {reason}")]
    Webhook { sink: String, reason: String },
}

/// A delivery sink, built from `[alerts]`.
pub enum Sink {
    /// Prints the alert to standard output.
    Console,
    /// Publishes to an SNS topic.
    Sns(sns::SnsSink),
    /// POSTs JSON to a URL.
    Webhook(webhook::WebhookSink),
}

impl Sink {
    /// Delivers one alert; `Ok` means the sink accepted it.
    pub async fn deliver(&self, a: &StoredAlert) -> Result<(), DeliveryError> {
        match self {
            Sink::Console => Ok(print_console(a)?),
            Sink::Sns(s) => s.publish(a).await,
            Sink::Webhook(w) => w.post(a).await,
        }
    }
}

/// Builds every sink `[alerts]` defines and the routes use, keyed by sink name.
pub async fn build_sinks(cfg: &AlertsConfig) -> BTreeMap<String, Sink> {
    let mut sinks = BTreeMap::new();
    for name in Routes::new(cfg).all_sinks() {
        let sink = match name.split_once('.') {
            Some(("sns", n)) => match cfg.sns.get(n) {
                Some(c) => Sink::Sns(sns::SnsSink::new(&name, c).await),
                None => continue,
            },
            Some(("webhook", n)) => match cfg.webhook.get(n) {
                Some(c) => Sink::Webhook(webhook::WebhookSink::new(&name, c)),
                None => continue,
            },
            _ if name == "console" => Sink::Console,
            // Validation rejects unknown names; a row naming one stays pending.
            _ => continue,
        };
        sinks.insert(name, sink);
    }
    sinks
}

/// One line per alert on standard output.
fn print_console(a: &StoredAlert) -> std::io::Result<()> {
    let attrs: Vec<String> = a
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "ALERT [{}] {} #{}: {}{}{}",
        a.severity,
        a.topic,
        a.channel,
        a.title,
        if a.body.is_empty() {
            String::new()
        } else {
            format!(" — {}", a.body)
        },
        if attrs.is_empty() {
            String::new()
        } else {
            format!(" ({})", attrs.join(", "))
        },
    )?;
    out.flush()
}
