//! The WASM plugin runtime: the one module that uses wasmtime.
//!
//! - One [`Runtime`] per process owns the `Engine` (pooling allocator, epoch interruption),
//!   the `Linker` with the capabilities plugins may import, and the compiled-component cache
//!   (in memory by content hash, on disk keyed by content hash + engine compatibility).
//! - [`Runtime::load`] compiles (or loads from cache) a plugin file into a [`LoadedPlugin`]
//!   holding an `InstancePre`, so instantiation on a hot path is only slot allocation.
//! - [`Runtime::instantiate`] gives an [`Instance`]: its own `Store` with a memory limit,
//!   a per-call epoch deadline and the step's capabilities (key-value state, allowlisted
//!   HTTP). A trap, timeout or out-of-memory in a call is returned as a [`CallError`]; the
//!   instance is then poisoned and must be replaced, the host carries on.
//!
//! Plugins are sandboxed: WASI is linked (Rust's std imports it) but the context grants no
//! preopened directories, no environment, no arguments, no stdio and no sockets.

mod host_api;

pub use host_api::{HttpPolicy, KvStore};

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

// The host links against `plugin-base` (what every plugin must export); optional exports
// of the `plugin` world such as `flush` are looked up by name, so components built before
// they existed still load.
wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin-base",
});

/// The optional `flush` export, typed.
type FlushFunc = wasmtime::component::TypedFunc<(), (Result<Vec<u8>, String>,)>;

/// How often the epoch advances; deadlines are rounded up to whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Largest linear memory any plugin may have; per-step limits must be at most this.
pub const MAX_MEMORY_LIMIT: u64 = 1 << 30;

/// Concurrent plugin instances the pooling allocator reserves slots for.
const POOL_INSTANCES: u32 = 256;

/// Errors loading or instantiating a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read plugin {path:?}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin {path:?} is not a valid streamtap component: {reason}")]
    Compile { path: PathBuf, reason: String },
    #[error("plugin {path:?} cannot be instantiated: {reason}")]
    Instantiate { path: PathBuf, reason: String },
    #[error("plugin {path:?} init failed: {reason}")]
    Init { path: PathBuf, reason: String },
    #[error("cannot start the wasm engine: {0}")]
    Engine(String),
}

/// Why one `process` call failed. Every kind leaves the host running.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("trap: {0}")]
    Trap(String),
    #[error("deadline of {0:?} exceeded")]
    Timeout(Duration),
    #[error("memory limit of {0} bytes reached")]
    OutOfMemory(u64),
    #[error("plugin returned an error: {0}")]
    Plugin(String),
    #[error("bad output: {0}")]
    BadOutput(String),
}

impl CallError {
    /// Every value [`CallError::kind`] returns, for metrics that start each at zero.
    pub const KINDS: &'static [&'static str] =
        &["trap", "timeout", "oom", "plugin_error", "bad_output"];

    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Trap(_) => "trap",
            CallError::Timeout(_) => "timeout",
            CallError::OutOfMemory(_) => "oom",
            CallError::Plugin(_) => "plugin_error",
            CallError::BadOutput(_) => "bad_output",
        }
    }
}

/// Per-instance state inside a wasmtime `Store`.
pub struct StepState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    caps: Capabilities,
    timing: CallTiming,
    /// Built on the first HTTP request and kept, so its connection pool lets later
    /// requests to the same backend skip the TCP and TLS handshakes.
    http_agent: Option<ureq::Agent>,
}

/// Time accounting for the call in progress.
///
/// The deadline bounds the plugin's own computation. Time the plugin spends waiting in a
/// host HTTP request is credited back, up to one `http_timeout` per call: otherwise a
/// translation backend answering in 150 ms could never be used under the default 100 ms
/// deadline, and the failed call would be retried message by message, multiplying the
/// requests. Waiting beyond that credit counts, so a call's wall time stays bounded by
/// `deadline + http_timeout` however many requests the plugin makes.
#[derive(Debug)]
struct CallTiming {
    started: Instant,
    deadline: Duration,
    host_wait: Duration,
    wait_credit: Duration,
    /// Set when the deadline callback interrupted the call.
    expired: bool,
}

impl CallTiming {
    fn new(deadline: Duration, wait_credit: Duration) -> Self {
        CallTiming {
            started: Instant::now(),
            deadline,
            host_wait: Duration::ZERO,
            wait_credit,
            expired: false,
        }
    }

    fn start(&mut self) {
        self.started = Instant::now();
        self.host_wait = Duration::ZERO;
        self.expired = false;
    }

    /// Time charged against the deadline so far.
    fn charged(&self) -> Duration {
        self.started
            .elapsed()
            .saturating_sub(self.host_wait.min(self.wait_credit))
    }
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// What a step's plugin may do beyond computing: granted by the pipeline file.
#[derive(Clone)]
pub struct Capabilities {
    /// Step name, for log lines.
    pub step: Arc<str>,
    /// The step's key-value state (shared across reloads of the step).
    pub kv: Arc<KvStore>,
    /// Outbound HTTP policy; an empty allowlist denies everything.
    pub http: Arc<HttpPolicy>,
}

/// Limits for one instance.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock budget of one `process` (or `init`) call.
    pub deadline: Duration,
    /// Linear memory cap in bytes.
    pub memory: u64,
}

/// Refuses memory growth beyond the step's limit and remembers that it did, so a trap that
/// follows (Rust aborts on allocation failure) is reported as out-of-memory.
struct MemoryLimiter {
    max: u64,
    denied: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.max {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// A compiled plugin, ready to instantiate.
pub struct LoadedPlugin {
    /// File it was loaded from.
    pub path: PathBuf,
    /// Hex SHA-256 of the file's bytes: the plugin's identity in logs, caches and metrics.
    pub hash: String,
    pre: PluginBasePre<StepState>,
    /// Where the component exports `flush`, when it does.
    flush: Option<wasmtime::component::ComponentExportIndex>,
}

impl LoadedPlugin {
    /// First 12 hex digits of the content hash, for log lines.
    pub fn short_hash(&self) -> &str {
        &self.hash[..12]
    }
}

/// Stops and joins the epoch thread when the runtime is dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Compiled components kept in memory at most.
const MAX_COMPILED_IN_MEMORY: usize = 32;

/// A small least-recently-used map of compiled components by content hash.
#[derive(Default)]
struct ComponentLru {
    entries: HashMap<String, (Component, u64)>,
    clock: u64,
}

impl ComponentLru {
    fn get(&mut self, hash: &str) -> Option<Component> {
        self.clock += 1;
        let e = self.entries.get_mut(hash)?;
        e.1 = self.clock;
        Some(e.0.clone())
    }

    fn insert(&mut self, hash: &str, c: Component) {
        self.clock += 1;
        self.entries.insert(hash.to_owned(), (c, self.clock));
        while self.entries.len() > MAX_COMPILED_IN_MEMORY {
            // Linear scan: the map holds a few dozen entries and this runs once per compile.
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(h, _)| h.clone())
            else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The process-wide plugin runtime.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StepState>,
    cache_dir: Option<PathBuf>,
    /// Compiled components by content hash: a reload of an unchanged file costs nothing.
    /// Bounded (least recently used out), since a long run that reloads plugins many
    /// times would otherwise keep every version's machine code alive; evicted versions
    /// still load fast from `cache_dir`.
    compiled: Mutex<ComponentLru>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Builds the engine and linker. `cache_dir` holds compiled components across runs.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Arc<Self>, PluginError> {
        let mut cfg = Config::new();
        cfg.epoch_interruption(true);
        cfg.wasm_component_model(true);
        // `STREAMTAP_WASM_PROFILE=perfmap` names JIT code for `perf`, so plugin authors (and
        // we) can see where guest time goes.
        if std::env::var("STREAMTAP_WASM_PROFILE").as_deref() == Ok("perfmap") {
            cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 8)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 8)
            .total_stacks(POOL_INSTANCES)
            .max_memory_size(MAX_MEMORY_LIMIT as usize);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(|e| PluginError::Engine(format!("{e:#}")))?;

        let mut linker: Linker<StepState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        PluginBase::add_to_linker::<StepState, HasSelf<StepState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;

        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| PluginError::Engine(e.to_string()))?
        };

        if let Some(dir) = &cache_dir {
            // A cache we cannot create only costs compile time; say so and go on.
            if let Err(e) = std::fs::create_dir_all(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot create plugin cache dir");
            }
        }
        Ok(Arc::new(Runtime {
            engine,
            linker,
            cache_dir,
            compiled: Mutex::new(ComponentLru::default()),
            _ticker: EpochTicker {
                stop,
                thread: Some(thread),
            },
        }))
    }

    /// The default on-disk cache: `$STREAMTAP_CACHE_DIR`, else `$XDG_CACHE_HOME/streamtap`,
    /// else `~/.cache/streamtap`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("STREAMTAP_CACHE_DIR") {
            return Some(PathBuf::from(d));
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(d).join("streamtap"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/streamtap"))
    }

    fn engine_key(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// Compiles a plugin file (or takes it from cache) and pre-links it.
    pub fn load(&self, path: &Path) -> Result<Arc<LoadedPlugin>, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            path: path.to_owned(),
            source,
        })?;
        let hash = hex::encode(Sha256::digest(&bytes));
        let component = self.component(path, &hash, &bytes)?;
        let pre =
            self.linker
                .instantiate_pre(&component)
                .map_err(|e| PluginError::Instantiate {
                    path: path.to_owned(),
                    reason: one_line(&e),
                })?;
        let pre = PluginBasePre::new(pre).map_err(|e| PluginError::Instantiate {
            path: path.to_owned(),
            reason: one_line(&e),
        })?;
        let flush = component.get_export_index(None, "flush");
        Ok(Arc::new(LoadedPlugin {
            path: path.to_owned(),
            hash,
            pre,
            flush,
        }))
    }

    fn component(&self, path: &Path, hash: &str, bytes: &[u8]) -> Result<Component, PluginError> {
        if let Some(c) = self.compiled.lock().expect("cache lock").get(hash) {
            return Ok(c);
        }
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{hash}-{}.cwasm", self.engine_key())));
        if let Some(file) = cached.as_ref().filter(|f| f.exists()) {
            // SAFETY: the file was written by `Component::serialize` of this same engine
            // configuration (its name carries the engine compatibility hash) into our own
            // cache directory; wasmtime additionally checks the header and version.
            match unsafe { Component::deserialize_file(&self.engine, file) } {
                Ok(c) => {
                    self.remember(hash, &c);
                    return Ok(c);
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "ignoring unusable cached component");
                }
            }
        }
        let c = Component::new(&self.engine, bytes).map_err(|e| PluginError::Compile {
            path: path.to_owned(),
            reason: one_line(&e),
        })?;
        if let Some(file) = cached
            && let Err(e) = c.serialize().and_then(|b| {
                // Write then rename, so a concurrent reader never sees half a file.
                let tmp = file.with_extension(format!("tmp{}", std::process::id()));
                std::fs::write(&tmp, b)?;
                std::fs::rename(&tmp, &file)?;
                Ok(())
            })
        {
            tracing::warn!(file = %file.display(), error = %e, "cannot write component cache");
        }
        self.remember(hash, &c);
        Ok(c)
    }

    fn remember(&self, hash: &str, c: &Component) {
        self.compiled
            .lock()
            .expect("cache lock")
            .insert(hash, c.clone());
    }

    /// Instantiates a loaded plugin and runs its `init` with the JSON config.
    pub fn instantiate(
        &self,
        plugin: &Arc<LoadedPlugin>,
        caps: Capabilities,
        limits: Limits,
        config_json: &str,
    ) -> Result<Instance, PluginError> {
        // Nothing from the host leaks in: no dirs, env, args, stdio or network.
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = StepState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                max: limits.memory,
                denied: false,
            },
            timing: CallTiming::new(limits.deadline, caps.http.timeout),
            caps,
            http_agent: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Called when the epoch deadline passes: either the plugin really ran out of time,
        // or part of the elapsed time was spent waiting on host HTTP and it may go on.
        store.epoch_deadline_callback(|mut ctx| {
            let t = &mut ctx.data_mut().timing;
            let charged = t.charged();
            if charged >= t.deadline {
                t.expired = true;
                return Err(Trap::Interrupt.into());
            }
            Ok(UpdateDeadline::Continue(deadline_ticks(
                t.deadline - charged,
            )))
        });
        store.set_epoch_deadline(deadline_ticks(limits.deadline));
        let instantiate_err =
            |e: wasmtime::Error, store: &Store<StepState>| PluginError::Instantiate {
                path: plugin.path.clone(),
                reason: classify(&e, store, limits).to_string(),
            };
        let instance = plugin
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .map_err(|e| instantiate_err(e, &store))?;
        let bindings =
            PluginBase::new(&mut store, &instance).map_err(|e| instantiate_err(e, &store))?;
        let flush = match plugin.flush {
            Some(idx) => Some(
                instance
                    .get_typed_func::<(), (Result<Vec<u8>, String>,)>(&mut store, idx)
                    .map_err(|e| PluginError::Instantiate {
                        path: plugin.path.clone(),
                        reason: format!(
                            "export `flush` does not match `func() -> result<list<u8>, string>`: {}",
                            one_line(&e)
                        ),
                    })?,
            ),
            None => None,
        };
        let mut inst = Instance {
            store,
            bindings,
            flush,
            plugin: plugin.clone(),
            limits,
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
            },
            poisoned: false,
        };
        inst.store.data_mut().timing.start();
        inst.store
            .set_epoch_deadline(deadline_ticks(limits.deadline));
        match inst.bindings.call_init(&mut inst.store, config_json) {
            Ok(Ok(info)) => {
                inst.info = info;
                Ok(inst)
            }
            Ok(Err(reason)) => Err(PluginError::Init {
                path: plugin.path.clone(),
                reason,
            }),
            Err(e) => Err(PluginError::Init {
                path: plugin.path.clone(),
                reason: classify(&e, &inst.store, limits).to_string(),
            }),
        }
    }
}

/// An error chain on one line: wasmtime's parse errors carry multi-line debug dumps, which
/// break log lines and `check` output.
fn one_line(e: &wasmtime::Error) -> String {
    format!("{e:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn deadline_ticks(d: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    (d.as_nanos().div_ceil(tick) as u64).max(1)
}

fn classify(e: &wasmtime::Error, store: &Store<StepState>, limits: Limits) -> CallError {
    if store.data().limiter.denied {
        return CallError::OutOfMemory(limits.memory);
    }
    if store.data().timing.expired {
        return CallError::Timeout(limits.deadline);
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Timeout(limits.deadline),
        _ => CallError::Trap(one_line(e)),
    }
}

/// A live plugin instance with its own store.
pub struct Instance {
    store: Store<StepState>,
    bindings: PluginBase,
    flush: Option<FlushFunc>,
    plugin: Arc<LoadedPlugin>,
    limits: Limits,
    info: PluginInfo,
    poisoned: bool,
}

impl Instance {
    /// Plugin name and version as reported by `init`.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    pub fn version(&self) -> &str {
        &self.info.version
    }

    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    /// True after a trap: the instance must not be called again.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Whether the plugin exports `flush`.
    pub fn has_flush(&self) -> bool {
        self.flush.is_some()
    }

    /// Runs the optional `flush` export under the deadline and memory limit: `Ok(None)`
    /// when the plugin has none, else its encoded output (one action list).
    pub fn flush(&mut self) -> Result<Option<Vec<u8>>, CallError> {
        let Some(f) = self.flush else {
            return Ok(None);
        };
        self.guarded(|store, _| f.call(store, ()).map(|(r,)| r))
            .map(Some)
    }

    /// One call into the guest under the deadline and memory limit; a trap poisons the
    /// instance (its state may be half-updated), so later calls fail until it is rebuilt.
    fn guarded(
        &mut self,
        call: impl FnOnce(
            &mut Store<StepState>,
            &PluginBase,
        ) -> wasmtime::Result<Result<Vec<u8>, String>>,
    ) -> Result<Vec<u8>, CallError> {
        if self.poisoned {
            return Err(CallError::Trap(
                "instance poisoned by an earlier trap".into(),
            ));
        }
        self.store.data_mut().limiter.denied = false;
        self.store.data_mut().timing.start();
        self.store
            .set_epoch_deadline(deadline_ticks(self.limits.deadline));
        match call(&mut self.store, &self.bindings) {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(msg)) => Err(CallError::Plugin(msg)),
            Err(e) => {
                self.poisoned = true;
                Err(classify(&e, &self.store, self.limits))
            }
        }
    }

    /// Runs `process` on an encoded batch, under the deadline and memory limit.
    pub fn process(&mut self, batch: &[u8]) -> Result<Vec<u8>, CallError> {
        self.guarded(|store, b| b.call_process(store, batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_lists_every_call_error_kind() {
        let all = [
            CallError::Trap(String::new()),
            CallError::Timeout(Duration::ZERO),
            CallError::OutOfMemory(0),
            CallError::Plugin(String::new()),
            CallError::BadOutput(String::new()),
        ];
        let kinds: Vec<&str> = all.iter().map(CallError::kind).collect();
        assert_eq!(kinds, CallError::KINDS);
    }

    #[test]
    fn compiled_cache_keeps_the_most_recently_used() {
        let engine = Engine::default();
        // The smallest valid component: magic, component-layer version, no sections.
        let c = Component::new(&engine, [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00])
            .expect("empty component");
        let mut lru = ComponentLru::default();
        for i in 0..MAX_COMPILED_IN_MEMORY {
            lru.insert(&format!("h{i}"), c.clone());
        }
        assert!(lru.get("h0").is_some()); // h0 is now the most recently used
        lru.insert("new", c.clone());
        assert_eq!(lru.len(), MAX_COMPILED_IN_MEMORY);
        assert!(lru.get("h0").is_some());
        assert!(
            lru.get("h1").is_none(),
            "the least recently used is evicted"
        );
        assert!(lru.get("new").is_some());
    }
}
