//! The built-in emote table (`data/twitch_emotes.tsv`) and its documentation
//! (`docs/SENTIMENT.md`) agree with each other and with what the issue asked for.

mod common;

use common::*;
use sentiment::builtin_emotes;
use serde_json::json;

const DOCS: &str = include_str!("../../../docs/SENTIMENT.md");

fn valence(name: &str) -> Option<f64> {
    builtin_emotes()
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.valence)
}

#[test]
fn the_table_covers_the_common_emotes() {
    let table = builtin_emotes();
    assert!(table.len() >= 150, "only {} entries", table.len());
    assert!(
        table.windows(2).all(|w| w[0].name < w[1].name),
        "not sorted"
    );
    // The emotes the issue names, by the sign their meaning calls for.
    let positive = [
        "PogChamp",
        "Pog",
        "PogU",
        "POGGERS",
        "KEKW",
        "LUL",
        "OMEGALUL",
        "LULW",
        "4Head",
        "FeelsGoodMan",
        "Kreygasm",
        "TriHard",
        "PepeLaugh",
        "widepeepoHappy",
        "catJAM",
        "EZ",
        "Clap",
        "SeemsGood",
        "KappaPride",
        "<3",
        ":)",
        ":D",
        ";)",
        ":P",
        "B)",
        "R)",
        ";P",
    ];
    let negative = [
        "Sadge",
        "PepeHands",
        "BibleThump",
        "monkaS",
        "ResidentSleeper",
        "FeelsBadMan",
        "NotLikeThis",
        "WutFace",
        "peepoSad",
        "CoolStoryBob",
        "DansGame",
        "SwiftRage",
        "BabyRage",
        "FailFish",
        ":(",
        ":/",
        ":|",
        ">(",
        "o_O",
        ":O",
    ];
    let neutral = ["Kappa", "Jebaited", "HeyGuys", "VoHiYo", "o7"];
    for name in positive {
        assert!(
            valence(name).is_some_and(|v| v > 0.0),
            "{name}: {:?}",
            valence(name)
        );
    }
    for name in negative {
        assert!(
            valence(name).is_some_and(|v| v < 0.0),
            "{name}: {:?}",
            valence(name)
        );
    }
    for name in neutral {
        assert_eq!(valence(name), Some(0.0), "{name}");
    }
}

#[test]
fn every_group_and_emote_is_documented() {
    let mut groups: Vec<&str> = builtin_emotes().iter().map(|e| e.group).collect();
    groups.sort_unstable();
    groups.dedup();
    assert!(groups.len() >= 9, "{groups:?}");
    for group in &groups {
        let heading = format!("### `{group}`");
        assert!(
            DOCS.lines().any(|l| l.starts_with(&heading)),
            "docs/SENTIMENT.md has no section {heading:?}"
        );
    }
    // Each emote appears in its group's section, with its valence.
    for e in builtin_emotes() {
        let heading = format!("### `{}`", e.group);
        let section = DOCS
            .split("\n### ")
            .find(|s| format!("### {s}").starts_with(&heading))
            .unwrap_or("");
        let listed = format!("`{}` {:?}", e.name, e.valence);
        assert!(
            section.contains(&listed),
            "docs/SENTIMENT.md section {heading:?} does not list {listed:?}"
        );
    }
}

#[test]
fn the_documented_examples_hold() {
    let table = DOCS
        .split("<!-- examples: checked by plugins/sentiment/tests/lexicon.rs -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- end examples -->").next())
        .unwrap_or_else(|| panic!("examples table not found in docs/SENTIMENT.md"));
    let mut p = step(json!({}));
    let mut checked = 0;
    // Past the header and separator rows.
    for row in table.lines().filter(|l| l.starts_with('|')).skip(2) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let [_, message, marks, compound, label_cell, _] = cells[..] else {
            panic!("bad row {row:?}");
        };
        let code = |s: &str| s.split('`').nth(1).unwrap_or("").to_owned();
        // "`LUL` × 50" repeats the token.
        let text = match message.split_once(" × ") {
            Some((token, n)) => {
                let n: usize = n.parse().unwrap_or_else(|e| panic!("{row}: {e}"));
                vec![code(token); n].join(" ")
            }
            None => code(message),
        };
        let msg = match code(marks).as_str() {
            "" => plain(&text),
            name => mark_all(&text, &[name]),
        };
        let v = one(&mut p, msg);
        let expected: f64 = compound.parse().unwrap_or_else(|e| panic!("{row}: {e}"));
        assert_eq!(num(&v, "compound"), expected, "{row}");
        assert_eq!(label(&v), label_cell, "{row}");
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} examples");
}
