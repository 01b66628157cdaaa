//! The run loop: source → transport → step chain → sink → alert dispatcher, plus the hot
//! reloader and progress reporting.
//!
//! [`Mode`] picks which part of that a process runs. `run` is all of it (with
//! `[transport.kafka]`: both halves below in one process, ending once what it published
//! is stored). With `[transport.kafka]` the work splits in two: `collect` runs the source and
//! publishes to the topic ([`collect`]), `process` consumes the topic in a consumer group
//! in place of a source and feeds the same chain and sink loop; the sink loop commits a
//! batch's offsets only after the store acknowledged it (at-least-once, the store dedupes
//! by message id). Undecodable records and `dead-letter` step failures go to the
//! dead-letter topic, so they never hold up a partition.
//!
//! Each stage is a task; the run ends when the source is exhausted and everything queued
//! has been processed and stored, or when `cancel` fires (then the queue is drained, so
//! what was read is stored). Either way, after the last batch each step's optional
//! `flush` runs and its output is stored too. A stage that fails stops the run with its
//! error. The alert dispatcher stops last, after the sink's final write, and then gets
//! `[alerts.delivery] shutdown_timeout` to deliver what is pending.

use super::chain::{Chain, ChainOutput};
use super::config::{
    HelixBudget, HelixConfig, Pipeline, SinkConfig, SourceConfig, TransportConfig,
};
use super::reload::{PendingSlot, Reloader};
use super::{StepRegistry, build_chain};
use crate::alerts::Routes;
use crate::alerts::dispatcher::Dispatcher;
use crate::alerts::outbox::Backlog;
use crate::metrics::server::Health;
use crate::metrics::{self, AlertStats, ChannelStatsMetrics, PipelineStats, SinkStats, StepStats};
use crate::plugins::Runtime;
use crate::sinks::{self, Sink, SinkPolicy};
use crate::sources::budget::Budget;
use crate::sources::helix;
use crate::sources::replay::{self, ReplayReport};
use crate::sources::twitch::{self, Shard};
use crate::transport::kafka::{self, AckToken, DeadLetterProducer, KafkaConsumer, KafkaProducer};
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
    /// Which part of the pipeline runs here.
    pub mode: Mode,
}

/// Which part of a pipeline a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Everything in one process: through the in-process queue, or through the Kafka topic
    /// (publish and consume) with `[transport.kafka]`.
    #[default]
    Run,
    /// Source → Kafka topic (`[transport.kafka]` only).
    Collect,
    /// Kafka topic → steps → sink (`[transport.kafka]` only); runs until cancelled.
    Process,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            progress: Some(Duration::from_secs(1)),
            hot_reload: true,
            shard: Shard::default(),
            mode: Mode::Run,
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
    /// Where the data went (credentials redacted).
    pub sink_target: String,
    /// The SQLite file, when the sink is SQLite (for the `sqlite3` hint).
    pub sqlite_path: Option<PathBuf>,
    /// Messages per channel in the store at the end of the run.
    pub channel_counts: Result<Vec<(String, u64)>, String>,
    pub generation: u64,
    /// Where the metrics endpoint listened, when `[metrics]` was set.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Alert delivery counters, per sink.
    pub alert_stats: Arc<AlertStats>,
    /// The sinks `[alerts]` routes to.
    pub alert_sinks: Vec<String>,
    /// Alert deliveries left in the store at the end (delivered by the next run).
    pub alerts_left: Backlog,
}

/// Outputs waiting for the sink; small, since each holds a whole batch.
const SINK_QUEUE: usize = 4;

/// A processed batch on its way to the sink, with the Kafka offsets it covers (committed
/// once the sink stored it).
#[derive(Default)]
struct ToSink {
    out: ChainOutput,
    acks: Vec<AckToken>,
}

/// Where the processor's batches come from.
enum Input {
    /// The in-process queue (`run`).
    Memory(memory::MemoryReceiver),
    /// Batches read from Kafka by [`kafka_read_loop`] (`process`).
    Kafka(mpsc::Receiver<(Vec<streamtap_plugin_sdk::ChatMessage>, AckToken)>),
}

impl Input {
    async fn recv(&mut self) -> Option<(Vec<streamtap_plugin_sdk::ChatMessage>, Option<AckToken>)> {
        match self {
            Input::Memory(rx) => rx.recv_batch().await.map(|b| (b, None)),
            Input::Kafka(rx) => rx.recv().await.map(|(b, t)| (b, Some(t))),
        }
    }
}

/// The `[transport.kafka]` table, or an error naming the command that needs it.
fn kafka_config<'a>(
    pipeline: &'a Pipeline,
    command: &str,
) -> anyhow::Result<&'a super::config::KafkaConfig> {
    match &pipeline.transport {
        TransportConfig::Kafka(k) => Ok(k),
        TransportConfig::Memory(_) => Err(anyhow!(
            "{}: `streamtap {command}` needs `[transport.kafka]` (this file uses the in-process transport; use `streamtap run`)",
            pipeline.file.display()
        )),
    }
}

/// How long startup waits for the broker to describe the topics.
const TOPIC_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Fails on a topic the broker says does not exist; an unreachable broker is only logged
/// (the producer buffers, the consumer waits, until it is back). Returns whether the
/// brokers answered.
async fn check_topics(k: &super::config::KafkaConfig, topics: Vec<String>) -> anyhow::Result<bool> {
    let brokers = k.broker_list();
    let b = brokers.clone();
    let res = tokio::task::spawn_blocking(move || {
        let t: Vec<&str> = topics.iter().map(String::as_str).collect();
        kafka::check_topics(&b, &t, TOPIC_CHECK_TIMEOUT)
    })
    .await
    .context("topic check panicked")?
    .context("[transport.kafka]")?;
    if let kafka::TopicCheck::Unreachable(e) = res {
        tracing::warn!(brokers = %brokers, error = %e, "kafka brokers not reachable at startup; going on (librdkafka keeps retrying)");
        return Ok(false);
    }
    Ok(true)
}

/// Hot-reload handles of a running `twitch` source.
#[derive(Default)]
struct SourceEdits {
    /// Its channel list.
    channels: Option<tokio::sync::watch::Sender<Vec<String>>>,
    /// Its `record = true` channels (with a `[recorder]`).
    record: Option<tokio::sync::watch::Sender<std::collections::BTreeSet<String>>>,
}

/// Starts the pipeline's source writing into `tx` (shared by `run` and `collect`): the
/// replay, or the twitch chat source with, when configured, the Helix poller and the
/// recorder (one task: any part failing ends it). `mongo` is the deployment's MongoDB, for
/// a shared Helix budget. Returns the task and the handles hot reload edits.
#[allow(clippy::too_many_arguments)]
fn spawn_source(
    pipeline: &Pipeline,
    opts: &RunOptions,
    tx: &memory::MemorySender,
    stats: &Arc<PipelineStats>,
    report: &Arc<Mutex<ReplayReport>>,
    prom: &prometheus::Registry,
    stop: &CancellationToken,
    mongo: Option<::mongodb::Database>,
) -> anyhow::Result<(tokio::task::JoinHandle<anyhow::Result<()>>, SourceEdits)> {
    Ok(match pipeline.source.clone() {
        SourceConfig::Replay(rcfg) => {
            let run = replay::run(
                rcfg.clone(),
                pipeline.resolve(&rcfg.path),
                tx.clone(),
                stats.clone(),
                report.clone(),
                stop.clone(),
            );
            (
                tokio::spawn(async move { run.await.map_err(anyhow::Error::from) }),
                SourceEdits::default(),
            )
        }
        SourceConfig::Twitch(tcfg) => {
            let mut edits = SourceEdits::default();
            let token = match &tcfg.token {
                Some(r) => Some(
                    super::config::read_secret(pipeline, r)
                        .map_err(|e| anyhow!("source.twitch: token: {e}"))?,
                ),
                None => None,
            };
            let (etx, erx) = tokio::sync::watch::channel(tcfg.channel_logins());
            edits.channels = Some(etx);
            let (live_tx, live_rx) = tokio::sync::watch::channel(crate::recorder::LiveMap::new());
            let recorder = match &pipeline.recorder {
                Some(rc) => {
                    let (rtx, rrx) = tokio::sync::watch::channel(tcfg.recorded_logins());
                    edits.record = Some(rtx);
                    let api_header = match &rc.api_header {
                        Some(r) => Some(
                            super::config::read_secret(pipeline, r)
                                .map_err(|e| anyhow!("recorder: api_header: {e}"))?,
                        ),
                        None => None,
                    };
                    Some(crate::recorder::run(
                        crate::recorder::Recorder {
                            config: rc.clone(),
                            dir: pipeline.resolve(&rc.dir),
                            api_header,
                            tx: tx.clone(),
                            stats: stats.clone(),
                            live: live_rx,
                            record: rrx,
                            registry: prom.clone(),
                        },
                        stop.clone(),
                    ))
                }
                None => None,
            };
            let helix = match &tcfg.helix {
                Some(h) => Some(helix::run(
                    helix::HelixPoller {
                        config: (**h).clone(),
                        secret: super::config::read_secret(pipeline, &h.client_secret)
                            .map_err(|e| anyhow!("source.twitch.helix: client_secret: {e}"))?,
                        budget: helix_budget(h, mongo)?,
                        shard: opts.shard,
                        tx: tx.clone(),
                        stats: stats.clone(),
                        channels: erx.clone(),
                        registry: prom.clone(),
                        live: live_tx,
                    },
                    stop.clone(),
                )),
                None => None,
            };
            let spill_dir = tcfg
                .spill_dir
                .as_ref()
                .map_or_else(std::env::temp_dir, |d| pipeline.resolve(d));
            let chat = twitch::run(
                twitch::TwitchSource {
                    config: tcfg,
                    token,
                    shard: opts.shard,
                    tx: tx.clone(),
                    stats: stats.clone(),
                    channels: erx,
                    registry: prom.clone(),
                    spill_dir,
                },
                stop.clone(),
            );
            (
                tokio::spawn(async move {
                    let chat = async { chat.await.map_err(anyhow::Error::from) };
                    let status = async {
                        match helix {
                            Some(h) => h.await.context("source.twitch.helix"),
                            None => Ok(()),
                        }
                    };
                    let recording = async {
                        match recorder {
                            Some(r) => r.await.context("recorder"),
                            None => Ok(()),
                        }
                    };
                    tokio::try_join!(chat, status, recording).map(|_| ())
                }),
                edits,
            )
        }
    })
}

/// Runs a pipeline to completion.
pub async fn run(
    pipeline: Pipeline,
    runtime: Arc<Runtime>,
    opts: RunOptions,
    cancel: CancellationToken,
) -> anyhow::Result<RunSummary> {
    let kafka_cfg = match opts.mode {
        // With `[transport.kafka]`, `run` is collect and process in one process.
        Mode::Run => match &pipeline.transport {
            TransportConfig::Kafka(k) => Some(k.clone()),
            TransportConfig::Memory(_) => None,
        },
        Mode::Collect => {
            return Err(anyhow!(
                "internal: collect mode goes through runner::collect"
            ));
        }
        Mode::Process => Some(kafka_config(&pipeline, "process")?.clone()),
    };
    let all_in_one = opts.mode == Mode::Run && kafka_cfg.is_some();
    let started = Instant::now();
    let (stats, prom) = new_registry()?;
    let registry = Arc::new(StepRegistry::with_metrics(prom.clone()));
    // Bind before the (slow) chain build so a taken port fails fast, naming the address.
    let metrics_listener = bind_metrics(&pipeline).await?;
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

    let sink = Sink::open(&pipeline).await.context("opening the sink")?;
    let sink_policy = Sink::policy(&pipeline);
    let sink_target = sink.describe(&pipeline);
    let routes = Arc::new(Routes::new(&pipeline.alerts));
    let alert_sinks = routes.all_sinks();
    let alert_stats = Arc::new(AlertStats::new(&alert_sinks));
    alert_stats
        .register(&prom)
        .context("registering alert metrics")?;
    let wake = Arc::new(tokio::sync::Notify::new());
    let dispatcher = Dispatcher::new(
        &sink.outbox_path()?,
        crate::alerts::build_sinks(&pipeline.alerts).await,
        pipeline.alerts.delivery.clone(),
        alert_stats.clone(),
        stats.clone(),
        wake.clone(),
    )?;
    // Not a child of `cancel`: on Ctrl-C the dispatcher keeps going until the sink stored
    // the drained queue, then gets its own shutdown bound.
    let dispatch_stop = CancellationToken::new();
    let dispatch_task = {
        let (stop, run_cancel) = (dispatch_stop.clone(), cancel.clone());
        tokio::spawn(async move {
            let r = dispatcher.run(stop).await;
            if r.is_err() {
                // A dispatcher that cannot use the store stops the run.
                run_cancel.cancel();
            }
            r
        })
    };
    let report = Arc::new(Mutex::new(ReplayReport::default()));
    let pending: PendingSlot = Arc::new(Mutex::new(None));
    let generation = Arc::new(std::sync::atomic::AtomicU64::new(1));

    // Stages stop on `stop` (the whole run) except the processor and sink, which stop when
    // their input closes: that is what makes shutdown drain instead of drop.
    let stop = cancel.child_token();
    // Channel and `record` edits from hot reload reach a `twitch` source through this.
    let mut channel_edits = SourceEdits::default();
    // The processor's input: the source through the in-process queue (`run`), or the
    // topic through a consumer-group member (`process`).
    // The consumer-lag gauge's refresher (process, and run with Kafka), which also tells
    // readiness whether the brokers answer.
    let lag_stop = CancellationToken::new();
    let mut lag_monitor = None;
    let health = Arc::new(Health::default());
    let (source, input, depth, consumer, dlq) = match &kafka_cfg {
        None => {
            let TransportConfig::Memory(mcfg) = &pipeline.transport else {
                unreachable!("checked above: run uses the memory transport")
            };
            let (tx, rx) = memory::channel(mcfg.capacity, mcfg.batch_size);
            let (source, edits) = spawn_source(
                &pipeline,
                &opts,
                &tx,
                &stats,
                &report,
                &prom,
                &stop,
                sink.mongo_database(),
            )?;
            channel_edits = edits;
            let probe = tx.depth_probe();
            drop(tx);
            let depth: Arc<dyn Fn() -> usize + Send + Sync> = Arc::new(move || probe.depth());
            (source, Input::Memory(rx), depth, None, None)
        }
        Some(k) => {
            let reachable = check_topics(
                k,
                vec![
                    k.topic.get_ref().clone(),
                    k.dead_letter_topic.get_ref().clone(),
                ],
            )
            .await?;
            health.set_transport_down(!reachable);
            let mut copts =
                kafka::ConsumerOptions::new(&k.broker_list(), &k.group_id, k.topic.get_ref());
            copts.batch_size = k.batch_size;
            copts.batch_wait = k.batch_wait.0;
            copts.session_timeout = k.session_timeout.0;
            let consumer =
                Arc::new(KafkaConsumer::new(&copts).context("joining the kafka consumer group")?);
            consumer
                .register(&prom)
                .context("registering consumer metrics")?;
            let h = health.clone();
            lag_monitor = Some((
                lag_stop.clone(),
                tokio::spawn(
                    consumer
                        .clone()
                        .monitor(lag_stop.clone(), move |up| h.set_transport_down(!up)),
                ),
            ));
            let dlq = Arc::new(
                DeadLetterProducer::new(&k.broker_list(), k.dead_letter_topic.get_ref())
                    .context("creating the dead-letter producer")?,
            );
            dlq.register(&prom)
                .context("registering dead-letter metrics")?;
            let (btx, brx) = mpsc::channel(SINK_QUEUE);
            let depth: Arc<dyn Fn() -> usize + Send + Sync> = {
                let weak = btx.downgrade();
                Arc::new(move || {
                    weak.upgrade()
                        .map(|s| s.max_capacity() - s.capacity())
                        .unwrap_or(0)
                })
            };
            let reader_stop = stop.child_token();
            let reader = tokio::spawn(kafka_read_loop(
                consumer.clone(),
                dlq.clone(),
                btx,
                stats.clone(),
                reader_stop.clone(),
                // All in one, the source counts what it received.
                !all_in_one,
            ));
            let reader = if all_in_one {
                let mut side = spawn_collect_side(
                    k,
                    &pipeline,
                    &opts,
                    &stats,
                    &report,
                    &prom,
                    &stop,
                    &cancel,
                    sink.mongo_database(),
                )?;
                channel_edits = std::mem::take(&mut side.edits);
                tokio::spawn(drive_all_in_one(
                    side,
                    consumer.clone(),
                    reader,
                    reader_stop,
                    stop.clone(),
                ))
            } else {
                reader
            };
            (reader, Input::Kafka(brx), depth, Some(consumer), Some(dlq))
        }
    };
    {
        let depth = depth.clone();
        prom.register(Box::new(metrics::SampledGauge::new(
            "transport_queue_depth",
            "Batches (kafka) or messages (in-process) waiting for the step chain.",
            move || i64::try_from(depth()).unwrap_or(i64::MAX),
        )))
        .context("registering transport metrics")?;
    }

    let (sink_tx, sink_rx) = mpsc::channel::<ToSink>(SINK_QUEUE);
    let processor = tokio::spawn(process_loop(
        input,
        chain,
        pending.clone(),
        sink_tx,
        stats.clone(),
        generation.clone(),
        dlq,
    ));
    let sink_stats = Arc::new(SinkStats::default());
    sink_stats
        .register(&prom)
        .context("registering sink metrics")?;
    let channel_metrics = Arc::new(ChannelStatsMetrics::default());
    channel_metrics
        .register(&prom)
        .context("registering channel_stats metrics")?;
    let sink_task = {
        let run = sink_loop(
            sink_rx,
            sink,
            sink_policy,
            routes,
            wake,
            stats.clone(),
            sink_stats,
            channel_metrics,
            health.clone(),
            cancel.clone(),
            consumer,
        );
        let stop = stop.clone();
        tokio::spawn(async move {
            let r = run.await;
            if r.is_err() {
                // An idle input (a quiet topic or channel) would otherwise never notice
                // that nothing can be stored any more.
                stop.cancel();
            }
            r
        })
    };
    let metrics_server = MetricsEndpoint::serve(metrics_listener, &prom, &health);
    let metrics_addr = metrics_server.addr;
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
        .with_channel_edits(channel_edits.channels.take())
        .with_record_edits(channel_edits.record.take());
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
                    depth(),
                    stats.alerts_fired.get(),
                );
                last = p;
            }
        })
    });

    let source_res = source.await.context("source task panicked")?;
    if source_res.is_err() {
        // The processor drains what came before the failure; a reader that failed leaves
        // nothing queued, so everything after it is redelivered.
        stop.cancel();
    }
    // Draining now: a load balancer should stop sending work here.
    health.set_ready(false);
    let proc_res = processor.await.context("processor task panicked")?;
    let sink_res = sink_task.await.context("sink task panicked")?;
    if let Some((stop, task)) = lag_monitor {
        stop.cancel();
        task.await.context("consumer lag monitor panicked")?;
    }
    let sqlite_path = match &pipeline.sink {
        SinkConfig::Sqlite(c) => Some(pipeline.resolve(&c.path)),
        SinkConfig::Mongodb(_) => None,
    };
    let channel_counts = match &sink_res {
        Ok(sink) => sink.counts_by_channel().await.map_err(|e| e.to_string()),
        Err(_) => Err("the sink failed".to_owned()),
    };
    dispatch_stop.cancel();
    let dispatch_res = dispatch_task.await.context("alert dispatcher panicked")?;
    watch_stop.cancel();
    let metrics_res = metrics_server.stop().await?;
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
    let dispatched = dispatch_res.context("alert dispatcher")?;
    watch_res.context("hot reload watcher")?;
    metrics_res.context("metrics endpoint")?;

    let replay = report.lock().expect("report lock").clone();
    Ok(RunSummary {
        pipeline,
        elapsed: started.elapsed(),
        stats,
        steps: registry.stats(),
        replay,
        sink_target,
        sqlite_path,
        channel_counts,
        generation: generation.load(std::sync::atomic::Ordering::Relaxed),
        metrics_addr,
        alert_stats,
        alert_sinks,
        alerts_left: dispatched.left,
    })
}

/// Reads the topic in batches for the processor. Undecodable records go to the dead-letter
/// topic first (awaited), so the batch's ack token covers them and the partition moves on.
/// Consume errors (broker unreachable, rebalance hiccups) are logged and retried:
/// librdkafka reconnects by itself and nothing is acked meanwhile.
async fn kafka_read_loop(
    consumer: Arc<KafkaConsumer>,
    dlq: Arc<DeadLetterProducer>,
    tx: mpsc::Sender<(Vec<streamtap_plugin_sdk::ChatMessage>, AckToken)>,
    stats: Arc<PipelineStats>,
    stop: CancellationToken,
    count_received: bool,
) -> anyhow::Result<()> {
    loop {
        let batch = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            b = consumer.next_batch() => b,
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "kafka consume failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        for p in &batch.poison {
            dlq.send(p.key.as_deref(), &p.payload, &p.error.to_string(), "", "")
                .await
                .with_context(|| {
                    format!(
                        "dead-lettering the undecodable record at partition {} offset {}",
                        p.partition, p.offset
                    )
                })?;
            stats.dead_lettered.inc();
        }
        if count_received {
            stats.received.add(batch.messages.len() as u64);
        }
        let msgs = batch.messages.into_iter().map(|r| r.message).collect();
        if tx.send((msgs, batch.token)).await.is_err() {
            return Err(anyhow!("processor stopped before the kafka reader"));
        }
    }
}

async fn process_loop(
    mut rx: Input,
    mut chain: Chain,
    pending: PendingSlot,
    sink: mpsc::Sender<ToSink>,
    stats: Arc<PipelineStats>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    dlq: Option<Arc<DeadLetterProducer>>,
) -> anyhow::Result<()> {
    while let Some((batch, ack)) = rx.recv().await {
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
        // Gap and recording records are collection metadata, not chat: they skip the steps and go
        // straight to the sink, in the same batch as the messages around them.
        let (gaps, batch): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|m| m.kind == twitch::GAP_KIND || m.kind == crate::recorder::RECORDING_KIND);
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
        if let Some(dlq) = &dlq {
            // With Kafka, failed messages go to the dead-letter topic (before the batch's
            // offsets can be committed) instead of the store's dead-letter table.
            for d in std::mem::take(&mut out.dead_letters) {
                dlq.send(
                    Some(kafka::key(&d.msg).as_bytes()),
                    &kafka::encode(&d.msg),
                    &d.reason,
                    &d.plugin,
                    &d.version,
                )
                .await
                .with_context(|| format!("dead-lettering message {:?}", d.msg.id))?;
                stats.dead_lettered.inc();
            }
        }
        sink.send(ToSink {
            out,
            acks: ack.into_iter().collect(),
        })
        .await
        .map_err(|_| anyhow!("sink stopped before the processor"))?;
    }
    // The input is exhausted (end of replay, or shutdown drained the queue): let steps emit
    // what they hold open, e.g. the analytics windows of channels that went quiet, which
    // no later message will close. Stored like any batch's output.
    if let Some(g) = pending.lock().expect("pending lock").take() {
        chain = g.chain;
        generation.store(g.id, std::sync::atomic::Ordering::Relaxed);
        stats.reloads_ok.inc();
    }
    let (_, out) = tokio::task::spawn_blocking(move || {
        let out = chain.flush();
        (chain, out)
    })
    .await
    .context("step chain panicked in flush")?;
    if !(out.records.is_empty() && out.alerts.is_empty()) {
        sink.send(ToSink {
            out,
            acks: Vec::new(),
        })
        .await
        .map_err(|_| anyhow!("sink stopped before the processor"))?;
    }
    Ok(())
}

/// How long the sink waits idle before it pings the store (readiness), and how long the
/// ping may take.
const IDLE_PING: Duration = Duration::from_secs(5);

/// After shutdown was requested, how long the sink keeps retrying a failing write before
/// the run gives up and reports what it could not store.
const SINK_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[allow(clippy::too_many_arguments)]
async fn sink_loop(
    mut rx: mpsc::Receiver<ToSink>,
    mut sink: Sink,
    policy: SinkPolicy,
    routes: Arc<Routes>,
    wake: Arc<tokio::sync::Notify>,
    stats: Arc<PipelineStats>,
    sink_stats: Arc<SinkStats>,
    channel_metrics: Arc<ChannelStatsMetrics>,
    health: Arc<Health>,
    cancel: CancellationToken,
    consumer: Option<Arc<KafkaConsumer>>,
) -> anyhow::Result<Sink> {
    let mut retry = Retry::new("preparing the sink", policy, &sink_stats, &health, &cancel);
    loop {
        match sink.prepare().await {
            Ok(()) => break retry.succeeded(),
            Err(e) => retry.failed(e, 0).await?,
        }
    }
    loop {
        let first = match tokio::time::timeout(IDLE_PING, rx.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => break,
            Err(_) => {
                // Idle: only asking tells whether the store is still there (readiness).
                let up = matches!(
                    tokio::time::timeout(IDLE_PING, sink.ping()).await,
                    Ok(Ok(()))
                );
                health.set_sink_down(!up);
                continue;
            }
        };
        // Gather up to `max_batch` messages or `max_delay`, whichever comes first: a store
        // round trip per processed batch would cap throughput at its latency.
        let ToSink {
            out: mut batch,
            mut acks,
        } = first;
        if policy.max_batch > 1 {
            let until = tokio::time::Instant::now() + policy.max_delay;
            while batch.messages.len() < policy.max_batch {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(more)) => {
                        sinks::merge(&mut batch, more.out);
                        acks.extend(more.acks);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let nothing = batch.messages.is_empty()
            && batch.dead_letters.is_empty()
            && batch.alerts.is_empty()
            && batch.records.is_empty();
        if nothing && consumer.is_some() {
            // Only dropped or dead-lettered (to Kafka) messages: nothing to store, the
            // offsets can move on. (`run` writes such batches as it always did.)
            commit(consumer.as_deref(), acks).await;
            continue;
        }
        let out = Arc::new(batch);
        let dead = out.dead_letters.len() as u64;
        let size = out.messages.len() as f64;
        let started = Instant::now();
        let mut retry = Retry::new("writing to the sink", policy, &sink_stats, &health, &cancel);
        let written = loop {
            match sink.write(&out, &routes).await {
                Ok(w) => {
                    retry.succeeded();
                    break w;
                }
                Err(e) => retry.failed(e, out.messages.len()).await?,
            }
        };
        sink_stats
            .write_seconds
            .observe(started.elapsed().as_secs_f64());
        sink_stats.batches.inc();
        sink_stats.batch_size.observe(size);
        // Stored: now (and only now) the batch's offsets may be committed.
        commit(consumer.as_deref(), acks).await;
        let res = written.result;
        stats.stored.add(res.inserted);
        stats.duplicates.add(res.duplicates);
        stats.dead_lettered.add(dead + written.rejected);
        stats.alerts_fired.add(res.new_alerts.len() as u64);
        if res.new_deliveries > 0 {
            // Committed: the dispatcher can read them now.
            wake.notify_one();
        }
        for row in &res.channel_stats {
            channel_metrics.observe(
                &row.channel,
                row.window_start_ms,
                row.messages,
                row.unique_chatters,
                row.sentiment_mean,
            );
        }
        for bad in &res.invalid_records {
            channel_metrics.invalid.inc();
            tracing::error!(
                step = %bad.step,
                key = %bad.key,
                field = bad.field,
                error = %bad,
                "invalid channel_stats record kept in the records table"
            );
        }
    }
    Ok(sink)
}

/// Commits the offsets of stored batches. A failed commit only delays progress (a later
/// commit covers the same offsets, a restart redelivers what the store already has), so
/// it is logged, not fatal.
async fn commit(consumer: Option<&KafkaConsumer>, acks: Vec<AckToken>) {
    let Some(c) = consumer else { return };
    if acks.is_empty() {
        return;
    }
    if let Err(e) = c.ack_all(acks).await {
        tracing::warn!(error = %e, "kafka offset commit failed; the next commit covers it");
    }
}

/// Retry state of one sink operation. Transient failures (store unreachable) are retried
/// with backoff while the run reports not ready; the processor waits meanwhile (the sink
/// queue is bounded), so memory stays bounded and nothing is skipped. Permanent failures
/// stop the run. After shutdown was requested, retries go on for [`SINK_SHUTDOWN_GRACE`].
struct Retry<'a> {
    what: &'static str,
    policy: SinkPolicy,
    sink_stats: &'a SinkStats,
    health: &'a Health,
    cancel: &'a CancellationToken,
    attempt: u32,
    give_up: Option<tokio::time::Instant>,
}

impl<'a> Retry<'a> {
    fn new(
        what: &'static str,
        policy: SinkPolicy,
        sink_stats: &'a SinkStats,
        health: &'a Health,
        cancel: &'a CancellationToken,
    ) -> Self {
        Retry {
            what,
            policy,
            sink_stats,
            health,
            cancel,
            attempt: 0,
            give_up: None,
        }
    }

    fn succeeded(&self) {
        if self.attempt > 0 {
            tracing::info!(attempts = self.attempt + 1, "{}: recovered", self.what);
        }
        // Also after a first-attempt success: an idle ping may have set it down while
        // the store blipped, and a busy sink never pings again.
        self.health.set_sink_down(false);
    }

    /// Waits before the next attempt, or returns the error that ends the run.
    async fn failed(&mut self, e: sinks::SinkError, pending: usize) -> anyhow::Result<()> {
        self.sink_stats.errors.inc();
        if !e.is_transient() {
            return Err(anyhow::Error::new(e).context(self.what));
        }
        self.health.set_sink_down(true);
        self.attempt += 1;
        let delay = crate::alerts::outbox::backoff(
            self.attempt,
            self.policy.retry_initial,
            self.policy.retry_max,
            fastrand::f64(),
        );
        tracing::warn!(
            error = %e,
            attempt = self.attempt,
            retry_in_ms = delay.as_millis() as u64,
            pending,
            "{} failed; retrying",
            self.what
        );
        if self.cancel.is_cancelled() {
            let deadline = *self
                .give_up
                .get_or_insert_with(|| tokio::time::Instant::now() + SINK_SHUTDOWN_GRACE);
            if tokio::time::Instant::now() >= deadline {
                return Err(anyhow!(
                    "{}: still failing {SINK_SHUTDOWN_GRACE:?} after shutdown was requested; {pending} processed messages were not stored: {e}",
                    self.what
                ));
            }
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// What `streamtap collect` reports.
pub struct CollectSummary {
    pub pipeline: Pipeline,
    pub elapsed: Duration,
    /// Messages the source produced.
    pub received: u64,
    /// Messages the broker acknowledged.
    pub published: u64,
    /// Times the source waited because the producer's buffer was full.
    pub backpressure_waits: u64,
    pub replay: ReplayReport,
    pub topic: String,
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl CollectSummary {
    /// The human-readable end-of-run report.
    pub fn render(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        let mut s = format!(
            "\n== streamtap collect summary: {} ==\nmessages: {} received, {} published to topic {:?} in {:.2}s ({:.0} msg/s)\nproducer buffer full: the source waited {} times\n",
            self.pipeline.name,
            self.received,
            self.published,
            self.topic,
            secs,
            self.published as f64 / secs.max(1e-9),
            self.backpressure_waits,
        );
        for (line, reason) in &self.replay.malformed {
            s.push_str(&format!("  malformed line {line}: {reason}\n"));
        }
        if let Some(a) = self.metrics_addr {
            s.push_str(&format!(
                "metrics: http://{a}/metrics (served while the run lasted)\n"
            ));
        }
        s
    }
}

/// After shutdown was requested, how long `collect` waits for the broker to acknowledge
/// what is still buffered before it reports those messages as unconfirmed.
const COLLECT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// `streamtap collect`: runs the source and publishes every message to the topic, keyed by
/// channel. A full producer buffer (broker down or slow) makes the source wait and is
/// counted; nothing is dropped. Ends when the source is exhausted and the broker has
/// acknowledged everything, or on `cancel` (then the buffer gets a bounded time to drain).
pub async fn collect(
    pipeline: Pipeline,
    opts: RunOptions,
    cancel: CancellationToken,
) -> anyhow::Result<CollectSummary> {
    let k = kafka_config(&pipeline, "collect")?.clone();
    let started = Instant::now();
    let (stats, prom) = new_registry()?;
    let metrics_listener = bind_metrics(&pipeline).await?;
    let reachable = check_topics(&k, vec![k.topic.get_ref().clone()]).await?;
    let report = Arc::new(Mutex::new(ReplayReport::default()));
    let stop = cancel.child_token();
    let CollectSide {
        source,
        publisher,
        confirmer,
        producer,
        ..
    } = spawn_collect_side(
        &k,
        &pipeline,
        &opts,
        &stats,
        &report,
        &prom,
        &stop,
        &cancel,
        helix_mongo(&pipeline).await?,
    )?;

    let health = Arc::new(Health::default());
    health.set_transport_down(!reachable);
    // Readiness follows the brokers: an outage shows otherwise only as a growing queue.
    let probe_stop = CancellationToken::new();
    let probe = {
        let h = health.clone();
        tokio::spawn(
            producer
                .clone()
                .monitor(probe_stop.clone(), move |up| h.set_transport_down(!up)),
        )
    };
    let metrics_server = MetricsEndpoint::serve(metrics_listener, &prom, &health);
    let metrics_addr = metrics_server.addr;
    health.set_ready(true);
    let progress_stop = CancellationToken::new();
    let progress = opts.progress.map(|every| {
        let (stats, producer, stop) = (stats.clone(), producer.clone(), progress_stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                eprintln!(
                    "progress: {:>6.1}s  received {}  published {}  in flight {}  buffer-full waits {}",
                    started.elapsed().as_secs_f64(),
                    stats.received.get(),
                    producer.delivered(),
                    producer.in_flight(),
                    producer.backpressure_waits(),
                );
            }
        })
    });

    let source_res = source.await.context("source task panicked")?;
    if source_res.is_err() {
        stop.cancel();
    }
    health.set_ready(false);
    let publish_res = publisher.await.context("publisher task panicked")?;
    let confirm_res = confirmer.await.context("delivery task panicked")?;
    probe_stop.cancel();
    probe.await.context("kafka probe panicked")?;
    let metrics_res = metrics_server.stop().await?;
    progress_stop.cancel();
    if let Some(p) = progress {
        let _ = p.await;
    }
    source_res.context("source")?;
    publish_res.context("publishing to kafka")?;
    confirm_res.context("kafka deliveries")?;
    metrics_res.context("metrics endpoint")?;
    let replay = report.lock().expect("report lock").clone();
    Ok(CollectSummary {
        pipeline,
        elapsed: started.elapsed(),
        received: stats.received.get(),
        published: producer.delivered(),
        backpressure_waits: producer.backpressure_waits(),
        replay,
        topic: k.topic.get_ref().clone(),
        metrics_addr,
    })
}

/// The run's own Prometheus registry (components register what they own; no globals)
/// with the pipeline counters and the build info on it.
fn new_registry() -> anyhow::Result<(Arc<PipelineStats>, prometheus::Registry)> {
    let stats = Arc::new(PipelineStats::default());
    let prom = prometheus::Registry::new();
    stats
        .register(&prom)
        .context("registering pipeline metrics")?;
    prom.register(Box::new(metrics::build_info()))
        .context("registering build info")?;
    Ok((stats, prom))
}

/// Binds `[metrics] listen` before anything else starts, so a taken port fails the run
/// at once with the address in the error.
async fn bind_metrics(
    pipeline: &Pipeline,
) -> anyhow::Result<Option<(tokio::net::TcpListener, std::net::SocketAddr)>> {
    let Some(m) = &pipeline.metrics else {
        return Ok(None);
    };
    let l = tokio::net::TcpListener::bind(m.listen)
        .await
        .with_context(|| format!("[metrics] listen = \"{}\": cannot bind", m.listen))?;
    let addr = l.local_addr().context("metrics listener address")?;
    tracing::info!(%addr, "metrics endpoint listening (/metrics, /health, /ready)");
    Ok(Some((l, addr)))
}

/// The `/metrics`, `/health`, `/ready` server of a run, when `[metrics]` is set.
struct MetricsEndpoint {
    addr: Option<std::net::SocketAddr>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), metrics::server::ServeError>>>,
}

impl MetricsEndpoint {
    fn serve(
        bound: Option<(tokio::net::TcpListener, std::net::SocketAddr)>,
        prom: &prometheus::Registry,
        health: &Arc<Health>,
    ) -> MetricsEndpoint {
        let stop = CancellationToken::new();
        let addr = bound.as_ref().map(|(_, a)| *a);
        let task = bound.map(|(l, _)| {
            tokio::spawn(metrics::server::serve(
                l,
                prom.clone(),
                health.clone(),
                stop.clone(),
            ))
        });
        MetricsEndpoint { addr, stop, task }
    }

    /// Stops serving (the last scrape of a run sees its final counts); the outer error is
    /// a panic of the server task, the inner one how serving ended.
    async fn stop(self) -> anyhow::Result<Result<(), metrics::server::ServeError>> {
        self.stop.cancel();
        match self.task {
            Some(t) => t.await.context("metrics endpoint panicked"),
            None => Ok(Ok(())),
        }
    }
}

/// The running collect half: source → producer, with the broker's acknowledgements.
struct CollectSide {
    source: tokio::task::JoinHandle<anyhow::Result<()>>,
    publisher: tokio::task::JoinHandle<anyhow::Result<()>>,
    confirmer: tokio::task::JoinHandle<anyhow::Result<()>>,
    producer: Arc<KafkaProducer>,
    /// Per partition, the highest offset the broker acknowledged.
    ends: Arc<Mutex<std::collections::HashMap<i32, i64>>>,
    edits: SourceEdits,
}

/// Starts the source and publishes what it reads (shared by `collect` and `run` over
/// Kafka). The source stops on `stop`; acknowledgements get a bounded wait after `cancel`.
#[allow(clippy::too_many_arguments)]
fn spawn_collect_side(
    k: &super::config::KafkaConfig,
    pipeline: &Pipeline,
    opts: &RunOptions,
    stats: &Arc<PipelineStats>,
    report: &Arc<Mutex<ReplayReport>>,
    prom: &prometheus::Registry,
    stop: &CancellationToken,
    cancel: &CancellationToken,
    mongo: Option<::mongodb::Database>,
) -> anyhow::Result<CollectSide> {
    let mut popts = kafka::ProducerOptions::new(&k.broker_list(), k.topic.get_ref());
    popts.compression = k.compression.into();
    popts.queue_messages = k.producer_buffer;
    let producer = Arc::new(KafkaProducer::new(&popts).context("creating the kafka producer")?);
    producer
        .register(prom)
        .context("registering producer metrics")?;
    // A small local queue between the source and the producer; the producer's own buffer
    // is the bound that matters.
    let (tx, rx) = memory::channel(1_000, 256);
    let (source, edits) = spawn_source(pipeline, opts, &tx, stats, report, prom, stop, mongo)?;
    drop(tx);
    let (dtx, drx) = mpsc::channel::<kafka::Delivery>(k.producer_buffer.max(1));
    let ends = Arc::new(Mutex::new(std::collections::HashMap::new()));
    let publisher = tokio::spawn(publish_loop(rx, producer.clone(), dtx));
    let confirmer = tokio::spawn(confirm_loop(
        drx,
        producer.clone(),
        ends.clone(),
        cancel.clone(),
    ));
    Ok(CollectSide {
        source,
        publisher,
        confirmer,
        producer,
        ends,
        edits,
    })
}

/// `run` over Kafka: waits until the collect half is done (source exhausted, everything
/// acknowledged by the broker), then until the processor stored every record up to those
/// offsets, then stops the reader so the run drains and ends. On `stop` (Ctrl-C) it stops
/// waiting; what was published and not yet processed stays in the topic for the next run.
async fn drive_all_in_one(
    side: CollectSide,
    consumer: Arc<KafkaConsumer>,
    reader: tokio::task::JoinHandle<anyhow::Result<()>>,
    reader_stop: CancellationToken,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let collected = async {
        side.source.await.context("source task panicked")??;
        side.publisher
            .await
            .context("publisher task panicked")?
            .context("publishing to kafka")?;
        side.confirmer
            .await
            .context("delivery task panicked")?
            .context("kafka deliveries")
    }
    .await;
    if collected.is_ok() {
        let ends: Vec<(i32, i64)> = side
            .ends
            .lock()
            .expect("ends lock")
            .iter()
            .map(|(p, o)| (*p, *o))
            .collect();
        while !ends
            .iter()
            .all(|(p, o)| consumer.acked_end(*p).is_some_and(|c| c > *o))
        {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
    reader_stop.cancel();
    let read = reader.await.context("kafka reader panicked")?;
    collected?;
    read
}

/// Hands every message to the producer (waiting while its buffer is full) and passes the
/// delivery receipts on, in order, to [`confirm_loop`].
async fn publish_loop(
    mut rx: memory::MemoryReceiver,
    producer: Arc<KafkaProducer>,
    receipts: mpsc::Sender<kafka::Delivery>,
) -> anyhow::Result<()> {
    while let Some(batch) = rx.recv_batch().await {
        for m in &batch {
            let d = producer.send(m).await?;
            receipts
                .send(d)
                .await
                .map_err(|_| anyhow!("delivery task stopped before the publisher"))?;
        }
    }
    Ok(())
}

/// Waits for the broker's acknowledgement of every published message. A failed delivery
/// stops the run. After `cancel`, waits at most [`COLLECT_SHUTDOWN_GRACE`] and then
/// reports how many messages were not confirmed.
async fn confirm_loop(
    mut receipts: mpsc::Receiver<kafka::Delivery>,
    producer: Arc<KafkaProducer>,
    ends: Arc<Mutex<std::collections::HashMap<i32, i64>>>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut deadline: Option<tokio::time::Instant> = None;
    while let Some(d) = receipts.recv().await {
        let wait = d.wait();
        tokio::pin!(wait);
        loop {
            let limit = deadline
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(24 * 3600));
            tokio::select! {
                r = &mut wait => {
                    let (p, o) = r?;
                    let mut ends = ends.lock().expect("ends lock");
                    let e = ends.entry(p).or_insert(o);
                    *e = (*e).max(o);
                    break;
                }
                _ = cancel.cancelled(), if deadline.is_none() => {
                    deadline = Some(tokio::time::Instant::now() + COLLECT_SHUTDOWN_GRACE);
                }
                _ = tokio::time::sleep_until(limit) => {
                    return Err(anyhow!(
                        "the broker did not acknowledge {} buffered messages within {COLLECT_SHUTDOWN_GRACE:?} of shutdown; they may not have been published",
                        producer.in_flight()
                    ));
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
        if let Some(p) = &self.sqlite_path
            && let Ok(n) = crate::sinks::sqlite::count(p, "gaps")
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
        match &self.channel_counts {
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
        let per_sink: Vec<String> = self
            .alert_sinks
            .iter()
            .map(|k| {
                let a = &self.alert_stats;
                format!(
                    "{k} {} delivered, {} failed attempts, {} dead-lettered",
                    AlertStats::by_sink(&a.delivered, k),
                    AlertStats::by_sink(&a.retried, k),
                    AlertStats::by_sink(&a.dead_lettered, k)
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "alert deliveries: {}; left in the store for the next run: {} pending, {} dead letters",
            per_sink.join("; "),
            self.alerts_left.pending,
            self.alerts_left.dead_letter
        );
        let _ = writeln!(
            s,
            "reloads: {} applied, {} rejected (generation {})",
            st.reloads_ok.get(),
            st.reloads_failed.get(),
            self.generation
        );
        let _ = writeln!(s, "data: {}", self.sink_target);
        if let Some(a) = self.metrics_addr {
            let _ = writeln!(
                s,
                "metrics: http://{a}/metrics (served while the run lasted)"
            );
        }
        let _ = writeln!(
            s,
            "query: streamtap query {} --format table --limit 20",
            self.pipeline.file.display(),
        );
        if let Some(p) = &self.sqlite_path {
            let _ = writeln!(
                s,
                "       sqlite3 {} \"SELECT channel, json_extract(fields, '$.sentiment.compound') FROM messages LIMIT 5\"",
                p.display()
            );
        }
        s
    }
}

/// `collect` has no sink of its own: the deployment's MongoDB (the pipeline's
/// `[sink.mongodb]`) is opened only when a Helix budget is to be shared through it.
async fn helix_mongo(pipeline: &Pipeline) -> anyhow::Result<Option<::mongodb::Database>> {
    let SourceConfig::Twitch(t) = &pipeline.source else {
        return Ok(None);
    };
    match (&t.helix, &pipeline.sink) {
        (Some(h), SinkConfig::Mongodb(_)) if h.budget != HelixBudget::Local => Ok(Some(
            crate::sinks::open_mongo_database(pipeline)
                .await
                .context("opening MongoDB for the shared Helix budget")?,
        )),
        _ => Ok(None),
    }
}

/// The Helix budget `[source.twitch.helix] budget` asks for: shared through the sink's
/// MongoDB database, or this process's own.
fn helix_budget(h: &HelixConfig, db: Option<::mongodb::Database>) -> anyhow::Result<Budget> {
    match (h.budget, db) {
        (HelixBudget::Auto | HelixBudget::Mongodb, Some(db)) => Ok(Budget::shared(
            &db,
            h.client_id.get_ref().trim(),
            h.points_per_minute,
        )),
        (HelixBudget::Mongodb, None) => Err(anyhow!(
            "source.twitch.helix: budget \"mongodb\" needs [sink.mongodb]"
        )),
        (HelixBudget::Auto | HelixBudget::Local, _) => Ok(Budget::local(h.points_per_minute)),
    }
}
