//! Hot reload: watch the pipeline file and every plugin file, rebuild off the hot path,
//! hand the new chain to the processor.
//!
//! Editors save in bursts (truncate + write, or write-temp + rename), so events are
//! debounced until the files have been quiet for [`DEBOUNCE`]. The new generation is
//! compiled and `init`ed here, on a blocking thread, while the old one keeps processing;
//! the processor swaps between batches, so a batch already handed to the old chain finishes
//! there and every later message goes to the new one. A generation that fails to load
//! (bad TOML, missing or broken plugin, failing `init`) is rejected with an error naming the
//! file and reason, and the running generation stays.
//!
//! Steps change live, and so does the channel list of a `[source.twitch]` (handed to the
//! running source, which joins and parts; no new generation is built when only channels
//! changed). Other `[source]`, `[transport]`, `[sink]` and `[alerts]` changes are reported and take
//! effect at the next start, since swapping them would need draining in-flight messages
//! through two stores.

use super::config::{Pipeline, SourceConfig};
use super::{StepRegistry, build_chain};
use crate::metrics::PipelineStats;
use crate::pipeline::chain::Chain;
use crate::plugins::Runtime;
use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Quiet time after the last file event before a reload starts.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// A pipeline generation ready to swap in.
pub struct Generation {
    pub id: u64,
    pub pipeline: Pipeline,
    pub chain: Chain,
}

/// Where the reloader leaves the newest generation for the processor to pick up.
/// Holding only the newest means a burst of edits swaps once, to the final state.
pub type PendingSlot = Arc<Mutex<Option<Generation>>>;

/// Errors that stop the watcher itself (not a rejected reload, which is only logged).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {path:?}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    #[error("file watcher stopped unexpectedly")]
    Stopped,
}

fn hash_file(p: &Path) -> Option<String> {
    std::fs::read(p)
        .ok()
        .map(|b| hex::encode(Sha256::digest(&b)))
}

fn plugin_hashes(p: &Pipeline) -> HashMap<PathBuf, Option<String>> {
    p.steps
        .iter()
        .map(|s| (s.plugin_path.clone(), hash_file(&s.plugin_path)))
        .collect()
}

/// Absolute form of a path whose file may not exist right now (mid-save).
fn absolute(p: &Path) -> PathBuf {
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    match p.file_name() {
        Some(n) => dir.join(n),
        None => dir,
    }
}

/// Watches files and produces generations.
pub struct Reloader {
    runtime: Arc<Runtime>,
    registry: Arc<StepRegistry>,
    stats: Arc<PipelineStats>,
    pending: PendingSlot,
    current: Pipeline,
    hashes: HashMap<PathBuf, Option<String>>,
    next_id: u64,
    /// Where a changed `[source.twitch]` channel list goes.
    channel_edits: Option<tokio::sync::watch::Sender<Vec<String>>>,
    /// Where a changed set of `record = true` channels goes (the recorder).
    record_edits: Option<tokio::sync::watch::Sender<BTreeSet<String>>>,
}

impl Reloader {
    pub fn new(
        runtime: Arc<Runtime>,
        registry: Arc<StepRegistry>,
        stats: Arc<PipelineStats>,
        pending: PendingSlot,
        current: Pipeline,
    ) -> Self {
        let hashes = plugin_hashes(&current);
        Reloader {
            runtime,
            registry,
            stats,
            pending,
            current,
            hashes,
            next_id: 2,
            channel_edits: None,
            record_edits: None,
        }
    }

    /// Sends channel list edits of a `[source.twitch]` to the running source.
    pub fn with_channel_edits(
        mut self,
        edits: Option<tokio::sync::watch::Sender<Vec<String>>>,
    ) -> Self {
        self.channel_edits = edits;
        self
    }

    /// Sends changes of the `record = true` channels to the running recorder.
    pub fn with_record_edits(
        mut self,
        edits: Option<tokio::sync::watch::Sender<BTreeSet<String>>>,
    ) -> Self {
        self.record_edits = edits;
        self
    }

    /// Applies a changed twitch channel list. Returns whether the source differs in
    /// anything but its channels.
    fn apply_channel_edits(&self, new: &Pipeline) -> bool {
        let (SourceConfig::Twitch(a), SourceConfig::Twitch(b)) =
            (&new.source, &self.current.source)
        else {
            return new.source != self.current.source;
        };
        let (now, before) = (a.channel_logins(), b.channel_logins());
        if now != before {
            match &self.channel_edits {
                Some(tx) => {
                    tracing::info!(file = %new.file.display(), channels = now.len(), "twitch channel list changed: joining and parting live");
                    tx.send_replace(now);
                }
                None => {
                    tracing::warn!(file = %new.file.display(), "twitch channel list changed, but this run takes no channel edits; takes effect at the next start")
                }
            }
        }
        let (rec_now, rec_before) = (a.recorded_logins(), b.recorded_logins());
        if rec_now != rec_before {
            match &self.record_edits {
                Some(tx) => {
                    tracing::info!(file = %new.file.display(), recorded = rec_now.len(), "recorded channels changed: applied live");
                    tx.send_replace(rec_now);
                }
                None => {
                    tracing::warn!(file = %new.file.display(), "recorded channels changed, but this run has no recorder; takes effect at the next start")
                }
            }
        }
        a.without_channels() != b.without_channels()
    }

    fn watched_files(&self) -> BTreeSet<PathBuf> {
        std::iter::once(absolute(&self.current.file))
            .chain(self.current.steps.iter().map(|s| absolute(&s.plugin_path)))
            .collect()
    }

    /// Runs until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), WatchError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // The receiver only goes away at shutdown; nothing to do with events then.
            let _ = tx.send(res);
        })
        .map_err(|source| WatchError::Watch {
            path: PathBuf::new(),
            source,
        })?;
        let mut files = self.watched_files();
        let mut dirs = BTreeSet::new();
        Self::sync_watches(&mut watcher, &files, &mut dirs)?;
        tracing::debug!(?files, ?dirs, "watching for changes");

        loop {
            // Wait for a relevant event.
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                ev = rx.recv() => match ev {
                    None => return Err(WatchError::Stopped),
                    Some(ev) => if !Self::relevant(&ev, &files) { continue },
                },
            }
            // Debounce: wait until the watched files are quiet. Only their events count:
            // the directories also hold busy files (a SQLite database, logs).
            let mut quiet_at = tokio::time::Instant::now() + DEBOUNCE;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep_until(quiet_at) => break,
                    ev = rx.recv() => match ev {
                        None => return Err(WatchError::Stopped),
                        Some(ev) => if Self::relevant(&ev, &files) {
                            quiet_at = tokio::time::Instant::now() + DEBOUNCE;
                        },
                    },
                }
            }
            self.reload().await;
            files = self.watched_files();
            Self::sync_watches(&mut watcher, &files, &mut dirs)?;
        }
    }

    fn relevant(ev: &notify::Result<notify::Event>, files: &BTreeSet<PathBuf>) -> bool {
        match ev {
            Ok(e) => {
                tracing::trace!(event = ?e, "file event");
                !matches!(e.kind, notify::EventKind::Access(_))
                    && e.paths.iter().any(|p| files.contains(&absolute(p)))
            }
            Err(e) => {
                tracing::warn!(error = %e, "file watcher error");
                false
            }
        }
    }

    fn sync_watches(
        watcher: &mut notify::RecommendedWatcher,
        files: &BTreeSet<PathBuf>,
        dirs: &mut BTreeSet<PathBuf>,
    ) -> Result<(), WatchError> {
        // Directories, not files: editors and `cp` replace files, which ends a file watch.
        let want: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_owned))
            .collect();
        for d in want.difference(dirs) {
            watcher
                .watch(d, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Watch {
                    path: d.clone(),
                    source,
                })?;
        }
        for d in dirs.difference(&want) {
            let _ = watcher.unwatch(d);
        }
        *dirs = want;
        Ok(())
    }

    /// Builds a new generation from the files as they are now; on success leaves it for the
    /// processor. Returns whether a generation was produced.
    pub async fn reload(&mut self) -> bool {
        let file = self.current.file.clone();
        let new = match Pipeline::load(&file) {
            Ok(p) => p,
            Err(e) => {
                self.stats.reloads_failed.inc();
                tracing::error!(error = %e, "reload rejected; the running pipeline stays");
                return false;
            }
        };
        let hashes = plugin_hashes(&new);
        let source_changed = self.apply_channel_edits(&new);
        let mut same = new.clone();
        if !source_changed {
            // Only the channel list may differ, and that was applied above.
            same.source = self.current.source.clone();
        }
        if same == self.current && hashes == self.hashes {
            tracing::debug!(file = %file.display(), "no step changes; no new generation");
            self.current = new;
            return false;
        }
        for (section, changed) in [
            ("[source]", source_changed),
            ("[transport]", new.transport != self.current.transport),
            ("[sink]", new.sink != self.current.sink),
            ("[alerts]", new.alerts != self.current.alerts),
            ("[recorder]", new.recorder != self.current.recorder),
        ] {
            if changed {
                tracing::warn!(file = %file.display(), section, "section changed: takes effect at the next start; steps reload now");
            }
        }
        let runtime = self.runtime.clone();
        let registry = self.registry.clone();
        let p = new.clone();
        let built = tokio::task::spawn_blocking(move || build_chain(&runtime, &p, &registry)).await;
        let chain = match built {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                self.stats.reloads_failed.inc();
                tracing::error!(error = %e, "reload rejected; the running pipeline stays");
                return false;
            }
            Err(e) => {
                self.stats.reloads_failed.inc();
                tracing::error!(error = %e, "reload task failed; the running pipeline stays");
                return false;
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        for s in &chain.steps {
            let (plugin, version) = s.plugin_version();
            tracing::info!(generation = id, step = %s.name, plugin, version, hash = %s.plugin.short_hash(), "reloaded step");
        }
        *self.pending.lock().expect("pending lock") = Some(Generation {
            id,
            pipeline: new.clone(),
            chain,
        });
        self.current = new;
        self.hashes = hashes;
        true
    }
}
