//! The recorder: live streams of channels marked `record = true`, saved with `streamlink`.
//!
//! The Helix poller publishes which of this instance's channels are live (and with which
//! `stream_id`); the recorder keeps exactly one supervised `streamlink` process per live
//! recorded channel. Sharding comes for free: an instance only polls, and so only records,
//! the channels its `--shard` owns, so two instances never record one stream.
//!
//! Files: `{dir}/{channel}/{stream_id}.ts`, then `{stream_id}.1.ts`, `.2.ts`, … for the
//! parts after a restart. streamlink writes `NAME.ts.part`; the part is renamed when its
//! process ends (an empty part is removed). Parts left by a crashed run are renamed when the
//! same stream is recorded again, and a new part never overwrites an existing file.
//!
//! Supervision: a `streamlink` that exits while Helix still reports the stream live is
//! restarted into the next part after `restart_min` doubling to `restart_max` (with
//! jitter; reset after a part that lasted 30 s). Offline, a new stream id, a removed
//! `record` flag or shutdown stop it with SIGTERM (streamlink closes the file cleanly),
//! then SIGKILL after `stop_timeout`.
//!
//! Limits: at most `max_concurrent` recordings; no new recording when the disk under `dir`
//! has less than `min_free_disk_mb` free (refused, logged and counted once per stream,
//! retried while the stream is live). Each process's output is kept to its last
//! `log_lines` lines; the last one explains an exit.
//!
//! Metadata travels with the chat messages as events of kind [`RECORDING_KIND`], one id
//! per stream (`recording:<stream id>`) and an increasing `seq`, and the sink keeps the
//! newest in `recordings`. The Twitch API header, when configured, reaches streamlink in a
//! private config file (mode 0600, removed afterwards), not its command line.

use crate::metrics::PipelineStats;
use crate::pipeline::config::RecorderConfig;
use crate::sources::helix::LiveStream;
use crate::transport::memory::MemorySender;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use streamtap_plugin_sdk::{ChatMessage, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Kind of the events carrying a recording's metadata.
pub const RECORDING_KIND: &str = "recording";

/// The live channels of this instance, by login, as Helix last reported them.
pub type LiveMap = BTreeMap<String, LiveStream>;

/// A part that lasted this long resets the restart backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How often limits (disk, concurrency) are looked at again for refused streams.
const RECHECK: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("recorder: cannot create {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("recorder: cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A recording's metadata, as stored in `recordings`.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    pub channel: String,
    pub channel_id: String,
    pub stream_id: String,
    pub title: String,
    pub game: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    /// File names (in `{dir}/{channel}/`) of the finished parts, in order.
    pub files: Vec<String>,
    pub bytes: i64,
    pub restarts: i64,
    /// Why each part ended.
    pub exits: Vec<String>,
    /// `recording`, `finished`, or `refused: REASON`.
    pub status: String,
    /// Increases with every update: the store keeps the highest.
    pub seq: i64,
}

impl Recording {
    /// The first update of `stream`'s recording on `channel`, starting now.
    fn new(channel: &str, stream: &LiveStream, status: String) -> Recording {
        Recording {
            channel: channel.to_owned(),
            channel_id: stream.user_id.clone(),
            stream_id: stream.id.clone(),
            title: stream.title.clone(),
            game: stream.game_name.clone(),
            started_ms: now_ms(),
            ended_ms: None,
            files: Vec::new(),
            bytes: 0,
            restarts: 0,
            exits: Vec::new(),
            status,
            seq: next_seq(0),
        }
    }

    pub fn to_message(&self) -> ChatMessage {
        let mut f = BTreeMap::new();
        let s = |v: &str| Value::Str(v.to_owned());
        f.insert("stream_id".into(), s(&self.stream_id));
        f.insert("title".into(), s(&self.title));
        f.insert("game".into(), s(&self.game));
        f.insert("started_ms".into(), Value::Int(self.started_ms));
        if let Some(e) = self.ended_ms {
            f.insert("ended_ms".into(), Value::Int(e));
        }
        f.insert(
            "files".into(),
            Value::List(self.files.iter().map(|x| s(x)).collect()),
        );
        f.insert("bytes".into(), Value::Int(self.bytes));
        f.insert("restarts".into(), Value::Int(self.restarts));
        f.insert(
            "exits".into(),
            Value::List(self.exits.iter().map(|x| s(x)).collect()),
        );
        f.insert("status".into(), s(&self.status));
        f.insert("seq".into(), Value::Int(self.seq));
        ChatMessage {
            id: format!("{RECORDING_KIND}:{}", self.stream_id),
            kind: RECORDING_KIND.into(),
            channel: self.channel.clone(),
            channel_id: self.channel_id.clone(),
            user: String::new(),
            user_id: String::new(),
            display_name: String::new(),
            text: self.status.clone(),
            ts_ms: self.started_ms,
            badges: Vec::new(),
            emotes: Vec::new(),
            fields: f,
        }
    }
}

/// Reads a recording event back (the sink's view); `None` for other kinds or a malformed one.
pub fn recording_of(m: &ChatMessage) -> Option<Recording> {
    if m.kind != RECORDING_KIND {
        return None;
    }
    let str_of = |k: &str| match m.fields.get(k) {
        Some(Value::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let int = |k: &str| match m.fields.get(k) {
        Some(Value::Int(i)) => Some(*i),
        _ => None,
    };
    let list = |k: &str| match m.fields.get(k) {
        Some(Value::List(l)) => l
            .iter()
            .map(|v| match v {
                Value::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => None,
    };
    Some(Recording {
        channel: m.channel.clone(),
        channel_id: m.channel_id.clone(),
        stream_id: str_of("stream_id")?,
        title: str_of("title").unwrap_or_default(),
        game: str_of("game").unwrap_or_default(),
        started_ms: int("started_ms")?,
        ended_ms: int("ended_ms"),
        files: list("files")?,
        bytes: int("bytes").unwrap_or(0),
        restarts: int("restarts").unwrap_or(0),
        exits: list("exits").unwrap_or_default(),
        status: str_of("status")?,
        seq: int("seq")?,
    })
}

/// Metrics of the recorder, on the run's registry.
struct RecorderStats {
    active: prometheus::IntGauge,
    restarts: prometheus::IntCounter,
    bytes: prometheus::IntCounter,
    parts: prometheus::IntCounter,
    refused: prometheus::IntCounterVec,
    disk_free: prometheus::IntGauge,
    disk_min_free: prometheus::IntGauge,
}

impl RecorderStats {
    fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let opts = |n: &str, h: &str| prometheus::Opts::new(n, h).namespace("streamtap");
        let active = prometheus::IntGauge::with_opts(opts(
            "recorder_active",
            "Recordings in progress (streamlink processes supervised).",
        ))?;
        let restarts = prometheus::IntCounter::with_opts(opts(
            "recorder_restarts_total",
            "streamlink processes restarted while their stream was still live.",
        ))?;
        let bytes = prometheus::IntCounter::with_opts(opts(
            "recorder_bytes_total",
            "Bytes in finished recording parts.",
        ))?;
        let parts = prometheus::IntCounter::with_opts(opts(
            "recorder_parts_total",
            "Recording parts finished (files renamed from .part).",
        ))?;
        let refused = prometheus::IntCounterVec::new(
            opts(
                "recorder_refused_total",
                "Streams not recorded when they went live, by reason (disk, limit).",
            ),
            &["reason"],
        )?;
        let disk_free = prometheus::IntGauge::with_opts(opts(
            "recorder_disk_free_bytes",
            "Free bytes on the file system of the recordings directory.",
        ))?;
        registry.register(Box::new(active.clone()))?;
        registry.register(Box::new(restarts.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(parts.clone()))?;
        // Both reasons exported from the start (at 0), so rates and alert rules see them.
        for reason in ["disk", "limit"] {
            refused.with_label_values(&[reason]);
        }
        registry.register(Box::new(refused.clone()))?;
        let disk_min_free = prometheus::IntGauge::with_opts(opts(
            "recorder_disk_min_free_bytes",
            "The recorder's min_free_disk_mb in bytes: below it new recordings are refused.",
        ))?;
        registry.register(Box::new(disk_free.clone()))?;
        registry.register(Box::new(disk_min_free.clone()))?;
        Ok(RecorderStats {
            disk_min_free,
            active,
            restarts,
            bytes,
            parts,
            refused,
            disk_free,
        })
    }
}

/// Everything the recorder needs besides its config.
pub struct Recorder {
    pub config: RecorderConfig,
    /// `dir`, resolved against the pipeline file.
    pub dir: PathBuf,
    /// The Twitch API header value (already read from env/file), e.g. `Authorization=OAuth …`.
    pub api_header: Option<String>,
    pub tx: MemorySender,
    pub stats: Arc<PipelineStats>,
    pub live: watch::Receiver<LiveMap>,
    /// Channels marked `record = true` (all shards; only live ones of this shard matter).
    pub record: watch::Receiver<BTreeSet<String>>,
    pub registry: prometheus::Registry,
}

/// What the supervisors share.
struct Ctx {
    config: RecorderConfig,
    dir: PathBuf,
    api_header: Option<String>,
    stats: RecorderStats,
    updates: mpsc::UnboundedSender<Recording>,
}

struct Active {
    stream_id: String,
    stop: CancellationToken,
}

/// Free bytes for unprivileged users on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The next `seq` of a recording: above the last one and above every earlier update from
/// any run (wall-clock microseconds), so a restarted instance's updates of a stream an
/// earlier run recorded are not taken for stale ones.
fn next_seq(last: i64) -> i64 {
    (last + 1).max(chrono::Utc::now().timestamp_micros())
}

/// Runs until `cancel` fires, then stops every recording (bounded by `stop_timeout`) and
/// sends their final metadata.
pub async fn run(r: Recorder, cancel: CancellationToken) -> Result<(), RecorderError> {
    std::fs::create_dir_all(&r.dir).map_err(|source| RecorderError::Dir {
        path: r.dir.display().to_string(),
        source,
    })?;
    let (up_tx, mut up_rx) = mpsc::unbounded_channel::<Recording>();
    let ctx = Arc::new(Ctx {
        config: r.config.clone(),
        dir: r.dir.clone(),
        api_header: r.api_header.clone(),
        stats: RecorderStats::new(&r.registry)?,
        updates: up_tx,
    });
    ctx.stats.disk_min_free.set(
        i64::try_from(r.config.min_free_disk_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX),
    );
    let tracker = TaskTracker::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, String)>();
    let mut active: HashMap<String, Active> = HashMap::new();
    // Streams already refused (stream id → reason), so each is reported once.
    let mut refused: HashMap<String, String> = HashMap::new();
    let (mut live_rx, mut record_rx) = (r.live, r.record);
    let mut recheck = tokio::time::interval(RECHECK);
    tracing::info!(dir = %r.dir.display(), max_concurrent = r.config.max_concurrent, "recorder ready");
    let mut live_open = true;
    let mut record_open = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            c = live_rx.changed(), if live_open => { if c.is_err() { live_open = false; } }
            c = record_rx.changed(), if record_open => { if c.is_err() { record_open = false; } }
            Some((channel, stream_id)) = done_rx.recv() => {
                if active.get(&channel).is_some_and(|a| a.stream_id == stream_id) {
                    active.remove(&channel);
                }
            }
            Some(rec) = up_rx.recv() => {
                send(&r.tx, &r.stats, rec).await;
                continue;
            }
            _ = recheck.tick() => {}
        }
        let live = live_rx.borrow().clone();
        let record = record_rx.borrow().clone();
        reconcile(
            &ctx,
            &tracker,
            &done_tx,
            &mut active,
            &mut refused,
            &live,
            &record,
        )
        .await;
    }
    for a in active.values() {
        a.stop.cancel();
    }
    tracker.close();
    // Supervisors stop within `stop_timeout` each (in parallel); their last updates are
    // forwarded while waiting.
    let wait = tracker.wait();
    tokio::pin!(wait);
    loop {
        tokio::select! {
            _ = &mut wait => break,
            Some(rec) = up_rx.recv() => send(&r.tx, &r.stats, rec).await,
        }
    }
    drop(ctx);
    while let Ok(rec) = up_rx.try_recv() {
        send(&r.tx, &r.stats, rec).await;
    }
    Ok(())
}

async fn send(tx: &MemorySender, stats: &PipelineStats, rec: Recording) {
    if tx.send(rec.to_message()).await.is_ok() {
        stats.received.inc();
    }
}

/// Starts and stops supervisors so that exactly the live recorded channels are recorded.
async fn reconcile(
    ctx: &Arc<Ctx>,
    tracker: &TaskTracker,
    done: &mpsc::UnboundedSender<(String, String)>,
    active: &mut HashMap<String, Active>,
    refused: &mut HashMap<String, String>,
    live: &LiveMap,
    record: &BTreeSet<String>,
) {
    // Stop what is no longer wanted (offline, new stream id, flag removed). The entry stays
    // until its supervisor finished, so a channel never has two recorders.
    for (channel, a) in active.iter() {
        let still =
            record.contains(channel) && live.get(channel).is_some_and(|s| s.id == a.stream_id);
        if !still && !a.stop.is_cancelled() {
            tracing::info!(channel = %channel, stream_id = %a.stream_id, "recorder: stopping");
            a.stop.cancel();
        }
    }
    // Forget refusals of streams that ended (they would be reported again if they came back).
    refused.retain(|id, _| live.values().any(|s| &s.id == id));
    let free = free_bytes(&ctx.dir).ok();
    if let Some(f) = free {
        ctx.stats
            .disk_free
            .set(i64::try_from(f).unwrap_or(i64::MAX));
    }
    let min_free = ctx.config.min_free_disk_mb.saturating_mul(1024 * 1024);
    for (channel, stream) in live {
        if !record.contains(channel) || active.contains_key(channel) {
            continue;
        }
        let reason = if active.len() >= ctx.config.max_concurrent {
            Some((
                "limit",
                format!("max_concurrent {} reached", ctx.config.max_concurrent),
            ))
        } else if free.is_some_and(|f| f < min_free) {
            Some((
                "disk",
                format!(
                    "{} MB free under {}, below min_free_disk_mb {}",
                    free.unwrap_or(0) / (1024 * 1024),
                    ctx.dir.display(),
                    ctx.config.min_free_disk_mb
                ),
            ))
        } else {
            None
        };
        if let Some((kind, why)) = reason {
            if refused.get(&stream.id) != Some(&why) {
                ctx.stats.refused.with_label_values(&[kind]).inc();
                tracing::warn!(channel = %channel, stream_id = %stream.id, reason = %why, "recorder: not recording");
                let _ =
                    ctx.updates
                        .send(Recording::new(channel, stream, format!("refused: {why}")));
                refused.insert(stream.id.clone(), why);
            }
            continue;
        }
        let stop = CancellationToken::new();
        active.insert(
            channel.clone(),
            Active {
                stream_id: stream.id.clone(),
                stop: stop.clone(),
            },
        );
        ctx.stats.active.inc();
        let (ctx, done, stream, channel) =
            (ctx.clone(), done.clone(), stream.clone(), channel.clone());
        tracker.spawn(async move {
            let id = stream.id.clone();
            supervise(&ctx, &channel, stream, stop).await;
            ctx.stats.active.dec();
            let _ = done.send((channel, id));
        });
    }
}

/// The file name of part `n` of a stream.
pub fn part_name(stream_id: &str, n: u32) -> String {
    if n == 0 {
        format!("{stream_id}.ts")
    } else {
        format!("{stream_id}.{n}.ts")
    }
}

/// Records one stream until `stop`, restarting streamlink as needed.
async fn supervise(ctx: &Ctx, channel: &str, stream: LiveStream, stop: CancellationToken) {
    let dir = ctx.dir.join(channel);
    let mut rec = Recording::new(channel, &stream, "recording".into());
    if let Err(e) = std::fs::create_dir_all(&dir) {
        rec.status = format!("failed: cannot create {}: {e}", dir.display());
        rec.ended_ms = Some(now_ms());
        tracing::error!(channel, error = %e, "recorder: cannot create the channel directory");
        let _ = ctx.updates.send(rec);
        return;
    }
    // Parts a crashed run left behind are complete up to the crash: keep them.
    let mut part = recover_parts(ctx, &dir, &mut rec);
    let _ = ctx.updates.send(rec.clone());
    let mut backoff = ctx.config.restart_min.0;
    loop {
        while dir.join(part_name(&stream.id, part)).exists() {
            part += 1;
        }
        let name = part_name(&stream.id, part);
        let part_path = dir.join(format!("{name}.part"));
        let started = Instant::now();
        tracing::info!(channel, stream_id = %stream.id, file = %name, "recorder: streamlink starting");
        let exit = run_streamlink(ctx, channel, &part_path, &stop).await;
        let lived = started.elapsed();
        match finish_part(&part_path, &dir.join(&name)) {
            Ok(Some(bytes)) => {
                ctx.stats.parts.inc();
                ctx.stats.bytes.inc_by(bytes);
                rec.files.push(name.clone());
                rec.bytes += i64::try_from(bytes).unwrap_or(i64::MAX);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(channel, file = %name, error = %e, "recorder: cannot finish part")
            }
        }
        rec.exits.push(exit.clone());
        rec.seq = next_seq(rec.seq);
        if stop.is_cancelled() {
            rec.status = "finished".into();
            rec.ended_ms = Some(now_ms());
            tracing::info!(channel, stream_id = %stream.id, files = rec.files.len(), bytes = rec.bytes, restarts = rec.restarts, "recorder: finished");
            let _ = ctx.updates.send(rec);
            return;
        }
        // Exited on its own while the stream is still live: next part, after a pause.
        rec.restarts += 1;
        ctx.stats.restarts.inc();
        let _ = ctx.updates.send(rec.clone());
        if lived >= STABLE_AFTER {
            backoff = ctx.config.restart_min.0;
        }
        let wait = backoff / 2 + (backoff / 2).mul_f64(fastrand::f64());
        tracing::warn!(channel, stream_id = %stream.id, exit = %exit, restart_in = ?wait, "recorder: streamlink exited while live; restarting");
        backoff = (backoff * 2).min(ctx.config.restart_max.0);
        part += 1;
        tokio::select! {
            _ = stop.cancelled() => {
                rec.status = "finished".into();
                rec.ended_ms = Some(now_ms());
                rec.seq = next_seq(rec.seq);
                let _ = ctx.updates.send(rec);
                return;
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Renames `.part` files of this stream left in `dir` and returns the next free part.
fn recover_parts(ctx: &Ctx, dir: &Path, rec: &mut Recording) -> u32 {
    let mut next = 0;
    while dir.join(part_name(&rec.stream_id, next)).exists()
        || dir
            .join(format!("{}.part", part_name(&rec.stream_id, next)))
            .exists()
    {
        let name = part_name(&rec.stream_id, next);
        let part = dir.join(format!("{name}.part"));
        if part.exists() {
            match finish_part(&part, &dir.join(&name)) {
                Ok(Some(bytes)) => {
                    tracing::warn!(file = %name, bytes, "recorder: kept a part left by an earlier run");
                    ctx.stats.parts.inc();
                    rec.files.push(name.clone());
                    rec.bytes += i64::try_from(bytes).unwrap_or(i64::MAX);
                    rec.exits.push("left by an earlier run".into());
                }
                Ok(None) => {}
                Err(e) => tracing::error!(file = %name, error = %e, "recorder: cannot keep a part"),
            }
        } else {
            // A finished part of an earlier run of this stream.
            if let Ok(m) = std::fs::metadata(dir.join(&name)) {
                rec.files.push(name);
                rec.bytes += i64::try_from(m.len()).unwrap_or(i64::MAX);
            }
        }
        next += 1;
    }
    next
}

/// Renames a finished part; removes it when empty. The size when kept.
fn finish_part(part: &Path, done: &Path) -> std::io::Result<Option<u64>> {
    match std::fs::metadata(part) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
        Ok(m) if m.len() == 0 => std::fs::remove_file(part).map(|_| None),
        Ok(m) => std::fs::rename(part, done).map(|_| Some(m.len())),
    }
}

/// A private streamlink config file holding the API header, removed on drop.
struct HeaderFile(PathBuf);

impl HeaderFile {
    fn write(dir: &Path, header: &str) -> std::io::Result<HeaderFile> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(format!(".streamlink-{}.conf", fastrand::u64(..)));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        writeln!(f, "twitch-api-header={header}")?;
        Ok(HeaderFile(path))
    }
}

impl Drop for HeaderFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs one streamlink writing to `out` until it exits or `stop` fires; why it ended.
async fn run_streamlink(ctx: &Ctx, channel: &str, out: &Path, stop: &CancellationToken) -> String {
    let cfg = &ctx.config;
    let url = cfg.url.replace("{channel}", channel);
    let header = match &ctx.api_header {
        Some(h) => match HeaderFile::write(&ctx.dir, h) {
            Ok(f) => Some(f),
            Err(e) => return format!("cannot write the streamlink config file: {e}"),
        },
        None => None,
    };
    let mut cmd = tokio::process::Command::new(&cfg.streamlink);
    if let Some(h) = &header {
        cmd.arg("--config").arg(&h.0);
    }
    cmd.args(&cfg.args)
        .arg("--output")
        .arg(out)
        .arg(&url)
        .arg(&cfg.quality)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return format!("cannot start {}: {e}", cfg.streamlink.display()),
    };
    // The last `log_lines` lines of both streams, for the exit reason and the log.
    let log = Arc::new(Mutex::new(VecDeque::<String>::new()));
    let keep = cfg.log_lines.max(1);
    let mut readers = Vec::new();
    let stdout = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>);
    let stderr = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>);
    for s in [stdout, stderr].into_iter().flatten() {
        let log = log.clone();
        let channel = channel.to_owned();
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(s).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tracing::debug!(channel = %channel, line = %l, "streamlink");
                let mut q = log.lock().unwrap_or_else(|e| e.into_inner());
                q.push_back(l);
                while q.len() > keep {
                    q.pop_front();
                }
            }
        }));
    }
    let status = tokio::select! {
        s = child.wait() => s,
        _ = stop.cancelled() => {
            if let Some(pid) = child.id() {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            }
            match tokio::time::timeout(cfg.stop_timeout.0, child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    tracing::warn!(channel, "recorder: streamlink did not stop in time; killing it");
                    let _ = child.kill().await;
                    child.wait().await
                }
            }
        }
    };
    for r in readers {
        let _ = r.await;
    }
    drop(header);
    let last = log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .back()
        .cloned()
        .unwrap_or_default();
    let how = match status {
        Ok(s) if stop.is_cancelled() => format!("stopped ({s})"),
        Ok(s) => format!("exited ({s})"),
        Err(e) => format!("wait failed: {e}"),
    };
    if last.is_empty() {
        how
    } else {
        format!("{how}: {last}")
    }
}
