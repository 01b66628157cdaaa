//! VADER scoring, behaving exactly like `SentimentIntensityAnalyzer.polarity_scores` of the
//! PyPI release vaderSentiment 3.3.2.
//!
//! The pipeline for one text:
//!
//! 1. every code point that is a key of the emoji lexicon is replaced by its description
//!    (multi-code-point emoji are therefore seen one code point at a time, as in the
//!    reference);
//! 2. the text is split on whitespace and each token loses surrounding ASCII punctuation
//!    unless that would leave two characters or fewer (emoticons such as `:)` survive); no
//!    token is dropped, not even one-character ones;
//! 3. each token gets a valence: 0 unless it is a lexicon word, then adjusted by the
//!    rules in `Context::valence` (ALL-CAPS emphasis, boosters and dampeners in the three
//!    preceding tokens, negation, "no", "least", idioms);
//! 4. valences around the first "but" are rescaled (`but_check`);
//! 5. the sum plus `!`/`?` emphasis is normalised into `compound`, and the per-token
//!    valences into the `pos`/`neu`/`neg` proportions (`score_valence`).
//!
//! The reference's single-word `BOOSTER_DICT` entries and its `NEGATE` list are compiled
//! by `build.rs` into the same static hash table as the lexicon, so one lookup per token
//! answers "valence?", "booster?" and "negation?" and gives the token's `KW_*` keyword id
//! when a rule compares tokens with that word ("no", "but", "least", ...); the multi-word
//! entries (idioms, "kind of") are matched here on those ids, not on strings.
//!
//! Tokenising has two paths with identical results: an ASCII fast path (nearly all chat)
//! that finds a token's end, lowercases it and collects its case and punctuation flags in
//! one pass over its bytes, then hashes it eight bytes at a time for the lookup; and a
//! general path for tokens with non-ASCII characters (or longer than 64 bytes), which uses
//! the full Unicode whitespace, case-mapping and `isupper` rules of the reference.
//!
//! Where the reference has quirks, they are reproduced on purpose, because parity with the
//! published package is the point: a "fix" here would make the scores disagree with every
//! other VADER user. Each quirk is marked `Reference quirk:` below.
//!
//! The reference also defines `SENTIMENT_LADEN_IDIOMS` and `_sentiment_laden_idioms_check`
//! ("cut the mustard", "under the weather", ...), but 3.3.2 never calls them, so they have
//! no effect on scores and are not ported.

use crate::pystr;
use crate::tables::{self, Boost};
use crate::twitch;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

/// Booster/dampener step (empirical mean intensity change of a degree adverb).
const B_INCR: f64 = 0.293;
const B_DECR: f64 = -0.293;
/// Extra intensity of an ALL-CAPS word in a text that is not all caps.
const C_INCR: f64 = 0.733;
/// Multiplier applied to a negated valence.
const N_SCALAR: f64 = -0.74;
/// Normalisation constant: compound = sum / sqrt(sum² + ALPHA).
const ALPHA: f64 = 15.0;

/// The four VADER scores, rounded as the reference rounds them (`compound` to 4 decimals,
/// the proportions to 3).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scores {
    /// Proportion of the text that is negative.
    pub neg: f64,
    /// Proportion of the text that is neutral.
    pub neu: f64,
    /// Proportion of the text that is positive.
    pub pos: f64,
    /// Normalised, weighted sum in `[-1, 1]`.
    pub compound: f64,
}

/// Scores `text` exactly as vaderSentiment 3.3.2's `polarity_scores` does.
///
/// This is the plain, reference-compatible entry point (no Twitch handling). It runs on a
/// per-thread [`Scorer`], so repeated calls do not allocate for ordinary texts.
pub fn polarity_scores(text: &str) -> Scores {
    const NO_EMOTES: EmoteLexicon = EmoteLexicon::empty();
    thread_local! {
        static SCORER: RefCell<Scorer> = RefCell::new(Scorer::new());
    }
    SCORER
        .try_with(|cell| {
            cell.try_borrow_mut()
                .ok()
                .map(|mut scorer| scorer.score(text, &NO_EMOTES))
        })
        .ok()
        .flatten()
        // Only during thread teardown: fall back to a throwaway scorer.
        .unwrap_or_else(|| Scorer::new().score(text, &NO_EMOTES))
}

/// Extra lexicon entries matched on the *exact* token rather than its lowercase form: Twitch
/// emote names, which are case-sensitive (`LUL` is an emote, "lul" is not).
///
/// An entry behaves like a VADER lexicon word in every rule (boosters and negations before
/// it, "but", punctuation emphasis) except ALL-CAPS emphasis: emote names have fixed
/// spelling, so `LUL` is not shouting, and emote tokens are left out of the "some but not
/// all words are caps" test so that adding an emote never changes how the words are scored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmoteLexicon {
    /// Sorted by name, names unique.
    entries: Vec<(String, f64)>,
    /// Every token of every message is looked up, and nearly all are misses, so two cheap
    /// stages settle most of them before any string work. First `filter`: for each
    /// possible first byte, a bit per name length (lengths from 63 up share bit 63) that
    /// some entry has; an ordinary word rarely shares both with an emote name. Empty when
    /// `entries` is.
    filter: Vec<u64>,
    /// Then a hash index into `entries`: open addressing with linear probing, at most half
    /// full, so an empty slot ends a miss quickly. A slot holds the hash's top 32 bits over
    /// the entry's index, or `u64::MAX` when empty; the hash bits settle nearly every
    /// remaining miss without a string comparison.
    slots: Vec<u64>,
}

impl EmoteLexicon {
    /// No entries: plain VADER.
    pub const fn empty() -> Self {
        EmoteLexicon {
            entries: Vec::new(),
            filter: Vec::new(),
            slots: Vec::new(),
        }
    }

    /// Builds the table; a later duplicate name replaces an earlier one.
    pub fn new(entries: impl IntoIterator<Item = (String, f64)>) -> Self {
        let mut entries: Vec<(String, f64)> = entries.into_iter().collect();
        // Stable sort keeps input order among equal names; keep the last of each run.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut unique: Vec<(String, f64)> = Vec::with_capacity(entries.len());
        for e in entries {
            match unique.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => unique.push(e),
            }
        }
        let (mut filter, mut slots) = (Vec::new(), Vec::new());
        if !unique.is_empty() {
            filter = vec![0u64; 256];
            for (name, _) in &unique {
                if let Some(bits) = name
                    .bytes()
                    .next()
                    .and_then(|b| filter.get_mut(usize::from(b)))
                {
                    *bits |= length_bit(name);
                }
            }
            slots = vec![u64::MAX; (unique.len() * 2).next_power_of_two()];
            let mask = slots.len() - 1;
            for (index, (name, _)) in unique.iter().enumerate() {
                let h = crate::hash::word_hash(name.as_bytes());
                // Truncating the hash is intended: the low bits pick the slot.
                let mut slot = h as usize & mask;
                while slots.get(slot).is_some_and(|s| *s != u64::MAX) {
                    slot = (slot + 1) & mask;
                }
                if let Some(s) = slots.get_mut(slot) {
                    *s = (h & !0xffff_ffff) | index as u64;
                }
            }
        }
        EmoteLexicon {
            entries: unique,
            filter,
            slots,
        }
    }

    /// The valence of the emote called exactly `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.get_hashed(name, |n| crate::hash::word_hash(n.as_bytes()))
    }

    /// [`EmoteLexicon::get`] with the caller's way to compute `word_hash(name)`, which
    /// is only asked for when the filter lets `name` through.
    #[inline(always)]
    fn get_hashed(&self, name: &str, hash: impl FnOnce(&str) -> u64) -> Option<f64> {
        // `filter` is empty when there are no entries, which ends here too.
        let first = name.bytes().next()?;
        if self.filter.get(usize::from(first))? & length_bit(name) == 0 {
            return None;
        }
        let mask = self.slots.len() - 1;
        let h = hash(name);
        let mut slot = h as usize & mask;
        // At most half full, so the walk ends at an empty slot; the bound only makes
        // termination obvious.
        for _ in 0..self.slots.len() {
            let entry = *self.slots.get(slot)?;
            if entry == u64::MAX {
                return None;
            }
            if entry >> 32 == h >> 32 {
                let (key, valence) = self.entries.get((entry & 0xffff_ffff) as usize)?;
                if pystr::short_eq(key.as_bytes(), name.as_bytes()) {
                    return Some(*valence);
                }
            }
            slot = (slot + 1) & mask;
        }
        None
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, sorted by name.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = (&str, f64)> {
        self.entries.iter().map(|(name, v)| (name.as_str(), *v))
    }
}

/// `name`'s bit in an [`EmoteLexicon`] filter word.
fn length_bit(name: &str) -> u64 {
    1 << name.len().min(63)
}

/// What the rules need to know about one token, computed once per token.
#[derive(Debug, Clone)]
struct Token {
    /// Lexicon (or emote) valence: `Some` means "in the lexicon" for every rule.
    valence: Option<f64>,
    /// Booster/dampener increment when the token is a single-word booster, else 0 (the
    /// increments are ±0.293, never 0).
    booster: f64,
    /// The `KW_*` id of the lowercased token when a rule compares tokens with that word
    /// ("no", "but", "kind", ...), else 0: the reference compares `token.lower()`.
    kw: u8,
    /// Python `isupper()` of the stripped token (always false for emotes).
    upper: bool,
    /// Whether the token negates on its own (a NEGATE word or contains "n't").
    negation: bool,
}

/// Byte classes for the token scan ([`CLASS`]).
const C_SPACE: u8 = 0x01; // Python whitespace among ASCII bytes
const C_HIGH: u8 = 0x02; // not ASCII: the token takes the general path
const C_PUNCT: u8 = 0x04; // `string.punctuation`
const C_LOWER: u8 = 0x08; // a-z
const C_APOS: u8 = 0x10; // ', the only way into "n't"
const C_UPPER: u8 = 0x20; // A-Z; also the bit that lowercases it
const C_EMPH: u8 = 0x40; // ! or ?

const fn class_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        t[b] = if c >= 0x80 {
            C_HIGH
        } else if matches!(c, 9..=13 | 28..=32) {
            C_SPACE
        } else if c.is_ascii_lowercase() {
            C_LOWER
        } else if c.is_ascii_uppercase() {
            C_UPPER
        } else if c.is_ascii_punctuation() {
            C_PUNCT
                | if c == b'\'' { C_APOS } else { 0 }
                | if c == b'!' || c == b'?' { C_EMPH } else { 0 }
        } else {
            0
        };
        b += 1;
    }
    t
}
static CLASS: [u8; 256] = class_table();

/// The fast path handles ASCII tokens up to this many bytes (a power of two); longer ones
/// take the general path (no lexicon word is anywhere near this long).
const FAST_MAX: usize = 64;
const _: () = assert!(tables::MAX_WORD_LEN <= FAST_MAX && FAST_MAX.is_power_of_two());

/// The lowercased bytes of one token, with room for an 8-byte load at any offset below
/// [`FAST_MAX`].
type LowerBuf = [u8; FAST_MAX + 8];

/// The little-endian 8-byte word at `at` (below [`FAST_MAX`]).
#[inline(always)]
fn load8(buf: &LowerBuf, at: usize) -> u64 {
    buf.get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_le_bytes)
}

/// [`crate::hash::word_hash`] of `buf[from..from + len]`, a word at a time; bytes past
/// the word are masked off, which is exactly the zero padding `word_hash` uses.
#[inline(always)]
fn hash_padded(buf: &LowerBuf, from: usize, len: usize) -> u64 {
    use crate::hash::{finish, start, step};
    let mut h = start(len);
    let (mut at, mut left) = (from, len);
    while left >= 8 {
        h = step(h, load8(buf, at));
        at += 8;
        left -= 8;
    }
    if left > 0 {
        h = step(h, load8(buf, at) & ((1u64 << (8 * left)) - 1));
    }
    finish(h)
}

/// A reusable VADER scorer: identical results to [`polarity_scores`], but the per-text
/// buffers (token table, valences) survive between calls, so steady-state scoring does
/// not allocate for texts without emoji.
#[derive(Debug, Default)]
pub struct Scorer {
    /// The text with emoji replaced by their descriptions (only when it had any).
    replaced: String,
    /// The lowercased token, for tokens that take the general (non-ASCII) path.
    lower: String,
    tokens: Vec<Token>,
    sentiments: Vec<f64>,
}

/// Per-text totals gathered while tokens are pushed.
#[derive(Default)]
struct Tally {
    /// Non-emote tokens, and those of them in ALL CAPS.
    words: usize,
    caps: usize,
    /// Index of the first "but".
    first_but: Option<usize>,
    /// `!` and `?` in the text (every one is inside some token).
    bangs: usize,
    questions: usize,
}

impl Scorer {
    /// An empty scorer.
    pub fn new() -> Self {
        Scorer::default()
    }

    /// Scores `text`; `emotes` adds case-sensitive lexicon entries (pass
    /// [`EmoteLexicon::empty`] for plain VADER).
    pub fn score(&mut self, text: &str, emotes: &EmoteLexicon) -> Scores {
        self.score_inner(text, emotes, false)
    }

    /// [`Scorer::score`] with the Twitch extension's spam rule: a text that is one token
    /// repeated more than [`twitch::MAX_REPEATS`] times is scored as that token alone.
    ///
    /// Spam has more than `MAX_REPEATS` tokens, and so has the text scoring splits (the
    /// emoji replacement only ever adds tokens), so the text is checked only when the
    /// scoring pass found that many: nearly every message is settled without splitting it
    /// a second time.
    pub(crate) fn score_with_spam_rule(&mut self, text: &str, emotes: &EmoteLexicon) -> Scores {
        self.score_inner(text, emotes, true)
    }

    fn score_inner(&mut self, text: &str, emotes: &EmoteLexicon, spam_rule: bool) -> Scores {
        let Scorer {
            replaced,
            lower,
            tokens,
            sentiments,
        } = self;
        let had_emoji = replace_emoji(text, replaced);
        let split = if had_emoji { replaced.as_str() } else { text };

        tokens.clear();
        let mut tally = Tally::default();
        tokenize(split, emotes, lower, tokens, &mut tally);
        if spam_rule
            && tokens.len() > twitch::MAX_REPEATS
            && let Some(token) = twitch::spam_token(text)
        {
            return self.score_inner(token, emotes, false);
        }

        let ctx = Context {
            tokens,
            // "Some but not all words are ALL CAPS".
            cap_diff: tally.caps > 0 && tally.caps < tally.words,
        };
        sentiments.clear();
        for (i, token) in tokens.iter().enumerate() {
            let v = if token.booster != 0.0 {
                // Boosters only modify their neighbours, even those in the lexicon.
                0.0
            } else if token.kw == tables::KW_KIND && ctx.kw(i + 1) == tables::KW_OF {
                // "kind" is a positive lexicon word, but not in "kind of".
                0.0
            } else {
                ctx.valence(i)
            };
            sentiments.push(v);
        }

        if let Some(bi) = tally.first_but {
            but_check(sentiments, bi);
        }

        let scores = score_valence(sentiments, tally.bangs, tally.questions);
        self.release_oversized();
        scores
    }

    /// Drops buffers a huge text grew, so one giant message does not pin its memory for
    /// the scorer's lifetime; chat-sized buffers are kept for reuse.
    fn release_oversized(&mut self) {
        const KEEP_BYTES: usize = 64 * 1024;
        const KEEP_TOKENS: usize = 8 * 1024;
        if self.replaced.capacity() > KEEP_BYTES {
            self.replaced = String::new();
        }
        if self.lower.capacity() > KEEP_BYTES {
            self.lower = String::new();
        }
        if self.tokens.capacity() > KEEP_TOKENS {
            self.tokens = Vec::new();
        }
        if self.sentiments.capacity() > KEEP_TOKENS {
            self.sentiments = Vec::new();
        }
    }
}

/// Steps 2 and 3 up to the lexicon lookup: splits `text` as Python's `str.split()` does,
/// strips each token as `_strip_punc_if_word` does, and pushes what the rules need.
///
/// ASCII tokens (nearly all of chat) take one pass over their bytes that finds the token's
/// end and computes its lowercase form, case flags, punctuation edges, `!`/`?` and
/// apostrophes together; the lowercase word is then hashed eight bytes at a time for the
/// one table lookup. Fewer, shorter loops matter twice in WASM, where every loop
/// iteration also pays the runtime's epoch check. Other tokens take the general path
/// (Unicode whitespace, case mapping and `isupper`).
fn tokenize(
    text: &str,
    emotes: &EmoteLexicon,
    lower: &mut String,
    tokens: &mut Vec<Token>,
    tally: &mut Tally,
) {
    let bytes = text.as_bytes();
    // The token's bytes lowercased (for the table), and as written (for emote names).
    let mut buf: LowerBuf = [0; FAST_MAX + 8];
    let mut raw_buf: LowerBuf = [0; FAST_MAX + 8];
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        let c = CLASS[usize::from(b)];
        if c & C_SPACE != 0 {
            i += 1;
            continue;
        }
        if c & C_HIGH != 0 {
            let ch = char_at(text, i);
            if pystr::is_space(ch) {
                i += ch.len_utf8();
                continue;
            }
        }
        let start = i;
        let (mut flags, mut last_kept, mut k) = (0u8, 0usize, 0usize);
        while let Some(&b) = bytes.get(i) {
            let c = CLASS[usize::from(b)];
            if c & (C_SPACE | C_HIGH) != 0 {
                break;
            }
            flags |= c;
            if let Some(slot) = buf.get_mut(k & (FAST_MAX - 1)) {
                *slot = b | (c & C_UPPER);
            }
            if let Some(slot) = raw_buf.get_mut(k & (FAST_MAX - 1)) {
                *slot = b;
            }
            if c & C_PUNCT == 0 {
                last_kept = k;
            }
            k += 1;
            i += 1;
        }
        if bytes.get(i).is_some_and(|&b| b >= 0x80) || k > FAST_MAX {
            // Not ASCII (or very long): find the end the general way.
            while let Some(&b) = bytes.get(i) {
                if b < 0x80 {
                    if CLASS[usize::from(b)] & C_SPACE != 0 {
                        break;
                    }
                    i += 1;
                } else {
                    let ch = char_at(text, i);
                    if pystr::is_space(ch) {
                        break;
                    }
                    i += ch.len_utf8();
                }
            }
            general_token(
                text.get(start..i).unwrap_or(""),
                emotes,
                lower,
                tokens,
                tally,
            );
            continue;
        }
        // Stripping: `last_kept` is the last byte that is not punctuation; find the first.
        let (mut from, mut to) = (0usize, k);
        if flags & C_PUNCT != 0 {
            from = buf
                .iter()
                .take(k)
                .position(|&b| CLASS[usize::from(b)] & C_PUNCT == 0)
                .unwrap_or(k);
            to = if from < k { last_kept + 1 } else { from };
            // Two or fewer characters left: probably an emoticon, kept whole.
            if to - from <= 2 {
                (from, to) = (0, k);
            }
        }
        let len = to - from;
        let info = if len <= tables::MAX_WORD_LEN {
            let word = buf.get(from..to).unwrap_or(&[]);
            tables::word_info_hashed(word, hash_padded(&buf, from, len))
        } else {
            None
        };
        let nt = flags & C_APOS != 0
            && buf
                .get(..k)
                .is_some_and(|w| w.windows(3).any(|w| w == b"n't"));
        if flags & C_EMPH != 0 {
            count_emphasis(bytes.get(start..start + k).unwrap_or(&[]), tally);
        }
        let raw = text.get(start..start + k).unwrap_or("");
        let word = text.get(start + from..start + to).unwrap_or("");
        // ASCII `isupper()`: some capital and no small letter (punctuation is uncased).
        let upper = flags & C_UPPER != 0 && flags & C_LOWER == 0;
        // `word` is `raw_buf[from..to]` and `raw` is `raw_buf[..k]`.
        let emote_hash = |name: &str| {
            if name.len() == k {
                hash_padded(&raw_buf, 0, k)
            } else {
                hash_padded(&raw_buf, from, len)
            }
        };
        push_token(
            raw, word, info, upper, nt, emotes, emote_hash, tokens, tally,
        );
    }
}

/// A token outside the fast path of [`tokenize`]: the general Unicode rules.
fn general_token(
    raw: &str,
    emotes: &EmoteLexicon,
    lower: &mut String,
    tokens: &mut Vec<Token>,
    tally: &mut Tally,
) {
    let word = pystr::strip_punc_if_word(raw);
    count_emphasis(raw.as_bytes(), tally);
    // Only two non-ASCII characters lowercase to something with an ASCII letter (U+212A
    // KELVIN SIGN to "k", U+0130 to "i" + U+0307), and every table key is ASCII or holds
    // a character that lowercasing always changes (`:Þ`), so a word with any other
    // non-ASCII character cannot be in the table, and its "n't" can only come from ASCII
    // letters next to each other: no lowercase copy is needed for it (most non-ASCII chat:
    // accents, Hangul, CJK, Cyrillic).
    let (info, nt) = if word.chars().all(|c| c.is_ascii() || c == KELVIN_SIGN) {
        lower.clear();
        pystr::push_lower(word, lower);
        (tables::word_info(lower), contains_nt(lower))
    } else {
        let nt = word
            .as_bytes()
            .windows(3)
            .any(|w| matches!(w, [n, b'\'', t] if n | 0x20 == b'n' && t | 0x20 == b't'));
        (None, nt)
    };
    push_token(
        raw,
        word,
        info,
        pystr::is_upper(word),
        nt,
        emotes,
        |n: &str| crate::hash::word_hash(n.as_bytes()),
        tokens,
        tally,
    );
}

/// The one non-ASCII character whose lowercase form is ASCII ("k").
const KELVIN_SIGN: char = '\u{212a}';

/// Adds the `!` and `?` of `bytes` to the tally.
fn count_emphasis(bytes: &[u8], tally: &mut Tally) {
    for &b in bytes {
        tally.bangs += usize::from(b == b'!');
        tally.questions += usize::from(b == b'?');
    }
}

/// The character at byte `i` of `text` (a character boundary below its length).
fn char_at(text: &str, i: usize) -> char {
    text.get(i..).and_then(|t| t.chars().next()).unwrap_or(' ')
}

/// Pushes one token: `raw` as split, `word` stripped, `info` the table entry of its
/// lowercase form, `upper` its `isupper()`, `nt` whether the lowercase form has "n't".
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn push_token(
    raw: &str,
    word: &str,
    info: Option<&tables::WordInfo>,
    upper: bool,
    nt: bool,
    emotes: &EmoteLexicon,
    emote_hash: impl Fn(&str) -> u64,
    tokens: &mut Vec<Token>,
    tally: &mut Tally,
) {
    // Emote names are tried on the raw token too, so names with punctuation at the
    // edges (`(puke)`) still match after the stripping above would have cut them.
    let emote = if emotes.is_empty() {
        None
    } else {
        // `word` is a slice of `raw`, so equal lengths mean nothing was stripped and the
        // second lookup would repeat the first.
        emotes.get_hashed(word, &emote_hash).or_else(|| {
            (raw.len() != word.len())
                .then(|| emotes.get_hashed(raw, &emote_hash))
                .flatten()
        })
    };
    let upper = emote.is_none() && upper;
    if emote.is_none() {
        tally.words += 1;
        tally.caps += usize::from(upper);
    }
    let kw = info.map_or(0, |i| i.kw);
    if kw == tables::KW_BUT && tally.first_but.is_none() {
        tally.first_but = Some(tokens.len());
    }
    tokens.push(Token {
        valence: emote.or_else(|| info.and_then(|i| i.valence)),
        booster: match info.and_then(|i| i.boost) {
            Some(Boost::Incr) => B_INCR,
            Some(Boost::Decr) => B_DECR,
            None => 0.0,
        },
        kw,
        upper,
        // The reference's `negated([word])`: a NEGATE word, or any "n't" form.
        negation: info.is_some_and(|i| i.negation) || nt,
    });
}

/// Whether `word` contains "n't" (the reference's `"n't" in word`). A byte scan: the
/// generic substring search sets up a two-way searcher per call, which cost more than
/// the scan for words a few bytes long.
fn contains_nt(word: &str) -> bool {
    word.as_bytes().windows(3).any(|w| w == b"n't")
}

/// Step 1: writes `text` with emoji replaced into `out` and returns true, or returns false
/// (leaving `out` alone) when there is nothing to replace.
///
/// Reference quirk: a description is preceded by a space unless the previous character was
/// an ASCII space (or it starts the text), but never followed by one, so `😀abc` becomes
/// `grinning faceabc`, and `❤️` (U+2764 U+FE0F) becomes `red heart` + U+FE0F.
fn replace_emoji(text: &str, out: &mut String) -> bool {
    // Every emoji key is outside ASCII: skip to the first non-ASCII byte, then test only
    // non-ASCII characters.
    let Some(ascii) = text.bytes().position(|b| b >= 0x80) else {
        return false;
    };
    let Some(first) = text
        .get(ascii..)
        .and_then(|t| {
            t.char_indices()
                .find(|&(_, c)| !c.is_ascii() && tables::emoji_description(c).is_some())
        })
        .map(|(i, _)| ascii + i)
    else {
        return false;
    };
    out.clear();
    out.reserve(text.len() + 32);
    let (head, tail) = text.split_at(first);
    out.push_str(head);
    let mut prev_space = head.is_empty() || head.ends_with(' ');
    for c in tail.chars() {
        if let Some(description) = tables::emoji_description(c) {
            if !prev_space {
                out.push(' ');
            }
            out.push_str(description);
            prev_space = false;
        } else {
            out.push(c);
            prev_space = c == ' ';
        }
    }
    true
}

/// Two- and three-word boosters, as the reference matches them against joined n-grams.
fn booster_phrase(words: &[u8]) -> Option<f64> {
    match words {
        [tables::KW_JUST, tables::KW_ENOUGH]
        | [tables::KW_KIND, tables::KW_OF]
        | [tables::KW_SORT, tables::KW_OF] => Some(B_DECR),
        _ => None,
    }
}

/// `SPECIAL_CASES`: idioms whose valence replaces the word's. The reference also lists the
/// single word "badass", which can never match an n-gram of two or more words.
fn special_case(words: &[u8]) -> Option<f64> {
    match words {
        [tables::KW_THE, tables::KW_SHIT]
        | [tables::KW_THE, tables::KW_BOMB]
        | [tables::KW_TO, tables::KW_DIE, tables::KW_FOR] => Some(3.0),
        [tables::KW_BAD, tables::KW_ASS] => Some(1.5),
        [tables::KW_BUS, tables::KW_STOP] => Some(0.0),
        [tables::KW_YEAH, tables::KW_RIGHT] => Some(-2.0),
        [tables::KW_KISS, tables::KW_OF, tables::KW_DEATH] => Some(-1.5),
        [tables::KW_BEATING, tables::KW_HEART] => Some(3.5),
        _ => None,
    }
}

/// The token table of one text, with the rules that read it.
struct Context<'a> {
    tokens: &'a [Token],
    cap_diff: bool,
}

impl Context<'_> {
    /// The keyword id of token `i` (0 when it is no keyword, and past either end, so
    /// lookahead never panics).
    fn kw(&self, i: usize) -> u8 {
        self.tokens.get(i).map_or(0, |t| t.kw)
    }

    /// Whether token `i` is a lexicon (or emote) word.
    fn in_lexicon(&self, i: usize) -> bool {
        self.tokens.get(i).is_some_and(|t| t.valence.is_some())
    }

    /// Step 3: the valence of token `i` in context (0 for words outside the lexicon).
    fn valence(&self, i: usize) -> f64 {
        let Some(token) = self.tokens.get(i) else {
            return 0.0;
        };
        let Some(base) = token.valence else {
            return 0.0;
        };
        let mut valence = base;

        // "no" directly before another lexicon word negates that word instead of counting
        // as negative itself.
        if self.kw(i) == tables::KW_NO && self.in_lexicon(i + 1) {
            valence = 0.0;
        }
        // Reference quirk: this test runs after the one above and overrides it, so in
        // "no no good" the second "no" gets its own (negated) valence back.
        if (i > 0 && self.kw(i - 1) == tables::KW_NO)
            || (i > 1 && self.kw(i - 2) == tables::KW_NO)
            || (i > 2
                && self.kw(i - 3) == tables::KW_NO
                && matches!(self.kw(i - 1), tables::KW_OR | tables::KW_NOR))
        {
            valence = base * N_SCALAR;
        }

        // Reference quirk: a zero valence (a "no" neutralised above) is pushed negative.
        if token.upper && self.cap_diff {
            if valence > 0.0 {
                valence += C_INCR;
            } else {
                valence -= C_INCR;
            }
        }

        // Look back up to three tokens; each one outside the lexicon may boost, dampen or
        // negate, with farther boosters counting less.
        for distance in 1..=3 {
            if i < distance || self.in_lexicon(i - distance) {
                continue;
            }
            let mut scalar = self.scalar_inc_dec(i - distance, valence);
            if scalar != 0.0 {
                match distance {
                    2 => scalar *= 0.95,
                    3 => scalar *= 0.9,
                    _ => {}
                }
            }
            valence += scalar;
            valence = self.negation_check(valence, i, distance);
            if distance == 3 {
                valence = self.special_idioms(valence, i);
            }
        }

        self.least_check(valence, i)
    }

    /// Booster contribution of token `j` to a word of the given valence: it pushes away
    /// from zero (boosters) or towards it (dampeners), more so when shouted.
    fn scalar_inc_dec(&self, j: usize, valence: f64) -> f64 {
        let Some(token) = self.tokens.get(j) else {
            return 0.0;
        };
        let mut scalar = token.booster;
        if scalar == 0.0 {
            return 0.0;
        }
        if valence < 0.0 {
            scalar = -scalar;
        }
        if token.upper && self.cap_diff {
            if valence > 0.0 {
                scalar += C_INCR;
            } else {
                scalar -= C_INCR;
            }
        }
        scalar
    }

    fn negates(&self, j: usize) -> bool {
        self.tokens.get(j).is_some_and(|t| t.negation)
    }

    /// Negation by the token `distance` places before word `i` (only called when that
    /// token is outside the lexicon and exists).
    fn negation_check(&self, valence: f64, i: usize, distance: usize) -> f64 {
        let so_or_this = |w: u8| w == tables::KW_SO || w == tables::KW_THIS;
        match distance {
            1 => {
                if self.negates(i - 1) {
                    return valence * N_SCALAR;
                }
            }
            2 => {
                let (w2, w1) = (self.kw(i - 2), self.kw(i - 1));
                if w2 == tables::KW_NEVER && so_or_this(w1) {
                    // "never so good": emphasis, not negation.
                    return valence * 1.25;
                }
                if w2 == tables::KW_WITHOUT && w1 == tables::KW_DOUBT {
                    return valence;
                }
                if self.negates(i - 2) {
                    return valence * N_SCALAR;
                }
            }
            _ => {
                let (w3, w2, w1) = (self.kw(i - 3), self.kw(i - 2), self.kw(i - 1));
                // Reference quirk: operator precedence makes this
                // `(never and (so|this)) or (w1 is so|this)`, so any word right after "so"
                // or "this" is amplified once its third-previous token is reached.
                if (w3 == tables::KW_NEVER && so_or_this(w2)) || so_or_this(w1) {
                    return valence * 1.25;
                }
                if w3 == tables::KW_WITHOUT && (w2 == tables::KW_DOUBT || w1 == tables::KW_DOUBT) {
                    return valence;
                }
                if self.negates(i - 3) {
                    return valence * N_SCALAR;
                }
            }
        }
        valence
    }

    /// Idioms around word `i` (only reached with `i >= 3`).
    fn special_idioms(&self, mut valence: f64, i: usize) -> f64 {
        let (w3, w2, w1, w0) = (self.kw(i - 3), self.kw(i - 2), self.kw(i - 1), self.kw(i));
        // The first preceding idiom found replaces the valence...
        let preceding: [&[u8]; 5] = [
            &[w1, w0],
            &[w2, w1, w0],
            &[w2, w1],
            &[w3, w2, w1],
            &[w3, w2],
        ];
        if let Some(v) = preceding.iter().find_map(|seq| special_case(seq)) {
            valence = v;
        }
        // ...then idioms starting at the word itself override it.
        let n = self.tokens.len();
        if i + 1 < n
            && let Some(v) = special_case(&[w0, self.kw(i + 1)])
        {
            valence = v;
        }
        if i + 2 < n
            && let Some(v) = special_case(&[w0, self.kw(i + 1), self.kw(i + 2)])
        {
            valence = v;
        }
        // Two-word dampeners ("kind of") before the word add up.
        for seq in [&[w3, w2, w1][..], &[w3, w2], &[w2, w1]] {
            if let Some(b) = booster_phrase(seq) {
                valence += b;
            }
        }
        valence
    }

    /// "least" before a word negates it, except in "at least" / "very least".
    fn least_check(&self, valence: f64, i: usize) -> f64 {
        if i == 0 || self.in_lexicon(i - 1) || self.kw(i - 1) != tables::KW_LEAST {
            return valence;
        }
        if i > 1 && matches!(self.kw(i - 2), tables::KW_AT | tables::KW_VERY) {
            return valence;
        }
        valence * N_SCALAR
    }
}

/// Step 4: halve valences before the first "but", multiply those after it by 1.5.
///
/// Reference quirk: the reference walks the list while locating each value with
/// `list.index(value)`, i.e. the *first* position holding an equal value, and rescales
/// that position instead. With repeated valences an earlier word can be rescaled twice and
/// a later one not at all. This reproduces it: for each position `k` in order, take the
/// current value `v = s[k]`, find the first `j <= k` with `s[j] == v`, and rescale `s[j]`.
fn but_check(sentiments: &mut [f64], but_index: usize) {
    // The direct simulation is quadratic; above a chat-message-sized input switch to an
    // index of positions by value, which gives the same answers in O(n log n).
    if sentiments.len() <= 128 {
        for k in 0..sentiments.len() {
            let Some(&v) = sentiments.get(k) else { break };
            let first = sentiments.iter().position(|&x| x == v).unwrap_or(k);
            if let Some(slot) = sentiments.get_mut(first) {
                *slot = but_scale(v, first, but_index);
            }
        }
    } else {
        but_check_indexed(sentiments, but_index);
    }
}

fn but_scale(v: f64, position: usize, but_index: usize) -> f64 {
    match position.cmp(&but_index) {
        std::cmp::Ordering::Less => v * 0.5,
        std::cmp::Ordering::Greater => v * 1.5,
        std::cmp::Ordering::Equal => v,
    }
}

/// [`but_check`] for long inputs: `positions[value]` holds the positions `<= k` currently
/// holding `value` (bit pattern with -0.0 folded into 0.0, since they compare equal).
fn but_check_indexed(sentiments: &mut [f64], but_index: usize) {
    let key = |v: f64| (v + 0.0).to_bits();
    let mut positions: HashMap<u64, BTreeSet<usize>> = HashMap::new();
    for k in 0..sentiments.len() {
        let Some(&v) = sentiments.get(k) else { break };
        let set = positions.entry(key(v)).or_default();
        set.insert(k);
        let first = set.first().copied().unwrap_or(k);
        if first == but_index {
            continue;
        }
        set.remove(&first);
        let scaled = but_scale(v, first, but_index);
        if let Some(slot) = sentiments.get_mut(first) {
            *slot = scaled;
        }
        positions.entry(key(scaled)).or_default().insert(first);
    }
}

/// Step 5: from per-token valences and the text's `!`/`?` counts to rounded scores.
fn score_valence(sentiments: &[f64], bangs: usize, questions: usize) -> Scores {
    if sentiments.is_empty() {
        // Reference quirk: an empty text is all zeros, including `neu`.
        return Scores::default();
    }
    // Plain left-to-right summation, like CPython 3.11's sum() (3.12+ compensates).
    let mut sum = sentiments.iter().fold(0.0, |acc, &v| acc + v);

    // Emphasis: up to 4 "!" at 0.292 each; 2-3 "?" at 0.18 each, 4+ capped at 0.96.
    let bang_amp = bangs.min(4) as f64 * 0.292;
    let question_amp = match questions {
        0 | 1 => 0.0,
        2 | 3 => questions as f64 * 0.18,
        _ => 0.96,
    };
    let emphasis = bang_amp + question_amp;
    // Emphasis pushes away from zero; a text summing to exactly zero gets none.
    if sum > 0.0 {
        sum += emphasis;
    } else if sum < 0.0 {
        sum -= emphasis;
    }
    let compound = normalize(sum);

    // Each non-neutral word weighs 1 + |valence|, each neutral one 1.
    let (mut pos_sum, mut neg_sum, mut neu_count) = (0.0f64, 0.0f64, 0usize);
    for &v in sentiments {
        if v > 0.0 {
            pos_sum += v + 1.0;
        } else if v < 0.0 {
            neg_sum += v - 1.0;
        } else {
            neu_count += 1;
        }
    }
    // Reference quirk: the emphasis goes to the dominant side judged by the weights, not
    // by the sign of the sum, so it can land on `pos` while `compound` got none.
    if pos_sum > neg_sum.abs() {
        pos_sum += emphasis;
    } else if pos_sum < neg_sum.abs() {
        neg_sum -= emphasis;
    }
    let total = pos_sum + neg_sum.abs() + neu_count as f64;

    Scores {
        neg: pystr::round((neg_sum / total).abs(), 3),
        neu: pystr::round((neu_count as f64 / total).abs(), 3),
        pos: pystr::round((pos_sum / total).abs(), 3),
        compound: pystr::round(compound, 4),
    }
}

/// Maps a sum onto [-1, 1] (approaches ±1 as |sum| grows; ALPHA sets how fast).
fn normalize(score: f64) -> f64 {
    (score / (score * score + ALPHA).sqrt()).clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(neg: f64, neu: f64, pos: f64, compound: f64) -> Scores {
        Scores {
            neg,
            neu,
            pos,
            compound,
        }
    }

    #[test]
    fn reference_examples() {
        // Values printed by vaderSentiment 3.3.2's own demo.
        assert_eq!(
            polarity_scores("VADER is smart, handsome, and funny."),
            s(0.0, 0.254, 0.746, 0.8316)
        );
        assert_eq!(
            polarity_scores("VADER is VERY SMART, handsome, and FUNNY!!!"),
            s(0.0, 0.233, 0.767, 0.9342)
        );
        assert_eq!(
            polarity_scores("Not bad at all"),
            s(0.0, 0.513, 0.487, 0.431)
        );
        assert_eq!(polarity_scores(""), s(0.0, 0.0, 0.0, 0.0));
        assert_eq!(polarity_scores("!!!"), s(0.0, 1.0, 0.0, 0.0));
    }

    #[test]
    fn non_ascii_words_outside_the_table_need_no_lowercase_copy() {
        // What `general_token` relies on.
        for c in (0x80..=0x10ffffu32).filter_map(char::from_u32) {
            if c.to_lowercase().any(|l| l.is_ascii()) {
                assert!(c == KELVIN_SIGN || c == '\u{130}', "{c:?}");
            }
        }
        // Each non-ASCII table key holds a character that lowercasing always changes, so
        // no lowercased word equals it (`is_uppercase` alone would not say that: some
        // uppercase characters have no lowercase mapping).
        for (word, _) in tables::WORDS.iter() {
            assert!(
                word.is_ascii() || word.chars().any(|c| c.to_lowercase().ne([c])),
                "{word:?} could be a lowercase word"
            );
        }
        // And the scores agree with the lowercase path on such words.
        assert_eq!(
            polarity_scores("DON'Té good"),
            polarity_scores("don't good")
        );
        assert_eq!(
            polarity_scores("\u{212a}IND of good").compound,
            polarity_scores("kind of good").compound
        );
    }

    #[test]
    fn padded_hash_is_word_hash() {
        let mut buf: LowerBuf = [0xa5; FAST_MAX + 8];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        // Every length the fast path hashes: table words, and emote names of any
        // configured length (up to FAST_MAX, not just tables::MAX_WORD_LEN).
        for from in 0..FAST_MAX {
            for len in 0..=FAST_MAX - from {
                assert_eq!(
                    hash_padded(&buf, from, len),
                    crate::hash::word_hash(&buf[from..from + len]),
                    "{from}+{len}"
                );
            }
        }
    }

    #[test]
    fn the_fast_and_general_token_paths_agree() {
        // The same words through the ASCII fast path and, with a non-ASCII neighbour glued
        // on by a non-breaking space (whitespace, so the same tokens), the general path.
        for text in [
            "not BAD at all!!",
            "the shit",
            "NO, never so GOOD?? kind of ok",
            "'don't' Isn't N'T it... ':)' (puke) :D D: <3 ok! a! wow!!",
            "very least at least yeah right",
            &"x".repeat(70),
            &format!("{}good", "!".repeat(70)),
        ] {
            let words: Vec<&str> = text.split(' ').collect();
            let general = words.join("\u{a0}");
            assert_eq!(polarity_scores(text), polarity_scores(&general), "{text:?}");
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        let long = "but ".repeat(5_000) + &"good bad ".repeat(5_000);
        for text in [
            "\u{0}",
            "🔛🆙",
            "❤️❤️❤️",
            "\u{1c}\u{1f}\u{200b}",
            "İ\u{212a}ǅ",
            "no",
            "kind",
            "least",
            "but",
            "the shit",
            long.as_str(),
        ] {
            let r = polarity_scores(text);
            assert!(r.compound.is_finite() && (-1.0..=1.0).contains(&r.compound));
        }
    }

    #[test]
    fn indexed_but_check_matches_the_direct_simulation() {
        // Small value alphabet so duplicates (the interesting case) are frequent.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = [0.0, -0.0, 1.0, 2.0, 0.5, 0.25, 4.0, -1.0, -0.5, 1.5, 3.0];
        for round in 0..500 {
            let n = 1 + (next() % 200) as usize;
            let values: Vec<f64> = (0..n)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let bi = (next() % n as u64) as usize;
            let mut direct = values.clone();
            for k in 0..direct.len() {
                let v = direct[k];
                let first = direct.iter().position(|&x| x == v).unwrap();
                direct[first] = but_scale(v, first, bi);
            }
            let mut indexed = values.clone();
            but_check_indexed(&mut indexed, bi);
            assert_eq!(direct, indexed, "round {round}: {values:?} but@{bi}");
        }
    }

    #[test]
    fn emote_lexicon_finds_exactly_its_entries() {
        let long = "L".repeat(70);
        let mut names: Vec<String> = crate::tables::builtin_emotes()
            .iter()
            .map(|e| e.name.to_owned())
            .collect();
        names.extend(["é_é".to_owned(), long.clone(), "x".to_owned()]);
        let lexicon = EmoteLexicon::new(names.iter().map(|n| (n.clone(), n.len() as f64)));
        assert_eq!(lexicon.entries().len(), names.len());
        for name in &names {
            assert_eq!(lexicon.get(name), Some(name.len() as f64), "{name:?}");
            // Near misses: same first byte and length, another case, a prefix, longer.
            let mut swapped = name.clone();
            if let Some(last) = swapped.pop() {
                swapped.push(if last == '#' { '%' } else { '#' });
            }
            for miss in [
                swapped,
                name.to_lowercase(),
                name.to_uppercase(),
                name.chars().take(name.chars().count() - 1).collect(),
                format!("{name}!"),
            ] {
                if !names.contains(&miss) {
                    assert_eq!(lexicon.get(&miss), None, "{miss:?}");
                }
            }
        }
        // Lengths from 63 up share a filter bit; the hash still tells them apart.
        assert_eq!(lexicon.get(&"L".repeat(71)), None);
        assert_eq!(lexicon.get(""), None);
        assert_eq!(EmoteLexicon::empty().get("LUL"), None);
        // Duplicates: the last one wins.
        let dup = EmoteLexicon::new([("A".to_owned(), 1.0), ("A".to_owned(), 2.0)]);
        assert_eq!((dup.get("A"), dup.entries().len()), (Some(2.0), 1));
    }

    #[test]
    fn emote_entries_act_as_case_sensitive_words_without_caps_emphasis() {
        let emotes = EmoteLexicon::new([("LUL".to_string(), 1.5), ("Kappa".to_string(), 0.0)]);
        let mut scorer = Scorer::new();
        let with = scorer.score("that was great LUL", &emotes);
        assert!(with.compound > polarity_scores("that was great").compound);
        // Lowercase is not the emote.
        assert_eq!(
            scorer.score("that was great lul", &emotes),
            polarity_scores("that was great lul")
        );
        // An emote does not turn "GREAT" into shouting in an otherwise all-caps text.
        assert_eq!(
            scorer.score("GREAT Kappa", &emotes).compound,
            polarity_scores("GREAT").compound
        );
    }
}
