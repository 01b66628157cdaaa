//! The `streamtap` command line: `run`, `check`, `query`, `report`, `plugin new`,
//! `plugin test`, `eval sentiment`.

mod eval;
mod report;
mod scaffold;

use crate::pipeline::config::{Pipeline, SinkConfig};
use crate::pipeline::runner::{self, RunOptions};
use crate::pipeline::{StepRegistry, build_chain};
use crate::plugins::{
    CallError, Capabilities, HttpPolicy, Instance, KvStore, Limits, LoadedPlugin, Runtime,
};
use crate::sinks::Sink;
use crate::sinks::sqlite;
use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use streamtap_plugin_sdk::codec::{self, Action};
use streamtap_plugin_sdk::{Badge, ChatMessage, Emote, Value};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "streamtap",
    version,
    about = "Twitch chat through WASM plugin pipelines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline; edits to the pipeline file or its plugins apply live.
    Run {
        pipeline: PathBuf,
        /// Do not watch files for changes.
        #[arg(long)]
        no_reload: bool,
        /// No progress lines.
        #[arg(long)]
        quiet: bool,
        /// Read only this instance's share of a `[source.twitch]` channel list: `I/N` (I from
        /// 0) takes the channels whose FNV-1a-64 hash of the login is I modulo N, so N
        /// instances started with the same file join every channel exactly once.
        #[arg(long, value_name = "I/N")]
        shard: Option<crate::sources::twitch::Shard>,
    },
    /// Run the source of a `[transport.kafka]` pipeline and publish every message to its
    /// topic, keyed by channel.
    Collect {
        pipeline: PathBuf,
        /// No progress lines.
        #[arg(long)]
        quiet: bool,
        /// This instance's share of a `[source.twitch]` channel list: `I/N` (see `run`).
        #[arg(long, value_name = "I/N")]
        shard: Option<crate::sources::twitch::Shard>,
    },
    /// Consume the topic of a `[transport.kafka]` pipeline in its consumer group, run the
    /// steps and write to the sink; offsets are committed once the sink stored the data.
    /// Runs until interrupted.
    Process {
        pipeline: PathBuf,
        /// Do not watch files for changes.
        #[arg(long)]
        no_reload: bool,
        /// No progress lines.
        #[arg(long)]
        quiet: bool,
    },
    /// Validate a pipeline file and load (compile and init) every plugin.
    Check { pipeline: PathBuf },
    /// Read what a pipeline stored.
    Query {
        pipeline: PathBuf,
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Only messages newer than this: a duration ago (`10m`) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many (the newest).
        #[arg(long)]
        limit: Option<u64>,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
    },
    /// Draw per-channel charts (volume, sentiment, languages, alerts) from the analytics
    /// step's `channel_stats` into an HTML page or a PNG.
    Report {
        pipeline: PathBuf,
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Only windows starting after this: a duration ago (`6h`) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Output file: `.html` (self-contained page with SVG charts) or `.png`.
        #[arg(long)]
        out: PathBuf,
    },
    /// Plugin authoring tools.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Score a plugin against hand-labelled data.
    Eval {
        #[command(subcommand)]
        command: eval::EvalCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a new plugin crate that builds to a wasm component.
    New {
        /// Crate name (also the directory created).
        name: String,
        /// Parent directory. Default: the current directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Path to streamtap's plugin-sdk crate. Default: the one this binary was built from.
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Run one plugin over messages from stdin (JSONL or raw IRC lines) and print its actions.
    Test {
        plugin: PathBuf,
        /// A `with` entry, `key=value` (value parsed as TOML when it can be, else a string;
        /// dotted keys make nested tables). Repeatable.
        #[arg(long = "with", value_name = "KEY=VALUE")]
        with: Vec<String>,
        /// Per-call deadline.
        #[arg(long, default_value = "1s")]
        deadline: String,
        /// Hosts the plugin may reach over HTTP. Repeatable.
        #[arg(long)]
        allow_http: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Jsonl,
    Table,
}

/// Log targets capped whatever `RUST_LOG` says (see `main`), ureq below trace (it hex-dumps
/// request headers, API keys in `Authorization`), the AWS SDK at info: aws-sigv4 logs the canonical request
/// (with `x-amz-security-token` for temporary AWS credentials) and the smithy runtime and
/// HTTP client log requests and responses.
const NO_WIRE_DUMPS: [&str; 8] = [
    "ureq=debug",
    "ureq_proto=debug",
    "aws_sigv4=info",
    "aws_smithy_runtime=info",
    "aws_smithy_http_client=info",
    "aws_config=info",
    "hyper=info",
    // twitch-irc traces every line it sends, `PASS oauth:...` included.
    "twitch_irc=debug",
];

/// Entry point used by `main`.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            // Secrets must not reach the log even at RUST_LOG=trace.
            NO_WIRE_DUMPS.iter().fold(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                |f, d| f.add_directive(d.parse().expect("valid directive")),
            ),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Run {
            pipeline,
            no_reload,
            quiet,
            shard,
        } => cmd_run(&pipeline, !no_reload, quiet, shard.unwrap_or_default()),
        Command::Collect {
            pipeline,
            quiet,
            shard,
        } => cmd_collect(&pipeline, quiet, shard.unwrap_or_default()),
        Command::Process {
            pipeline,
            no_reload,
            quiet,
        } => {
            let opts = RunOptions {
                progress: (!quiet).then_some(Duration::from_secs(1)),
                hot_reload: !no_reload,
                shard: Default::default(),
                mode: runner::Mode::Process,
            };
            run_until_done(&pipeline, opts)
        }
        Command::Check { pipeline } => cmd_check(&pipeline),
        Command::Query {
            pipeline,
            channel,
            since,
            limit,
            format,
        } => cmd_query(&pipeline, channel, since, limit, format),
        Command::Report {
            pipeline,
            channel,
            since,
            out,
        } => {
            let since_ms = since.as_deref().map(parse_since).transpose()?;
            report::run(
                &pipeline,
                channel.as_deref(),
                since_ms,
                since.as_deref(),
                &out,
            )
        }
        Command::Plugin { command } => match command {
            PluginCommand::New {
                name,
                dir,
                sdk_path,
            } => {
                let sdk = sdk_path
                    .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk"));
                let created = scaffold::create(&dir, &name, &sdk)?;
                println!("created {}", created.display());
                println!(
                    "build:  cd {} && cargo build --release --target wasm32-wasip2",
                    created.display()
                );
                println!("test:   cargo test");
                Ok(())
            }
            PluginCommand::Test {
                plugin,
                with,
                deadline,
                allow_http,
            } => cmd_plugin_test(&plugin, &with, &deadline, allow_http),
        },
        Command::Eval { command } => eval::run(command),
    }
}

fn runtime() -> anyhow::Result<Arc<Runtime>> {
    Ok(Runtime::new(Runtime::default_cache_dir())?)
}

fn cmd_run(
    file: &Path,
    hot_reload: bool,
    quiet: bool,
    shard: crate::sources::twitch::Shard,
) -> anyhow::Result<()> {
    let opts = RunOptions {
        progress: (!quiet).then_some(Duration::from_secs(1)),
        hot_reload,
        shard,
        mode: runner::Mode::Run,
    };
    run_until_done(file, opts)
}

/// A cancellation token fired by Ctrl-C or SIGTERM (how processes are stopped in
/// deployments), and the task that waits for them.
fn interrupt_token(what: &'static str) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let task = tokio::spawn(async move {
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            r = tokio::signal::ctrl_c() => if r.is_err() { return },
            _ = term => {}
        }
        eprintln!("interrupted: {what}, then stopping");
        c.cancel();
    });
    (cancel, task)
}

fn cmd_collect(
    file: &Path,
    quiet: bool,
    shard: crate::sources::twitch::Shard,
) -> anyhow::Result<()> {
    let pipeline = Pipeline::load(file)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let (cancel, signals) = interrupt_token("publishing buffered messages");
        let opts = RunOptions {
            progress: (!quiet).then_some(Duration::from_secs(1)),
            hot_reload: false,
            shard,
            mode: runner::Mode::Collect,
        };
        let res = runner::collect(pipeline, opts, cancel).await;
        signals.abort();
        println!("{}", res?.render());
        Ok(())
    })
}

fn run_until_done(file: &Path, opts: RunOptions) -> anyhow::Result<()> {
    let pipeline = Pipeline::load(file)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let (cancel, signals) = interrupt_token("draining queued messages");
        let res = runner::run(pipeline, runtime()?, opts, cancel).await;
        signals.abort();
        let summary = res?;
        println!("{}", summary.render());
        Ok(())
    })
}

fn cmd_check(file: &Path) -> anyhow::Result<()> {
    let pipeline = Pipeline::load(file)?;
    let rt = runtime()?;
    let chain = build_chain(&rt, &pipeline, &StepRegistry::default())?;
    println!(
        "{}: ok, pipeline {:?}, {} step(s)",
        file.display(),
        pipeline.name,
        chain.steps.len()
    );
    for s in &chain.steps {
        let (plugin, version) = s.plugin_version();
        println!(
            "  {:<16} {plugin} {version} ({}, sha256 {})",
            s.name,
            s.plugin.path.display(),
            s.plugin.short_hash()
        );
    }
    Ok(())
}

fn parse_since(s: &str) -> anyhow::Result<i64> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(chrono::Utc::now().timestamp_millis() - d.as_millis() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            anyhow::anyhow!(
                "invalid --since {s:?}: expected a duration like 10m or an RFC 3339 time"
            )
        })
}

fn cmd_query(
    file: &Path,
    channel: Option<String>,
    since: Option<String>,
    limit: Option<u64>,
    format: Format,
) -> anyhow::Result<()> {
    let pipeline = Pipeline::load(file)?;
    let q = sqlite::Query {
        channel,
        since_ms: since.as_deref().map(parse_since).transpose()?,
        limit,
    };
    let rows = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            if let SinkConfig::Sqlite(s) = &pipeline.sink {
                // Reading must not create an empty database where none was written.
                return Ok(sqlite::query(&pipeline.resolve(&s.path), &q)?);
            }
            let sink = Sink::open(&pipeline).await?;
            anyhow::Ok(sink.query(&q).await?)
        })
        .with_context(|| format!("querying the sink of {}", file.display()))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match format {
        Format::Jsonl => {
            for r in rows {
                writeln!(out, "{r}")?;
            }
        }
        Format::Table => write_table(&mut out, &rows)?,
    }
    Ok(())
}

/// A stored row's own columns: the fields plugins may not set.
use crate::pipeline::chain::RESERVED_FIELDS as CORE_COLUMNS;

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn write_table(out: &mut impl Write, rows: &[serde_json::Value]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<24} {:<14} {:<16} {:<42} fields",
        "ts", "channel", "user", "text"
    )?;
    for r in rows {
        let get = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
        let fields: serde_json::Map<String, serde_json::Value> = r
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| !CORE_COLUMNS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        writeln!(
            out,
            "{:<24} {:<14} {:<16} {:<42} {}",
            get("ts"),
            cut(&get("channel"), 14),
            cut(&get("user"), 16),
            cut(&get("text").replace('\n', " "), 42),
            cut(&serde_json::Value::Object(fields).to_string(), 100)
        )?;
    }
    Ok(())
}

/// Builds the `with` table from `key=value` arguments.
fn with_table(entries: &[String]) -> anyhow::Result<toml::Table> {
    let mut root = toml::Table::new();
    for e in entries {
        let (k, v) = e
            .split_once('=')
            .with_context(|| format!("--with {e:?}: expected key=value"))?;
        let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {v}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(v.to_owned()));
        let mut table = &mut root;
        let parts: Vec<&str> = k.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            let entry = table
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry
                .as_table_mut()
                .with_context(|| format!("--with {e:?}: {p:?} is not a table"))?;
        }
        table.insert(parts[parts.len() - 1].to_owned(), value);
    }
    Ok(root)
}

/// Parses one input line of `plugin test`: a raw IRC line or a JSON message.
fn parse_input(line: &str, n: usize) -> anyhow::Result<ChatMessage> {
    let t = line.trim();
    if t.starts_with('@') || t.starts_with(':') {
        return crate::sources::irc::parse_line(t).map_err(|e| anyhow::anyhow!("line {n}: {e}"));
    }
    let v: serde_json::Value = serde_json::from_str(t)
        .with_context(|| format!("line {n}: neither an IRC line nor JSON"))?;
    let obj = v
        .as_object()
        .with_context(|| format!("line {n}: expected a JSON object"))?;
    let s = |k: &str| obj.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let text = s("text").with_context(|| format!("line {n}: missing \"text\""))?;
    let ts_ms = match obj.get("ts") {
        Some(serde_json::Value::Number(x)) => x.as_i64().unwrap_or(0),
        Some(serde_json::Value::String(t)) => chrono::DateTime::parse_from_rfc3339(t)
            .with_context(|| format!("line {n}: bad \"ts\" {t:?}"))?
            .timestamp_millis(),
        _ => chrono::Utc::now().timestamp_millis(),
    };
    let emotes = obj
        .get("emotes")
        .and_then(|e| e.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    Some(Emote {
                        id: e.get("id")?.as_str()?.to_owned(),
                        start: e.get("start")?.as_u64()? as u32,
                        end: e.get("end")?.as_u64()? as u32,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let badges = obj
        .get("badges")
        .and_then(|e| e.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|b| {
                    Some(Badge {
                        name: b.get("name")?.as_str()?.to_owned(),
                        version: b.get("version")?.as_str()?.to_owned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let fields = obj
        .iter()
        .filter(|(k, _)| !CORE_COLUMNS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), Value::from_json(v.clone())))
        .collect();
    let user = s("user").unwrap_or_else(|| "user".into());
    Ok(ChatMessage {
        id: s("id").unwrap_or_else(|| format!("line-{n}")),
        kind: s("kind").unwrap_or_else(|| "privmsg".into()),
        channel: s("channel").unwrap_or_else(|| "channel".into()),
        channel_id: s("channel_id").unwrap_or_default(),
        display_name: s("display_name").unwrap_or_else(|| user.clone()),
        user,
        user_id: s("user_id").unwrap_or_default(),
        text,
        ts_ms,
        badges,
        emotes,
        fields,
    })
}

fn pairs_json(pairs: &[(String, String)]) -> serde_json::Value {
    serde_json::Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
}

fn action_json(a: &Action) -> serde_json::Value {
    match a {
        Action::Set { name, value } => serde_json::json!({"set": name, "value": value.to_json()}),
        Action::Drop { reason } => serde_json::json!({"drop": reason}),
        Action::Alert(al) => serde_json::json!({"alert": {
            "topic": al.topic, "severity": al.severity, "title": al.title, "body": al.body,
            "dedupe_key": al.dedupe_key,
            "attributes": pairs_json(&al.attributes),
        }}),
        Action::Record { table, key, value } => {
            serde_json::json!({"record": {"table": table, "key": key, "value": value.to_json()}})
        }
        Action::Metric {
            name,
            value,
            labels,
        } => serde_json::json!({"metric": {
            "name": name, "value": value,
            "labels": pairs_json(labels),
        }}),
    }
}

/// One plugin run by hand outside a pipeline (`plugin test`, `eval`): loaded, compiled and
/// instantiated exactly as a pipeline step is, with its own key-value store and HTTP
/// allowlist, so what these commands report is what the plugin does in a pipeline.
struct StandalonePlugin {
    rt: Arc<Runtime>,
    loaded: Arc<LoadedPlugin>,
    caps: Capabilities,
    limits: Limits,
    config: String,
    inst: Instance,
}

impl StandalonePlugin {
    /// Loads `plugin` and runs its `init` with the `--with` entries as its `with` table.
    fn load(
        plugin: &Path,
        with: &[String],
        deadline: Duration,
        allow_http: Vec<String>,
    ) -> anyhow::Result<Self> {
        let config = serde_json::to_string(&with_table(with)?)?;
        let rt = runtime()?;
        let loaded = rt.load(plugin)?;
        let caps = Capabilities {
            step: "test".into(),
            kv: Arc::new(KvStore::new(64 << 20)),
            http: Arc::new(HttpPolicy {
                allow: allow_http,
                ..HttpPolicy::deny_all()
            }),
        };
        let limits = Limits {
            deadline,
            memory: 64 << 20,
        };
        let inst = rt.instantiate(&loaded, caps.clone(), limits, &config)?;
        Ok(StandalonePlugin {
            rt,
            loaded,
            caps,
            limits,
            config,
            inst,
        })
    }

    /// `name version (sha256 …)` as the plugin reported it at `init`.
    fn describe(&self) -> String {
        format!(
            "{} {} (sha256 {})",
            self.inst.name(),
            self.inst.version(),
            self.loaded.short_hash()
        )
    }

    /// Runs one batch through the wire format; returns each message's actions, in order.
    fn process(&mut self, msgs: &[ChatMessage]) -> Result<Vec<Vec<Action>>, CallError> {
        let buf = codec::encode_batch(msgs);
        let out = self.inst.process(&buf)?;
        codec::decode_output(&out, msgs.len()).map_err(|e| CallError::BadOutput(e.to_string()))
    }

    /// Runs the plugin's optional `flush`; no actions when it has none.
    fn flush(&mut self) -> Result<Vec<Action>, CallError> {
        let Some(out) = self.inst.flush()? else {
            return Ok(Vec::new());
        };
        let mut lists =
            codec::decode_output(&out, 1).map_err(|e| CallError::BadOutput(e.to_string()))?;
        Ok(lists.pop().unwrap_or_default())
    }

    /// A trap poisons the instance; a fresh one lets the remaining messages still run.
    fn replace_if_poisoned(&mut self) -> anyhow::Result<()> {
        if self.inst.is_poisoned() {
            self.inst =
                self.rt
                    .instantiate(&self.loaded, self.caps.clone(), self.limits, &self.config)?;
        }
        Ok(())
    }
}

fn cmd_plugin_test(
    plugin: &Path,
    with: &[String],
    deadline: &str,
    allow_http: Vec<String>,
) -> anyhow::Result<()> {
    let deadline = humantime::parse_duration(deadline)
        .with_context(|| format!("invalid --deadline {deadline:?}"))?;
    let mut plugin = StandalonePlugin::load(plugin, with, deadline, allow_http)?;
    eprintln!("{}", plugin.describe());
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failures = 0;
    for (i, line) in stdin.lock().lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let msg = match parse_input(&line, i + 1) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("error: {e:#}");
                failures += 1;
                continue;
            }
        };
        match plugin.process(std::slice::from_ref(&msg)) {
            Ok(mut lists) => {
                let actions: Vec<_> = lists
                    .pop()
                    .unwrap_or_default()
                    .iter()
                    .map(action_json)
                    .collect();
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"id": msg.id, "actions": actions})
                )?;
            }
            Err(e) => {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"id": msg.id, "error": e.to_string(), "kind": e.kind()})
                )?;
                failures += 1;
                plugin.replace_if_poisoned()?;
            }
        }
    }
    // End of input is the end of the run: show what the plugin's `flush` emits, if anything.
    match plugin.flush() {
        Ok(actions) if actions.is_empty() => {}
        Ok(actions) => {
            let actions: Vec<_> = actions.iter().map(action_json).collect();
            writeln!(out, "{}", serde_json::json!({"flush": actions}))?;
        }
        Err(e) => {
            writeln!(
                out,
                "{}",
                serde_json::json!({"flush": [], "error": e.to_string(), "kind": e.kind()})
            )?;
            failures += 1;
        }
    }
    if failures > 0 {
        bail!("{failures} message(s) failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_entries_become_typed_nested_tables() {
        let t = with_table(&["a=1".into(), "b.c=true".into(), "s=hello world".into()]).unwrap();
        assert_eq!(t["a"].as_integer(), Some(1));
        assert_eq!(t["b"]["c"].as_bool(), Some(true));
        assert_eq!(t["s"].as_str(), Some("hello world"));
    }

    #[test]
    fn json_input_lines() {
        let m = parse_input(r#"{"text":"hi","channel":"c","lang":"en"}"#, 3).unwrap();
        assert_eq!(m.id, "line-3");
        assert_eq!(m.fields.get("lang"), Some(&Value::Str("en".into())));
        assert!(parse_input("{}", 1).is_err());
    }
}
