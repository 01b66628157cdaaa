//! The Twitch extension end to end, through the plugin's `process` as the host calls it:
//! emotes marked by the IRC `emotes` tag, emotes matched as tokens, emote-only messages,
//! spam, and `twitch = false` giving plain VADER.

mod common;

use common::*;
use sentiment::{builtin_emotes, polarity_scores};
use serde_json::json;

#[test]
fn a_marked_emote_scores_by_its_valence() {
    let mut p = step(json!({}));
    // PogChamp 2.0, BibleThump -1.5, each a lone lexicon word.
    let v = one(&mut p, marked("PogChamp", &[("PogChamp", 0)]));
    assert_eq!(num(&v, "compound"), compound_of(2.0));
    assert_eq!(label(&v), "positive");
    let v = one(&mut p, marked("BibleThump", &[("BibleThump", 0)]));
    assert_eq!(num(&v, "compound"), compound_of(-1.5));
    assert_eq!(label(&v), "negative");
    // In a sentence it adds its valence to the words': "great" is 3.1.
    let v = one(&mut p, marked("great game PogChamp", &[("PogChamp", 0)]));
    assert_eq!(num(&v, "compound"), compound_of(3.1 + 2.0));
    // VADER's rules apply around it: negation flips it (2.0 × -0.74).
    let v = one(&mut p, marked("not PogChamp", &[("PogChamp", 0)]));
    assert_eq!(num(&v, "compound"), compound_of(2.0 * -0.74));
    // Marked or typed, the same emote scores the same.
    for text in ["PogChamp", "great game PogChamp", "not PogChamp"] {
        assert_eq!(
            one(&mut p, marked(text, &[("PogChamp", 0)])),
            one(&mut p, plain(text)),
            "{text}"
        );
    }
}

#[test]
fn an_unknown_marked_emote_is_cut_and_does_not_dilute() {
    let mut p = step(json!({}));
    // "pixelqWave" (a subscriber emote) and DoritosChip (a global) are not in the table.
    for text in [
        "great stream pixelqWave",
        "pixelqWave great stream",
        "great DoritosChip stream",
    ] {
        let name = if text.contains("Doritos") {
            "DoritosChip"
        } else {
            "pixelqWave"
        };
        let v = one(&mut p, marked(text, &[(name, 0)]));
        let without = text.replace(name, "");
        assert_eq!(scores(&v), polarity_scores(&without), "{text}");
        // Typed without a mark it is an unknown word, which dilutes `pos`.
        let typed = one(&mut p, plain(text));
        assert!(num(&typed, "pos") < num(&v, "pos"), "{text}");
    }
    // A known emote is kept, however many unknown ones are cut around it.
    let text = "pixelqWave PogChamp pixelqWave DoritosChip";
    let v = one(
        &mut p,
        marked(
            text,
            &[
                ("pixelqWave", 0),
                ("PogChamp", 0),
                ("pixelqWave", 1),
                ("DoritosChip", 0),
            ],
        ),
    );
    assert_eq!(num(&v, "compound"), compound_of(2.0));
    assert_eq!(num(&v, "pos"), 1.0);
    // A message of only unknown marked emotes is empty after cutting.
    let v = one(&mut p, marked("pixelqWave", &[("pixelqWave", 0)]));
    assert_eq!(scores(&v), polarity_scores(""));
    assert_eq!(label(&v), "neutral");
}

#[test]
fn emote_only_messages_are_scored_by_their_emotes() {
    let mut p = step(json!({}));
    let cases: [(&str, f64, &str); 6] = [
        ("PogChamp PogChamp", 2.0 + 2.0, "positive"),
        ("KEKW", 1.5, "positive"),
        ("Sadge", -1.5, "negative"),
        ("monkaS PepeHands", -1.5 - 1.5, "negative"),
        ("catJAM catJAM catJAM", 1.5 * 3.0, "positive"),
        ("Kappa", 0.0, "neutral"),
    ];
    for (text, sum, expected) in cases {
        // Third-party emotes arrive as plain tokens; Twitch ones marked. Both must agree.
        let names: Vec<&str> = text.split(' ').collect();
        for msg in [plain(text), mark_all(text, &names)] {
            let v = one(&mut p, msg);
            assert_eq!(num(&v, "compound"), compound_of(sum), "{text}");
            assert_eq!(label(&v), expected, "{text}");
            // Nothing neutral in them, except Kappa, which is present but neutral.
            let neu = if sum == 0.0 { 1.0 } else { 0.0 };
            assert_eq!(num(&v, "neu"), neu, "{text}");
        }
        // Plain VADER sees unknown words (it knows none of these).
        assert_eq!(polarity_scores(text).compound, 0.0, "{text}");
    }
}

#[test]
fn spam_scores_like_one_emote() {
    let mut p = step(json!({}));
    let once = one(&mut p, plain("LUL"));
    assert_eq!(num(&once, "compound"), compound_of(1.5));
    let fifty = vec!["LUL"; 50].join(" ");
    let typed = one(&mut p, plain(&fifty));
    let marked = one(&mut p, mark_all(&fifty, &["LUL"]));
    assert_eq!(typed, once);
    assert_eq!(marked, once);
    // Without the rule the sum (75) would saturate compound.
    assert!(compound_of(75.0) > 0.99);
    // Ten repeats are not spam and add up; a second token makes it ordinary text.
    let ten = one(&mut p, plain(&["LUL"; 10].join(" ")));
    assert_eq!(num(&ten, "compound"), compound_of(15.0));
    let mixed = one(&mut p, plain(&format!("{fifty} lol")));
    assert!(num(&mixed, "compound") > 0.99);
    // Spam of a cut emote leaves nothing.
    let cut = vec!["pixelqWave"; 20].join(" ");
    let v = one(&mut p, mark_all(&cut, &["pixelqWave"]));
    assert_eq!(scores(&v), polarity_scores(""));
}

/// A corpus line with emotes added as chat would carry them: a global emote marked by
/// position, a third-party emote as a plain token, and an unknown marked emote.
fn with_emotes(line: &str) -> streamtap_plugin_sdk::codec::ChatMessage {
    let text = format!("PogChamp {line} KEKW pixelqWave");
    let mut m = marked(&text, &[("PogChamp", 0)]);
    let chars = text.chars().count() as u32;
    m.emotes.push(streamtap_plugin_sdk::codec::Emote {
        id: "300000001".into(),
        start: chars - 10,
        end: chars - 1,
    });
    m
}

#[test]
fn extension_off_is_plain_vader_over_the_corpus() {
    let lines = corpus_lines();
    assert!(lines.len() >= 2000, "corpus has {} lines", lines.len());
    let mut msgs: Vec<_> = lines.iter().map(|l| plain(l)).collect();
    msgs.extend(lines.iter().map(|l| with_emotes(l)));
    msgs.push(plain(&vec!["LUL"; 50].join(" ")));
    msgs.push(mark_all(&vec!["Sadge"; 30].join(" "), &["Sadge"]));

    let mut off = step(json!({"twitch": false}));
    let mut on = step(json!({}));
    let off_scores = run(&mut off, &msgs);
    let on_scores = run(&mut on, &msgs);
    let mut changed_by_extension = 0;
    for ((m, off), on) in msgs.iter().zip(&off_scores).zip(&on_scores) {
        assert_eq!(scores(off), polarity_scores(&m.text), "{:?}", m.text);
        changed_by_extension += usize::from(on != off);
    }
    // The comparison means something only if the extension does change these messages:
    // every line with emotes gets PogChamp's valence and loses pixelqWave.
    assert!(
        changed_by_extension >= lines.len(),
        "the extension changed only {changed_by_extension} messages"
    );
}

/// Whether `line` contains a built-in emote that the extension scores itself rather than
/// leaving it to VADER: any named emote, or a smiley VADER does not know (`B)`, `>(`...),
/// as a token or with the ASCII punctuation around it removed.
fn has_named_emote(line: &str) -> bool {
    let named: Vec<&str> = builtin_emotes()
        .iter()
        .filter(|e| e.group != "smiley" || polarity_scores(e.name).compound == 0.0)
        .map(|e| e.name)
        .collect();
    line.split_whitespace().any(|tok| {
        let trimmed = tok.trim_matches(|c: char| c.is_ascii_punctuation());
        named.contains(&tok) || named.contains(&trimmed)
    })
}

fn is_spam(line: &str) -> bool {
    let mut toks = line.split_whitespace();
    let first = toks.next();
    first.is_some() && toks.clone().count() >= 10 && toks.all(|t| Some(t) == first)
}

#[test]
fn extension_on_leaves_text_without_emotes_of_its_own_alone() {
    // With no emote marked and none of its own typed, the extension has nothing to do,
    // smileys VADER knows included (the table only keeps them from being cut).
    let mut on = step(json!({}));
    let lines: Vec<&str> = corpus_lines()
        .into_iter()
        .filter(|l| !has_named_emote(l) && !is_spam(l))
        .collect();
    let smiley_lines = lines
        .iter()
        .filter(|l| l.contains(":)") || l.contains("<3") || l.contains(":D"))
        .count();
    assert!(lines.len() >= 2000, "only {} lines left", lines.len());
    assert!(smiley_lines >= 50, "only {smiley_lines} lines with smileys");
    let msgs: Vec<_> = lines.iter().map(|l| plain(l)).collect();
    for (line, v) in lines.iter().zip(run(&mut on, &msgs)) {
        assert_eq!(scores(&v), polarity_scores(line), "{line:?}");
    }
}

#[test]
fn marked_smileys_keep_their_valence() {
    let mut p = step(json!({}));
    let mut vader_knows = 0;
    for e in builtin_emotes().iter().filter(|e| e.group == "smiley") {
        let text = format!("nice stream {}", e.name);
        let v = one(&mut p, marked(&text, &[(e.name, 0)]));
        if polarity_scores(e.name).compound != 0.0 {
            // VADER knows it: marking it (which cuts unknown emotes) changes nothing.
            vader_knows += 1;
            assert_eq!(scores(&v), polarity_scores(&text), "{}", e.name);
        } else {
            // VADER does not: it scores with the table's valence ("nice" is 1.8).
            assert_eq!(
                num(&v, "compound"),
                compound_of(1.8 + e.valence),
                "{}",
                e.name
            );
        }
    }
    assert!(vader_knows >= 30, "VADER knows only {vader_knows} smileys");
    // What the entries prevent: with `:)` removed, a marked `:)` is cut.
    let mut without = step(json!({"remove_emotes": [":)"]}));
    let v = one(&mut without, marked("nice :)", &[(":)", 0)]));
    assert_eq!(scores(&v), polarity_scores("nice"));
    assert_ne!(scores(&v), polarity_scores("nice :)"));
}

#[test]
fn kappa_is_present_but_neutral() {
    let mut p = step(json!({}));
    let kappa = one(&mut p, marked("great stream Kappa", &[("Kappa", 0)]));
    let cut = one(&mut p, marked("great stream Keepo2", &[("Keepo2", 0)]));
    // Same valence sum, but Kappa stays in the message and takes a neutral share.
    assert_eq!(num(&kappa, "compound"), num(&cut, "compound"));
    assert!(num(&kappa, "neu") > num(&cut, "neu"));
    assert_eq!(
        builtin_emotes()
            .iter()
            .find(|e| e.name == "Kappa")
            .map(|e| e.valence),
        Some(0.0)
    );
}
