//! The `sns` sink: publishes each alert to an Amazon SNS topic.
//!
//! Subject (under SNS's 100-character limit), a body a person reads, and message
//! attributes `channel`, `rule`, `severity`, `topic` so subscriptions can filter. FIFO
//! topics (`.fifo`) get the channel as message group and the alert's dedupe key as
//! deduplication id. The SDK's own retries are off: the outbox retries, so attempts are
//! counted in one place. Errors carry the service's code and message, never request dumps.

use super::{DeliveryError, StoredAlert};
use crate::pipeline::config::{SnsSinkConfig, sns_arn_region};
use aws_config::BehaviorVersion;
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sns::types::MessageAttributeValue;
use sha2::Digest;
use std::time::Duration;

/// SNS rejects subjects of 100 characters or more.
pub const MAX_SUBJECT_CHARS: usize = 99;
/// SNS's limit for MessageGroupId and MessageDeduplicationId.
const MAX_FIFO_ID: usize = 128;

/// One SNS topic.
pub struct SnsSink {
    name: String,
    topic_arn: String,
    fifo: bool,
    client: aws_sdk_sns::Client,
}

impl SnsSink {
    /// A client for `cfg` with the standard credential chain; credentials are resolved at
    /// the first publish, so a missing one shows as a failed (retried) delivery.
    pub async fn new(name: &str, cfg: &SnsSinkConfig) -> Self {
        let arn = cfg.topic_arn.get_ref().clone();
        let region = cfg
            .region
            .as_ref()
            .map(|r| r.get_ref().clone())
            .or_else(|| sns_arn_region(&arn).ok().map(str::to_owned))
            .unwrap_or_default();
        let t = cfg.timeout.0;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(region))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(t.min(Duration::from_secs(3)))
                    .operation_timeout(t)
                    .build(),
            );
        if let Some(u) = &cfg.endpoint_url {
            loader = loader.endpoint_url(u.get_ref());
        }
        let conf = loader.load().await;
        SnsSink {
            name: name.to_owned(),
            fifo: arn.ends_with(".fifo"),
            topic_arn: arn,
            client: aws_sdk_sns::Client::new(&conf),
        }
    }

    /// Publishes one alert.
    pub async fn publish(&self, a: &StoredAlert) -> Result<(), DeliveryError> {
        let fail = |reason: String| DeliveryError::Sns {
            sink: self.name.clone(),
            reason,
        };
        let mut req = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(subject(a))
            .message(a.human_body());
        for (k, v) in attributes(a) {
            let val = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(|e| fail(format!("message attribute {k:?}: {e}")))?;
            req = req.message_attributes(k, val);
        }
        if self.fifo {
            req = req
                .message_group_id(fifo_id(&a.channel))
                .message_deduplication_id(fifo_id(&a.dedupe_key));
        }
        req.send().await.map(|_| ()).map_err(|e| fail(describe(&e)))
    }
}

/// `[severity] title`, one line, at most [`MAX_SUBJECT_CHARS`] characters.
pub fn subject(a: &StoredAlert) -> String {
    let raw = format!("[{}] {}", a.severity, a.title);
    // No line breaks or control characters; runs of whitespace become one space.
    let clean = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if clean.chars().count() <= MAX_SUBJECT_CHARS {
        return clean;
    }
    let mut s: String = clean.chars().take(MAX_SUBJECT_CHARS - 3).collect();
    s.truncate(s.trim_end().len());
    s.push_str("...");
    s
}

/// Message attributes subscribers filter on; empty values are left out (SNS rejects them).
pub fn attributes(a: &StoredAlert) -> Vec<(&'static str, String)> {
    [
        ("channel", a.channel.clone()),
        ("rule", a.rule().to_owned()),
        ("severity", a.severity.clone()),
        ("topic", a.topic.clone()),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .collect()
}

/// A FIFO group or deduplication id: the value when SNS accepts it (≤ 128 printable ASCII
/// characters), else its SHA-256 in hex, which is stable for the same value.
pub fn fifo_id(v: &str) -> String {
    if !v.is_empty() && v.len() <= MAX_FIFO_ID && v.chars().all(|c| c.is_ascii_graphic()) {
        v.to_owned()
    } else {
        hex::encode(sha2::Sha256::digest(v.as_bytes()))
    }
}

/// The error's code and message, or its kind and causes, without the request or response
/// (which carry signed headers).
fn describe<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: &SdkError<E, aws_sdk_sns::config::http::HttpResponse>,
) -> String {
    let causes = |e: &dyn std::error::Error| {
        let mut out = Vec::new();
        let mut cur = e.source();
        while let Some(c) = cur {
            let s = c.to_string();
            if !out.contains(&s) {
                out.push(s);
            }
            cur = c.source();
        }
        let mut s = out.join(": ");
        if s.len() > 300 {
            let mut cut = 300;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push_str("...");
        }
        s
    };
    match e {
        SdkError::ServiceError(se) => format!(
            "{} (HTTP {}): {}",
            se.err().code().unwrap_or("error"),
            se.raw().status().as_u16(),
            se.err().message().unwrap_or("no message")
        ),
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_io() {
                "connection failed"
            } else if d.is_timeout() {
                "timed out"
            } else if d.is_user() {
                "request rejected by the client"
            } else {
                "dispatch failure"
            };
            format!("{kind}: {}", causes(e))
        }
        SdkError::ResponseError(_) => format!("unreadable response: {}", causes(e)),
        SdkError::ConstructionFailure(_) => {
            format!("could not build the request: {}", causes(e))
        }
        _ => "unknown error".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn alert(title: &str) -> StoredAlert {
        StoredAlert {
            dedupe_key: "hype:pixelqueen:1732700000000".into(),
            topic: "hype".into(),
            severity: "info".into(),
            title: title.into(),
            body: "Rule \"hype\" counted 150 matching messages".into(),
            attributes: BTreeMap::from([
                ("rule".to_owned(), "hype".to_owned()),
                ("count".to_owned(), "150".to_owned()),
            ]),
            channel: "pixelqueen".into(),
            at_ms: 1_732_700_000_000,
        }
    }

    #[test]
    fn subject_is_one_line_and_under_the_sns_limit() {
        assert_eq!(
            subject(&alert("hype: #pixelqueen 150 messages in 20s")),
            "[info] hype: #pixelqueen 150 messages in 20s"
        );
        let s = subject(&alert("line one\nline\ttwo\r\n  three"));
        assert_eq!(s, "[info] line one line two three");
        let long = "é".repeat(300);
        let s = subject(&alert(&long));
        assert_eq!(s.chars().count(), MAX_SUBJECT_CHARS);
        assert!(s.ends_with("..."));
    }

    #[test]
    fn body_has_rule_channel_count_and_link() {
        let b = alert("t").human_body();
        for want in [
            "Rule: hype",
            "https://twitch.tv/pixelqueen",
            "Count: 150",
            "Severity: info",
            "Alert id: hype:pixelqueen:1732700000000",
            "Raised: 2024-11-27T09:33:20Z",
        ] {
            assert!(b.contains(want), "{want:?} missing in {b}");
        }
        let attrs = attributes(&alert("t"));
        assert_eq!(
            attrs,
            [
                ("channel", "pixelqueen".to_owned()),
                ("rule", "hype".to_owned()),
                ("severity", "info".to_owned()),
                ("topic", "hype".to_owned())
            ]
        );
    }

    #[test]
    fn fifo_ids_are_kept_or_hashed_stably() {
        assert_eq!(fifo_id("hype:pixelqueen:1"), "hype:pixelqueen:1");
        let long = "k".repeat(200);
        assert_eq!(fifo_id(&long).len(), 64);
        assert_eq!(fifo_id(&long), fifo_id(&long));
        assert_eq!(fifo_id("with space").len(), 64);
    }
}
