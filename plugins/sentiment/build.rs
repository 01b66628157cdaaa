//! Turns the VADER data files (and VADER's booster and negation word lists), plus the
//! team's Twitch emote lexicon (`data/twitch_emotes.tsv`), into static Rust tables
//! (`$OUT_DIR/tables.rs`).
//!
//! Why generate code instead of `include_str!` + parsing in `init`:
//! * zero start-up work and zero heap: the tables live in read-only data, so a plugin
//!   instance (re)initialises instantly on every hot reload, and the free function
//!   `polarity_scores` needs no lazily-initialised global;
//! * the words get a build-time open-addressing hash index (about one string comparison
//!   per lookup, against ~13 for a binary search over 7,500 sorted keys), and one lookup
//!   per token answers "lexicon valence?", "booster?" and "negation?" at once, and gives
//!   the word's `KW_*` keyword id when a rule compares tokens with it ("no", "but", the
//!   words of idioms and multi-word boosters), so those rules compare small ids, not
//!   strings.
//!
//! The parsing mirrors what vaderSentiment 3.3.2 does when it loads the files, so quirks of
//! the data (CRLF endings, duplicate keys where the last one wins) behave identically.
//!
//! The emote lexicon is our own data, so it is checked strictly instead: any mistake in it
//! (see `twitch_emotes`) fails the build with the line number, rather than shipping a table
//! that scores chat wrongly.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

#[path = "src/hash.rs"]
mod hash;

/// `BOOSTER_DICT` minus its multi-word keys ("kind of", "sort of", "just enough"), which
/// can never equal a single token and are matched as n-grams in `src/vader.rs`. `Incr` is
/// +0.293 and `Decr` -0.293 there.
const BOOSTERS: &[(&str, &str)] = &[
    ("absolutely", "Incr"),
    ("amazingly", "Incr"),
    ("awfully", "Incr"),
    ("completely", "Incr"),
    ("considerable", "Incr"),
    ("considerably", "Incr"),
    ("decidedly", "Incr"),
    ("deeply", "Incr"),
    ("effing", "Incr"),
    ("enormous", "Incr"),
    ("enormously", "Incr"),
    ("entirely", "Incr"),
    ("especially", "Incr"),
    ("exceptional", "Incr"),
    ("exceptionally", "Incr"),
    ("extreme", "Incr"),
    ("extremely", "Incr"),
    ("fabulously", "Incr"),
    ("flipping", "Incr"),
    ("flippin", "Incr"),
    ("frackin", "Incr"),
    ("fracking", "Incr"),
    ("fricking", "Incr"),
    ("frickin", "Incr"),
    ("frigging", "Incr"),
    ("friggin", "Incr"),
    ("fully", "Incr"),
    ("fuckin", "Incr"),
    ("fucking", "Incr"),
    ("fuggin", "Incr"),
    ("fugging", "Incr"),
    ("greatly", "Incr"),
    ("hella", "Incr"),
    ("highly", "Incr"),
    ("hugely", "Incr"),
    ("incredible", "Incr"),
    ("incredibly", "Incr"),
    ("intensely", "Incr"),
    ("major", "Incr"),
    ("majorly", "Incr"),
    ("more", "Incr"),
    ("most", "Incr"),
    ("particularly", "Incr"),
    ("purely", "Incr"),
    ("quite", "Incr"),
    ("really", "Incr"),
    ("remarkably", "Incr"),
    ("so", "Incr"),
    ("substantially", "Incr"),
    ("thoroughly", "Incr"),
    ("total", "Incr"),
    ("totally", "Incr"),
    ("tremendous", "Incr"),
    ("tremendously", "Incr"),
    ("uber", "Incr"),
    ("unbelievably", "Incr"),
    ("unusually", "Incr"),
    ("utter", "Incr"),
    ("utterly", "Incr"),
    ("very", "Incr"),
    ("almost", "Decr"),
    ("barely", "Decr"),
    ("hardly", "Decr"),
    ("kinda", "Decr"),
    ("kindof", "Decr"),
    ("kind-of", "Decr"),
    ("less", "Decr"),
    ("little", "Decr"),
    ("marginal", "Decr"),
    ("marginally", "Decr"),
    ("occasional", "Decr"),
    ("occasionally", "Decr"),
    ("partly", "Decr"),
    ("scarce", "Decr"),
    ("scarcely", "Decr"),
    ("slight", "Decr"),
    ("slightly", "Decr"),
    ("somewhat", "Decr"),
    ("sorta", "Decr"),
    ("sortof", "Decr"),
    ("sort-of", "Decr"),
];

/// `NEGATE`: words that negate on their own (any word containing "n't" does too; that
/// test is done at run time).
const NEGATIONS: &[&str] = &[
    "aint",
    "arent",
    "cannot",
    "cant",
    "couldnt",
    "darent",
    "didnt",
    "doesnt",
    "ain't",
    "aren't",
    "can't",
    "couldn't",
    "daren't",
    "didn't",
    "doesn't",
    "dont",
    "hadnt",
    "hasnt",
    "havent",
    "isnt",
    "mightnt",
    "mustnt",
    "neither",
    "don't",
    "hadn't",
    "hasn't",
    "haven't",
    "isn't",
    "mightn't",
    "mustn't",
    "neednt",
    "needn't",
    "never",
    "none",
    "nope",
    "nor",
    "not",
    "nothing",
    "nowhere",
    "oughtnt",
    "shant",
    "shouldnt",
    "uhuh",
    "wasnt",
    "werent",
    "oughtn't",
    "shan't",
    "shouldn't",
    "uh-uh",
    "wasn't",
    "weren't",
    "without",
    "wont",
    "wouldnt",
    "won't",
    "wouldn't",
    "rarely",
    "seldom",
    "despite",
];

/// Words the rules of `src/vader.rs` compare tokens with ("no", "but", "kind of", the idioms,
/// ...). Each gets a small id in its table entry (`WordInfo::kw`, constants `KW_*`), so a
/// rule compares two bytes instead of two strings, and the scorer keeps no lowercase copy
/// of the text: the id is found by the one lookup every token gets anyway.
const KEYWORDS: &[&str] = &[
    "no", "or", "nor", "kind", "of", "but", "never", "so", "this", "without", "doubt", "least",
    "at", "very", "the", "shit", "bomb", "to", "die", "for", "bad", "ass", "bus", "stop", "yeah",
    "right", "kiss", "death", "beating", "heart", "just", "enough", "sort",
];

/// The groups of `twitch_emotes.tsv` and the sign a valence in each must have, so that a
/// dropped minus sign or a line filed under the wrong group fails the build. Each group has
/// a section in docs/SENTIMENT.md explaining its valences.
const EMOTE_GROUPS: &[(&str, Sign)] = &[
    ("hype", Sign::Positive),
    ("positive", Sign::Positive),
    ("laughter", Sign::Positive),
    ("sad", Sign::Negative),
    ("fear", Sign::Negative),
    ("boredom", Sign::Negative),
    ("disgust", Sign::Negative),
    ("sarcasm", Sign::Zero),
    ("greeting", Sign::Zero),
    // Smileys take VADER's value where it has one, whatever its sign (`:-O` is +0.1).
    ("smiley", Sign::Any),
];

#[derive(Clone, Copy)]
enum Sign {
    Positive,
    Negative,
    Zero,
    Any,
}

impl Sign {
    fn admits(self, v: f64) -> bool {
        match self {
            Sign::Positive => v > 0.0,
            Sign::Negative => v < 0.0,
            Sign::Zero => v == 0.0,
            Sign::Any => true,
        }
    }
}

/// Words of the emoji block bitmap: 64 × 64 blocks of 32 code points cover U+0000..U+1FFFF.
const EMOJI_BLOCK_WORDS: usize = 64;

/// The bound of VADER's word scale; emote valences must stay on it.
const MAX_VALENCE: f64 = 4.0;

/// Python's `str.strip()` whitespace: Unicode `White_Space` plus the four ASCII
/// information separators U+001C..U+001F.
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// `text.rstrip('\n').split('\n')`, the line splitting both loaders use.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.trim_end_matches('\n').split('\n')
}

fn read(path: &str) -> String {
    println!("cargo:rerun-if-changed={path}");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// One word's table entry as `build.rs` collects it (becomes a `WordInfo`).
#[derive(Default)]
struct Entry {
    valence: Option<f64>,
    boost: Option<&'static str>,
    negation: bool,
    kw: u8,
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/hash.rs");

    // vader_lexicon.txt: `word<TAB>mean<TAB>sd<TAB>ratings`; blank lines are skipped.
    let mut lexicon: BTreeMap<String, f64> = BTreeMap::new();
    for (n, line) in lines(&read("data/vader_lexicon.txt")).enumerate() {
        if line.is_empty() {
            continue;
        }
        let mut fields = py_strip(line).split('\t');
        let word = fields.next().unwrap_or_default();
        let measure = fields
            .next()
            .unwrap_or_else(|| panic!("vader_lexicon.txt line {}: no valence", n + 1));
        let value: f64 = measure
            .parse()
            .unwrap_or_else(|e| panic!("vader_lexicon.txt line {}: {measure:?}: {e}", n + 1));
        lexicon.insert(word.to_owned(), value);
    }

    // emoji_utf8_lexicon.txt: `emoji<TAB>description`. The reference replaces emoji one code
    // point at a time, so multi-code-point keys (skin tones, ZWJ sequences, keycaps) can never
    // match and are left out of the table.
    let mut emoji: BTreeMap<char, String> = BTreeMap::new();
    for (n, line) in lines(&read("data/emoji_utf8_lexicon.txt")).enumerate() {
        let mut fields = py_strip(line).split('\t');
        let key = fields.next().unwrap_or_default();
        let description = fields
            .next()
            .unwrap_or_else(|| panic!("emoji_utf8_lexicon.txt line {}: no description", n + 1));
        let mut chars = key.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            emoji.insert(c, description.to_owned());
        }
    }

    let emotes = twitch_emotes(&read("data/twitch_emotes.tsv"), &lexicon);

    // One table for every word a per-token rule asks about: lexicon words plus the
    // single-word boosters and negations, so scoring needs one lookup per token.
    let mut words: BTreeMap<&str, Entry> = BTreeMap::new();
    for (word, valence) in &lexicon {
        words.entry(word.as_str()).or_default().valence = Some(*valence);
    }
    for &(word, boost) in BOOSTERS {
        words.entry(word).or_default().boost = Some(boost);
    }
    for &word in NEGATIONS {
        words.entry(word).or_default().negation = true;
    }
    assert!(KEYWORDS.len() < 255, "keyword ids are bytes");
    for (id, &word) in KEYWORDS.iter().enumerate() {
        words.entry(word).or_default().kw = id as u8 + 1;
    }
    let max_word_len = words.keys().map(|w| w.len()).max().unwrap_or(0);
    let entries: Vec<_> = words.into_iter().collect();

    // Open addressing with linear probing at a load factor below 1/2. A slot holds
    // `tag << 16 | index` (index into WORDS, tag = top 16 hash bits) or u32::MAX when
    // empty: the tag settles most misses without touching the word array, which is the
    // cache miss that dominates a lookup.
    assert!(
        entries.len() < usize::from(u16::MAX),
        "too many words for u16 indexes"
    );
    let slots_len = (entries.len() * 2).next_power_of_two();
    let mask = slots_len as u64 - 1;
    let mut slots = vec![u32::MAX; slots_len];
    for (index, (word, _)) in entries.iter().enumerate() {
        let h = hash::word_hash(word.as_bytes());
        let mut slot = (h & mask) as usize;
        while slots[slot] != u32::MAX {
            slot = (slot + 1) & mask as usize;
        }
        slots[slot] = ((h >> 48) as u32) << 16 | index as u32;
    }
    // A miss walks to the end of its cluster, so cluster length bounds every lookup.
    let (mut longest_cluster, mut run) = (0, 0);
    for s in slots.iter().chain(slots.iter()) {
        run = if *s == u32::MAX { 0 } else { run + 1 };
        longest_cluster = longest_cluster.max(run);
    }
    assert!(
        longest_cluster < 64,
        "hash clusters degenerated ({longest_cluster})"
    );

    let mut out = String::new();
    let _ = writeln!(
        out,
        "// Generated by build.rs from data/*.txt. Do not edit."
    );
    let _ = writeln!(
        out,
        "/// Lexicon, booster and negation words, sorted ({} entries).",
        entries.len()
    );
    let _ = writeln!(
        out,
        "pub(crate) static WORDS: [(&str, WordInfo); {}] = [",
        entries.len()
    );
    for (
        word,
        Entry {
            valence,
            boost,
            negation,
            kw,
        },
    ) in &entries
    {
        let boost = boost.map_or("None".to_owned(), |b| format!("Some(Boost::{b})"));
        let _ = writeln!(
            out,
            "    ({word:?}, WordInfo {{ valence: {valence:?}, boost: {boost}, negation: {negation}, kw: {kw} }}),"
        );
    }
    let _ = writeln!(out, "];");
    let _ = writeln!(
        out,
        "/// The longest word in WORDS, in bytes: a longer token cannot be in the table."
    );
    let _ = writeln!(
        out,
        "pub(crate) const MAX_WORD_LEN: usize = {max_word_len};"
    );
    for (id, word) in KEYWORDS.iter().enumerate() {
        let _ = writeln!(out, "/// Keyword id of {word:?} (`WordInfo::kw`).");
        let _ = writeln!(
            out,
            "pub(crate) const KW_{}: u8 = {};",
            word.to_uppercase(),
            id + 1
        );
    }
    let _ = writeln!(
        out,
        "/// Hash index into WORDS (`hash::word_hash`, linear probing; longest cluster {longest_cluster})."
    );
    let _ = writeln!(out, "static SLOTS: [u32; {slots_len}] = [");
    for chunk in slots.chunks(16) {
        let row: Vec<String> = chunk.iter().map(|s| format!("{s:#010x}")).collect();
        let _ = writeln!(out, "    {},", row.join(", "));
    }
    let _ = writeln!(out, "];");
    let _ = writeln!(
        out,
        "/// Single-code-point emoji and their descriptions, sorted by code point ({} entries).",
        emoji.len()
    );
    let _ = writeln!(out, "static EMOJI: [(char, &str); {}] = [", emoji.len());
    for (c, description) in &emoji {
        let _ = writeln!(out, "    ({c:?}, {description:?}),");
    }
    let _ = writeln!(out, "];");
    // A bit per block of 32 code points below U+20000 that holds some key: most non-ASCII
    // chat characters (accented letters, Hangul, CJK) are settled by one bit test instead
    // of a binary search over all keys.
    let mut blocks = [0u64; EMOJI_BLOCK_WORDS];
    for &c in emoji.keys() {
        let block = c as usize >> 5;
        assert!(block < EMOJI_BLOCK_WORDS * 64, "emoji {c:?} past U+1FFFF");
        blocks[block >> 6] |= 1 << (block & 63);
    }
    let _ = writeln!(
        out,
        "/// Bit `b` is set when some EMOJI key lies in code points `32 * b .. 32 * b + 32`."
    );
    let _ = writeln!(out, "static EMOJI_BLOCKS: [u64; {EMOJI_BLOCK_WORDS}] = [");
    for chunk in blocks.chunks(4) {
        let row: Vec<String> = chunk.iter().map(|s| format!("{s:#018x}")).collect();
        let _ = writeln!(out, "    {},", row.join(", "));
    }
    let _ = writeln!(out, "];");

    let _ = writeln!(
        out,
        "/// Built-in Twitch emotes from data/twitch_emotes.tsv, sorted by name ({} entries).",
        emotes.len()
    );
    let _ = writeln!(
        out,
        "static TWITCH_EMOTES: [BuiltinEmote; {}] = [",
        emotes.len()
    );
    for (name, (valence, group)) in &emotes {
        let _ = writeln!(
            out,
            "    BuiltinEmote {{ name: {name:?}, valence: {valence:?}, group: {group:?} }},"
        );
    }
    let _ = writeln!(out, "];");

    let dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    std::fs::write(dir.join("tables.rs"), out).expect("writing tables.rs");
}

/// Parses `twitch_emotes.tsv` (`name<TAB>valence<TAB>group`, `#` comments, blank lines) and
/// panics, naming the line, on anything that would make the table wrong; see the file's
/// header for the list. `lexicon` is VADER's, to hold smileys to VADER's values: Twitch
/// marks `:)` and friends as emotes, and the plugin cuts marked emotes it does not list, so
/// a smiley listed with a different value would silently change what VADER scores.
fn twitch_emotes(
    text: &str,
    lexicon: &BTreeMap<String, f64>,
) -> BTreeMap<String, (f64, &'static str)> {
    let mut emotes = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, valence, group] = fields[..] else {
            panic!("twitch_emotes.tsv line {n}: expected name<TAB>valence<TAB>group, got {line:?}");
        };
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            panic!("twitch_emotes.tsv line {n}: emote name {name:?} must be one token");
        }
        let valence: f64 = valence
            .parse()
            .unwrap_or_else(|e| panic!("twitch_emotes.tsv line {n}: valence {valence:?}: {e}"));
        if !(-MAX_VALENCE..=MAX_VALENCE).contains(&valence) {
            panic!("twitch_emotes.tsv line {n}: {name:?} has valence {valence}, outside -4..4");
        }
        let Some(&(group, sign)) = EMOTE_GROUPS.iter().find(|(g, _)| *g == group) else {
            panic!("twitch_emotes.tsv line {n}: unknown group {group:?} (see EMOTE_GROUPS)");
        };
        if !sign.admits(valence) {
            panic!(
                "twitch_emotes.tsv line {n}: {name:?} has valence {valence}, \
                 which does not fit group {group:?}"
            );
        }
        if group == "smiley"
            && let Some(&vader) = lexicon.get(&name.to_lowercase())
            && vader != valence
        {
            panic!(
                "twitch_emotes.tsv line {n}: smiley {name:?} has valence {valence} but \
                 vader_lexicon.txt gives it {vader}; use VADER's value"
            );
        }
        if emotes.insert(name.to_owned(), (valence, group)).is_some() {
            panic!("twitch_emotes.tsv line {n}: {name:?} is listed twice");
        }
    }
    emotes
}
