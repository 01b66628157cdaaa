//! Metrics owned by the components that update them, exported to Prometheus.
//!
//! Each component creates its own stats struct (unregistered Prometheus collectors) and hands
//! an `Arc` to whoever reports on it: the progress line, the run summary, and the process's
//! [`prometheus::Registry`], which the run creates and passes down — there are no global
//! registries, so two pipelines in one process (tests, benchmarks) never share counters.
//! [`server`] serves the registry over HTTP with `/health` and `/ready`.

pub mod server;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Metric name prefix.
const NS: &str = "streamtap";

/// A monotonically increasing count (a Prometheus counter, or a child of a labelled one).
#[derive(Debug, Clone)]
pub struct Counter(IntCounter);

impl Counter {
    /// A counter named `streamtap_<name>`, not yet registered anywhere.
    fn new(name: &str, help: &str) -> Self {
        Counter(IntCounter::with_opts(Opts::new(name, help).namespace(NS)).expect("valid counter"))
    }

    pub fn inc(&self) {
        self.0.inc();
    }

    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }

    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// Counts by one label with a small fixed set of values (error kinds), keeping a snapshot
/// for the run summary alongside the Prometheus vector.
#[derive(Debug)]
pub struct LabeledCounter {
    vec: IntCounterVec,
    seen: Mutex<BTreeMap<&'static str, u64>>,
}

impl LabeledCounter {
    /// `values` are exported at zero from the start: a series that appears only on the
    /// first error makes `rate()` and alert rules miss that error.
    fn new(opts: Opts, label: &str, values: &[&str]) -> Self {
        let vec = IntCounterVec::new(opts, &[label]).expect("valid counter vec");
        for v in values {
            vec.with_label_values(&[*v]);
        }
        LabeledCounter {
            vec,
            seen: Mutex::default(),
        }
    }

    pub fn inc(&self, value: &'static str) {
        self.vec.with_label_values(&[value]).inc();
        *self
            .seen
            .lock()
            .expect("counter lock")
            .entry(value)
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.seen.lock().expect("counter lock").clone()
    }

    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }
}

/// Buckets for one plugin call: 10 µs to ~5 s.
fn call_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(1e-5, 2.5, 15).expect("valid buckets")
}

/// Per-step statistics; survive reloads of the step (they are keyed by step name).
#[derive(Debug)]
pub struct StepStats {
    /// `process` calls, including one-at-a-time retries.
    pub calls: Counter,
    /// Messages handed to the step.
    pub messages: Counter,
    /// Time per call, including encoding and applying actions, by plugin content hash
    /// (first 12 hex digits), so a reload that made a step slower shows as a new series.
    /// Only the hash in use has a series: the previous one is removed when the new one
    /// is first recorded, so reloads do not pile up series.
    pub duration: HistogramVec,
    /// The `plugin_hash` of the series in `duration`.
    current_hash: std::sync::Mutex<Option<String>>,
    /// Total time in the step, for the run summary's time per message.
    nanos: AtomicU64,
    /// Messages the step dropped (plugin action or `on_error = "drop"`).
    pub dropped: Counter,
    /// Instances replaced after a trap.
    pub restarts: Counter,
    /// Failures by kind (`trap`, `timeout`, `oom`, `plugin_error`, `bad_output`).
    pub errors: LabeledCounter,
}

impl StepStats {
    /// Stats for the step named `step` (the `step` label of every series).
    pub fn new(step: &str) -> Self {
        let opts = |name: &str, help: &str| {
            Opts::new(name, help)
                .namespace(NS)
                .subsystem("step")
                .const_label("step", step)
        };
        let counter = |name: &str, help: &str| {
            Counter(IntCounter::with_opts(opts(name, help)).expect("valid counter"))
        };
        StepStats {
            calls: counter(
                "calls_total",
                "Plugin process calls, including isolation retries.",
            ),
            messages: counter("messages_total", "Messages handed to the step."),
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "call_duration_seconds",
                    "Time per process call, including batch encoding and applying actions, by plugin content hash.",
                )
                .namespace(NS)
                .subsystem("step")
                .const_label("step", step)
                .buckets(call_buckets()),
                &["plugin_hash"],
            )
            .expect("valid histogram"),
            current_hash: std::sync::Mutex::new(None),
            nanos: AtomicU64::new(0),
            dropped: counter("dropped_total", "Messages the step dropped."),
            restarts: counter(
                "restarts_total",
                "Plugin instances replaced after a trap, timeout or out-of-memory.",
            ),
            errors: LabeledCounter::new(
                opts(
                    "errors_total",
                    "Plugin failures by kind (trap, timeout, oom, plugin_error, bad_output).",
                ),
                "kind",
                crate::plugins::CallError::KINDS,
            ),
        }
    }

    /// Records one call of the plugin whose short content hash is `plugin_hash`.
    pub fn record_batch(&self, messages: u64, took: Duration, plugin_hash: &str) {
        self.messages.add(messages);
        {
            let mut current = self.current_hash.lock().expect("hash lock");
            if current.as_deref() != Some(plugin_hash)
                && let Some(old) = current.replace(plugin_hash.to_owned())
            {
                let _ = self.duration.remove_label_values(&[&old]);
            }
        }
        self.duration
            .with_label_values(&[plugin_hash])
            .observe(took.as_secs_f64());
        self.nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Mean time per message, in nanoseconds.
    pub fn ns_per_message(&self) -> f64 {
        let m = self.messages.get();
        if m == 0 {
            0.0
        } else {
            self.nanos.load(Ordering::Relaxed) as f64 / m as f64
        }
    }

    /// Adds this step's series to `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.calls.0.clone()))?;
        registry.register(Box::new(self.messages.0.clone()))?;
        registry.register(Box::new(self.duration.clone()))?;
        registry.register(Box::new(self.dropped.0.clone()))?;
        registry.register(Box::new(self.restarts.0.clone()))?;
        registry.register(Box::new(self.errors.vec.clone()))
    }
}

/// Whole-pipeline statistics.
#[derive(Debug)]
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
    /// Alerts delivered to every sink of their topic (counted when the last one is).
    pub alerts_delivered: Counter,
    /// Pipeline generations swapped in by hot reload.
    pub reloads_ok: Counter,
    /// Reload attempts rejected (the previous generation kept running).
    pub reloads_failed: Counter,
    /// Parent of `reloads_ok` and `reloads_failed` (label `result`).
    reloads: IntCounterVec,
}

impl Default for PipelineStats {
    fn default() -> Self {
        let reloads = IntCounterVec::new(
            Opts::new(
                "reloads_total",
                "Hot reloads by result: ok (swapped in) or failed (previous pipeline kept).",
            )
            .namespace(NS),
            &["result"],
        )
        .expect("valid counter vec");
        PipelineStats {
            received: Counter::new("source_messages_total", "Messages the source produced."),
            malformed: Counter::new(
                "source_malformed_total",
                "Source lines that could not be parsed (reported with line numbers).",
            ),
            processed: Counter::new(
                "processed_messages_total",
                "Messages run through the step chain.",
            ),
            stored: Counter::new("sink_stored_total", "Messages newly written by the sink."),
            duplicates: Counter::new(
                "sink_duplicates_total",
                "Messages the sink already had under the same id (skipped).",
            ),
            dropped: Counter::new("dropped_messages_total", "Messages dropped by steps."),
            dead_lettered: Counter::new(
                "dead_lettered_messages_total",
                "Messages written to the dead-letter table.",
            ),
            alerts_fired: Counter::new(
                "alerts_fired_total",
                "New alerts raised (first occurrence of their dedupe key).",
            ),
            alerts_delivered: Counter::new(
                "alerts_delivered_total",
                "Alerts delivered to every sink of their topic.",
            ),
            reloads_ok: Counter(reloads.with_label_values(&["ok"])),
            reloads_failed: Counter(reloads.with_label_values(&["failed"])),
            reloads,
        }
    }
}

impl PipelineStats {
    /// Adds the pipeline's series to `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        for c in [
            &self.received,
            &self.malformed,
            &self.processed,
            &self.stored,
            &self.duplicates,
            &self.dropped,
            &self.dead_lettered,
            &self.alerts_fired,
            &self.alerts_delivered,
        ] {
            registry.register(Box::new(c.0.clone()))?;
        }
        registry.register(Box::new(self.reloads.clone()))
    }
}

/// Sink write statistics (the sink's own; `PipelineStats` has what it stored).
#[derive(Debug)]
pub struct SinkStats {
    /// Write transactions (one per processed batch).
    pub batches: Counter,
    /// Messages per write.
    pub batch_size: Histogram,
    /// Time per write transaction.
    pub write_seconds: Histogram,
    /// Writes that failed (the run stops on the first: nothing is dropped silently).
    pub errors: Counter,
}

impl Default for SinkStats {
    fn default() -> Self {
        let hist = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(
                HistogramOpts::new(name, help)
                    .namespace(NS)
                    .subsystem("sink")
                    .buckets(buckets),
            )
            .expect("valid histogram")
        };
        SinkStats {
            batches: Counter::new("sink_batches_total", "Write transactions."),
            batch_size: hist(
                "batch_size",
                "Messages per write transaction.",
                prometheus::exponential_buckets(1.0, 2.0, 12).expect("valid buckets"),
            ),
            write_seconds: hist(
                "write_duration_seconds",
                "Time per write transaction.",
                prometheus::exponential_buckets(1e-4, 2.5, 14).expect("valid buckets"),
            ),
            errors: Counter::new("sink_errors_total", "Failed write transactions."),
        }
    }
}

impl SinkStats {
    /// Adds the sink's series to `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.batches.0.clone()))?;
        registry.register(Box::new(self.batch_size.clone()))?;
        registry.register(Box::new(self.write_seconds.clone()))?;
        registry.register(Box::new(self.errors.0.clone()))
    }
}

/// Alert delivery statistics, owned by the dispatcher. Per-sink series carry label `sink`
/// (`console`, `sns.NAME`, `webhook.NAME`), created at zero for every configured sink.
#[derive(Debug)]
pub struct AlertStats {
    /// Deliveries a sink accepted.
    pub delivered: IntCounterVec,
    /// Failed attempts (each is retried later: nothing is dropped).
    pub retried: IntCounterVec,
    /// Deliveries that became dead letters after `max_attempts` failures.
    pub dead_lettered: IntCounterVec,
    /// Deliveries in the store not delivered yet (pending and dead letters).
    pub pending: IntGauge,
    /// Of those, dead letters.
    pub dead_letters: IntGauge,
}

impl AlertStats {
    /// Stats with every series of `sinks` present from the start.
    pub fn new(sinks: &[String]) -> Self {
        let vec = |name: &str, help: &str| {
            let v = IntCounterVec::new(Opts::new(name, help).namespace(NS), &["sink"])
                .expect("valid counter vec");
            for s in sinks {
                v.with_label_values(&[s.as_str()]);
            }
            v
        };
        let gauge = |name: &str, help: &str| {
            IntGauge::with_opts(Opts::new(name, help).namespace(NS)).expect("valid gauge")
        };
        AlertStats {
            delivered: vec(
                "alert_deliveries_total",
                "Alert deliveries a sink accepted, by sink.",
            ),
            retried: vec(
                "alert_delivery_retries_total",
                "Failed alert delivery attempts (retried later), by sink.",
            ),
            dead_lettered: vec(
                "alert_dead_letters_total",
                "Alert deliveries moved to the dead-letter state after max_attempts failures, by sink.",
            ),
            pending: gauge(
                "alert_deliveries_pending",
                "Alert deliveries in the store not delivered yet (pending or dead letter).",
            ),
            dead_letters: gauge(
                "alert_deliveries_dead_letter",
                "Alert deliveries in the store in the dead-letter state.",
            ),
        }
    }

    /// Sum of a per-sink counter over sinks, for the run summary.
    pub fn by_sink(v: &IntCounterVec, sink: &str) -> u64 {
        v.with_label_values(&[sink]).get()
    }

    /// Adds the series to `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.delivered.clone()))?;
        registry.register(Box::new(self.retried.clone()))?;
        registry.register(Box::new(self.dead_lettered.clone()))?;
        registry.register(Box::new(self.pending.clone()))?;
        registry.register(Box::new(self.dead_letters.clone()))
    }
}

/// A gauge whose value is read when scraped, for state another component owns (a queue's
/// depth): sampling on scrape is exact, where a periodic copy would lag.
pub struct SampledGauge<F> {
    gauge: IntGauge,
    read: F,
}

impl<F: Fn() -> i64 + Send + Sync> SampledGauge<F> {
    pub fn new(name: &str, help: &str, read: F) -> Self {
        SampledGauge {
            gauge: IntGauge::with_opts(Opts::new(name, help).namespace(NS)).expect("valid gauge"),
            read,
        }
    }
}

impl<F: Fn() -> i64 + Send + Sync> Collector for SampledGauge<F> {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gauge.set((self.read)());
        self.gauge.collect()
    }
}

/// `streamtap_build_info{version="…"} 1`, so dashboards can tell versions apart.
pub fn build_info() -> IntGauge {
    let g = IntGauge::with_opts(
        Opts::new("build_info", "streamtap build; the value is always 1.")
            .namespace(NS)
            .const_label("version", env!("CARGO_PKG_VERSION")),
    )
    .expect("valid gauge");
    g.set(1);
    g
}

/// Channels that get their own `channel_*` gauge series at most: each channel is a label
/// value, and an unbounded label set would grow Prometheus's memory with every channel a
/// long run ever saw.
pub const MAX_CHANNEL_SERIES: usize = 500;

/// The latest closed analytics window per channel, as gauges, plus what the sink did with
/// `channel_stats` records. Owned by the sink loop, which updates it after each write.
#[derive(Debug)]
pub struct ChannelStatsMetrics {
    /// Messages in the channel's latest window.
    pub messages: IntGaugeVec,
    /// Distinct chatters in the channel's latest window.
    pub chatters: IntGaugeVec,
    /// Mean sentiment of the channel's latest window (absent while no window had one).
    pub sentiment: GaugeVec,
    /// Rows written to the `channel_stats` table.
    pub stored: Counter,
    /// Records that failed the `channel_stats` checks (kept in `records`).
    pub invalid: Counter,
    /// Windows of channels past [`MAX_CHANNEL_SERIES`]: stored, but not exported as gauges.
    pub untracked: Counter,
    /// Start of the window each tracked channel's gauges show, so an older window
    /// written later (a late flush, a redelivery) does not move the gauges backwards.
    latest: Mutex<std::collections::HashMap<String, i64>>,
    cap: usize,
}

impl Default for ChannelStatsMetrics {
    fn default() -> Self {
        Self::with_cap(MAX_CHANNEL_SERIES)
    }
}

impl ChannelStatsMetrics {
    /// Metrics tracking at most `cap` channels.
    pub fn with_cap(cap: usize) -> Self {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace(NS);
        ChannelStatsMetrics {
            messages: IntGaugeVec::new(
                opts(
                    "channel_window_messages",
                    "Messages in the channel's latest closed analytics window.",
                ),
                &["channel"],
            )
            .expect("valid gauge vec"),
            chatters: IntGaugeVec::new(
                opts(
                    "channel_window_chatters",
                    "Distinct chatters in the channel's latest closed analytics window.",
                ),
                &["channel"],
            )
            .expect("valid gauge vec"),
            sentiment: GaugeVec::new(
                opts(
                    "channel_window_sentiment_mean",
                    "Mean sentiment compound score of the channel's latest closed analytics window.",
                ),
                &["channel"],
            )
            .expect("valid gauge vec"),
            stored: Counter::new(
                "channel_stats_stored_total",
                "Analytics window records written to the channel_stats table.",
            ),
            invalid: Counter::new(
                "channel_stats_invalid_total",
                "channel_stats records with missing or ill-typed fields (kept in the records table).",
            ),
            untracked: Counter::new(
                "channel_stats_untracked_total",
                "Analytics windows of channels beyond the gauge cap (stored, not exported as gauges).",
            ),
            latest: Mutex::default(),
            cap,
        }
    }

    /// Updates the gauges with a window the sink stored.
    pub fn observe(
        &self,
        channel: &str,
        window_start_ms: i64,
        messages: i64,
        chatters: i64,
        sentiment: Option<f64>,
    ) {
        self.stored.inc();
        let mut latest = self.latest.lock().expect("channel metrics lock");
        let full = latest.len() >= self.cap;
        match latest.get_mut(channel) {
            Some(start) if *start > window_start_ms => return,
            Some(start) => *start = window_start_ms,
            None if full => {
                self.untracked.inc();
                return;
            }
            None => {
                latest.insert(channel.to_owned(), window_start_ms);
            }
        }
        self.messages.with_label_values(&[channel]).set(messages);
        self.chatters.with_label_values(&[channel]).set(chatters);
        match sentiment {
            Some(m) => self.sentiment.with_label_values(&[channel]).set(m),
            // No score in this window: a stale mean from an earlier one would mislead.
            None => {
                let _ = self.sentiment.remove_label_values(&[channel]);
            }
        }
    }

    /// Adds the series to `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.messages.clone()))?;
        registry.register(Box::new(self.chatters.clone()))?;
        registry.register(Box::new(self.sentiment.clone()))?;
        registry.register(Box::new(self.stored.0.clone()))?;
        registry.register(Box::new(self.invalid.0.clone()))?;
        registry.register(Box::new(self.untracked.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reloaded_step_keeps_one_duration_series() {
        let s = StepStats::new("sentiment");
        let reg = Registry::new();
        s.register(&reg).unwrap();
        for hash in [
            "aaaaaaaaaaaa",
            "bbbbbbbbbbbb",
            "bbbbbbbbbbbb",
            "cccccccccccc",
        ] {
            s.record_batch(10, Duration::from_micros(50), hash);
        }
        let mut text = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &reg.gather(), &mut text)
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("plugin_hash=\"cccccccccccc\""), "{text}");
        for gone in ["aaaaaaaaaaaa", "bbbbbbbbbbbb"] {
            assert!(!text.contains(gone), "{gone} still exported:\n{text}");
        }
        assert_eq!(s.messages.get(), 40);
    }

    #[test]
    fn channel_gauges_are_capped_and_never_go_back_in_time() {
        let m = ChannelStatsMetrics::with_cap(2);
        m.observe("a", 60_000, 10, 3, Some(0.5));
        m.observe("b", 60_000, 4, 2, None);
        m.observe("c", 60_000, 7, 1, Some(0.1));
        assert_eq!(m.untracked.get(), 1, "the third channel is past the cap");
        assert!(m.messages.get_metric_with_label_values(&["a"]).is_ok());
        let reg = Registry::new();
        m.register(&reg).unwrap();
        let series = |name: &str| {
            reg.gather()
                .into_iter()
                .find(|f| f.name() == name)
                .map_or(0, |f| f.get_metric().len())
        };
        assert_eq!(series("streamtap_channel_window_messages"), 2);
        assert_eq!(series("streamtap_channel_window_sentiment_mean"), 1);
        // An older window written later leaves the gauges on the newer one.
        m.observe("a", 0, 99, 99, Some(-1.0));
        assert_eq!(m.messages.with_label_values(&["a"]).get(), 10);
        m.observe("a", 120_000, 5, 5, None);
        assert_eq!(m.messages.with_label_values(&["a"]).get(), 5);
        assert_eq!(series("streamtap_channel_window_sentiment_mean"), 0);
        assert_eq!(m.stored.get(), 5);
    }
}
