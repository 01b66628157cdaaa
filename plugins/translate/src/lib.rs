//! # translate: language detection and optional machine translation of chat messages
//!
//! Every message gets two fields:
//!
//! * `lang`: ISO 639-1 code (`en`, `es`, `ja`, ...) or `und` when the message is too short
//!   or the detector is unsure;
//! * `lang_confidence`: the detector's confidence in 0..=1 (0 for `und`).
//!
//! Detection runs [whatlang](https://docs.rs/whatlang) (pure Rust trigram/alphabet models)
//! on a cleaned copy of the text: Twitch emotes (by the `emotes` tag positions), a list of
//! third-party emote words, @mentions and links are removed and stretched words are
//! shortened ("soooo" → "soo"), because on a five-word chat line those tokens would
//! otherwise decide the answer.
//!
//! With `target` and `backend` set, messages in another known language are also
//! translated, and get `translation = {text, source, target, backend}` (or
//! `{error, backend}` when the backend failed). The text sent is the cleaned one: emotes,
//! mentions and links do not translate, and stripping them makes spam variants share a
//! cache entry. A whole batch costs at most one HTTP request (per `max_batch` texts):
//! cached translations (per-step key-value state, key `tr:{target}:{text}`, the
//! `cache_entries` most recently used kept; `cache = false` turns it off) and repeated
//! texts are not sent again. The requests of one call stop once `budget_ms` would run out,
//! so a slow backend cannot make the host abandon the call (and every message's `lang`
//! with it); the texts not sent get a `translation.error`.
//!
//! Every failed request also emits the metric `translate_backend_failures` with label
//! `kind` (`timeout`, `status`, `malformed`, `too_large`, `not_allowed`, `transport`, and
//! `budget` for a request not sent for lack of time) and the step's running total of
//! failures of that kind as its value. Batches skipped during `failure_cooldown_ms` make
//! no request and are not counted.
//!
//! The whole story (cleaning, thresholds, measured accuracy, backends, failure behaviour,
//! secrets, cache figures) is in `docs/TRANSLATE.md`.
//!
//! A step's `with` table that turns translation on (the URL's host must also be in the
//! step's `allow_http`, and the step's `deadline` must cover the requests; every key is
//! documented on [`Config`]):
//!
//! ```toml
//! target = "en"
//! backend = "libretranslate"
//! url = "http://127.0.0.1:5000"
//! ```

mod backend;
mod cache;
mod clean;
mod detect;

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use streamtap_plugin_sdk::host::{self, Level};
use streamtap_plugin_sdk::{Actions, BatchOutput, Message, Plugin, Value, export};

pub use backend::{Backend, FailureKind};
pub use clean::{clean_text, letter_count};
pub use detect::{Detection, LangDetector, UNDETERMINED, iso639_1};

/// Default for [`Config::min_chars`].
pub const DEFAULT_MIN_CHARS: usize = 8;
/// Default for [`Config::min_confidence`], tuned on `tests/short_messages.tsv` (12
/// languages, 3–12 word chat lines; `tests/accuracy.rs` prints the sweep). whatlang's
/// confidence on a short line is low even when it is right (median 0.73, a quarter below
/// 0.4), so the usual 0.5 turned 41% of the lines into `und` to buy 100% precision. When
/// tuned (144 lines) 76% of lines got a language at 0.25 and 97% of those were right;
/// below 0.2 precision dropped under 95%, mostly Spanish read as Portuguese and Dutch as
/// Afrikaans. The current figures are the table in `docs/TRANSLATE.md`.
pub const DEFAULT_MIN_CONFIDENCE: f64 = 0.25;
/// Default for [`Config::timeout_ms`].
pub const DEFAULT_TIMEOUT_MS: u32 = 5_000;
/// Default for [`Config::budget_ms`]: the step's default `http_timeout` (5 s), which is
/// how much HTTP wait the host credits back per call. A call whose requests wait no longer
/// than the credit is charged only its own computation against the step's `deadline`,
/// whatever that deadline is; waiting longer would have to fit in the deadline itself.
pub const DEFAULT_BUDGET_MS: u32 = 5_000;
/// Default for [`Config::cache_entries`]. The 10,000-message chat model in
/// `docs/TRANSLATE.md` has 2,057 distinct texts, so this keeps a busy channel's working
/// set; at a typical 100-300 bytes per entry (key and JSON value) that is 1-3 MB of the
/// step's 64 MiB default `state_limit`, and the order, written back after each batch
/// that adds an entry, is about half a megabyte at the bound.
pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;
/// Default for [`Config::max_batch`]: DeepL's limit of texts per request.
pub const DEFAULT_MAX_BATCH: usize = 50;
/// Default for [`Config::failure_cooldown_ms`].
pub const DEFAULT_FAILURE_COOLDOWN_MS: u64 = 10_000;
/// Third-party (BTTV / FFZ / 7TV) emotes and a few global Twitch emotes: they reach the
/// plugin as plain words, without `emotes` positions, and are frequent enough in chat to
/// pull a short line towards a random language (whatlang reads `KEKW` as Indonesian).
pub const DEFAULT_EMOTE_WORDS: &[&str] = &[
    "KEKW",
    "OMEGALUL",
    "LULW",
    "LUL",
    "Pog",
    "PogU",
    "POGGERS",
    "PogChamp",
    "Poggers",
    "monkaS",
    "monkaW",
    "Sadge",
    "Copium",
    "Clap",
    "PepeHands",
    "PepeLaugh",
    "pepeD",
    "catJAM",
    "Kappa",
    "KappaPride",
    "4Head",
    "Kreygasm",
    "ResidentSleeper",
    "BibleThump",
    "NotLikeThis",
    "WutFace",
    "DansGame",
    "SeemsGood",
    "FeelsGoodMan",
    "FeelsBadMan",
    "FeelsStrongMan",
    "peepoHappy",
    "widepeepoHappy",
    "Stare",
    "ICANT",
    "xdd",
    "EZ",
    "Jebaited",
    "HeyGuys",
    "VoHiYo",
    "TriHard",
    "BabyRage",
    "SwiftRage",
    "CoolStoryBob",
    "GivePLZ",
    "TakeNRG",
];

/// Largest DeepL request accepted (texts per request).
const DEEPL_MAX_BATCH: usize = 50;

/// Name of the metric emitted once per failed backend request.
pub const FAILURE_METRIC: &str = "translate_backend_failures";

fn default_min_chars() -> usize {
    DEFAULT_MIN_CHARS
}
fn default_min_confidence() -> f64 {
    DEFAULT_MIN_CONFIDENCE
}
fn default_timeout_ms() -> u32 {
    DEFAULT_TIMEOUT_MS
}
fn default_budget_ms() -> u32 {
    DEFAULT_BUDGET_MS
}
fn default_cache_entries() -> usize {
    DEFAULT_CACHE_ENTRIES
}
fn default_max_batch() -> usize {
    DEFAULT_MAX_BATCH
}
fn default_failure_cooldown_ms() -> u64 {
    DEFAULT_FAILURE_COOLDOWN_MS
}
fn default_true() -> bool {
    true
}
fn default_emote_words() -> Vec<String> {
    DEFAULT_EMOTE_WORDS.iter().map(|s| s.to_string()).collect()
}

/// The step's `with` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Fewest letters the cleaned text must have to be detected at all; shorter messages
    /// get `lang = "und"`. Letters only: digits, punctuation and emoji carry no language.
    #[serde(default = "default_min_chars")]
    pub min_chars: usize,
    /// Lowest detector confidence (0..=1) accepted; below it `lang = "und"`.
    #[serde(default = "default_min_confidence")]
    pub min_confidence: f64,
    /// ISO 639-1 codes the detector may answer (empty: all ~70 whatlang knows). Naming
    /// the languages a channel actually has removes most confusions between close
    /// languages (es/pt/it, nl/de) on short lines.
    #[serde(default)]
    pub languages: Vec<String>,
    /// Words removed before detection as emotes, matched whole and case-sensitively.
    /// Replaces [`DEFAULT_EMOTE_WORDS`] when set.
    #[serde(default = "default_emote_words")]
    pub emote_words: Vec<String>,
    /// Language to translate into (ISO 639-1, e.g. `en`). Translation is off when unset.
    #[serde(default)]
    pub target: Option<String>,
    /// Translation service: `libretranslate` or `deepl`. Requires `url` and `target`.
    #[serde(default)]
    pub backend: Option<Backend>,
    /// Base URL of the service, e.g. `http://127.0.0.1:5000` or
    /// `https://api-free.deepl.com`. Its host must be in the step's `allow_http`.
    #[serde(default)]
    pub url: Option<String>,
    /// API key. Plugins cannot read the environment: the host fills this from the
    /// pipeline's secret reference. Never logged. Required for `deepl`.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Per-request timeout in milliseconds (the rest of `budget_ms` and the step's
    /// `http_timeout` cap it further).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// Most milliseconds one plugin call spends on its requests, counted from the start of
    /// the call. A batch with more uncached texts than `max_batch` sends several requests
    /// one after another; a request is not sent when the time used plus the slowest
    /// request of the call so far would exceed this, and each is given at most what is
    /// left as its timeout. Texts not sent get `translation.error` ("skipped: the call's
    /// time budget would run out ...") and are counted as failures of kind `budget`. Keep
    /// it at or below the step's `http_timeout`: the host credits back that much HTTP wait
    /// per call, and a call waiting longer must fit the excess in its `deadline` or be
    /// abandoned with every message's `lang` (`docs/TRANSLATE.md`).
    #[serde(default = "default_budget_ms")]
    pub budget_ms: u32,
    /// Most texts sent in one request; a batch with more uncached texts sends several.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// After a failed request, how long (ms) to skip the backend and mark messages with
    /// an error instead, so a dead server does not add a timeout to every batch. 0 retries
    /// on every batch.
    #[serde(default = "default_failure_cooldown_ms")]
    pub failure_cooldown_ms: u64,
    /// Keep translations in the step's key-value state and do not send a cached text
    /// again. `false` asks the backend for every batch again; within one batch a repeated
    /// text is still sent once. Off is for measuring and for backends whose answers must
    /// not be reused.
    #[serde(default = "default_true")]
    pub cache: bool,
    /// Most translations cached; past it the least recently used is evicted. When the
    /// step's `state_limit` fills first, the least recently used is evicted to make room
    /// too.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_chars: DEFAULT_MIN_CHARS,
            min_confidence: DEFAULT_MIN_CONFIDENCE,
            languages: Vec::new(),
            emote_words: default_emote_words(),
            target: None,
            backend: None,
            url: None,
            api_key: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            budget_ms: DEFAULT_BUDGET_MS,
            max_batch: DEFAULT_MAX_BATCH,
            failure_cooldown_ms: DEFAULT_FAILURE_COOLDOWN_MS,
            cache: true,
            cache_entries: DEFAULT_CACHE_ENTRIES,
        }
    }
}

// Hand-written so that debugging output can never leak the API key.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("min_chars", &self.min_chars)
            .field("min_confidence", &self.min_confidence)
            .field("languages", &self.languages)
            .field("emote_words", &self.emote_words.len())
            .field("target", &self.target)
            .field("backend", &self.backend)
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout_ms", &self.timeout_ms)
            .field("budget_ms", &self.budget_ms)
            .field("max_batch", &self.max_batch)
            .field("failure_cooldown_ms", &self.failure_cooldown_ms)
            .field("cache", &self.cache)
            .field("cache_entries", &self.cache_entries)
            .finish()
    }
}

/// Whether `code` is shaped like an ISO 639-1 code: two lowercase ASCII letters.
fn is_two_letter_code(code: &str) -> bool {
    code.len() == 2 && code.chars().all(|c| c.is_ascii_lowercase())
}

/// What the translation half needs once the config is validated.
struct Translator {
    backend: Backend,
    /// Base URL without a trailing slash.
    url: String,
    api_key: Option<String>,
    target: String,
    timeout_ms: u32,
    budget_ms: u32,
    max_batch: usize,
    cooldown_ms: u64,
    cache: CacheState,
    /// When the last request failed and why; requests are skipped until `cooldown_ms`
    /// after it.
    last_failure: Option<(i64, String)>,
    /// Failed requests since the caller last took them, for the failure metric.
    failures: Vec<FailureKind>,
    /// Whether a refused cache write was already logged.
    cache_full_logged: bool,
}

/// The translation cache, opened on first use rather than in `init`: on a hot reload the
/// new instance is initialised while the old one still runs and saves its order after
/// each batch, so an order read in `init` could be stale by the time it is used.
enum CacheState {
    Off,
    Unopened { entries: usize },
    Open(cache::Lru<cache::HostKv>),
}

/// A cached translation, stored as JSON in the step's key-value state.
#[derive(Clone, Serialize, Deserialize)]
struct CacheEntry {
    text: String,
    source: Option<String>,
}

impl Translator {
    fn from_config(c: &Config) -> Result<Option<Translator>, String> {
        let backend = match (c.backend, &c.target) {
            (None, None) => return Ok(None),
            (None, Some(t)) => {
                return Err(format!(
                    "target = {t:?} needs a backend (\"libretranslate\" or \"deepl\") to translate with"
                ));
            }
            (Some(b), _) => b,
        };
        let target = c
            .target
            .clone()
            .ok_or_else(|| format!("backend {:?} needs a target language", backend.name()))?;
        if !is_two_letter_code(&target) {
            return Err(format!(
                "target = {target:?} is not a two-letter lowercase ISO 639-1 code like \"en\""
            ));
        }
        let url = c
            .url
            .as_deref()
            .ok_or_else(|| format!("backend {:?} needs a url", backend.name()))?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("url = {url:?} must start with http:// or https://"));
        }
        if backend == Backend::Deepl && c.api_key.as_deref().is_none_or(str::is_empty) {
            return Err("backend \"deepl\" needs api_key".to_string());
        }
        if c.max_batch == 0 {
            return Err("max_batch = 0: must be at least 1".to_string());
        }
        if backend == Backend::Deepl && c.max_batch > DEEPL_MAX_BATCH {
            return Err(format!(
                "max_batch = {}: DeepL accepts at most {DEEPL_MAX_BATCH} texts per request",
                c.max_batch
            ));
        }
        if c.timeout_ms == 0 {
            return Err("timeout_ms = 0: must be at least 1".to_string());
        }
        if c.budget_ms == 0 {
            return Err("budget_ms = 0: must be at least 1".to_string());
        }
        if c.cache && c.cache_entries == 0 {
            return Err(
                "cache_entries = 0: must be at least 1 (cache = false turns the cache off)"
                    .to_string(),
            );
        }
        Ok(Some(Translator {
            backend,
            url: url.trim_end_matches('/').to_string(),
            api_key: c.api_key.clone().filter(|k| !k.is_empty()),
            target,
            timeout_ms: c.timeout_ms,
            budget_ms: c.budget_ms,
            max_batch: c.max_batch,
            cooldown_ms: c.failure_cooldown_ms,
            cache: if c.cache {
                CacheState::Unopened {
                    entries: c.cache_entries,
                }
            } else {
                CacheState::Off
            },
            last_failure: None,
            failures: Vec::new(),
            cache_full_logged: false,
        }))
    }

    fn cache_key(&self, text: &str) -> String {
        format!("tr:{}:{text}", self.target)
    }

    /// The cache, opened from the step's state on first use; `None` with `cache = false`.
    fn cache(&mut self) -> Option<&mut cache::Lru<cache::HostKv>> {
        if let CacheState::Unopened { entries } = self.cache {
            self.cache = CacheState::Open(cache::Lru::load(cache::HostKv, entries));
        }
        match &mut self.cache {
            CacheState::Open(lru) => Some(lru),
            _ => None,
        }
    }

    /// Translates `texts`, answering each from the cache or from at most
    /// `ceil(misses / max_batch)` requests, sent while the call's `budget_ms` (counted
    /// from `call_started_ms`) lasts. Results are in input order.
    fn translate(
        &mut self,
        texts: &[&str],
        call_started_ms: i64,
    ) -> Vec<Result<CacheEntry, String>> {
        let mut found: HashMap<&str, Result<CacheEntry, String>> = HashMap::new();
        let mut misses: Vec<&str> = Vec::new();
        let mut queued: HashSet<&str> = HashSet::new();
        for &t in texts {
            // Chat repeats itself: each distinct text is looked up and sent once.
            if found.contains_key(t) || !queued.insert(t) {
                continue;
            }
            let key = self.cache_key(t);
            let Some(cache) = self.cache() else {
                misses.push(t);
                continue;
            };
            match cache
                .get(&key)
                .map(|b| serde_json::from_slice::<CacheEntry>(&b))
            {
                Some(Ok(e)) => {
                    found.insert(t, Ok(e));
                }
                Some(Err(_)) => {
                    // A corrupt entry (older format, partial write): drop it and refetch.
                    cache.remove(&key);
                    misses.push(t);
                }
                None => misses.push(t),
            }
        }
        // The slowest request of this call so far: the guess for how long the next one
        // takes. The first request has no guess and gets the whole budget as its timeout.
        let mut slowest_ms: i64 = 0;
        for chunk in misses.chunks(self.max_batch) {
            let result = match self.cooldown_error() {
                Some(reason) => Err(reason),
                None => {
                    let used_ms = host::now_ms().saturating_sub(call_started_ms).max(0);
                    let left_ms = i64::from(self.budget_ms) - used_ms;
                    if left_ms <= 0 || used_ms + slowest_ms > i64::from(self.budget_ms) {
                        // The backend is not at fault, so no cooldown; the next call has a
                        // fresh budget.
                        let f = backend::Failure::budget(self.budget_ms, used_ms, slowest_ms);
                        self.failures.push(f.kind);
                        Err(f.reason)
                    } else {
                        // `left_ms` is in 1..=budget_ms here, so it fits.
                        let timeout = self.timeout_ms.min(left_ms as u32);
                        let sent = host::now_ms();
                        let r = self.request(chunk, timeout);
                        slowest_ms = slowest_ms.max(host::now_ms().saturating_sub(sent));
                        r
                    }
                }
            };
            match result {
                Ok(list) => {
                    for (t, tr) in chunk.iter().zip(list) {
                        let entry = CacheEntry {
                            text: tr.text,
                            source: tr.source,
                        };
                        self.store(t, &entry);
                        found.insert(t, Ok(entry));
                    }
                }
                Err(reason) => {
                    for t in chunk {
                        found.insert(t, Err(reason.clone()));
                    }
                }
            }
        }
        texts
            .iter()
            .map(|t| match found.get(t) {
                Some(r) => r.clone(),
                None => Err("internal: text was neither cached nor sent".to_string()),
            })
            .collect()
    }

    /// Caches a translation. Best effort: when the host refuses even after the cache
    /// evicted an entry to make room, the translation is still used, and the refusal is
    /// logged once rather than once per message.
    fn store(&mut self, text: &str, entry: &CacheEntry) {
        let key = self.cache_key(text);
        let Some(cache) = self.cache() else {
            return;
        };
        let Ok(bytes) = serde_json::to_vec(entry) else {
            return;
        };
        if let Err(e) = cache.insert(&key, &bytes) {
            self.log_cache_refusal(&e);
        }
    }

    /// Writes the cache's eviction order back to the step's state, once per batch.
    fn save_cache(&mut self) {
        let CacheState::Open(lru) = &mut self.cache else {
            return;
        };
        if let Err(e) = lru.save() {
            self.log_cache_refusal(&e);
        }
    }

    fn log_cache_refusal(&mut self, e: &str) {
        if !self.cache_full_logged {
            self.cache_full_logged = true;
            host::log(
                Level::Warn,
                &format!("translation cache write refused after evicting to make room: {e}"),
            );
        }
    }

    /// Why requests are skipped right now, while the backend recently failed.
    fn cooldown_error(&self) -> Option<String> {
        let (at, reason) = self.last_failure.as_ref()?;
        let ago = host::now_ms().saturating_sub(*at);
        u64::try_from(ago)
            .is_ok_and(|ago| ago < self.cooldown_ms)
            .then(|| format!("skipped: backend failed {} s ago ({reason})", ago / 1000))
    }

    /// One request with the given timeout.
    fn request(
        &mut self,
        texts: &[&str],
        timeout_ms: u32,
    ) -> Result<Vec<backend::Translated>, String> {
        let now = host::now_ms();
        let req = backend::build_request(
            self.backend,
            &self.url,
            self.api_key.as_deref(),
            &self.target,
            texts,
            timeout_ms,
        );
        let result = match host::http::send(&req) {
            Ok(mut resp) => {
                // A server or proxy may echo the request (key included) in an error body,
                // which would then be quoted into `translation.error`. Redacting the body
                // before it is read, rather than the reason after, also catches a key that
                // the reason's length cap cuts in half.
                if let Some(key) = &self.api_key {
                    redact(&mut resp.body, key);
                }
                backend::parse_response(self.backend, &resp, texts.len())
            }
            Err(e) => Err(backend::Failure::from_http(&e, timeout_ms)),
        };
        match result {
            Ok(list) => {
                self.last_failure = None;
                Ok(list)
            }
            Err(f) => {
                // Belt and braces: the body was redacted above, and no other part of a
                // reason comes from the request, but the key must never reach the log or
                // the store whatever a later change quotes.
                let reason = match &self.api_key {
                    Some(key) => f.reason.replace(key.as_str(), "<redacted>"),
                    None => f.reason,
                };
                host::log(
                    Level::Warn,
                    &format!(
                        "{} request for {} texts failed: {reason}",
                        self.backend.name(),
                        texts.len()
                    ),
                );
                self.failures.push(f.kind);
                self.last_failure = Some((now, reason.clone()));
                Err(reason)
            }
        }
    }

    /// Counts the failures since the last call into the step's running totals and
    /// returns `(kind, total)` per failure. Totals live in the key-value state so a hot
    /// reload or instance restart does not reset them (a counter that resets looks like
    /// fewer failures to anyone reading the latest sample). Best effort: when the state
    /// is full the total is still reported, one higher than stored.
    fn take_failure_totals(&mut self) -> Vec<(FailureKind, u64)> {
        std::mem::take(&mut self.failures)
            .into_iter()
            .map(|kind| {
                let key = format!("metric:{FAILURE_METRIC}:{}", kind.label());
                let before = host::kv::get(&key)
                    .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                    .map(u64::from_le_bytes)
                    .unwrap_or(0);
                let total = before + 1;
                let _ = host::kv::set(&key, &total.to_le_bytes());
                (kind, total)
            })
            .collect()
    }
}

/// Replaces every occurrence of `key` in `body` with `<redacted>`.
fn redact(body: &mut Vec<u8>, key: &str) {
    let k = key.as_bytes();
    if k.is_empty() || !body.windows(k.len()).any(|w| w == k) {
        return;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i..].starts_with(k) {
            out.extend_from_slice(b"<redacted>");
            i += k.len();
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    *body = out;
}

/// Emits one `translate_backend_failures` sample per failed request on `out`: the actions
/// of the first message of the batch that needed translation (a sample must ride on some
/// message, and that one exists whichever of the batch's requests failed).
fn emit_failures(out: &mut Actions, totals: Vec<(FailureKind, u64)>) {
    for (kind, total) in totals {
        out.metric(
            FAILURE_METRIC,
            total as f64,
            vec![("kind".to_string(), kind.label().to_string())],
        );
    }
}

/// The plugin: a configured detector and, when translation is on, a [`Translator`].
pub struct Translate {
    detector: LangDetector,
    emote_words: HashSet<String>,
    translator: Option<Translator>,
}

impl Translate {
    /// Cleans and detects one message.
    fn detect(&self, msg: &Message<'_>) -> (String, Detection) {
        let cleaned = clean_text(
            msg.text(),
            msg.emotes().map(|(_, s, e)| (s, e)),
            &self.emote_words,
        );
        let d = self.detector.detect(&cleaned);
        (cleaned, d)
    }

    /// Whether a message with this detection should be translated.
    fn wants_translation(&self, d: &Detection) -> bool {
        match &self.translator {
            Some(t) => d.is_known() && d.lang != t.target,
            None => false,
        }
    }

    /// Writes the `translation` field for one result.
    fn set_translation(&self, out: &mut Actions, d: &Detection, r: Result<CacheEntry, String>) {
        let Some(t) = &self.translator else { return };
        let backend = Value::from(t.backend.name());
        let v = match r {
            Ok(e) => Value::map([
                ("text", Value::from(e.text)),
                (
                    "source",
                    Value::from(e.source.unwrap_or_else(|| d.lang.to_string())),
                ),
                ("target", Value::from(t.target.as_str())),
                ("backend", backend),
            ]),
            Err(reason) => Value::map([("error", Value::from(reason)), ("backend", backend)]),
        };
        out.set("translation", v);
    }
}

fn set_detection(out: &mut Actions, d: &Detection) {
    out.set("lang", d.lang);
    out.set("lang_confidence", d.confidence);
}

impl Plugin for Translate {
    type Config = Config;

    fn init(c: Config) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&c.min_confidence) {
            return Err(format!(
                "min_confidence = {}: must be between 0 and 1",
                c.min_confidence
            ));
        }
        let mut allow = Vec::with_capacity(c.languages.len());
        for code in &c.languages {
            let lang = detect::from_iso639_1(code).ok_or_else(|| {
                format!("languages: {code:?} is not an ISO 639-1 code the detector knows")
            })?;
            allow.push(lang);
        }
        let translator = Translator::from_config(&c)?;
        Ok(Translate {
            detector: LangDetector::new(allow, c.min_chars, c.min_confidence),
            emote_words: c.emote_words.into_iter().collect(),
            translator,
        })
    }

    fn process(&mut self, msg: &Message<'_>, out: &mut Actions) {
        // The budget counts from here: detection is part of the call the host times.
        let started = host::now_ms();
        let (cleaned, d) = self.detect(msg);
        set_detection(out, &d);
        if self.wants_translation(&d)
            && let Some(t) = self.translator.as_mut()
        {
            let r = t.translate(&[cleaned.as_str()], started).pop();
            let r = r.unwrap_or_else(|| Err("internal: no result".to_string()));
            let totals = t.take_failure_totals();
            self.set_translation(out, &d, r);
            emit_failures(out, totals);
        }
    }

    /// Detects every message, then translates all that need it with one request.
    fn process_batch(&mut self, msgs: &[Message<'_>], out: &mut BatchOutput) {
        // The budget counts from here: detection is part of the call the host times.
        let started = host::now_ms();
        let mut pending: Vec<(usize, String, Detection)> = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let (cleaned, d) = self.detect(m);
            set_detection(out.message(i), &d);
            if self.wants_translation(&d) {
                pending.push((i, cleaned, d));
            }
        }
        if pending.is_empty() {
            return;
        }
        let Some(t) = self.translator.as_mut() else {
            return;
        };
        let texts: Vec<&str> = pending.iter().map(|(_, c, _)| c.as_str()).collect();
        let results = t.translate(&texts, started);
        let totals = t.take_failure_totals();
        for ((i, _, d), r) in pending.iter().zip(results) {
            self.set_translation(out.message(*i), d, r);
        }
        emit_failures(out.message(pending[0].0), totals);
    }

    /// Saves the cache's eviction order once per batch rather than once per message: it
    /// is one value naming every cached key.
    fn end_batch(&mut self) {
        if let Some(t) = self.translator.as_mut() {
            t.save_cache();
        }
    }
}

export!(Translate);
