//! Alert delivery: routes alerts raised by steps to the sinks `[alerts]` names per topic.
//!
//! Alerts reach the router only after the store recorded them under their dedupe key, so
//! each alert is delivered once even when the message that raised it is processed again.

use crate::pipeline::chain::RaisedAlert;
use crate::pipeline::config::AlertsConfig;
use std::collections::BTreeMap;
use std::io::Write;

/// A delivery sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertSink {
    /// Prints the alert to standard output.
    Console,
}

impl AlertSink {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "console" => Some(AlertSink::Console),
            _ => None,
        }
    }
}

/// Routes alerts by topic.
#[derive(Debug, Clone)]
pub struct AlertRouter {
    default: Vec<AlertSink>,
    topics: BTreeMap<String, Vec<AlertSink>>,
}

impl AlertRouter {
    /// Builds the router; sink names were validated with the pipeline file.
    pub fn new(cfg: &AlertsConfig) -> Self {
        let sinks = |v: &[toml::Spanned<String>]| -> Vec<AlertSink> {
            v.iter()
                .filter_map(|s| AlertSink::from_name(s.get_ref()))
                .collect()
        };
        AlertRouter {
            default: sinks(&cfg.default),
            topics: cfg
                .topics
                .iter()
                .map(|(t, r)| (t.clone(), sinks(&r.to)))
                .collect(),
        }
    }

    /// Delivers one alert to every sink of its topic.
    pub fn deliver(&self, a: &RaisedAlert) -> std::io::Result<()> {
        let sinks = self.topics.get(&a.alert.topic).unwrap_or(&self.default);
        for s in sinks {
            match s {
                AlertSink::Console => {
                    let attrs: Vec<String> = a
                        .alert
                        .attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    let mut out = std::io::stdout().lock();
                    writeln!(
                        out,
                        "ALERT [{}] {} #{}: {}{}{}",
                        a.alert.severity,
                        a.alert.topic,
                        a.channel,
                        a.alert.title,
                        if a.alert.body.is_empty() {
                            String::new()
                        } else {
                            format!(" — {}", a.alert.body)
                        },
                        if attrs.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", attrs.join(", "))
                        },
                    )?;
                }
            }
        }
        Ok(())
    }
}
