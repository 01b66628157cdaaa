//! Counters owned by the components that update them.
//!
//! Each component creates its own stats struct and hands an `Arc` to whoever reports on it
//! (progress lines, the run summary); there are no global registries. Prometheus export
//! reads the same counters.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counts by a small fixed set of labels (error kinds).
#[derive(Debug, Default)]
pub struct LabeledCounter(Mutex<BTreeMap<&'static str, u64>>);

impl LabeledCounter {
    pub fn inc(&self, label: &'static str) {
        *self
            .0
            .lock()
            .expect("counter lock")
            .entry(label)
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().expect("counter lock").clone()
    }

    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }
}

/// Per-step statistics; survive reloads of the step (they are keyed by step name).
#[derive(Debug, Default)]
pub struct StepStats {
    /// `process` calls, including one-at-a-time retries.
    pub calls: Counter,
    /// Messages handed to the step.
    pub messages: Counter,
    /// Time spent in the step, including encoding and applying actions.
    pub nanos: Counter,
    /// Messages the step dropped (plugin action or `on_error = "drop"`).
    pub dropped: Counter,
    /// Instances replaced after a trap.
    pub restarts: Counter,
    /// Failures by kind (`trap`, `timeout`, `oom`, `plugin_error`, `bad_output`).
    pub errors: LabeledCounter,
}

impl StepStats {
    pub fn record_batch(&self, messages: u64, took: Duration) {
        self.messages.add(messages);
        self.nanos.add(took.as_nanos() as u64);
    }

    /// Mean time per message, in nanoseconds.
    pub fn ns_per_message(&self) -> f64 {
        let m = self.messages.get();
        if m == 0 {
            0.0
        } else {
            self.nanos.get() as f64 / m as f64
        }
    }
}

/// Whole-pipeline statistics.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Messages the source produced.
    pub received: Counter,
    /// Source lines that could not be parsed.
    pub malformed: Counter,
    /// Messages processed by the chain (each exactly once).
    pub processed: Counter,
    /// Messages newly written by the sink.
    pub stored: Counter,
    /// Messages the sink already had (same id).
    pub duplicates: Counter,
    /// Messages dropped by steps.
    pub dropped: Counter,
    /// Messages written to the dead-letter table.
    pub dead_lettered: Counter,
    /// Alerts raised and new (not seen before under their dedupe key).
    pub alerts_fired: Counter,
    /// Alerts delivered to every sink of their topic.
    pub alerts_delivered: Counter,
    /// Pipeline generations swapped in by hot reload.
    pub reloads_ok: Counter,
    /// Reload attempts rejected (the previous generation kept running).
    pub reloads_failed: Counter,
}
