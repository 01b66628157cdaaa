//! The `replay` source: a log of raw Twitch IRC lines, replayed at a configured rate.
//!
//! Malformed lines are counted and reported with their line numbers (first
//! [`MAX_REPORTED`] kept), never fatal and never silently skipped.

use crate::metrics::PipelineStats;
use crate::pipeline::config::{Rate, ReplayConfig};
use crate::sources::irc;
use crate::transport::memory::MemorySender;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Malformed lines kept for the report; all are counted.
pub const MAX_REPORTED: usize = 100;

/// Problems found in the log, for the run summary.
#[derive(Debug, Default, Clone)]
pub struct ReplayReport {
    /// `(line number, reason)` of the first malformed lines.
    pub malformed: Vec<(usize, String)>,
    /// Passes over the file completed.
    pub passes: u64,
}

/// Errors that stop the source.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read replay log {path:?}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("replay log {0:?} holds no chat message at all")]
    Empty(PathBuf),
}

/// Replays `cfg.path` into `tx` until the log ends (or forever with `loop = true`), or until
/// `cancel` fires.
pub async fn run(
    cfg: ReplayConfig,
    path: PathBuf,
    tx: MemorySender,
    stats: Arc<PipelineStats>,
    report: Arc<Mutex<ReplayReport>>,
    cancel: CancellationToken,
) -> Result<(), ReplayError> {
    let text = tokio::fs::read_to_string(&path)
        .await
        .map_err(|source| ReplayError::Read {
            path: path.clone(),
            source,
        })?;
    let (msgs, bad) = parse_log(&path, &text);
    stats.malformed.add(bad.len() as u64);
    {
        let mut r = report.lock().expect("report lock");
        r.malformed = bad.into_iter().take(MAX_REPORTED).collect();
    }
    if msgs.is_empty() {
        return Err(ReplayError::Empty(path));
    }
    let span = msgs.last().map(|m| m.ts_ms).unwrap_or(0) - msgs[0].ts_ms + 1000;
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut pass: u64 = 0;
    loop {
        for m in &msgs {
            let mut m = m.clone();
            if pass > 0 {
                m.id = format!("{}~{pass}", m.id);
                m.ts_ms += span * pass as i64;
            }
            if let Rate::PerSecond(r) = cfg.rate {
                let due = started + Duration::from_secs_f64(sent as f64 / r);
                let now = Instant::now();
                if due > now {
                    tokio::select! {
                        _ = tokio::time::sleep(due - now) => {}
                        _ = cancel.cancelled() => return Ok(()),
                    }
                }
            }
            tokio::select! {
                res = tx.send(m) => if res.is_err() { return Ok(()) },
                _ = cancel.cancelled() => return Ok(()),
            }
            sent += 1;
            stats.received.inc();
        }
        pass += 1;
        report.lock().expect("report lock").passes = pass;
        if !cfg.repeat {
            return Ok(());
        }
    }
}

/// Parses every line; returns the messages and `(line number, reason)` for bad lines.
pub fn parse_log(
    path: &Path,
    text: &str,
) -> (Vec<streamtap_plugin_sdk::ChatMessage>, Vec<(usize, String)>) {
    let mut msgs = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        match irc::parse_line(line) {
            Ok(m) => msgs.push(m),
            Err(e) => {
                tracing::warn!(file = %path.display(), line = i + 1, error = %e, "skipping malformed replay line");
                bad.push((i + 1, e.to_string()));
            }
        }
    }
    (msgs, bad)
}
