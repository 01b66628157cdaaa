//! Helpers shared by the integration tests: build the step from a `with` table (JSON or a
//! pipeline file's TOML), and run messages through it the way the host does.

#![allow(dead_code)] // each test file uses a different subset

use sentiment::Sentiment;
use streamtap_plugin_sdk::codec::{Action, ChatMessage, Emote};
use streamtap_plugin_sdk::{Value, testing};

pub const CORPUS: &str = include_str!("../corpus.txt");

/// The parity corpus, split on "\n" only, like the vector generator.
pub fn corpus_lines() -> Vec<&'static str> {
    let mut lines: Vec<&str> = CORPUS.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    lines
}

/// The step, initialised from a JSON `with` table.
pub fn step(with: serde_json::Value) -> Sentiment {
    testing::init(with).unwrap_or_else(|e| panic!("init failed: {e}"))
}

/// The `with` table of the first `[[steps]]` in a pipeline file, converted to JSON the way
/// the host converts it (so TOML's `nan` and `inf` become `null`).
pub fn with_from_pipeline(pipeline: &str) -> serde_json::Value {
    let doc: toml::Table = toml::from_str(pipeline).unwrap_or_else(|e| panic!("bad TOML: {e}"));
    let with = doc
        .get("steps")
        .and_then(|s| s.get(0))
        .and_then(|s| s.get("with"))
        .cloned()
        .unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
    serde_json::to_value(with).unwrap_or_else(|e| panic!("with → JSON: {e}"))
}

/// `init` with the `with` table written as a pipeline step's inline table, e.g.
/// `{ remove_emotes = ["LUL"] }`.
pub fn init_toml(with: &str) -> Result<Sentiment, String> {
    let pipeline =
        format!("[[steps]]\nname = \"sentiment\"\nuses = \"sentiment.wasm\"\nwith = {with}\n");
    testing::init(with_from_pipeline(&pipeline))
}

/// A chat message with emotes marked as the IRC `emotes` tag would: for each `(name, n)`,
/// the `n`-th occurrence (from 0) of the whitespace-separated token `name` in `text`.
pub fn marked(text: &str, emotes: &[(&str, usize)]) -> ChatMessage {
    let mut m = testing::message("chan", "user", text);
    for &(name, nth) in emotes {
        let start = token_starts(text, name)
            .nth(nth)
            .unwrap_or_else(|| panic!("{name:?} #{nth} not in {text:?}"));
        m.emotes.push(Emote {
            id: "1".into(),
            start,
            end: start + name.chars().count() as u32 - 1,
        });
    }
    m
}

/// Marks every whitespace-separated occurrence of every name in `names`.
pub fn mark_all(text: &str, names: &[&str]) -> ChatMessage {
    let mut m = testing::message("chan", "user", text);
    for name in names {
        for start in token_starts(text, name) {
            m.emotes.push(Emote {
                id: "1".into(),
                start,
                end: start + name.chars().count() as u32 - 1,
            });
        }
    }
    m
}

/// Character positions where `name` occurs as a whole space-separated token.
fn token_starts<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = u32> + 'a {
    let mut chars = 0u32;
    text.split(' ').filter_map(move |tok| {
        let start = chars;
        chars += tok.chars().count() as u32 + 1;
        (tok == name).then_some(start)
    })
}

/// The `sentiment` field the step sets on each message, through the wire format.
pub fn run(p: &mut Sentiment, msgs: &[ChatMessage]) -> Vec<Value> {
    testing::run(p, msgs)
        .into_iter()
        .map(|actions| match actions.as_slice() {
            [Action::Set { name, value }] if name == "sentiment" => value.clone(),
            other => panic!("expected one `set sentiment`, got {other:?}"),
        })
        .collect()
}

pub fn one(p: &mut Sentiment, msg: ChatMessage) -> Value {
    run(p, &[msg]).remove(0)
}

pub fn plain(text: &str) -> ChatMessage {
    testing::message("chan", "user", text)
}

pub fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

pub fn label(v: &Value) -> &str {
    v.get("label").and_then(Value::as_str).unwrap_or("")
}

/// The four scores of a `sentiment` value, for comparing with `polarity_scores`.
pub fn scores(v: &Value) -> sentiment::Scores {
    sentiment::Scores {
        neg: num(v, "neg"),
        neu: num(v, "neu"),
        pos: num(v, "pos"),
        compound: num(v, "compound"),
    }
}

/// VADER's compound for a message that sums to `valence` with no punctuation emphasis:
/// `valence / sqrt(valence² + 15)`, rounded to 4 places as VADER reports it.
pub fn compound_of(valence: f64) -> f64 {
    (valence / (valence * valence + 15.0).sqrt() * 1e4).round() / 1e4
}
