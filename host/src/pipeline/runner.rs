//! The run loop: source → transport → step chain → sink → alert delivery, plus the hot
//! reloader and progress reporting.
//!
//! Each stage is a task; the run ends when the source is exhausted and everything queued
//! has been processed and stored, or when `cancel` fires (then the queue is drained, so
//! what was read is stored). A stage that fails stops the run with its error.

use super::chain::{Chain, ChainOutput};
use super::config::{Pipeline, SinkConfig, SourceConfig, TransportConfig};
use super::reload::{PendingSlot, Reloader};
use super::{StepRegistry, build_chain};
use crate::alerts::AlertRouter;
use crate::metrics::server::Health;
use crate::metrics::{self, PipelineStats, SinkStats, StepStats};
use crate::plugins::Runtime;
use crate::sinks::sqlite::SqliteSink;
use crate::sources::replay::{self, ReplayReport};
use crate::sources::twitch::{self, Shard};
use crate::transport::memory;
use anyhow::{Context, anyhow};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Print a progress line to stderr every this often (`None`: quiet).
    pub progress: Option<Duration>,
    /// Watch the pipeline and plugin files and reload on change.
    pub hot_reload: bool,
    /// This instance's share of a `[source.twitch]` channel list.
    pub shard: Shard,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            progress: Some(Duration::from_secs(1)),
            hot_reload: true,
            shard: Shard::default(),
        }
    }
}

/// What a finished run reports.
pub struct RunSummary {
    pub pipeline: Pipeline,
    pub elapsed: Duration,
    pub stats: Arc<PipelineStats>,
    pub steps: Vec<(String, Arc<StepStats>)>,
    pub replay: ReplayReport,
    pub sink_path: PathBuf,
    pub generation: u64,
    /// Where the metrics endpoint listened, when `[metrics]` was set.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Outputs waiting for the sink; small, since each holds a whole batch.
const SINK_QUEUE: usize = 4;

/// Runs a pipeline to completion.
pub async fn run(
    pipeline: Pipeline,
    runtime: Arc<Runtime>,
    opts: RunOptions,
    cancel: CancellationToken,
) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let stats = Arc::new(PipelineStats::default());
    // The run's own Prometheus registry: components register what they own.
    let prom = prometheus::Registry::new();
    stats
        .register(&prom)
        .context("registering pipeline metrics")?;
    prom.register(Box::new(metrics::build_info()))
        .context("registering build info")?;
    let registry = Arc::new(StepRegistry::with_metrics(prom.clone()));
    // Bind before the (slow) chain build so a taken port fails fast, naming the address.
    let metrics_listener = match &pipeline.metrics {
        Some(m) => {
            let l = tokio::net::TcpListener::bind(m.listen)
                .await
                .with_context(|| format!("[metrics] listen = \"{}\": cannot bind", m.listen))?;
            let addr = l.local_addr().context("metrics listener address")?;
            tracing::info!(%addr, "metrics endpoint listening (/metrics, /health, /ready)");
            Some((l, addr))
        }
        None => None,
    };
    let chain = {
        let (rt, p, reg) = (runtime.clone(), pipeline.clone(), registry.clone());
        tokio::task::spawn_blocking(move || build_chain(&rt, &p, &reg))
            .await
            .context("building the pipeline")??
    };
    for s in &chain.steps {
        let (plugin, version) = s.plugin_version();
        tracing::info!(step = %s.name, plugin, version, hash = %s.plugin.short_hash(), "loaded step");
    }

    let TransportConfig::Memory(mcfg) = &pipeline.transport;
    let (tx, rx) = memory::channel(mcfg.capacity, mcfg.batch_size);
    let SinkConfig::Sqlite(scfg) = &pipeline.sink;
    let sink_path = pipeline.resolve(&scfg.path);
    let sink = SqliteSink::open(&sink_path)?;
    let router = AlertRouter::new(&pipeline.alerts);
    let report = Arc::new(Mutex::new(ReplayReport::default()));
    let pending: PendingSlot = Arc::new(Mutex::new(None));
    let generation = Arc::new(std::sync::atomic::AtomicU64::new(1));

    // Stages stop on `stop` (the whole run) except the processor and sink, which stop when
    // their input closes: that is what makes shutdown drain instead of drop.
    let stop = cancel.child_token();
    // Channel edits from hot reload reach a `twitch` source through this.
    let mut channel_edits = None;
    let source = match pipeline.source.clone() {
        SourceConfig::Replay(rcfg) => {
            let run = replay::run(
                rcfg.clone(),
                pipeline.resolve(&rcfg.path),
                tx.clone(),
                stats.clone(),
                report.clone(),
                stop.clone(),
            );
            tokio::spawn(async move { run.await.map_err(anyhow::Error::from) })
        }
        SourceConfig::Twitch(tcfg) => {
            let token = match &tcfg.token {
                Some(r) => Some(
                    super::config::read_secret(&pipeline, r)
                        .map_err(|e| anyhow!("source.twitch: token: {e}"))?,
                ),
                None => None,
            };
            let (etx, erx) = tokio::sync::watch::channel(tcfg.channel_logins());
            channel_edits = Some(etx);
            let run = twitch::run(
                twitch::TwitchSource {
                    config: tcfg,
                    token,
                    shard: opts.shard,
                    tx: tx.clone(),
                    stats: stats.clone(),
                    channels: erx,
                    registry: prom.clone(),
                },
                stop.clone(),
            );
            tokio::spawn(async move { run.await.map_err(anyhow::Error::from) })
        }
    };
    let depth_probe = tx.depth_probe();
    drop(tx);
    {
        let probe = depth_probe.clone();
        prom.register(Box::new(metrics::SampledGauge::new(
            "transport_queue_depth",
            "Messages waiting in the in-process transport.",
            move || i64::try_from(probe.depth()).unwrap_or(i64::MAX),
        )))
        .context("registering transport metrics")?;
    }

    let (sink_tx, sink_rx) = mpsc::channel::<ChainOutput>(SINK_QUEUE);
    let processor = tokio::spawn(process_loop(
        rx,
        chain,
        pending.clone(),
        sink_tx,
        stats.clone(),
        generation.clone(),
    ));
    let sink_stats = Arc::new(SinkStats::default());
    sink_stats
        .register(&prom)
        .context("registering sink metrics")?;
    let sink_task = tokio::spawn(sink_loop(sink_rx, sink, router, stats.clone(), sink_stats));

    let health = Arc::new(Health::default());
    let metrics_stop = CancellationToken::new();
    let metrics_addr = metrics_listener.as_ref().map(|(_, a)| *a);
    let metrics_server = metrics_listener.map(|(l, _)| {
        tokio::spawn(metrics::server::serve(
            l,
            prom.clone(),
            health.clone(),
            metrics_stop.clone(),
        ))
    });
    // Transport and sink are open and every stage is running.
    health.set_ready(true);

    let watch_stop = CancellationToken::new();
    let reloader = opts.hot_reload.then(|| {
        let r = Reloader::new(
            runtime.clone(),
            registry.clone(),
            stats.clone(),
            pending.clone(),
            pipeline.clone(),
        )
        .with_channel_edits(channel_edits.take());
        tokio::spawn(r.run(watch_stop.clone()))
    });
    let progress_stop = CancellationToken::new();
    let progress = opts.progress.map(|every| {
        let (stats, stop) = (stats.clone(), progress_stop.clone());
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let p = stats.processed.get();
                eprintln!(
                    "progress: {:>6.1}s  received {}  processed {} ({:.0}/s)  stored {}  queued {}  alerts {}",
                    started.elapsed().as_secs_f64(),
                    stats.received.get(),
                    p,
                    (p - last) as f64 / every.as_secs_f64(),
                    stats.stored.get(),
                    depth_probe.depth(),
                    stats.alerts_fired.get(),
                );
                last = p;
            }
        })
    });

    let source_res = source.await.context("source task panicked")?;
    // Draining now: a load balancer should stop sending work here.
    health.set_ready(false);
    let proc_res = processor.await.context("processor task panicked")?;
    let sink_res = sink_task.await.context("sink task panicked")?;
    watch_stop.cancel();
    metrics_stop.cancel();
    let metrics_res = match metrics_server {
        Some(m) => m.await.context("metrics endpoint panicked")?,
        None => Ok(()),
    };
    progress_stop.cancel();
    if let Some(p) = progress {
        let _ = p.await;
    }
    let watch_res = match reloader {
        Some(r) => r.await.context("reloader task panicked")?,
        None => Ok(()),
    };
    source_res.context("source")?;
    proc_res.context("processor")?;
    sink_res.context("sink")?;
    watch_res.context("hot reload watcher")?;
    metrics_res.context("metrics endpoint")?;

    let replay = report.lock().expect("report lock").clone();
    Ok(RunSummary {
        pipeline,
        elapsed: started.elapsed(),
        stats,
        steps: registry.stats(),
        replay,
        sink_path,
        generation: generation.load(std::sync::atomic::Ordering::Relaxed),
        metrics_addr,
    })
}

async fn process_loop(
    mut rx: memory::MemoryReceiver,
    mut chain: Chain,
    pending: PendingSlot,
    sink: mpsc::Sender<ChainOutput>,
    stats: Arc<PipelineStats>,
    generation: Arc<std::sync::atomic::AtomicU64>,
) -> anyhow::Result<()> {
    while let Some(batch) = rx.recv_batch().await {
        // Swap only between batches: the batch in hand goes wholly to one generation.
        if let Some(g) = pending.lock().expect("pending lock").take() {
            tracing::info!(
                generation = g.id,
                steps = g.chain.steps.len(),
                "swapped in new pipeline generation"
            );
            chain = g.chain;
            generation.store(g.id, std::sync::atomic::Ordering::Relaxed);
            stats.reloads_ok.inc();
        }
        let n = batch.len() as u64;
        // Gap records are collection metadata, not chat: they skip the steps and go
        // straight to the sink, in the same batch as the messages around them.
        let (gaps, batch): (Vec<_>, Vec<_>) =
            batch.into_iter().partition(|m| m.kind == twitch::GAP_KIND);
        let (c, mut out) = tokio::task::spawn_blocking(move || {
            let out = if batch.is_empty() {
                ChainOutput::default()
            } else {
                chain.process(batch)
            };
            (chain, out)
        })
        .await
        .context("step chain panicked")?;
        chain = c;
        out.messages.extend(gaps);
        stats.processed.add(n);
        stats.dropped.add(out.dropped.len() as u64);
        sink.send(out)
            .await
            .map_err(|_| anyhow!("sink stopped before the processor"))?;
    }
    Ok(())
}

async fn sink_loop(
    mut rx: mpsc::Receiver<ChainOutput>,
    mut sink: SqliteSink,
    router: AlertRouter,
    stats: Arc<PipelineStats>,
    sink_stats: Arc<SinkStats>,
) -> anyhow::Result<()> {
    while let Some(out) = rx.recv().await {
        let dead = out.dead_letters.len() as u64;
        let size = out.messages.len() as f64;
        let started = Instant::now();
        let (s, res) = tokio::task::spawn_blocking(move || {
            let r = sink.write(&out);
            (sink, r)
        })
        .await
        .context("sink write panicked")?;
        sink = s;
        sink_stats
            .write_seconds
            .observe(started.elapsed().as_secs_f64());
        sink_stats.batches.inc();
        sink_stats.batch_size.observe(size);
        let res = res.inspect_err(|_| sink_stats.errors.inc())?;
        stats.stored.add(res.inserted);
        stats.duplicates.add(res.duplicates);
        stats.dead_lettered.add(dead);
        for a in &res.new_alerts {
            stats.alerts_fired.inc();
            match router.deliver(a) {
                Ok(()) => stats.alerts_delivered.inc(),
                Err(e) => {
                    tracing::error!(topic = %a.alert.topic, error = %e, "alert delivery failed")
                }
            }
        }
    }
    Ok(())
}

impl RunSummary {
    /// The human-readable end-of-run report.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let st = &self.stats;
        let secs = self.elapsed.as_secs_f64();
        let _ = writeln!(s, "\n== streamtap run summary: {} ==", self.pipeline.name);
        let _ = writeln!(
            s,
            "messages: {} received, {} processed in {:.2}s ({:.0} msg/s), {} stored, {} already stored, {} dropped, {} dead-lettered",
            st.received.get(),
            st.processed.get(),
            secs,
            st.processed.get() as f64 / secs.max(1e-9),
            st.stored.get(),
            st.duplicates.get(),
            st.dropped.get(),
            st.dead_lettered.get()
        );
        let _ = writeln!(s, "malformed source lines: {}", st.malformed.get());
        if let Ok(n) = crate::sinks::sqlite::count(&self.sink_path, "gaps")
            && n > 0
        {
            let _ = writeln!(
                s,
                "collection gaps recorded: {n} (see the `gaps` table: channel, from, to, reason)"
            );
        }
        for (line, reason) in &self.replay.malformed {
            let _ = writeln!(s, "  line {line}: {reason}");
        }
        match crate::sinks::sqlite::counts_by_channel(&self.sink_path) {
            Ok(counts) => {
                let _ = writeln!(s, "messages per channel (in the store):");
                for (c, n) in counts {
                    let _ = writeln!(s, "  #{c:<20} {n}");
                }
            }
            Err(e) => {
                let _ = writeln!(s, "messages per channel: unavailable ({e})");
            }
        }
        let _ = writeln!(s, "steps (time per message, including encoding):");
        for (name, ss) in &self.steps {
            let errors = ss.errors.snapshot();
            let _ = writeln!(
                s,
                "  {name:<16} {:>9.0} ns/msg  {} msgs  {} calls  errors {:?}  restarts {}",
                ss.ns_per_message(),
                ss.messages.get(),
                ss.calls.get(),
                errors,
                ss.restarts.get()
            );
        }
        let _ = writeln!(
            s,
            "alerts fired: {} (delivered {})",
            st.alerts_fired.get(),
            st.alerts_delivered.get()
        );
        let _ = writeln!(
            s,
            "reloads: {} applied, {} rejected (generation {})",
            st.reloads_ok.get(),
            st.reloads_failed.get(),
            self.generation
        );
        let _ = writeln!(s, "data: {}", self.sink_path.display());
        if let Some(a) = self.metrics_addr {
            let _ = writeln!(
                s,
                "metrics: http://{a}/metrics (served while the run lasted)"
            );
        }
        let _ = writeln!(
            s,
            "query: streamtap query {} --format table --limit 20\n       sqlite3 {} \"SELECT channel, json_extract(fields, '$.sentiment.compound') FROM messages LIMIT 5\"",
            self.pipeline.file.display(),
            self.sink_path.display()
        );
        s
    }
}
