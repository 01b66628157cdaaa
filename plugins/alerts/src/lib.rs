//! # alerts: threshold rules over tumbling windows of chat
//!
//! A streamtap step that raises an alert when, in one channel, "enough" matching messages
//! arrive within a time window: a hype train (150 messages in 20 s), a wave of negative
//! chat (40 messages with `sentiment.compound < -0.5` in a minute), a copy-pasta keyword.
//! Messages pass through unchanged; the step only emits alerts (and one record per alert).
//!
//! ```toml
//! [[steps]]
//! uses = "../target/wasm32-wasip2/release/alerts.wasm"
//!
//! [[steps.with.rules]]
//! name = "toxic-wave"
//! window = "60s"
//! threshold = 40
//! field = "sentiment.compound"
//! below = -0.5
//! topic = "moderation"
//!
//! # Spanish or Portuguese chat spamming a bot command (`lang` comes from `translate`).
//! [[steps.with.rules]]
//! name = "iberian-commands"
//! window = "30s"
//! threshold = 20
//! regex = "(?i)^!(drop|giveaway)\\b"
//! field = "lang"
//! one_of = ["es", "pt"]
//! ```
//!
//! ## Semantics
//!
//! * **Windows** are tumbling and aligned to the Unix epoch on *message* time
//!   (`tmi-sent-ts`): `window_start = ts - ts % window`. Message time rather than host time
//!   makes a replayed log alert exactly as the live stream did, and makes results
//!   independent of batching and processing delays.
//! * **Counting** is per rule and channel. A message counts for a rule when its channel
//!   matches one of `channels` and every configured condition holds: `keyword`, `regex`,
//!   and `field` (present, or with `below`/`above`, or with `equals`/`one_of`).
//! * **Text filters**: `keyword` is a case-insensitive substring; `regex` is a
//!   [`regex`](https://docs.rs/regex) pattern searched in the text, case-sensitive unless
//!   it says `(?i)`, unanchored unless it uses `^`/`$`. With both, both must match.
//!   `\w`, `\d`, `\b` and `(?i)` are Unicode-aware; `\p{...}` property classes are not
//!   built in (they would grow the .wasm) and are refused as not found.
//!   Patterns are compiled once, in `init`, with a size limit ([`REGEX_SIZE_LIMIT`]) so
//!   that a pattern like `\w{1000}` is refused instead of exhausting the plugin's
//!   memory; an invalid or oversized pattern fails the step's `init`, naming the rule.
//! * **String fields**: `equals = "es"` and `one_of = ["es", "pt"]` compare a string
//!   field an earlier step set (e.g. `lang` from `translate`) exactly; a value that is
//!   not a string never matches. They need `field` and cannot be combined with
//!   `below`/`above`.
//! * **Firing**: the message that brings the window's count to `threshold` raises one
//!   alert (and an `alert_windows` record). Later messages of the same window never fire
//!   again, and the dedupe key `{rule}:{channel}:{window_start_ms}` lets the host drop a
//!   second copy should a redelivered message fire it anyway.
//! * **Cooldown**: after firing, a rule stays quiet for that channel until message time
//!   reaches `fired_at + cooldown`. A window whose crossing falls inside the cooldown is
//!   suppressed for good; it does not fire later in the window when the cooldown ends.
//! * **Late messages** (older than the current window of their rule and channel) cannot
//!   be counted any more: the window they belong to was dropped. They are counted in a
//!   `late` counter kept in the state, and summarised in one log line per batch.
//!
//! ## State
//!
//! Each (rule, channel) has a small JSON entry in the step's key-value store
//! (`host::kv`), so counts and cooldowns survive a hot reload. The plugin keeps a cache of
//! the entries it has touched, loads an entry lazily the first time a batch needs it, and
//! writes changed entries back once at the end of each batch. Loading lazily (never in
//! `init`) matters: the host builds the new generation while the old one is still
//! processing, so state read in `init` could be stale by the time the new one runs.
//! Only the current window of each entry is kept, so an entry has a fixed size.

mod glob;
mod timefmt;

pub use glob::Glob;

use std::collections::{HashMap, HashSet};
use streamtap_plugin_sdk::duration;
use streamtap_plugin_sdk::host::{self, Level};
use streamtap_plugin_sdk::{Actions, Alert, Message, Plugin, Value, export};

/// Default of `channels`: every channel.
pub const DEFAULT_CHANNELS: &str = "*";
/// Default of `severity`.
pub const DEFAULT_SEVERITY: &str = "warning";
/// The `record` table that keeps a trace of every window that fired.
pub const RECORD_TABLE: &str = "alert_windows";
/// Prefix of the key-value keys; bump the version when [`WindowState`] changes shape so an
/// old entry is never misread as a new one.
const KV_PREFIX: &str = "alerts/v1/";
/// Cached entries per rule above which clean entries not touched by the latest batch are
/// evicted at the end of a batch (they stay in the key-value store and reload on demand).
/// Bounds the plugin's memory when it sees many channels.
const MAX_CACHED_PER_RULE: usize = 4096;
/// Upper bound, in bytes, on the compiled form (the Thompson NFA) of one rule's `regex`.
/// The regex crate's default (10 MiB) is meant for trusted patterns; rules come from a
/// pipeline file that may be edited by many people, and the plugin's memory is
/// capped by the host, so a pattern that compiles bigger than this is refused at `init`.
/// Ordinary patterns stay far below it, but a Unicode class such as `\w` compiles to
/// several KiB, so even `\w{150}` is over it (tested).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Configuration

/// The step's `with` table.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The alert rules; each is evaluated independently on every message. Required, at
    /// least one. (Defaults to empty only so that a missing key gets our own message.)
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// One `[[steps.with.rules]]` entry. Required keys are `Option`s so that a missing one is
/// reported by `init` with the rule's name rather than by serde without it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Required. Unique among the rules; `[A-Za-z0-9_.-]+`, because it is part of dedupe
    /// keys and record keys (`{rule}:{channel}:{window_start_ms}`).
    pub name: Option<String>,
    /// Channel login patterns (`*` any run, `?` one character, no `#`); a message counts
    /// when its channel matches any of them. Default: `["*"]` ([`DEFAULT_CHANNELS`]).
    #[serde(default = "default_channels")]
    pub channels: Vec<String>,
    /// Required. Tumbling window length on message time: `"500ms"`, `"20s"`, `"1m"`, `"1h"`.
    pub window: Option<String>,
    /// Required, at least 1. Fire when this many matching messages arrive in one window.
    pub threshold: Option<u64>,
    /// Optional. The text must contain this, compared case-insensitively. Default: none.
    pub keyword: Option<String>,
    /// Optional. A `regex`-crate pattern the text must match somewhere (case-sensitive
    /// unless it starts with `(?i)`; anchor with `^`/`$`). With `keyword`, both must
    /// match. Compiled at `init` under [`REGEX_SIZE_LIMIT`]. Default: none.
    pub regex: Option<String>,
    /// Optional. Dotted path into a field an earlier step set, e.g. `"sentiment.compound"`
    /// (the first segment is the field name, the rest are map keys). With `below`/`above`
    /// the value must be a number meeting them; with `equals`/`one_of`, a string equal to
    /// them; alone, the field must be present and not null. Default: none.
    pub field: Option<String>,
    /// Optional, needs `field`. The message counts only when the field's value is `< below`.
    pub below: Option<f64>,
    /// Optional, needs `field`. The message counts only when the field's value is `> above`.
    /// With both `below` and `above`, the value must lie between them.
    pub above: Option<f64>,
    /// Optional, needs `field`, not with `below`/`above`. The message counts only when the
    /// field's value is a string equal to this (exact, case-sensitive), e.g. `lang = "es"`.
    pub equals: Option<String>,
    /// Optional, needs `field`, not with `below`/`above`, not empty. The message counts
    /// only when the field's value is a string equal to one of these. With `equals`, both
    /// must hold (so `equals` must be one of them).
    pub one_of: Option<Vec<String>>,
    /// Alert topic, routed by the pipeline's `[alerts]` table. Default: the rule name.
    pub topic: Option<String>,
    /// Alert severity (`"info"`, `"warning"`, `"critical"`, ...). Default: `"warning"`
    /// ([`DEFAULT_SEVERITY`]).
    #[serde(default = "default_severity")]
    pub severity: String,
    /// After firing for a channel, do not fire again for it until message time has
    /// advanced this much (`"0s"` disables). Default: the rule's `window`.
    pub cooldown: Option<String>,
}

fn default_channels() -> Vec<String> {
    vec![DEFAULT_CHANNELS.to_owned()]
}

fn default_severity() -> String {
    DEFAULT_SEVERITY.to_owned()
}

/// A validated rule, ready to evaluate.
#[derive(Debug, Clone)]
struct Rule {
    name: String,
    channels: Vec<Glob>,
    window_ms: i64,
    /// The window as the user wrote it, for titles ("150 messages in 20s").
    window_text: String,
    threshold: u64,
    /// Lower-cased, to compare with the lower-cased text.
    keyword: Option<String>,
    /// Compiled once in `init`; searched in the original (not lower-cased) text.
    regex: Option<regex::Regex>,
    field: Option<FieldPath>,
    below: Option<f64>,
    above: Option<f64>,
    equals: Option<String>,
    one_of: Option<Vec<String>>,
    topic: String,
    severity: String,
    cooldown_ms: i64,
}

/// `sentiment.compound` split into the field name and the keys below it.
#[derive(Debug, Clone)]
struct FieldPath {
    text: String,
    name: String,
    keys: Vec<String>,
}

impl RuleConfig {
    /// Validates one rule; `index` is its 1-based position, used to name rules without a
    /// usable name in messages.
    fn compile(self, index: usize) -> Result<Rule, String> {
        let name = match self.name {
            None => return Err(format!("rule #{index}: `name` is required")),
            Some(n) if n.is_empty() => return Err(format!("rule #{index}: `name` is empty")),
            Some(n) => n,
        };
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(format!(
                "rule #{index} {name:?}: `name` contains {bad:?}; use letters, digits, '_', '-' and '.' (it becomes part of dedupe keys)"
            ));
        }
        let ctx = format!("rule {name:?}");

        if self.channels.is_empty() {
            return Err(format!(
                "{ctx}: `channels` is empty, so the rule could never match (use [\"*\"] for every channel)"
            ));
        }
        let channels = self
            .channels
            .iter()
            .map(|p| Glob::new(p).map_err(|e| format!("{ctx}: `channels`: {e}")))
            .collect::<Result<Vec<_>, _>>()?;

        let window_text = self
            .window
            .ok_or_else(|| format!("{ctx}: `window` is required (e.g. \"20s\")"))?;
        let window_ms =
            duration::parse_ms(&window_text).map_err(|e| format!("{ctx}: `window` = {e}"))?;
        if window_ms == 0 {
            return Err(format!(
                "{ctx}: `window` = {window_text:?} must be longer than zero"
            ));
        }

        let threshold = match self.threshold {
            None => return Err(format!("{ctx}: `threshold` is required (a message count)")),
            Some(0) => {
                return Err(format!(
                    "{ctx}: `threshold` = 0 would fire without any message; it must be at least 1"
                ));
            }
            Some(t) => t,
        };

        let keyword = match self.keyword {
            Some(k) if k.is_empty() => {
                return Err(format!(
                    "{ctx}: `keyword` is empty; remove it to count every message"
                ));
            }
            k => k.map(|k| k.to_lowercase()),
        };

        let regex = match &self.regex {
            None => None,
            Some(p) if p.is_empty() => {
                return Err(format!(
                    "{ctx}: `regex` is empty; remove it to count every message"
                ));
            }
            Some(p) => Some(compile_regex(p).map_err(|e| format!("{ctx}: {e}"))?),
        };

        let field = match self.field {
            None => None,
            Some(text) => {
                let mut parts = text.split('.');
                let name = parts.next().unwrap_or_default().to_owned();
                let keys: Vec<String> = parts.map(str::to_owned).collect();
                if name.is_empty() || keys.iter().any(String::is_empty) {
                    return Err(format!(
                        "{ctx}: `field` = {text:?} is not a dotted path like \"sentiment.compound\""
                    ));
                }
                Some(FieldPath { text, name, keys })
            }
        };
        for (key, bound) in [("below", self.below), ("above", self.above)] {
            let Some(v) = bound else { continue };
            if field.is_none() {
                return Err(format!(
                    "{ctx}: `{key}` = {v} needs `field` (the value to compare, e.g. field = \"sentiment.compound\")"
                ));
            }
            if !v.is_finite() {
                return Err(format!("{ctx}: `{key}` = {v} must be a finite number"));
            }
        }
        if let (Some(below), Some(above)) = (self.below, self.above)
            && above >= below
        {
            // Both bounds must hold, so this range is empty. Someone wanting "outside the
            // band" needs two rules; say so rather than never firing.
            return Err(format!(
                "{ctx}: `above` = {above} and `below` = {below} leave no value that is both > above and < below (for \"outside a range\" use two rules)"
            ));
        }

        for (key, set) in [
            ("equals", self.equals.is_some()),
            ("one_of", self.one_of.is_some()),
        ] {
            if !set {
                continue;
            }
            if field.is_none() {
                return Err(format!(
                    "{ctx}: `{key}` needs `field` (the value to compare, e.g. field = \"lang\")"
                ));
            }
            if let Some((num, _)) = [("below", self.below), ("above", self.above)]
                .into_iter()
                .find(|(_, v)| v.is_some())
            {
                // A value cannot be both a string and a number; the rule could never fire.
                return Err(format!(
                    "{ctx}: `{key}` compares strings and `{num}` compares numbers; one field value cannot be both (use two rules)"
                ));
            }
        }
        if let Some(list) = &self.one_of {
            if list.is_empty() {
                return Err(format!(
                    "{ctx}: `one_of` is empty, so the rule could never match (list the values, e.g. [\"es\", \"pt\"])"
                ));
            }
            if let Some(eq) = &self.equals
                && !list.contains(eq)
            {
                return Err(format!(
                    "{ctx}: `equals` = {eq:?} is not in `one_of` = {list:?}; both must hold, so the rule could never match"
                ));
            }
        }

        let topic = match self.topic {
            Some(t) if t.is_empty() => {
                return Err(format!(
                    "{ctx}: `topic` is empty; remove it to use the rule name"
                ));
            }
            Some(t) => t,
            None => name.clone(),
        };
        if self.severity.is_empty() {
            return Err(format!(
                "{ctx}: `severity` is empty (e.g. \"info\", \"warning\", \"critical\")"
            ));
        }

        let cooldown_ms = match &self.cooldown {
            None => window_ms,
            Some(c) => duration::parse_ms(c).map_err(|e| format!("{ctx}: `cooldown` = {e}"))?,
        };

        Ok(Rule {
            name,
            channels,
            window_ms,
            window_text,
            threshold,
            keyword,
            regex,
            field,
            below: self.below,
            above: self.above,
            equals: self.equals,
            one_of: self.one_of,
            topic,
            severity: self.severity,
            cooldown_ms,
        })
    }
}

/// Compiles a rule's `regex` under [`REGEX_SIZE_LIMIT`]. The error quotes the pattern and
/// says what is wrong, in one line when the parser's message has several.
///
/// The limit is checked on the pattern's forward Thompson NFA, compiled here, rather than
/// left to `RegexBuilder::size_limit`: that one also bounds whatever extra engines the
/// regex crate was built with (a workspace that enables `regex-automata/dfa-build`
/// elsewhere makes it build reverse automata too, several times bigger for Unicode
/// classes), so the same pattern would pass in the .wasm and fail in a test build. The
/// regex itself then gets a looser bound, as a backstop.
fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    use regex_automata::nfa::thompson;
    // The compiler's own limit counts less than the finished NFA's heap, so it is only a
    // guard against building something huge; the finished size is what is checked.
    let nfa = thompson::Compiler::new()
        .configure(
            thompson::Config::new()
                .nfa_size_limit(Some(REGEX_SIZE_LIMIT * 4))
                .which_captures(thompson::WhichCaptures::None),
        )
        .build(pattern);
    match nfa {
        Err(e) if e.size_limit().is_some() => return Err(too_big(pattern, REGEX_SIZE_LIMIT)),
        Ok(nfa) if nfa.memory_usage() > REGEX_SIZE_LIMIT => {
            return Err(too_big(pattern, REGEX_SIZE_LIMIT));
        }
        _ => {}
    }
    // Any other NFA error is a syntax error, reported here in the regex crate's words.
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT * 8)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => too_big(pattern, limit),
            other => {
                // The parser's message is the pattern, a caret line, then "error: WHAT";
                // the pattern is already quoted, so keep only WHAT.
                let text = other.to_string();
                let what = text
                    .lines()
                    .rev()
                    .find_map(|l| l.trim().strip_prefix("error: "))
                    .map_or_else(|| text.trim().replace('\n', " "), str::to_owned);
                format!("`regex` = {pattern:?} is not a valid pattern: {what}")
            }
        })
}

fn too_big(pattern: &str, limit: usize) -> String {
    format!(
        "`regex` = {pattern:?} is too big: compiled, it exceeds the {limit}-byte limit (use smaller repetition counts or fewer Unicode classes)"
    )
}

impl Rule {
    fn channel_matches(&self, channel: &str) -> bool {
        self.channels.iter().any(|g| g.matches(channel))
    }

    /// The `field` condition (`below`/`above`, `equals`/`one_of`, or present); true when no
    /// `field` is configured.
    fn field_matches(&self, msg: &Message<'_>) -> bool {
        let Some(path) = &self.field else {
            return true;
        };
        let Some(mut value) = msg.field(&path.name) else {
            return false;
        };
        for key in &path.keys {
            match value {
                Value::Map(mut m) => match m.remove(key) {
                    Some(v) => value = v,
                    None => return false,
                },
                _ => return false,
            }
        }
        if self.equals.is_some() || self.one_of.is_some() {
            // Only strings compare: a number 1 is not the string "1".
            let Some(s) = value.as_str() else {
                return false;
            };
            return self.equals.as_deref().is_none_or(|e| s == e)
                && self
                    .one_of
                    .as_ref()
                    .is_none_or(|l| l.iter().any(|v| v == s));
        }
        if self.below.is_none() && self.above.is_none() {
            return value != Value::Null;
        }
        // A non-number (or NaN, for which every comparison is false) never counts.
        let Some(x) = value.as_f64() else {
            return false;
        };
        self.below.is_none_or(|b| x < b) && self.above.is_none_or(|a| x > a)
    }

    /// The conditions in words, for alert bodies.
    fn describe_conditions(&self) -> String {
        let mut parts = Vec::new();
        if let Some(k) = &self.keyword {
            parts.push(format!("text contains {k:?} (any case)"));
        }
        if let Some(r) = &self.regex {
            parts.push(format!("text matches /{}/", r.as_str()));
        }
        if let Some(f) = &self.field {
            if let Some(e) = &self.equals {
                parts.push(format!("{} = {e:?}", f.text));
            }
            if let Some(l) = &self.one_of {
                parts.push(format!("{} one of {l:?}", f.text));
            }
            // `equals`/`one_of` exclude `below`/`above` (checked in `compile`).
            if self.equals.is_none() && self.one_of.is_none() {
                match (self.above, self.below) {
                    (Some(a), Some(b)) => parts.push(format!("{a} < {} < {b}", f.text)),
                    (Some(a), None) => parts.push(format!("{} > {a}", f.text)),
                    (None, Some(b)) => parts.push(format!("{} < {b}", f.text)),
                    (None, None) => parts.push(format!("{} is set", f.text)),
                }
            }
        }
        if parts.is_empty() {
            "every message".into()
        } else {
            parts.join(" and ")
        }
    }
}

/// Start of the epoch-aligned window holding `ts`. `rem_euclid` keeps pre-1970 (negative)
/// timestamps in the right window, and the saturating subtraction means even an absurd
/// `i64::MIN + 1` timestamp cannot overflow.
fn window_start(ts: i64, window_ms: i64) -> i64 {
    ts.saturating_sub(ts.rem_euclid(window_ms))
}

// ---------------------------------------------------------------------------------------------
// State

/// What the key-value store holds per (rule, channel). Only the current window is kept:
/// the moment a message opens a newer one, the old count is dropped.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowState {
    /// The window length the counts were taken with. A reload that changes the rule's
    /// `window` makes the stored count meaningless, so it is reset.
    pub window_ms: i64,
    /// Start of the current window (ms since the epoch); `None` before the first message.
    pub start: Option<i64>,
    /// Matching messages counted in the current window.
    pub count: u64,
    /// Whether the current window already reached the threshold (and fired, or was
    /// suppressed by the cooldown). Kept as a flag rather than testing `count ==
    /// threshold`, so a reload that lowers the threshold below the running count still
    /// fires once instead of never.
    pub crossed: bool,
    /// Message time of the last alert, for the cooldown.
    pub last_fired_ms: Option<i64>,
    /// Messages that arrived after their window had been dropped, all time.
    pub late: u64,
}

/// A cached [`WindowState`] and its bookkeeping.
#[derive(Debug)]
struct Slot {
    state: WindowState,
    /// Changed since it was last written to the key-value store.
    dirty: bool,
    /// The batch number that last used it, for eviction.
    touched: u64,
}

/// The key-value key of one (rule, channel). JSON-encoding the pair keeps keys unambiguous
/// whatever characters a channel name from a misbehaving source contains.
pub fn state_key(rule: &str, channel: &str) -> String {
    let pair = serde_json::to_string(&(rule, channel))
        .unwrap_or_else(|_| format!("[{rule:?},{channel:?}]"));
    format!("{KV_PREFIX}{pair}")
}

/// Reads an entry from the key-value store, or starts a fresh one.
fn load(rule: &Rule, channel: &str) -> WindowState {
    let fresh = WindowState {
        window_ms: rule.window_ms,
        ..WindowState::default()
    };
    let Some(bytes) = host::kv::get(&state_key(&rule.name, channel)) else {
        return fresh;
    };
    match serde_json::from_slice::<WindowState>(&bytes) {
        Ok(s) if s.window_ms == rule.window_ms => s,
        Ok(s) => {
            // Keep what is still true under the new window: the cooldown and the late total.
            WindowState {
                last_fired_ms: s.last_fired_ms,
                late: s.late,
                ..fresh
            }
        }
        Err(e) => {
            host::log(
                Level::Warn,
                &format!(
                    "alerts: discarding unreadable state of rule {:?} channel #{channel}: {e}",
                    rule.name
                ),
            );
            fresh
        }
    }
}

/// Per-batch tallies, reported once at the end of the batch.
#[derive(Debug, Default)]
struct BatchNotes {
    late: u64,
    /// The first late message of the batch, as an example for the log line:
    /// (rule, channel, message ts, current window start).
    first_late: Option<(String, String, i64, i64)>,
}

// ---------------------------------------------------------------------------------------------
// The step

/// The alerts step.
#[derive(Debug)]
pub struct Alerts {
    rules: Vec<Rule>,
    /// One cache per rule (same index), keyed by channel.
    cache: Vec<HashMap<String, Slot>>,
    /// (rule index, channel) of the slots changed in this batch, so the write-back does not
    /// scan the whole cache.
    dirty: Vec<(usize, String)>,
    /// Counts batches, for eviction.
    batch_no: u64,
    /// Tallies of the batch in progress, reported by `end_batch`.
    notes: BatchNotes,
}

impl Plugin for Alerts {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        if config.rules.is_empty() {
            return Err(
                "no rules: add at least one [[steps.with.rules]] table (name, window, threshold)"
                    .into(),
            );
        }
        let mut rules = Vec::with_capacity(config.rules.len());
        let mut seen = HashSet::new();
        for (i, rc) in config.rules.into_iter().enumerate() {
            let rule = rc.compile(i + 1)?;
            if !seen.insert(rule.name.clone()) {
                return Err(format!(
                    "rule #{}: name {:?} is used by an earlier rule; rule names must be unique",
                    i + 1,
                    rule.name
                ));
            }
            rules.push(rule);
        }
        // Deliberately no state is read here: see "State" in the crate docs.
        Ok(Alerts {
            cache: rules.iter().map(|_| HashMap::new()).collect(),
            rules,
            dirty: Vec::new(),
            batch_no: 0,
            notes: BatchNotes::default(),
        })
    }

    fn process(&mut self, msg: &Message<'_>, out: &mut Actions) {
        let mut notes = std::mem::take(&mut self.notes);
        self.handle(msg, out, &mut notes);
        self.notes = notes;
    }

    /// State is written back once per batch, not per message.
    fn end_batch(&mut self) {
        let notes = std::mem::take(&mut self.notes);
        self.finish_batch(notes);
    }
}

impl Alerts {
    /// Counts one message against every rule, raising alerts on `out`.
    fn handle(&mut self, msg: &Message<'_>, out: &mut Actions, notes: &mut BatchNotes) {
        let ts = msg.ts_ms();
        // Lower-cased once per message, and only if some rule has a keyword.
        let mut lower_text: Option<String> = None;
        for (ri, rule) in self.rules.iter().enumerate() {
            if !rule.channel_matches(msg.channel()) {
                continue;
            }
            if let Some(k) = &rule.keyword
                && !lower_text
                    .get_or_insert_with(|| msg.text().to_lowercase())
                    .contains(k.as_str())
            {
                continue;
            }
            if let Some(re) = &rule.regex
                && !re.is_match(msg.text())
            {
                continue;
            }
            if !rule.field_matches(msg) {
                continue;
            }

            let Some(cache) = self.cache.get_mut(ri) else {
                continue;
            };
            if !cache.contains_key(msg.channel()) {
                let state = load(rule, msg.channel());
                cache.insert(
                    msg.channel().to_owned(),
                    Slot {
                        state,
                        dirty: false,
                        touched: self.batch_no,
                    },
                );
            }
            let Some(slot) = cache.get_mut(msg.channel()) else {
                continue;
            };
            slot.touched = self.batch_no;
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push((ri, msg.channel().to_owned()));
            }
            let st = &mut slot.state;

            let ws = window_start(ts, rule.window_ms);
            match st.start {
                Some(cur) if ws < cur => {
                    st.late = st.late.saturating_add(1);
                    notes.late += 1;
                    notes.first_late.get_or_insert_with(|| {
                        (rule.name.clone(), msg.channel().to_owned(), ts, cur)
                    });
                    continue;
                }
                Some(cur) if ws == cur => {}
                _ => {
                    // A newer window (or the first): drop the old count, keeping state bounded.
                    st.start = Some(ws);
                    st.count = 0;
                    st.crossed = false;
                }
            }
            st.count = st.count.saturating_add(1);
            if st.crossed || st.count < rule.threshold {
                continue;
            }
            st.crossed = true;
            if let Some(last) = st.last_fired_ms
                && ts < last.saturating_add(rule.cooldown_ms)
            {
                host::log(
                    Level::Debug,
                    &format!(
                        "alerts: rule {:?} #{}: window {} reached {} but is in cooldown until {}",
                        rule.name,
                        msg.channel(),
                        timefmt::rfc3339_ms(ws),
                        st.count,
                        timefmt::rfc3339_ms(last.saturating_add(rule.cooldown_ms)),
                    ),
                );
                continue;
            }
            st.last_fired_ms = Some(ts);
            fire(rule, msg, ws, st.count, out);
        }
    }

    /// Writes changed state back, evicts cold cache entries and reports late messages.
    fn finish_batch(&mut self, notes: BatchNotes) {
        let mut failed = Vec::new();
        let mut first_error = None;
        for (ri, channel) in std::mem::take(&mut self.dirty) {
            let (Some(rule), Some(cache)) = (self.rules.get(ri), self.cache.get_mut(ri)) else {
                continue;
            };
            let Some(slot) = cache.get_mut(&channel) else {
                continue;
            };
            let res = serde_json::to_vec(&slot.state)
                .map_err(|e| e.to_string())
                .and_then(|bytes| host::kv::set(&state_key(&rule.name, &channel), &bytes));
            match res {
                Ok(()) => slot.dirty = false,
                Err(e) => {
                    // Most likely the step's `state_limit`. The entry stays dirty in the
                    // cache (and is never evicted while dirty) so counting goes on in
                    // memory, and it stays on the dirty list to be retried after every
                    // batch until a write succeeds.
                    failed.push((ri, channel));
                    first_error.get_or_insert(e);
                }
            }
        }
        let write_errors = failed.len();
        self.dirty = failed;
        if let Some(e) = first_error {
            host::log(
                Level::Error,
                &format!(
                    "alerts: could not save {write_errors} state entr{} (counts kept in memory only; they are lost on reload): {e}",
                    if write_errors == 1 { "y" } else { "ies" }
                ),
            );
        }

        let batch_no = self.batch_no;
        for cache in &mut self.cache {
            if cache.len() > MAX_CACHED_PER_RULE {
                cache.retain(|_, s| s.dirty || s.touched == batch_no);
            }
        }
        self.batch_no = self.batch_no.wrapping_add(1);

        if let Some((rule, channel, ts, cur)) = notes.first_late {
            // Once per batch, so a burst of late messages cannot flood the log.
            host::log(
                Level::Warn,
                &format!(
                    "alerts: {} late message(s) in this batch were not counted because their window had already closed; e.g. rule {rule:?} #{channel}: message at {} but the current window started {}",
                    notes.late,
                    timefmt::rfc3339_ms(ts),
                    timefmt::rfc3339_ms(cur),
                ),
            );
        }
    }

    /// The late-message total of one (rule, channel), from the cache or the store.
    /// For tests and diagnostics.
    pub fn late_count(&self, rule: &str, channel: &str) -> Option<u64> {
        let ri = self.rules.iter().position(|r| r.name == rule)?;
        if let Some(slot) = self.cache.get(ri).and_then(|c| c.get(channel)) {
            return Some(slot.state.late);
        }
        let bytes = host::kv::get(&state_key(rule, channel))?;
        serde_json::from_slice::<WindowState>(&bytes)
            .ok()
            .map(|s| s.late)
    }
}

/// Emits the alert and its `alert_windows` record on the message that crossed the threshold.
fn fire(rule: &Rule, msg: &Message<'_>, window_start: i64, count: u64, out: &mut Actions) {
    let channel = msg.channel();
    let window_end = window_start.saturating_add(rule.window_ms);
    let key = format!("{}:{channel}:{window_start}", rule.name);
    let title = format!(
        "{}: #{channel} {count} messages in {}",
        rule.name, rule.window_text
    );
    let body = format!(
        "Rule {:?} counted {count} matching messages in #{channel} within one {} window \
         (threshold {}).\n\
         Window: {} to {} ({window_start}..{window_end} ms)\n\
         Matching: {}\n\
         Channel: https://twitch.tv/{channel}",
        rule.name,
        rule.window_text,
        rule.threshold,
        timefmt::rfc3339_ms(window_start),
        timefmt::rfc3339_ms(window_end),
        rule.describe_conditions(),
    );
    out.alert(Alert {
        topic: rule.topic.clone(),
        severity: rule.severity.clone(),
        title,
        body,
        dedupe_key: key.clone(),
        attributes: vec![
            ("channel".into(), channel.to_owned()),
            ("rule".into(), rule.name.clone()),
            ("severity".into(), rule.severity.clone()),
            ("count".into(), count.to_string()),
        ],
    });
    let as_int = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
    out.record(
        RECORD_TABLE,
        key,
        Value::map([
            ("rule", Value::from(rule.name.as_str())),
            ("channel", Value::from(channel)),
            ("window_start_ms", Value::Int(window_start)),
            ("window_end_ms", Value::Int(window_end)),
            ("count", as_int(count)),
            ("threshold", as_int(rule.threshold)),
            ("fired_at_ms", Value::Int(msg.ts_ms())),
            ("message_id", Value::from(msg.id())),
        ]),
    );
}

export!(Alerts);
