//! # analytics: per-channel chat statistics over tumbling windows
//!
//! A streamtap step that summarises each channel's chat per window of *message* time and
//! emits one `channel_stats` record per channel and window when the window closes:
//! message count, unique chatters, first-time chatters, top emotes, mean sentiment,
//! messages per language, subs/raids and other USERNOTICE events, and late messages.
//! Messages pass through unchanged.
//!
//! ```toml
//! [[steps]]
//! uses = "../target/wasm32-wasip2/release/analytics.wasm"
//! with = { window = "60s", grace = "10s", top_emotes = 5 }
//! ```
//!
//! See `docs/ANALYTICS.md` for the config keys, the record schema and the window
//! semantics. In short:
//!
//! * **Windows** are tumbling, aligned to the Unix epoch on message time:
//!   `[start, start + window)`. A message exactly at `start + window` belongs to the next.
//! * Each channel has a **watermark**: the newest message time seen. A window closes (and
//!   its record is emitted, on the action list of the message that closed it) once the
//!   watermark reaches `end + grace`.
//! * A message whose window is still open (including an older window still within its
//!   grace period) is folded into it. A message whose window has already closed is
//!   **late**: it is counted in the `late` field of the window holding the watermark, and
//!   not in any other statistic.
//! * A window with no messages is never emitted; a quiet channel's last window stays open
//!   until that channel's next message, or until the host calls `flush` at the end of the
//!   run, which emits every open window (so a replay's report has its last minute).
//!
//! ## State
//!
//! The open windows of a channel live in one JSON entry of the step's key-value store
//! (`host::kv`), so they survive a hot reload. Entries are loaded lazily, the first time a
//! batch sees the channel (never in `init`: the host builds the new generation while the
//! old one still runs), and changed entries are written back once at the end of each
//! batch. Every part of an entry is bounded: the number of open windows (through the
//! `grace`/`window` ratio), the chatter set (`max_chatters`), the emote, language and
//! event tables (`max_emotes`, [`MAX_LANGS`], [`MAX_EVENTS`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use streamtap_plugin_sdk::duration;
use streamtap_plugin_sdk::host::{self, Level};
use streamtap_plugin_sdk::{Actions, Message, Plugin, Value, export};

/// Default of `window`.
pub const DEFAULT_WINDOW: &str = "60s";
/// Default of `grace`.
pub const DEFAULT_GRACE: &str = "10s";
/// Default of `top_emotes`.
pub const DEFAULT_TOP_EMOTES: usize = 5;
/// Default of `max_chatters`.
pub const DEFAULT_MAX_CHATTERS: usize = 50_000;
/// Default of `max_emotes`.
pub const DEFAULT_MAX_EMOTES: usize = 1_000;
/// Default of `metrics`.
pub const DEFAULT_METRICS: bool = true;

/// Largest accepted `top_emotes`.
pub const MAX_TOP_EMOTES: usize = 100;
/// Largest accepted `max_chatters` (bounds the state entry of a channel).
pub const MAX_MAX_CHATTERS: usize = 1_000_000;
/// Largest accepted `max_emotes`.
pub const MAX_MAX_EMOTES: usize = 100_000;
/// `grace` may span at most this many windows, which bounds the open windows per channel.
pub const MAX_GRACE_WINDOWS: i64 = 16;
/// Distinct languages tracked per window; the rest are counted under [`OTHER`].
pub const MAX_LANGS: usize = 64;
/// Distinct event kinds tracked per window; the rest are counted under [`OTHER`].
pub const MAX_EVENTS: usize = 32;
/// Emotes longer than this many characters are treated as bad positions and skipped.
pub const MAX_EMOTE_CHARS: usize = 100;
/// Language tags longer than this many bytes count as [`UNDETERMINED`].
pub const MAX_LANG_LEN: usize = 35;
/// Event names longer than this many bytes count as [`OTHER`].
pub const MAX_EVENT_LEN: usize = 64;
/// The language of messages without a usable `lang` field.
pub const UNDETERMINED: &str = "und";
/// The bucket for languages and events beyond the per-window caps.
pub const OTHER: &str = "_other";
/// The record table.
pub const RECORD_TABLE: &str = "channel_stats";
/// Prefix of the key-value keys; bump the version when [`ChannelState`] changes shape.
const KV_PREFIX: &str = "analytics/v1/";

/// Key-value key of the set of channels that may have open windows, so `flush` finds the
/// channels evicted from the cache and those a previous generation saw. (Channel entries
/// use a JSON-quoted name after the prefix, so this key cannot collide with one.)
const INDEX_KEY: &str = "analytics/v1/open-channels";
/// Cached channels above which clean entries not touched by the latest batch are evicted
/// at the end of a batch (they stay in the key-value store and reload on demand).
const MAX_CACHED: usize = 1024;

// ---------------------------------------------------------------------------------------------
// Configuration

/// A duration in the config: a string like `"60s"`. Numbers are accepted by serde only so
/// that `init` can reject them with a helpful message instead of a type error.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(untagged)]
pub enum DurationSetting {
    /// `"500ms"`, `"20s"`, `"1m"`, `"1h"`.
    Text(String),
    /// A bare number: rejected, since its unit would be a guess.
    Number(serde_json::Number),
}

/// The step's `with` table. Every key is optional.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Tumbling window length on message time, a whole number with a unit: `"500ms"`,
    /// `"30s"`, `"1m"`, `"1h"`. Must be more than zero. Default: `"60s"` ([`DEFAULT_WINDOW`]).
    pub window: DurationSetting,
    /// How long after a window's end (in message time) it stays open for late arrivals;
    /// `"0s"` closes a window on the first message of a later one. At most
    /// [`MAX_GRACE_WINDOWS`] windows. Default: `"10s"` ([`DEFAULT_GRACE`]).
    pub grace: DurationSetting,
    /// How many of the most used emotes each record lists (0 to list none), at most
    /// [`MAX_TOP_EMOTES`]. Default: 5 ([`DEFAULT_TOP_EMOTES`]).
    pub top_emotes: usize,
    /// Cap of the exact set of user ids kept per window, 1 to [`MAX_MAX_CHATTERS`]. Past it,
    /// new chatters are not counted and the record says `chatters_capped = true`.
    /// Default: 50000 ([`DEFAULT_MAX_CHATTERS`]).
    pub max_chatters: usize,
    /// Cap of the distinct emotes counted per window, 1 to [`MAX_MAX_EMOTES`]. Past it, new
    /// emotes are not counted and the record says `emotes_capped = true`.
    /// Default: 1000 ([`DEFAULT_MAX_EMOTES`]).
    pub max_emotes: usize,
    /// Whether closing a window also reports `channel_messages`, `channel_chatters` and
    /// (when any message had a score) `channel_sentiment` metrics labelled with the
    /// channel. Default: true ([`DEFAULT_METRICS`]).
    pub metrics: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window: DurationSetting::Text(DEFAULT_WINDOW.to_owned()),
            grace: DurationSetting::Text(DEFAULT_GRACE.to_owned()),
            top_emotes: DEFAULT_TOP_EMOTES,
            max_chatters: DEFAULT_MAX_CHATTERS,
            max_emotes: DEFAULT_MAX_EMOTES,
            metrics: DEFAULT_METRICS,
        }
    }
}

/// Parses one duration key.
fn duration_ms(key: &str, setting: &DurationSetting) -> Result<i64, String> {
    match setting {
        DurationSetting::Text(t) => duration::parse_ms(t).map_err(|e| format!("`{key}` = {e}")),
        DurationSetting::Number(n) => Err(format!(
            "`{key}` = {n} is a bare number; write it as a string with a unit, like \"{n}s\""
        )),
    }
}

/// The validated settings.
#[derive(Debug, Clone, Copy)]
struct Settings {
    window_ms: i64,
    grace_ms: i64,
    top_emotes: usize,
    max_chatters: usize,
    max_emotes: usize,
    metrics: bool,
}

impl Config {
    fn validate(self) -> Result<Settings, String> {
        let window_ms = duration_ms("window", &self.window)?;
        if window_ms <= 0 {
            return Err(format!(
                "`window` = {:?} must be longer than zero",
                display(&self.window)
            ));
        }
        let grace_ms = duration_ms("grace", &self.grace)?;
        if grace_ms / window_ms > MAX_GRACE_WINDOWS {
            return Err(format!(
                "`grace` = {:?} spans more than {MAX_GRACE_WINDOWS} windows of {:?}; shorten it or lengthen `window`",
                display(&self.grace),
                display(&self.window)
            ));
        }
        if self.top_emotes > MAX_TOP_EMOTES {
            return Err(format!(
                "`top_emotes` = {} is more than {MAX_TOP_EMOTES}",
                self.top_emotes
            ));
        }
        if !(1..=MAX_MAX_CHATTERS).contains(&self.max_chatters) {
            return Err(format!(
                "`max_chatters` = {} must be between 1 and {MAX_MAX_CHATTERS}",
                self.max_chatters
            ));
        }
        if !(1..=MAX_MAX_EMOTES).contains(&self.max_emotes) {
            return Err(format!(
                "`max_emotes` = {} must be between 1 and {MAX_MAX_EMOTES}",
                self.max_emotes
            ));
        }
        Ok(Settings {
            window_ms,
            grace_ms,
            top_emotes: self.top_emotes,
            max_chatters: self.max_chatters,
            max_emotes: self.max_emotes,
            metrics: self.metrics,
        })
    }
}

fn display(d: &DurationSetting) -> String {
    match d {
        DurationSetting::Text(t) => t.clone(),
        DurationSetting::Number(n) => n.to_string(),
    }
}

/// Start of the epoch-aligned window holding `ts` (correct for negative `ts`, no overflow).
fn window_start(ts: i64, window_ms: i64) -> i64 {
    ts.saturating_sub(ts.rem_euclid(window_ms))
}

// ---------------------------------------------------------------------------------------------
// State

/// The statistics of one open window.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowAgg {
    /// Window start, ms since the epoch (inclusive).
    pub start: i64,
    /// Window end, ms since the epoch (exclusive).
    pub end: i64,
    /// Messages folded into the window.
    pub messages: u64,
    /// Distinct user ids (at most `max_chatters`).
    pub chatters: BTreeSet<String>,
    /// A chatter was not added because the set was full.
    pub chatters_capped: bool,
    /// Messages carrying the source's `first_msg = true` (Twitch `first-msg=1` tag).
    pub first_time: u64,
    /// Uses per emote name (at most `max_emotes` names).
    pub emotes: BTreeMap<String, u64>,
    /// An emote was not counted because the table was full.
    pub emotes_capped: bool,
    /// Sum of `sentiment.compound` over the messages that have it.
    pub sentiment_sum: f64,
    /// Messages with a numeric `sentiment.compound`.
    pub sentiment_n: u64,
    /// Messages per `lang` field value ("und" when absent).
    pub langs: BTreeMap<String, u64>,
    /// Events per kind (`sub`, `resub`, `subgift`, `raid`, ...).
    pub events: BTreeMap<String, u64>,
    /// Messages that arrived after their own window had closed.
    pub late: u64,
}

/// What the key-value store holds per channel.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChannelState {
    /// The window length the open windows were cut with.
    pub window_ms: i64,
    /// Newest message time seen in the channel; `None` before the first message.
    pub watermark: Option<i64>,
    /// Open windows, oldest first.
    pub windows: Vec<WindowAgg>,
}

/// A cached [`ChannelState`] and its bookkeeping.
#[derive(Debug)]
struct Slot {
    state: ChannelState,
    dirty: bool,
    touched: u64,
}

/// The key-value key of a channel (JSON-quoted so odd channel names stay unambiguous).
pub fn state_key(channel: &str) -> String {
    let quoted = serde_json::to_string(channel).unwrap_or_else(|_| format!("{channel:?}"));
    format!("{KV_PREFIX}{quoted}")
}

/// Per-batch tallies, reported in one log line at the end of the batch.
#[derive(Debug, Default)]
struct BatchNotes {
    late: u64,
    /// (channel, message ts, watermark) of the first late message.
    first_late: Option<(String, i64, i64)>,
}

// ---------------------------------------------------------------------------------------------
// The step

/// The analytics step.
#[derive(Debug)]
pub struct Analytics {
    cfg: Settings,
    cache: HashMap<String, Slot>,
    /// Channels changed in this batch (or whose write failed).
    dirty: Vec<String>,
    batch_no: u64,
    /// Tallies of the batch in progress, reported by `end_batch`.
    notes: BatchNotes,
    /// Channels that may have open windows (see [`INDEX_KEY`]); loaded on first use.
    index: Option<BTreeSet<String>>,
    /// `index` changed since it was last written.
    index_dirty: bool,
}

impl Plugin for Analytics {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        Ok(Analytics {
            cfg: config.validate()?,
            cache: HashMap::new(),
            dirty: Vec::new(),
            batch_no: 0,
            notes: BatchNotes::default(),
            index: None,
            index_dirty: false,
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

    /// End of the run: every open window of every channel is emitted (oldest first per
    /// channel, channels in name order), since no later message will close them. The
    /// watermarks stay, so a message for a flushed window that still arrives counts as late.
    fn flush(&mut self, out: &mut Actions) {
        let channels = std::mem::take(self.index());
        self.index_dirty = true;
        let cfg = self.cfg;
        for channel in channels {
            let windows = std::mem::take(&mut self.slot(&channel, out).state.windows);
            for w in &windows {
                emit(&cfg, &channel, w, out);
            }
        }
    }
}

impl Analytics {
    /// The set of channels that may have open windows, read from the store on first use.
    fn index(&mut self) -> &mut BTreeSet<String> {
        self.index.get_or_insert_with(|| {
            host::kv::get(INDEX_KEY)
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default()
        })
    }

    /// The channel's cached state (loaded from the store when not cached), marked as
    /// changed in this batch.
    fn slot(&mut self, channel: &str, out: &mut Actions) -> &mut Slot {
        if !self.cache.contains_key(channel) {
            let state = load(&self.cfg, channel, out);
            self.cache.insert(
                channel.to_owned(),
                Slot {
                    state,
                    dirty: false,
                    touched: self.batch_no,
                },
            );
        }
        let slot = self
            .cache
            .get_mut(channel)
            .expect("inserted above when missing");
        slot.touched = self.batch_no;
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push(channel.to_owned());
        }
        slot
    }

    fn handle(&mut self, msg: &Message<'_>, out: &mut Actions, notes: &mut BatchNotes) {
        let channel = msg.channel();
        let ts = msg.ts_ms();
        if !self.index().contains(channel) {
            self.index().insert(channel.to_owned());
            self.index_dirty = true;
        }
        let cfg = &{ self.cfg };
        let slot = self.slot(channel, out);
        let st = &mut slot.state;
        let watermark = st.watermark.map_or(ts, |w| w.max(ts));
        st.watermark = Some(watermark);

        // Close every window whose grace period the watermark has passed, oldest first.
        // The window holding the watermark never closes (which matters only where `end`
        // saturates at the top of the i64 range).
        let closed_until = watermark.saturating_sub(cfg.grace_ms);
        let current = window_start(watermark, cfg.window_ms);
        let is_closed = |start: i64, end: i64| start < current && end <= closed_until;
        while st
            .windows
            .first()
            .is_some_and(|w| is_closed(w.start, w.end))
        {
            let w = st.windows.remove(0);
            emit(cfg, channel, &w, out);
        }

        let ws = window_start(ts, cfg.window_ms);
        let we = ws.saturating_add(cfg.window_ms);
        if is_closed(ws, we) {
            // Its window has closed: count it where someone will see it.
            let w = open_window(cfg, channel, st, current, out);
            w.late = w.late.saturating_add(1);
            notes.late += 1;
            notes
                .first_late
                .get_or_insert_with(|| (channel.to_owned(), ts, watermark));
            return;
        }
        let w = open_window(cfg, channel, st, ws, out);
        fold(cfg, w, msg);
    }

    /// Writes changed state back, evicts cold cache entries, reports late messages.
    fn finish_batch(&mut self, notes: BatchNotes) {
        let mut failed = Vec::new();
        let mut first_error = None;
        for channel in std::mem::take(&mut self.dirty) {
            let Some(slot) = self.cache.get_mut(&channel) else {
                continue;
            };
            let res = serde_json::to_vec(&slot.state)
                .map_err(|e| e.to_string())
                .and_then(|bytes| host::kv::set(&state_key(&channel), &bytes));
            match res {
                Ok(()) => slot.dirty = false,
                Err(e) => {
                    // Probably the step's `state_limit`: keep counting in memory (a dirty
                    // entry is never evicted) and retry after every batch.
                    failed.push(channel);
                    first_error.get_or_insert(e);
                }
            }
        }
        if self.index_dirty {
            let res = serde_json::to_vec(self.index())
                .map_err(|e| e.to_string())
                .and_then(|bytes| host::kv::set(INDEX_KEY, &bytes));
            match res {
                Ok(()) => self.index_dirty = false,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let n_failed = failed.len();
        self.dirty = failed;
        if let Some(e) = first_error {
            host::log(
                Level::Error,
                &format!(
                    "analytics: could not save the open windows of {n_failed} channel(s) (kept in memory only; lost on reload): {e}"
                ),
            );
        }
        let batch_no = self.batch_no;
        if self.cache.len() > MAX_CACHED {
            self.cache.retain(|_, s| s.dirty || s.touched == batch_no);
        }
        self.batch_no = self.batch_no.wrapping_add(1);
        if let Some((channel, ts, watermark)) = notes.first_late {
            host::log(
                Level::Warn,
                &format!(
                    "analytics: {} late message(s) in this batch arrived after their window closed and were counted only as `late`; e.g. #{channel}: message at {ts} ms, channel already at {watermark} ms",
                    notes.late
                ),
            );
        }
    }
}

/// Reads a channel's entry, or starts a fresh one. Windows stored under another window
/// length cannot continue: they are emitted as they are (with their own start and end).
fn load(cfg: &Settings, channel: &str, out: &mut Actions) -> ChannelState {
    let fresh = ChannelState {
        window_ms: cfg.window_ms,
        ..ChannelState::default()
    };
    let Some(bytes) = host::kv::get(&state_key(channel)) else {
        return fresh;
    };
    match serde_json::from_slice::<ChannelState>(&bytes) {
        Ok(s) if s.window_ms == cfg.window_ms => s,
        Ok(s) => {
            for w in &s.windows {
                emit(cfg, channel, w, out);
            }
            ChannelState {
                watermark: s.watermark,
                ..fresh
            }
        }
        Err(e) => {
            host::log(
                Level::Warn,
                &format!("analytics: discarding unreadable state of channel #{channel}: {e}"),
            );
            fresh
        }
    }
}

/// The open window starting at `start`, created (in order) if needed. Should more windows
/// be open than the grace period allows (only possible with hand-edited state), the
/// oldest are emitted first.
fn open_window<'s>(
    cfg: &Settings,
    channel: &str,
    st: &'s mut ChannelState,
    start: i64,
    out: &mut Actions,
) -> &'s mut WindowAgg {
    let at = match st.windows.binary_search_by_key(&start, |w| w.start) {
        Ok(i) => i,
        Err(i) => {
            st.windows.insert(
                i,
                WindowAgg {
                    start,
                    end: start.saturating_add(cfg.window_ms),
                    ..WindowAgg::default()
                },
            );
            let limit = usize::try_from(MAX_GRACE_WINDOWS + 2).unwrap_or(usize::MAX);
            let mut at = i;
            while st.windows.len() > limit && at > 0 {
                let w = st.windows.remove(0);
                emit(cfg, channel, &w, out);
                at -= 1;
            }
            at
        }
    };
    &mut st.windows[at]
}

/// Adds one message to a window's statistics.
fn fold(cfg: &Settings, w: &mut WindowAgg, msg: &Message<'_>) {
    w.messages = w.messages.saturating_add(1);

    let who = if msg.user_id().is_empty() {
        msg.user()
    } else {
        msg.user_id()
    };
    if !who.is_empty() && !w.chatters.contains(who) {
        if w.chatters.len() < cfg.max_chatters {
            w.chatters.insert(who.to_owned());
        } else {
            w.chatters_capped = true;
        }
    }

    if msg.field("first_msg") == Some(Value::Bool(true)) {
        w.first_time = w.first_time.saturating_add(1);
    }

    for name in emote_names(msg) {
        if let Some(n) = w.emotes.get_mut(name) {
            *n = n.saturating_add(1);
        } else if w.emotes.len() < cfg.max_emotes {
            w.emotes.insert(name.to_owned(), 1);
        } else {
            w.emotes_capped = true;
        }
    }

    if let Some(x) = msg
        .field("sentiment")
        .and_then(|s| s.get("compound").and_then(Value::as_f64))
        .filter(|x| x.is_finite())
    {
        w.sentiment_sum += x;
        w.sentiment_n = w.sentiment_n.saturating_add(1);
    }

    let lang = match msg.field("lang") {
        Some(Value::Str(s)) if !s.is_empty() && s.len() <= MAX_LANG_LEN => s,
        _ => UNDETERMINED.to_owned(),
    };
    bump_capped(&mut w.langs, lang, MAX_LANGS);

    if let Some(event) = event_kind(msg) {
        bump_capped(&mut w.events, event, MAX_EVENTS);
    }
}

/// Counts `key`, or [`OTHER`] once the table holds `cap` keys.
fn bump_capped(table: &mut BTreeMap<String, u64>, key: String, cap: usize) {
    let key = if table.contains_key(&key) || table.len() < cap {
        key
    } else {
        OTHER.to_owned()
    };
    let n = table.entry(key).or_insert(0);
    *n = n.saturating_add(1);
}

/// The event a message stands for: the `event` field of a `usernotice` (what the IRC
/// source sets from `msg-id`), or a kind other than `privmsg`/`usernotice` itself (for
/// sources that put `sub`, `raid`, ... into the kind). Plain chat has none.
fn event_kind(msg: &Message<'_>) -> Option<String> {
    let name = match msg.kind() {
        "privmsg" | "" => return None,
        "usernotice" => match msg.field("event") {
            Some(Value::Str(s)) if !s.is_empty() => s,
            _ => "usernotice".to_owned(),
        },
        k => k.to_owned(),
    };
    Some(if name.len() > MAX_EVENT_LEN {
        OTHER.to_owned()
    } else {
        name
    })
}

/// The text of each emote occurrence, from its inclusive character positions. Positions
/// that are reversed, past the end of the text or absurdly long are skipped.
fn emote_names<'a>(msg: &Message<'a>) -> Vec<&'a str> {
    let text = msg.text();
    let mut emotes = msg.emotes().peekable();
    if emotes.peek().is_none() {
        return Vec::new();
    }
    // Byte offset of every character, plus the end of the text.
    let offsets: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect();
    emotes
        .filter_map(|(_, start, end)| {
            let (s, e) = (usize::try_from(start).ok()?, usize::try_from(end).ok()?);
            if e < s || e - s >= MAX_EMOTE_CHARS {
                return None;
            }
            let from = *offsets.get(s)?;
            // `e + 1 < offsets.len()` means character `e` exists.
            let to = *offsets.get(e.checked_add(1)?)?;
            text.get(from..to).filter(|t| !t.is_empty())
        })
        .collect()
}

/// Emits the record (and metrics) of a closed window.
fn emit(cfg: &Settings, channel: &str, w: &WindowAgg, out: &mut Actions) {
    let int = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
    let count_map = |m: &BTreeMap<String, u64>| {
        Value::Map(m.iter().map(|(k, v)| (k.clone(), int(*v))).collect())
    };
    let mean = (w.sentiment_n > 0).then(|| w.sentiment_sum / w.sentiment_n as f64);
    let subs = ["sub", "resub", "subgift"]
        .iter()
        .map(|k| w.events.get(*k).copied().unwrap_or(0))
        .fold(0u64, u64::saturating_add);
    let raids = w.events.get("raid").copied().unwrap_or(0);
    let top: Vec<Value> = top_emotes(&w.emotes, cfg.top_emotes)
        .into_iter()
        .map(|(name, n)| Value::map([("emote", Value::from(name)), ("count", int(n))]))
        .collect();
    let chatters = u64::try_from(w.chatters.len()).unwrap_or(u64::MAX);
    out.record(
        RECORD_TABLE,
        format!("{channel}:{}", w.start),
        Value::map([
            ("channel", Value::from(channel)),
            ("window_start_ms", Value::Int(w.start)),
            ("window_end_ms", Value::Int(w.end)),
            ("messages", int(w.messages)),
            ("unique_chatters", int(chatters)),
            ("chatters_capped", Value::Bool(w.chatters_capped)),
            ("first_time_chatters", int(w.first_time)),
            ("top_emotes", Value::List(top)),
            ("emotes_capped", Value::Bool(w.emotes_capped)),
            ("sentiment_mean", mean.map_or(Value::Null, Value::Float)),
            ("sentiment_count", int(w.sentiment_n)),
            ("langs", count_map(&w.langs)),
            ("events", count_map(&w.events)),
            ("subs", int(subs)),
            ("raids", int(raids)),
            ("late", int(w.late)),
        ]),
    );
    if cfg.metrics {
        let labels = || vec![("channel".to_owned(), channel.to_owned())];
        out.metric("channel_messages", w.messages as f64, labels());
        out.metric("channel_chatters", chatters as f64, labels());
        if let Some(m) = mean {
            out.metric("channel_sentiment", m, labels());
        }
    }
}

/// The `n` most used emotes, most used first; ties in name order, so the result does not
/// depend on arrival order.
pub fn top_emotes(emotes: &BTreeMap<String, u64>, n: usize) -> Vec<(&str, u64)> {
    let mut all: Vec<(&str, u64)> = emotes.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    // Stable sort over name-ordered input: equal counts stay in name order.
    all.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    all.truncate(n);
    all
}

export!(Analytics);

#[cfg(test)]
mod tests;
