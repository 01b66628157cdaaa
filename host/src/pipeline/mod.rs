//! Pipelines: the file format ([`config`]), the step chain ([`chain`]), hot reload
//! ([`reload`]) and the run loop ([`runner`]).
//!
//! Building a chain from a pipeline is shared by `check`, `run` and every reload, so what
//! `streamtap check` accepts is exactly what a reload accepts.

pub mod chain;
pub mod config;
pub mod reload;
pub mod runner;

use crate::metrics::StepStats;
use crate::plugins::{Capabilities, HttpPolicy, KvStore, Limits, PluginError, Runtime};
use chain::{Chain, StepRunner};
use config::Pipeline;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Why a pipeline could not be built (its file parsed, but a step did not load).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{file}: step {step:?}: {source}")]
    Plugin {
        file: String,
        step: String,
        source: PluginError,
    },
    #[error("{file}: {message}")]
    Config { file: String, message: String },
}

/// State that belongs to a step name and outlives pipeline generations: its key-value
/// store (plugin state survives reloads) and its statistics.
#[derive(Default)]
pub struct StepRegistry {
    inner: Mutex<HashMap<String, StepShared>>,
    /// Where new steps' metrics are registered (none in tests and benchmarks).
    metrics: Option<prometheus::Registry>,
}

/// What a step name keeps across generations.
type StepShared = (Arc<KvStore>, Arc<StepStats>);

impl StepRegistry {
    /// A registry that registers each new step's metrics in `metrics`.
    pub fn with_metrics(metrics: prometheus::Registry) -> Self {
        StepRegistry {
            inner: Mutex::default(),
            metrics: Some(metrics),
        }
    }

    fn get(&self, step: &str, kv_limit: usize) -> StepShared {
        self.inner
            .lock()
            .expect("registry lock")
            .entry(step.to_owned())
            .or_insert_with(|| {
                let stats = StepStats::new(step);
                if let Some(reg) = &self.metrics
                    && let Err(e) = stats.register(reg)
                {
                    // Only possible if the name were registered twice, which the map
                    // prevents; the step still runs, its series are just not exported.
                    tracing::warn!(step, error = %e, "step metrics not registered");
                }
                (Arc::new(KvStore::new(kv_limit)), Arc::new(stats))
            })
            .clone()
    }

    /// Stats of every step seen so far, by name.
    pub fn stats(&self) -> Vec<(String, Arc<StepStats>)> {
        let mut v: Vec<_> = self
            .inner
            .lock()
            .expect("registry lock")
            .iter()
            .map(|(k, (_, s))| (k.clone(), s.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// Loads every step's plugin, instantiates it and runs `init`.
pub fn build_chain(
    runtime: &Arc<Runtime>,
    pipeline: &Pipeline,
    registry: &StepRegistry,
) -> Result<Chain, BuildError> {
    let file = pipeline.file.display().to_string();
    let mut steps = Vec::with_capacity(pipeline.steps.len());
    for s in &pipeline.steps {
        let plugin_err = |source| BuildError::Plugin {
            file: file.clone(),
            step: s.name.clone(),
            source,
        };
        let plugin = runtime.load(&s.plugin_path).map_err(plugin_err)?;
        let json = config::step_config_json(pipeline, s).map_err(|message| BuildError::Config {
            file: file.clone(),
            message,
        })?;
        let (kv, stats) = registry.get(&s.name, s.config.state_limit.0 as usize);
        let caps = Capabilities {
            step: s.name.as_str().into(),
            kv,
            http: Arc::new(HttpPolicy {
                allow: s
                    .config
                    .allow_http
                    .iter()
                    .map(|h| h.get_ref().clone())
                    .collect(),
                timeout: s.config.http_timeout.0,
                max_response: s.config.http_max_response.0,
            }),
        };
        let limits = Limits {
            deadline: s.config.deadline.0,
            memory: s.config.memory_limit.0,
        };
        let runner = StepRunner::new(
            runtime.clone(),
            s.name.clone(),
            plugin,
            s.config.on_error,
            json,
            caps,
            limits,
            stats,
        )
        .map_err(plugin_err)?;
        steps.push(runner);
    }
    Ok(Chain::new(steps))
}
