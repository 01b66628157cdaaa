//! # sentiment: VADER scores for chat messages
//!
//! A streamtap step that sets a `sentiment` field on every message. For
//! "I love this stream PogChamp" (with the default `emotes` table):
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
//! natively and compare with the same code compiled to WASM.
//!
//! ## Twitch additions (plugin only, not in [`polarity_scores`])
//!
//! 1. **Emotes.** Twitch marks emotes by character position. Those spans are cut from the
//!    text before scoring (an emote name like `Kreygasm` would otherwise count as a neutral
//!    word and dilute `pos`/`neg`), except emotes listed in the `emotes` table, which stay
//!    and score like lexicon words with the configured valence. A listed name also scores
//!    when it appears as a token without emote metadata. Matching is case-sensitive and
//!    ALL-CAPS emphasis does not apply to emotes (see [`EmoteLexicon`]).
//!
//!    Twitch also marks its smiley emotes (`:)`, `:(`, `<3`, `:D`, `;)`, ...) as emotes, so
//!    they are cut too and lose the valence VADER's lexicon gives them. To keep it, list
//!    them in `emotes` (VADER's values: `":)" = 2.0`, `":(" = -1.9`, `"<3" = 1.9`,
//!    `":D" = 2.3`, `";)" = 0.9`).
//! 2. **Spam.** A message that is one token repeated more than ten times (after emotes are
//!    cut; tokens compared exactly) is scored as that single token, so copy-paste floods
//!    do not saturate `compound` at ±1.
//!
//! ## Configuration (`with` table)
//!
//! | key                  | default | meaning                                              |
//! |----------------------|---------|------------------------------------------------------|
//! | `positive_threshold` | `0.05`  | `label = "positive"` when `compound >=` this          |
//! | `negative_threshold` | `-0.05` | `label = "negative"` when `compound <=` this          |
//! | `emotes`             | below   | emote name → valence (VADER words range -4..+4)       |
//!
//! The default `emotes` table is deliberately small, covering global emotes whose meaning
//! is stable: `PogChamp = 2.0`, `LUL = 1.5`, `Kappa = 0.0` (sarcasm: counted as present but
//! neutral), `BibleThump = -1.5`, `NotLikeThis = -1.5`, `ResidentSleeper = -1.0`. Setting
//! `emotes` replaces the whole table; with `emotes = {}` every marked emote is cut and none
//! scores.

mod hash;
mod pystr;
mod tables;
mod twitch;
pub mod vader;

pub use vader::{EmoteLexicon, Scorer, Scores, polarity_scores};

use std::collections::BTreeMap;
use streamtap_plugin_sdk::{Actions, Message, Plugin, Value, export};

/// The step's `with` table.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `compound` at or above this is labelled "positive".
    pub positive_threshold: f64,
    /// `compound` at or below this is labelled "negative".
    pub negative_threshold: f64,
    /// Emote name → valence, scored like a lexicon word when present.
    pub emotes: BTreeMap<String, f64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            // VADER's own recommended cut-offs.
            positive_threshold: 0.05,
            negative_threshold: -0.05,
            emotes: [
                ("PogChamp", 2.0),
                ("Kappa", 0.0),
                ("LUL", 1.5),
                ("BibleThump", -1.5),
                ("NotLikeThis", -1.5),
                ("ResidentSleeper", -1.0),
            ]
            .into_iter()
            .map(|(name, valence)| (name.to_owned(), valence))
            .collect(),
        }
    }
}

/// The sentiment step.
#[derive(Debug)]
pub struct Sentiment {
    positive_threshold: f64,
    negative_threshold: f64,
    emotes: EmoteLexicon,
    scorer: Scorer,
    /// Reused per message: the text with emotes cut, and the emote ranges.
    cut: String,
    ranges: Vec<(usize, usize)>,
}

impl Sentiment {
    /// Scores one message: `text` plus Twitch's emote positions (inclusive character
    /// ranges), with the emote and spam handling described in the crate docs.
    pub fn analyze(&mut self, text: &str, emotes: impl IntoIterator<Item = (u32, u32)>) -> Scores {
        self.ranges.clear();
        self.ranges
            .extend(emotes.into_iter().map(|(s, e)| (s as usize, e as usize)));
        let table = &self.emotes;
        let text = if twitch::cut_emotes(
            text,
            &mut self.ranges,
            |name| table.get(name).is_some(),
            &mut self.cut,
        ) {
            self.cut.as_str()
        } else {
            text
        };
        let text = twitch::spam_token(text).unwrap_or(text);
        let scores = self.scorer.score(text, &self.emotes);
        if self.cut.capacity() > 64 * 1024 {
            self.cut = String::new(); // see Scorer: do not pin a giant message's buffer
        }
        scores
    }

    /// The label for a compound score under this step's thresholds.
    pub fn label(&self, compound: f64) -> &'static str {
        if compound >= self.positive_threshold {
            "positive"
        } else if compound <= self.negative_threshold {
            "negative"
        } else {
            "neutral"
        }
    }
}

impl Plugin for Sentiment {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        let Config {
            positive_threshold: pos,
            negative_threshold: neg,
            emotes,
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
        for (name, valence) in &emotes {
            if name.is_empty() || name.chars().any(pystr::is_space) {
                return Err(format!(
                    "emote name {name:?} must be a single non-empty token (no whitespace)"
                ));
            }
            if !valence.is_finite() {
                return Err(format!(
                    "emote {name:?} has valence {valence}; it must be a finite number"
                ));
            }
        }
        Ok(Sentiment {
            positive_threshold: pos,
            negative_threshold: neg,
            emotes: EmoteLexicon::new(emotes),
            scorer: Scorer::new(),
            cut: String::new(),
            ranges: Vec::new(),
        })
    }

    fn process(&mut self, msg: &Message<'_>, out: &mut Actions) {
        let scores = self.analyze(msg.text(), msg.emotes().map(|(_, s, e)| (s, e)));
        out.set(
            "sentiment",
            Value::map([
                ("compound", Value::from(scores.compound)),
                ("pos", Value::from(scores.pos)),
                ("neu", Value::from(scores.neu)),
                ("neg", Value::from(scores.neg)),
                ("label", Value::from(self.label(scores.compound))),
            ]),
        );
    }
}

export!(Sentiment);

#[cfg(test)]
mod tests {
    use super::*;
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
        let mut p: Sentiment = testing::init(serde_json::json!({"emotes": {}})).unwrap();
        // "Kreygasm" is cut, so the text scores like "great stream" (and not like
        // "great stream Kreygasm", where the extra neutral token lowers `pos`).
        let text = "great 😀 stream Kreygasm";
        // Character positions: the emoji is one character, so Kreygasm is 15..=22.
        let v = sentiment_of(&mut p, with_emotes(text, &[("41", 15, 22)]));
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
            testing::init(serde_json::json!({"emotes": {"catJAM": 1.0, ":)": 2.0}})).unwrap();
        let v = sentiment_of(&mut custom, with_emotes(":) catJAM", &[("1", 0, 1)]));
        assert!(num(&v, "compound") > 0.5);
        // The defaults are replaced, not merged.
        let v = sentiment_of(&mut custom, testing::message("c", "u", "PogChamp"));
        assert_eq!(num(&v, "compound"), 0.0);
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
