//! The step chain: runs a batch through each step's plugin in order and applies the
//! actions each step returns.
//!
//! A failed call (trap, timeout, out of memory, plugin error, bad output) never fails the
//! batch: the chain replaces a poisoned instance and re-runs the batch's messages one at a
//! time to find the ones the step fails on, then applies the step's `on_error` policy to
//! those only. Each failure is logged with step, plugin, version, hash and message id.

use crate::metrics::StepStats;
use crate::pipeline::config::OnError;
use crate::plugins::{
    CallError, Capabilities, Instance, Limits, LoadedPlugin, PluginError, Runtime,
};
use std::sync::Arc;
use std::time::Instant;
use streamtap_plugin_sdk::codec::{self, Action, BatchWriter, ChatMessage};
use streamtap_plugin_sdk::{Alert, Value};

/// Field names plugins may not set: they are the message's own columns.
pub const RESERVED_FIELDS: &[&str] = &[
    "id",
    "kind",
    "channel",
    "channel_id",
    "user",
    "user_id",
    "display_name",
    "text",
    "ts",
    "badges",
    "emotes",
];

/// After this many one-at-a-time timeouts in one batch, the rest of the batch gets the
/// step's `on_error` without being tried, so a plugin that hangs on everything costs at most
/// a few deadlines per batch instead of one per message.
const MAX_ISOLATION_TIMEOUTS: usize = 3;

/// A message travelling through the chain, with its immutable part encoded once.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub msg: ChatMessage,
    header: Vec<u8>,
}

impl Envelope {
    pub fn new(msg: ChatMessage) -> Self {
        let header = codec::encode_header(&msg);
        Envelope { msg, header }
    }
}

/// An alert raised by a step, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct RaisedAlert {
    pub alert: Alert,
    pub step: String,
    pub message_id: String,
    pub channel: String,
}

/// A record (aggregate or metric sample) emitted by a step.
#[derive(Debug, Clone, PartialEq)]
pub struct EmittedRecord {
    pub table: String,
    pub key: String,
    pub value: Value,
    pub step: String,
}

/// A message a step failed on, with the step's `dead-letter` policy.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub msg: ChatMessage,
    pub step: String,
    pub plugin: String,
    pub version: String,
    pub hash: String,
    pub reason: String,
}

/// Everything a batch produced.
#[derive(Debug, Default)]
pub struct ChainOutput {
    /// Messages that made it through every step, to store.
    pub messages: Vec<ChatMessage>,
    /// Messages dropped by a plugin or by an `on_error = "drop"` step: (id, step, reason).
    pub dropped: Vec<(String, String, String)>,
    pub dead_letters: Vec<DeadLetter>,
    pub alerts: Vec<RaisedAlert>,
    pub records: Vec<EmittedRecord>,
}

/// One step ready to run.
pub struct StepRunner {
    pub name: String,
    pub plugin: Arc<LoadedPlugin>,
    pub on_error: OnError,
    config_json: String,
    caps: Capabilities,
    limits: Limits,
    instance: Instance,
    pub stats: Arc<StepStats>,
    runtime: Arc<Runtime>,
}

impl StepRunner {
    /// Instantiates the plugin and runs `init`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        runtime: Arc<Runtime>,
        name: String,
        plugin: Arc<LoadedPlugin>,
        on_error: OnError,
        config_json: String,
        caps: Capabilities,
        limits: Limits,
        stats: Arc<StepStats>,
    ) -> Result<Self, PluginError> {
        let instance = runtime.instantiate(&plugin, caps.clone(), limits, &config_json)?;
        Ok(StepRunner {
            name,
            plugin,
            on_error,
            config_json,
            caps,
            limits,
            instance,
            stats,
            runtime,
        })
    }

    /// Plugin name and version as reported by its `init`.
    pub fn plugin_version(&self) -> (&str, &str) {
        (self.instance.name(), self.instance.version())
    }

    fn ensure_healthy(&mut self) -> Result<(), PluginError> {
        if self.instance.is_poisoned() {
            self.instance = self.runtime.instantiate(
                &self.plugin,
                self.caps.clone(),
                self.limits,
                &self.config_json,
            )?;
            self.stats.restarts.inc();
        }
        Ok(())
    }

    fn call(
        &mut self,
        msgs: &[Envelope],
        buf: Vec<u8>,
    ) -> (Result<Vec<Vec<Action>>, CallError>, Vec<u8>) {
        let mut w = BatchWriter::new(msgs.len(), buf);
        for e in msgs {
            w.push(&e.header, &e.msg.fields);
        }
        let input = w.finish();
        let res = match self.ensure_healthy() {
            Err(e) => Err(CallError::Trap(format!("cannot restart instance: {e}"))),
            Ok(()) => self.instance.process(&input).and_then(|out| {
                let lists = codec::decode_output(&out, msgs.len())
                    .map_err(|e| CallError::BadOutput(e.to_string()))?;
                validate_actions(&lists)?;
                Ok(lists)
            }),
        };
        (res, input)
    }
}

fn validate_actions(lists: &[Vec<Action>]) -> Result<(), CallError> {
    for a in lists.iter().flatten() {
        if let Action::Set { name, .. } = a
            && (name.is_empty() || RESERVED_FIELDS.contains(&name.as_str()))
        {
            return Err(CallError::BadOutput(format!(
                "set-field {name:?}: reserved or empty field name"
            )));
        }
    }
    Ok(())
}

/// The ordered steps of one pipeline generation.
pub struct Chain {
    pub steps: Vec<StepRunner>,
    /// Reused encode buffer.
    buf: Vec<u8>,
}

impl Chain {
    pub fn new(steps: Vec<StepRunner>) -> Self {
        Chain {
            steps,
            buf: Vec::new(),
        }
    }

    /// Runs a batch through every step.
    pub fn process(&mut self, batch: Vec<ChatMessage>) -> ChainOutput {
        let mut out = ChainOutput::default();
        let mut msgs: Vec<Envelope> = batch.into_iter().map(Envelope::new).collect();
        let mut buf = std::mem::take(&mut self.buf);
        for step in &mut self.steps {
            if msgs.is_empty() {
                break;
            }
            let started = Instant::now();
            let n = msgs.len();
            let (res, b) = step.call(&msgs, buf);
            buf = b;
            step.stats.calls.inc();
            match res {
                Ok(lists) => apply(step, &mut msgs, lists, &mut out),
                Err(e) => msgs = isolate(step, msgs, e, &mut out, &mut buf),
            }
            step.stats
                .record_batch(n as u64, started.elapsed(), step.plugin.short_hash());
        }
        self.buf = buf;
        out.messages = msgs.into_iter().map(|e| e.msg).collect();
        out
    }
}

impl Chain {
    /// End of run: calls each step's optional `flush` export, in step order, and collects
    /// what they emit (records, metrics, alerts). A step that fails here is logged and
    /// counted like a failed call; the others still flush.
    pub fn flush(&mut self) -> ChainOutput {
        let mut out = ChainOutput::default();
        for step in &mut self.steps {
            if let Err(e) = step.ensure_healthy() {
                tracing::error!(step = %step.name, error = %e, "cannot restart instance to flush");
                continue;
            }
            if !step.instance.has_flush() {
                continue;
            }
            let started = Instant::now();
            step.stats.calls.inc();
            let res = step.instance.flush().and_then(|o| {
                let Some(bytes) = o else {
                    return Ok(Vec::new());
                };
                let mut lists = codec::decode_output(&bytes, 1)
                    .map_err(|e| CallError::BadOutput(format!("flush: {e}")))?;
                Ok(lists.pop().unwrap_or_default())
            });
            step.stats
                .record_batch(0, started.elapsed(), step.plugin.short_hash());
            match res.and_then(|actions| apply_flush(step, actions, &mut out)) {
                Ok(n) => {
                    tracing::info!(step = %step.name, actions = n, "flushed step at end of run")
                }
                Err(e) => {
                    step.stats.errors.inc(e.kind());
                    let (plugin, version) = step.plugin_version();
                    tracing::error!(
                        step = %step.name,
                        plugin,
                        version,
                        hash = step.plugin.short_hash(),
                        error_kind = e.kind(),
                        error = %e,
                        "plugin flush failed; what it held open is not emitted"
                    );
                }
            }
        }
        out
    }
}

/// Applies the actions of a `flush` call: records, metrics and alerts. There is no message
/// to set fields on or drop, so those make the whole output invalid (nothing is applied
/// in part). Returns the number of actions applied.
fn apply_flush(
    step: &StepRunner,
    actions: Vec<Action>,
    out: &mut ChainOutput,
) -> Result<usize, CallError> {
    if let Some(bad) = actions
        .iter()
        .find(|a| matches!(a, Action::Set { .. } | Action::Drop { .. }))
    {
        let what = match bad {
            Action::Set { name, .. } => format!("set-field {name:?}"),
            _ => "drop".to_owned(),
        };
        return Err(CallError::BadOutput(format!(
            "flush returned {what}, which needs a message"
        )));
    }
    let n = actions.len();
    for a in actions {
        // An alert from a flush has no message: its channel is the one it names.
        let channel = match &a {
            Action::Alert(alert) => alert
                .attributes
                .iter()
                .find(|(k, _)| k == "channel")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            _ => String::new(),
        };
        emit(step, a, "flush", &channel, out);
    }
    Ok(n)
}

/// Collects an action that produces output of its own (alert, record, metric sample).
/// `Set` and `Drop` act on the message and are handled by the caller.
fn emit(step: &StepRunner, a: Action, message_id: &str, channel: &str, out: &mut ChainOutput) {
    match a {
        Action::Alert(alert) => out.alerts.push(RaisedAlert {
            alert,
            step: step.name.clone(),
            message_id: message_id.to_owned(),
            channel: channel.to_owned(),
        }),
        Action::Record { table, key, value } => out.records.push(EmittedRecord {
            table,
            key,
            value,
            step: step.name.clone(),
        }),
        Action::Metric {
            name,
            value,
            labels,
        } => out
            .records
            .push(metric_record(&step.name, &name, value, labels)),
        Action::Set { .. } | Action::Drop { .. } => {}
    }
}

/// Applies per-message action lists in place, then removes the messages a plugin dropped.
/// In place, because moving every message into a new vector per step costs more than the
/// no-op step itself.
fn apply(
    step: &StepRunner,
    msgs: &mut Vec<Envelope>,
    lists: Vec<Vec<Action>>,
    out: &mut ChainOutput,
) {
    let mut dropped_any = false;
    let mut keep = Vec::new();
    for (i, (e, actions)) in msgs.iter_mut().zip(lists).enumerate() {
        let mut dropped = None;
        for a in actions {
            match a {
                Action::Set { name, value } => {
                    e.msg.fields.insert(name, value);
                }
                Action::Drop { reason } => dropped = Some(reason),
                other => emit(step, other, &e.msg.id, &e.msg.channel, out),
            }
        }
        if let Some(reason) = dropped {
            if !dropped_any {
                dropped_any = true;
                keep = vec![true; i];
            }
            keep.push(false);
            step.stats.dropped.inc();
            out.dropped
                .push((e.msg.id.clone(), step.name.clone(), reason));
        } else if dropped_any {
            keep.push(true);
        }
    }
    if dropped_any {
        let mut i = 0;
        msgs.retain(|_| {
            i += 1;
            keep.get(i - 1).copied().unwrap_or(true)
        });
    }
}

/// A metric sample as the record the sink stores in `plugin_metrics`.
fn metric_record(
    step: &str,
    name: &str,
    value: f64,
    labels: Vec<(String, String)>,
) -> EmittedRecord {
    EmittedRecord {
        table: "plugin_metrics".into(),
        // One row per series: the labels are part of the key, or samples of
        // `failures{kind="timeout"}` and `failures{kind="status"}` would overwrite each
        // other.
        key: metric_key(name, &labels),
        value: Value::map([
            ("value", Value::Float(value)),
            (
                "labels",
                Value::Map(
                    labels
                        .into_iter()
                        .map(|(k, v)| (k, Value::Str(v)))
                        .collect(),
                ),
            ),
        ]),
        step: step.to_owned(),
    }
}

/// `name{k1="v1",k2="v2"}` with labels sorted, as Prometheus writes a series.
fn metric_key(name: &str, labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let mut sorted: Vec<&(String, String)> = labels.iter().collect();
    sorted.sort();
    let inner: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// The batch call failed: find the messages the step fails on by trying them one at a time.
fn isolate(
    step: &mut StepRunner,
    msgs: Vec<Envelope>,
    batch_err: CallError,
    out: &mut ChainOutput,
    buf: &mut Vec<u8>,
) -> Vec<Envelope> {
    tracing::debug!(step = %step.name, error = %batch_err, size = msgs.len(), "batch call failed; isolating messages");
    if msgs.len() == 1 {
        return fail(step, msgs, &batch_err, out);
    }
    let mut kept = Vec::with_capacity(msgs.len());
    let mut timeouts = 0;
    let mut iter = msgs.into_iter();
    for e in iter.by_ref() {
        let one = vec![e];
        let (res, b) = step.call(&one, std::mem::take(buf));
        *buf = b;
        match res {
            Ok(lists) => {
                let mut one = one;
                apply(step, &mut one, lists, out);
                kept.extend(one);
            }
            Err(err) => {
                if matches!(err, CallError::Timeout(_)) {
                    timeouts += 1;
                }
                kept.extend(fail(step, one, &err, out));
                if timeouts >= MAX_ISOLATION_TIMEOUTS {
                    break;
                }
            }
        }
    }
    let rest: Vec<Envelope> = iter.collect();
    if !rest.is_empty() {
        let err = CallError::Timeout(step.limits.deadline);
        kept.extend(fail(step, rest, &err, out));
    }
    kept
}

/// Applies `on_error` to messages the step failed on.
fn fail(
    step: &StepRunner,
    msgs: Vec<Envelope>,
    err: &CallError,
    out: &mut ChainOutput,
) -> Vec<Envelope> {
    let (plugin, version) = step.plugin_version();
    let reason = err.to_string();
    let mut kept = Vec::new();
    for e in msgs {
        step.stats.errors.inc(err.kind());
        tracing::warn!(
            step = %step.name,
            plugin,
            version,
            hash = step.plugin.short_hash(),
            message_id = %e.msg.id,
            error_kind = err.kind(),
            error = %reason,
            policy = ?step.on_error,
            "plugin failed on message"
        );
        match step.on_error {
            OnError::Skip => kept.push(e),
            OnError::Drop => {
                step.stats.dropped.inc();
                out.dropped
                    .push((e.msg.id, step.name.clone(), reason.clone()));
            }
            OnError::DeadLetter => out.dead_letters.push(DeadLetter {
                msg: e.msg,
                step: step.name.clone(),
                plugin: plugin.to_owned(),
                version: version.to_owned(),
                hash: step.plugin.hash.clone(),
                reason: reason.clone(),
            }),
        }
    }
    kept
}
