//! # sentiment: VADER scores for chat messages
//!
//! A streamtap step that sets a `sentiment` field on every message. For
//! "I love this stream PogChamp" (with the built-in emote table):
//!
//! ```text
//! sentiment = { compound = 0.802, pos = 0.706, neu = 0.294, neg = 0.0, label = "positive" }
//! ```
//!
//! ## Scoring
//!
//! The scores are those of VADER as published on PyPI as **vaderSentiment 3.3.2** (not the
//! GitHub master branch, whose rules differ), re-implemented in [`vader`] and checked
//! against the Python package on a 2,000+ line corpus (`tests/parity.rs`). The lexicons are
//! the package's own data files, turned into static tables at build time (`build.rs`).
//! [`polarity_scores`] is the plain reference-compatible function; the host can call it
//! native and compare with the same code compiled to WASM.
//!
//! ## Twitch extension (plugin only, not in [`polarity_scores`])
//!
//! On by default; `twitch = false` turns all three parts off, and the step then reports
//! exactly [`polarity_scores`]. The full description, with the reasoning behind every
//! valence, is `docs/SENTIMENT.md`.
//!
//! 1. **Emote lexicon.** [`builtin_emotes`] is the team's table of 129 common Twitch, BTTV,
//!    FFZ and 7TV emotes plus Twitch's 14 smileys in every spelling Twitch marks (173
//!    entries), with valences on VADER's -4..+4 word scale, kept as data in
//!    `data/twitch_emotes.tsv` and compiled in by `build.rs`. The `with` table can add,
//!    override and remove entries.
//! 2. **Matching.** Twitch marks its own emotes by character position. A marked span whose
//!    text is in the table stays in the message; any other marked span is cut before
//!    scoring (an unknown emote name like `Kreygasm` would otherwise count as a neutral
//!    word and dilute `pos`/`neg`). BTTV, FFZ and 7TV emotes never carry positions, so a
//!    table entry also matches any token spelled exactly like it (case-sensitive: `LUL`
//!    is the emote, "lul" is not). A matched entry scores like a VADER lexicon word with
//!    the entry's valence, except that ALL-CAPS emphasis does not apply to it (see
//!    [`EmoteLexicon`]). Entries VADER's lexicon already has with the same valence (the
//!    smileys `:)` `<3` `:D`..., and `EZ`) are only kept from being cut: VADER scores them
//!    exactly as plain VADER does.
//! 3. **Spam.** A message that is one token repeated more than ten times (after emotes are
//!    cut; tokens compared exactly) is scored as that single token, so copy-paste floods
//!    do not saturate `compound` at ±1.
//!
//! ## Configuration (`with` table)
//!
//! | key                  | default | meaning                                                       |
//! |----------------------|---------|---------------------------------------------------------------|
//! | `positive_threshold` | `0.05`  | `label = "positive"` when `compound >=` this                   |
//! | `negative_threshold` | `-0.05` | `label = "negative"` when `compound <=` this; must be lower     |
//! | `twitch`             | `true`  | `false`: plain VADER (no emote cutting, emote lexicon or spam rule) |
//! | `builtin_emotes`     | `true`  | `false`: start from an empty emote table instead of the built-in one |
//! | `emotes`             | `{}`    | name → valence (-4..4), added to the table or replacing a built-in entry |
//! | `remove_emotes`      | `[]`    | built-in names to take out of the table (then cut when marked, neutral as tokens) |
//!
//! ```toml
//! with = { emotes = { myChannelHype = 2.5, Kappa = -1.0 }, remove_emotes = ["LUL"] }
//! ```
//!
//! Names are case-sensitive and must be single tokens; `remove_emotes` must name built-in
//! emotes (a typo is an error, not a silent no-op). With `twitch = false` the emote keys
//! are still checked, so turning the extension back on cannot fail.

mod hash;
mod pystr;
mod tables;
mod twitch;
pub mod vader;

pub use tables::BuiltinEmote;
pub use vader::{EmoteLexicon, Scorer, Scores, polarity_scores};

use std::collections::BTreeMap;
use streamtap_plugin_sdk::{Actions, Message, Plugin, SetTemplate, ValueRef, export};

/// Default `positive_threshold`: VADER's own recommended cut-off.
pub const DEFAULT_POSITIVE_THRESHOLD: f64 = 0.05;
/// Default `negative_threshold`: VADER's own recommended cut-off.
pub const DEFAULT_NEGATIVE_THRESHOLD: f64 = -0.05;
/// Default `twitch`: the step exists for Twitch chat, so the extension is on.
pub const DEFAULT_TWITCH: bool = true;
/// Default `builtin_emotes`: start from the team's table.
pub const DEFAULT_BUILTIN_EMOTES: bool = true;
/// The bound of VADER's word scale, which emote valences must stay on: a lexicon word past
/// it would outweigh anything VADER's own words can say, and a value like 25 is almost
/// certainly a typo for 2.5.
pub const MAX_EMOTE_VALENCE: f64 = 4.0;

/// The built-in Twitch emote table (`data/twitch_emotes.tsv`), sorted by name.
pub fn builtin_emotes() -> &'static [BuiltinEmote] {
    tables::builtin_emotes()
}

/// The step's `with` table.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `compound` at or above this is labelled "positive".
    #[serde(deserialize_with = "de::positive_threshold")]
    pub positive_threshold: f64,
    /// `compound` at or below this is labelled "negative"; must be below
    /// `positive_threshold`.
    #[serde(deserialize_with = "de::negative_threshold")]
    pub negative_threshold: f64,
    /// The Twitch extension (emote cutting, emote lexicon, spam rule); `false` makes the
    /// step report plain VADER scores.
    pub twitch: bool,
    /// Whether the emote table starts from [`builtin_emotes`] (`false`: only `emotes`).
    pub builtin_emotes: bool,
    /// Emote name → valence (-4..4), merged over the built-in table: new names are added,
    /// built-in names get the new valence.
    #[serde(deserialize_with = "de::emotes")]
    pub emotes: BTreeMap<String, f64>,
    /// Built-in emote names to take out of the table.
    pub remove_emotes: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            positive_threshold: DEFAULT_POSITIVE_THRESHOLD,
            negative_threshold: DEFAULT_NEGATIVE_THRESHOLD,
            twitch: DEFAULT_TWITCH,
            builtin_emotes: DEFAULT_BUILTIN_EMOTES,
            emotes: BTreeMap::new(),
            remove_emotes: Vec::new(),
        }
    }
}

/// Deserializers that explain a `null` number. Pipeline files are TOML, and the host hands
/// `with` over as JSON, where TOML's `nan` and `inf` can only become `null`; serde's own
/// message ("invalid type: null, expected f64") would not say which value was wrong.
mod de {
    use serde::{Deserialize, Deserializer, de::Error};
    use std::collections::BTreeMap;

    fn threshold<'de, D: Deserializer<'de>>(d: D, key: &str) -> Result<f64, D::Error> {
        Option::<f64>::deserialize(d)?.ok_or_else(|| {
            D::Error::custom(format!(
                "{key} is null; it must be a finite number (TOML nan and inf arrive as null)"
            ))
        })
    }

    pub(super) fn positive_threshold<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        threshold(d, "positive_threshold")
    }

    pub(super) fn negative_threshold<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        threshold(d, "negative_threshold")
    }

    pub(super) fn emotes<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, f64>, D::Error> {
        BTreeMap::<String, Option<f64>>::deserialize(d)?
            .into_iter()
            .map(|(name, valence)| match valence {
                Some(v) => Ok((name, v)),
                None => Err(D::Error::custom(format!(
                    "emote {name:?} has valence null; it must be a number from -4 to 4 \
                     (TOML nan and inf arrive as null)"
                ))),
            })
            .collect()
    }
}

/// The sentiment step.
#[derive(Debug)]
pub struct Sentiment {
    positive_threshold: f64,
    negative_threshold: f64,
    /// When false, [`Sentiment::analyze`] is plain VADER.
    twitch: bool,
    /// Every name in the effective emote table: marked emotes with these names stay in the
    /// text, other marked emotes are cut.
    kept: EmoteLexicon,
    /// The entries the scorer needs: `kept` minus those VADER's own lexicon already scores
    /// with the same valence. Leaving those to VADER keeps its exact behaviour for them
    /// (notably its ALL-CAPS rule, which counts `:D` as a shouted word), so text that has
    /// no Twitch-specific emote scores exactly as plain VADER even with the extension on.
    scored: EmoteLexicon,
    scorer: Scorer,
    /// Reused per message: the text with emotes cut, and the emote ranges.
    cut: String,
    ranges: Vec<(usize, usize)>,
    /// The `sentiment` field, encoded once per label (see [`LABELS`]); each message only
    /// fills in its four numbers.
    outputs: [SetTemplate; 3],
}

/// The labels, in the order of [`Sentiment::label_index`].
const LABELS: [&str; 3] = ["positive", "negative", "neutral"];

/// The field the step sets: `compound`, `pos`, `neu`, `neg` (the template's floats, in
/// this order) and `label`.
fn output_template(label: &'static str) -> SetTemplate {
    SetTemplate::new(
        "sentiment",
        ValueRef::Map(&[
            ("compound", ValueRef::Float(0.0)),
            ("pos", ValueRef::Float(0.0)),
            ("neu", ValueRef::Float(0.0)),
            ("neg", ValueRef::Float(0.0)),
            ("label", ValueRef::Str(label)),
        ]),
    )
}

impl Sentiment {
    /// Scores one message: `text` plus Twitch's emote positions (inclusive character
    /// ranges), with the emote and spam handling described in the crate docs, or plain
    /// VADER when the step was configured with `twitch = false`.
    pub fn analyze(&mut self, text: &str, emotes: impl IntoIterator<Item = (u32, u32)>) -> Scores {
        if !self.twitch {
            return self.scorer.score(text, &EmoteLexicon::empty());
        }
        self.ranges.clear();
        self.ranges
            .extend(emotes.into_iter().map(|(s, e)| (s as usize, e as usize)));
        let kept = &self.kept;
        let text = if twitch::cut_emotes(
            text,
            &mut self.ranges,
            |name| kept.get(name).is_some(),
            &mut self.cut,
        ) {
            self.cut.as_str()
        } else {
            text
        };
        let scores = self.scorer.score_with_spam_rule(text, &self.scored);
        if self.cut.capacity() > 64 * 1024 {
            self.cut = String::new(); // see Scorer: do not pin a giant message's buffer
        }
        scores
    }

    /// The label for a compound score under this step's thresholds.
    pub fn label(&self, compound: f64) -> &'static str {
        LABELS[self.label_index(compound)]
    }

    /// The index in [`LABELS`] of the label for `compound`.
    fn label_index(&self, compound: f64) -> usize {
        if compound >= self.positive_threshold {
            0
        } else if compound <= self.negative_threshold {
            1
        } else {
            2
        }
    }
}

/// Checks the emote keys of the config and builds the effective table: the built-in one
/// (when `builtin` is set) minus `remove`, with `add` merged over it.
fn emote_table(
    builtin: bool,
    add: BTreeMap<String, f64>,
    remove: &[String],
) -> Result<BTreeMap<String, f64>, String> {
    for (name, &valence) in &add {
        if name.is_empty() || name.chars().any(pystr::is_space) {
            return Err(format!(
                "emote name {name:?} must be a single token (not empty, no whitespace)"
            ));
        }
        if !valence.is_finite() || valence.abs() > MAX_EMOTE_VALENCE {
            return Err(format!(
                "emote {name:?} has valence {valence}; it must be a number from -4 to 4 \
                 (VADER's word scale)"
            ));
        }
    }
    for name in remove {
        if !builtin {
            return Err(format!(
                "remove_emotes lists {name:?}, but builtin_emotes = false already leaves \
                 every built-in emote out"
            ));
        }
        if add.contains_key(name) {
            return Err(format!(
                "emote {name:?} is in both emotes and remove_emotes; keep it in one of them"
            ));
        }
        let table = builtin_emotes();
        if table.binary_search_by(|e| e.name.cmp(name)).is_err() {
            let hint = match table.iter().find(|e| e.name.eq_ignore_ascii_case(name)) {
                Some(e) => format!("names are case-sensitive: did you mean {:?}?", e.name),
                None => "see data/twitch_emotes.tsv for the list".to_owned(),
            };
            return Err(format!(
                "remove_emotes: {name:?} is not a built-in emote ({hint})"
            ));
        }
    }
    let mut table: BTreeMap<String, f64> = if builtin {
        builtin_emotes()
            .iter()
            .map(|e| (e.name.to_owned(), e.valence))
            .collect()
    } else {
        BTreeMap::new()
    };
    for name in remove {
        table.remove(name);
    }
    table.extend(add);
    Ok(table)
}

/// The valence VADER's own lexicon gives `token`, looked up as VADER does (punctuation
/// stripped unless the token is an emoticon, then lowercased).
fn vader_valence(token: &str) -> Option<f64> {
    let mut lower = String::new();
    pystr::push_lower(pystr::strip_punc_if_word(token), &mut lower);
    tables::word_info(&lower).and_then(|info| info.valence)
}

impl Plugin for Sentiment {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        let Config {
            positive_threshold: pos,
            negative_threshold: neg,
            twitch,
            builtin_emotes: use_builtin,
            emotes,
            remove_emotes,
        } = config;
        if !pos.is_finite() || !neg.is_finite() {
            return Err(format!(
                "thresholds must be finite numbers (negative_threshold = {neg}, positive_threshold = {pos})"
            ));
        }
        if neg >= pos {
            return Err(format!(
                "negative_threshold ({neg}) must be less than positive_threshold ({pos})"
            ));
        }
        // Checked even when `twitch` is off, so that turning it back on cannot fail.
        let table = emote_table(use_builtin, emotes, &remove_emotes)?;
        let (kept, scored) = if twitch {
            let scored = EmoteLexicon::new(
                table
                    .iter()
                    .filter(|&(name, &valence)| vader_valence(name) != Some(valence))
                    .map(|(name, &valence)| (name.clone(), valence)),
            );
            (EmoteLexicon::new(table), scored)
        } else {
            (EmoteLexicon::empty(), EmoteLexicon::empty())
        };
        Ok(Sentiment {
            positive_threshold: pos,
            negative_threshold: neg,
            twitch,
            kept,
            scored,
            scorer: Scorer::new(),
            cut: String::new(),
            ranges: Vec::new(),
            outputs: LABELS.map(output_template),
        })
    }

    fn process(&mut self, msg: &Message<'_>, out: &mut Actions) {
        // Positions only: the emote ids are never read (nor checked to be UTF-8).
        let scores = self.analyze(msg.text(), msg.emote_positions());
        // The field as encoded once at init, with this message's numbers: no keys or map
        // encoded per message (this runs on every message).
        out.set_template(
            &self.outputs[self.label_index(scores.compound)],
            &[scores.compound, scores.pos, scores.neu, scores.neg],
        );
    }
}

export!(Sentiment);

#[cfg(test)]
mod tests {
    use super::*;
    use streamtap_plugin_sdk::Value;
    use streamtap_plugin_sdk::codec::{Action, ChatMessage, Emote};
    use streamtap_plugin_sdk::testing;

    fn sentiment_of(p: &mut Sentiment, msg: ChatMessage) -> Value {
        let out = testing::run(p, &[msg]);
        match out.as_slice() {
            [actions] => match actions.as_slice() {
                [Action::Set { name, value }] if name == "sentiment" => value.clone(),
                other => panic!("expected one `set sentiment`, got {other:?}"),
            },
            other => panic!("expected one message, got {other:?}"),
        }
    }

    fn num(v: &Value, key: &str) -> f64 {
        v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
    }

    fn label(v: &Value) -> &str {
        v.get("label").and_then(Value::as_str).unwrap_or("")
    }

    fn with_emotes(text: &str, emotes: &[(&str, u32, u32)]) -> ChatMessage {
        let mut m = testing::message("chan", "user", text);
        m.emotes = emotes
            .iter()
            .map(|&(id, start, end)| Emote {
                id: id.into(),
                start,
                end,
            })
            .collect();
        m
    }

    #[test]
    fn sets_all_fields_on_every_message() {
        let mut p: Sentiment = testing::init(serde_json::json!({})).unwrap();
        for text in ["I love this stream", "", "   ", "this is awful", "ok"] {
            let v = sentiment_of(&mut p, testing::message("c", "u", text));
            let s = polarity_scores(text);
            assert_eq!(num(&v, "compound"), s.compound, "{text:?}");
            assert_eq!(num(&v, "pos"), s.pos);
            assert_eq!(num(&v, "neu"), s.neu);
            assert_eq!(num(&v, "neg"), s.neg);
            assert!(["positive", "neutral", "negative"].contains(&label(&v)));
        }
    }

    #[test]
    fn the_output_is_the_documented_map() {
        // The templates store exactly what `set_ref` of the map would.
        let mut p: Sentiment = testing::init(serde_json::json!({})).unwrap();
        for text in ["I love this stream", "this is awful", "ok then", ""] {
            let s = polarity_scores(text);
            let label = p.label(s.compound);
            let mut expected = Actions::default();
            expected.set_ref(
                "sentiment",
                ValueRef::Map(&[
                    ("compound", ValueRef::Float(s.compound)),
                    ("pos", ValueRef::Float(s.pos)),
                    ("neu", ValueRef::Float(s.neu)),
                    ("neg", ValueRef::Float(s.neg)),
                    ("label", ValueRef::Str(label)),
                ]),
            );
            let mut got = Actions::default();
            p.process(&codec_message(text), &mut got);
            assert_eq!(got, expected, "{text:?}");
        }
    }

    /// A borrowed message for `process`, through the wire format.
    fn codec_message(text: &str) -> Message<'static> {
        let buf = streamtap_plugin_sdk::codec::encode_batch(&[testing::message("c", "u", text)]);
        let buf: &'static [u8] = Box::leak(buf.into_boxed_slice());
        streamtap_plugin_sdk::codec::decode_batch(buf)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn labels_follow_thresholds() {
        let mut p: Sentiment = testing::init(serde_json::json!({})).unwrap();
        let msg = |t: &str| testing::message("c", "u", t);
        assert_eq!(
            label(&sentiment_of(&mut p, msg("I love this stream"))),
            "positive"
        );
        assert_eq!(
            label(&sentiment_of(&mut p, msg("this is awful"))),
            "negative"
        );
        assert_eq!(
            label(&sentiment_of(&mut p, msg("the stream starts at 5"))),
            "neutral"
        );

        // "ok" scores 0.296: positive by default, neutral with a higher bar.
        assert_eq!(polarity_scores("ok").compound, 0.296);
        let mut strict: Sentiment = testing::init(
            serde_json::json!({"positive_threshold": 0.5, "negative_threshold": -0.5}),
        )
        .unwrap();
        assert_eq!(label(&sentiment_of(&mut strict, msg("ok"))), "neutral");
        // Boundaries are inclusive.
        assert_eq!(strict.label(0.5), "positive");
        assert_eq!(strict.label(-0.5), "negative");
        assert_eq!(strict.label(0.4999), "neutral");
    }

    #[test]
    fn removes_emotes_by_character_position() {
        let mut p: Sentiment = testing::init(serde_json::json!({})).unwrap();
        // "DoritosChip" (a Twitch global emote, not in the table) is cut, so the text
        // scores like "great stream" (and not like "great stream DoritosChip", where the
        // extra neutral token lowers `pos`).
        let text = "great 😀 stream DoritosChip";
        // Character positions: the emoji is one character, so the emote is 15..=25.
        let v = sentiment_of(&mut p, with_emotes(text, &[("102242", 15, 25)]));
        assert_eq!(num(&v, "pos"), polarity_scores("great 😀 stream").pos);
        assert_ne!(num(&v, "pos"), polarity_scores(text).pos);
        // Positions that do not fit the text are ignored rather than trusted.
        let v = sentiment_of(
            &mut p,
            with_emotes("great stream", &[("1", 6, 99), ("2", 9, 3)]),
        );
        assert_eq!(num(&v, "pos"), polarity_scores("great stream").pos);
    }

    #[test]
    fn configured_emotes_carry_valence() {
        let mut p: Sentiment = testing::init(serde_json::json!({})).unwrap();
        let v = sentiment_of(&mut p, with_emotes("PogChamp", &[("305954156", 0, 7)]));
        // A lone word of valence 2.0: 2 / sqrt(4 + 15).
        assert_eq!(num(&v, "compound"), 0.4588);
        assert_eq!(label(&v), "positive");
        let v = sentiment_of(&mut p, testing::message("c", "u", "not PogChamp"));
        assert_eq!(label(&v), "negative");
        let v = sentiment_of(&mut p, testing::message("c", "u", "BibleThump"));
        assert_eq!(label(&v), "negative");
        // Kappa is known but neutral; lowercase "pogchamp" is not the emote.
        let v = sentiment_of(&mut p, testing::message("c", "u", "Kappa"));
        assert_eq!(num(&v, "compound"), 0.0);
        let v = sentiment_of(&mut p, testing::message("c", "u", "pogchamp"));
        assert_eq!(num(&v, "compound"), 0.0);

        let mut custom: Sentiment =
            testing::init(serde_json::json!({"emotes": {"myCat": 1.0, "LUL": -1.0}})).unwrap();
        let v = sentiment_of(&mut custom, testing::message("c", "u", "myCat"));
        assert_eq!(num(&v, "compound"), 0.25); // 1 / sqrt(1 + 15)
        let v = sentiment_of(&mut custom, testing::message("c", "u", "LUL"));
        assert_eq!(num(&v, "compound"), -0.25);
        // Merged over the built-in table, not replacing it.
        let v = sentiment_of(&mut custom, testing::message("c", "u", "PogChamp"));
        assert_eq!(num(&v, "compound"), 0.4588);
    }

    #[test]
    fn words_vader_already_scores_are_left_to_vader() {
        let p: Sentiment = testing::init(serde_json::json!({})).unwrap();
        // Kept from being cut, but scored by VADER's own rules...
        for name in [":)", "<3", ":D", "o_O", "EZ"] {
            assert!(p.kept.get(name).is_some(), "{name}");
            assert_eq!(p.scored.get(name), None, "{name}");
        }
        // ...unlike smileys VADER lacks and names it scores differently.
        for name in [">(", "B)", "R)", "D:", "Clueless", "LUL"] {
            assert_eq!(p.scored.get(name), p.kept.get(name), "{name}");
            assert!(p.scored.get(name).is_some(), "{name}");
        }
        // An override that changes a VADER word's valence takes it over.
        let p: Sentiment = testing::init(serde_json::json!({"emotes": {":)": 3.0}})).unwrap();
        assert_eq!(p.scored.get(":)"), Some(3.0));
        // VADER's ALL-CAPS quirk stays: it counts ":D" as a shouted word and emphasises it
        // here, which an emote entry (never counted as shouting) would not.
        let mut p: Sentiment = testing::init(serde_json::json!({})).unwrap();
        assert_eq!(p.analyze("nice :D", []), polarity_scores("nice :D"));
    }

    #[test]
    fn emotes_vader_scores_differently_are_documented() {
        // A built-in name that VADER's lexicon also has (lowercased) with another valence
        // changes what that word scores, so each one is a decision, listed in the docs.
        let differing: Vec<(&str, f64, f64)> = builtin_emotes()
            .iter()
            .filter_map(|e| {
                vader_valence(e.name)
                    .filter(|&v| v != e.valence)
                    .map(|v| (e.name, e.valence, v))
            })
            .collect();
        assert_eq!(
            differing,
            [("Clueless", 0.0, -1.5), ("D:", -1.5, 1.2)],
            "a built-in emote now overrides a VADER word: document it in docs/SENTIMENT.md \
             (\"Emotes that are also VADER words\") and update this list"
        );
        let docs = include_str!("../../../docs/SENTIMENT.md");
        for (name, ..) in differing {
            assert!(
                docs.contains(&format!("`{name}`")),
                "{name} not in the docs"
            );
        }
    }

    #[test]
    fn spam_is_scored_once() {
        let mut p: Sentiment = testing::init(serde_json::json!({})).unwrap();
        let once = sentiment_of(&mut p, testing::message("c", "u", "PogChamp"));
        let spam = sentiment_of(&mut p, testing::message("c", "u", &"PogChamp ".repeat(30)));
        assert_eq!(once, spam);
        let ten = sentiment_of(&mut p, testing::message("c", "u", &"PogChamp ".repeat(10)));
        assert!(num(&ten, "compound") > num(&once, "compound"));
    }

    #[test]
    fn spam_rule_on_every_token_path() {
        let mut p: Sentiment = testing::init(serde_json::json!({})).unwrap();
        // ASCII tokens, non-ASCII tokens and separators, and emoji (replaced before scoring).
        for (token, sep) in [
            ("LUL", " "),
            ("PogChamp!", "\t"),
            ("héé", "\u{a0}"),
            ("😀", " "),
        ] {
            let once = p.analyze(token, []);
            let spam = p.analyze(&[token; 11].join(sep), []);
            let ten = p.analyze(&[token; 10].join(sep), []);
            assert_eq!(spam, once, "{token:?}");
            if once.compound != 0.0 {
                assert_ne!(ten, once, "{token:?}");
            }
            let mixed = format!("{} x", [token; 11].join(sep));
            assert_eq!(p.analyze(&mixed, []), polarity_scores_with(&mut p, &mixed));
        }
    }

    /// The scorer without the spam rule, on the step's own emote table.
    fn polarity_scores_with(p: &mut Sentiment, text: &str) -> Scores {
        let scored = p.scored.clone();
        p.scorer.score(text, &scored)
    }

    #[test]
    fn invalid_config_is_explained() {
        let err = testing::init::<Sentiment>(
            serde_json::json!({"positive_threshold": -0.2, "negative_threshold": 0.3}),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "negative_threshold (0.3) must be less than positive_threshold (-0.2)"
        );
        let err = testing::init::<Sentiment>(
            serde_json::json!({"positive_threshold": 0.1, "negative_threshold": 0.1}),
        )
        .unwrap_err();
        assert!(err.contains("(0.1)"), "{err}");
        let err = testing::init::<Sentiment>(serde_json::json!({"emotes": {"two words": 1.0}}))
            .unwrap_err();
        assert!(err.contains("\"two words\""), "{err}");
        let err = testing::init::<Sentiment>(serde_json::json!({"threshold": 1})).unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn survives_hostile_text() {
        let mut p: Sentiment = testing::init(serde_json::json!({})).unwrap();
        let huge = "but no LUL ".repeat(20_000);
        for text in [
            "",
            "\u{0}\u{1c}",
            "🏳️‍🌈🏳️‍🌈",
            "ǅ İ \u{212a}",
            "!!!???",
            huge.as_str(),
        ] {
            let v = sentiment_of(
                &mut p,
                with_emotes(text, &[("1", 0, 2), ("1", 1, 1), ("x", 7, 3)]),
            );
            assert!(num(&v, "compound").is_finite(), "{text:?}");
        }
    }
}
