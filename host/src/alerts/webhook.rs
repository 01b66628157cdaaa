//! The `webhook` sink: POSTs each alert as one JSON object to a URL; any 2xx answer counts
//! as delivered, anything else (or no answer) as a failed attempt, retried by the outbox.
//!
//! The object: `dedupe_key` (use it as an idempotency key: a crash between the POST and
//! recording it sends it again), `topic`, `severity`, `title`, `body`, `text` (the
//! human-readable message), `channel`, `channel_url`, `rule`, `attributes`, `raised_at`.

use super::{DeliveryError, StoredAlert};
use crate::pipeline::config::WebhookSinkConfig;
use std::time::Duration;

/// One webhook URL.
pub struct WebhookSink {
    name: String,
    url: String,
    agent: ureq::Agent,
}

impl WebhookSink {
    pub fn new(name: &str, cfg: &WebhookSinkConfig) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(cfg.timeout.0))
            .timeout_connect(Some(cfg.timeout.0.min(Duration::from_secs(3))))
            .build()
            .new_agent();
        WebhookSink {
            name: name.to_owned(),
            url: cfg.url.get_ref().clone(),
            agent,
        }
    }

    /// The JSON document sent for `a`.
    pub fn payload(a: &StoredAlert) -> serde_json::Value {
        serde_json::json!({
            "dedupe_key": a.dedupe_key,
            "topic": a.topic,
            "severity": a.severity,
            "title": a.title,
            "body": a.body,
            "text": a.human_body(),
            "channel": a.channel,
            "channel_url": a.channel_url(),
            "rule": a.rule(),
            "attributes": a.attributes,
            "raised_at": a.at_rfc3339(),
        })
    }

    /// POSTs one alert (on a blocking thread: ureq is synchronous).
    pub async fn post(&self, a: &StoredAlert) -> Result<(), DeliveryError> {
        let (agent, url, body) = (self.agent.clone(), self.url.clone(), Self::payload(a));
        let res = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let resp = agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body.to_string().as_bytes())
                // ureq's errors name the host and the cause, not headers or bodies.
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {}", status.as_u16()))
            }
        })
        .await
        .unwrap_or_else(|e| Err(format!("request task failed: {e}")));
        res.map_err(|reason| DeliveryError::Webhook {
            sink: self.name.clone(),
            reason,
        })
    }
}
