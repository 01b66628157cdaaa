//! The `with` table as users write it: TOML in a pipeline file, converted to JSON the way
//! the host converts it, then `init`.

mod common;

use common::*;
use sentiment::{Sentiment, builtin_emotes, polarity_scores};
use streamtap_plugin_sdk::Plugin;

#[test]
fn a_pipeline_file_can_add_override_and_remove_emotes() {
    let pipeline = r#"
[[steps]]
name = "sentiment"
uses = "../target/wasm32-wasip2/release/sentiment.wasm"

[steps.with]
emotes = { MyEmote = 2.5, Kappa = -1.0, ":)" = 3.0 }
remove_emotes = ["LUL"]
"#;
    let mut p: Sentiment = streamtap_plugin_sdk::testing::init(with_from_pipeline(pipeline))
        .unwrap_or_else(|e| panic!("{e}"));

    // Added, typed and marked.
    let v = one(&mut p, plain("MyEmote"));
    assert_eq!(num(&v, "compound"), compound_of(2.5));
    let v = one(&mut p, marked("chat MyEmote", &[("MyEmote", 0)]));
    assert_eq!(num(&v, "compound"), compound_of(2.5));
    // Overridden: Kappa was 0.0, `:)` VADER's 2.0.
    let v = one(&mut p, plain("Kappa"));
    assert_eq!(num(&v, "compound"), compound_of(-1.0));
    assert_eq!(label(&v), "negative");
    let v = one(&mut p, marked(":)", &[(":)", 0)]));
    assert_eq!(num(&v, "compound"), compound_of(3.0));
    // Removed: a neutral word when typed, cut when marked.
    let v = one(&mut p, plain("LUL"));
    assert_eq!(num(&v, "compound"), 0.0);
    let v = one(&mut p, marked("great LUL", &[("LUL", 0)]));
    assert_eq!(scores(&v), polarity_scores("great"));
    // Everything else is still the built-in table: merged, not replaced.
    let v = one(&mut p, plain("PogChamp"));
    assert_eq!(num(&v, "compound"), compound_of(2.0));
    let v = one(&mut p, plain("LULW"));
    assert_eq!(num(&v, "compound"), compound_of(1.5));
}

#[test]
fn builtin_emotes_false_keeps_only_your_own() {
    let mut p = init_toml("{ builtin_emotes = false, emotes = { MyEmote = 2.5 } }")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        num(&one(&mut p, plain("MyEmote")), "compound"),
        compound_of(2.5)
    );
    assert_eq!(num(&one(&mut p, plain("PogChamp")), "compound"), 0.0);
    // Marked built-ins are now unknown emotes, so they are cut.
    let v = one(&mut p, marked("great PogChamp", &[("PogChamp", 0)]));
    assert_eq!(scores(&v), polarity_scores("great"));
}

#[test]
fn defaults_are_the_built_in_table_and_vaders_thresholds() {
    let mut p = init_toml("{}").unwrap_or_else(|e| panic!("{e}"));
    for e in builtin_emotes().iter().filter(|e| e.group != "smiley") {
        let v = one(&mut p, plain(e.name));
        assert_eq!(num(&v, "compound"), compound_of(e.valence), "{}", e.name);
    }
    assert_eq!(p.label(0.05), "positive");
    assert_eq!(p.label(0.0499), "neutral");
    assert_eq!(p.label(-0.05), "negative");
}

#[test]
fn twitch_false_from_a_pipeline_file_is_plain_vader() {
    let mut p = init_toml("{ twitch = false }").unwrap_or_else(|e| panic!("{e}"));
    let text = vec!["LUL"; 20].join(" ") + " PogChamp Sadge :)";
    let v = one(&mut p, mark_all(&text, &["PogChamp", ":)"]));
    assert_eq!(scores(&v), polarity_scores(&text));
    assert_eq!(num(&v, "compound"), polarity_scores(":)").compound);
}

/// `init_toml(with)`'s error, which must exist.
fn error(with: &str) -> String {
    match init_toml(with) {
        Ok(_) => panic!("{with} was accepted"),
        Err(e) => e,
    }
}

#[test]
fn invalid_configs_are_explained() {
    // (with table, text the error must contain): each quotes the bad name or value.
    let cases = [
        (
            "{ emotes = { Kappa = nan } }",
            "emote \"Kappa\" has valence null; it must be a number from -4 to 4 \
             (TOML nan and inf arrive as null)",
        ),
        (
            "{ emotes = { Kappa = -inf } }",
            "emote \"Kappa\" has valence null",
        ),
        (
            "{ emotes = { \"two words\" = 1.0 } }",
            "emote name \"two words\" must be a single token (not empty, no whitespace)",
        ),
        (
            "{ emotes = { \"Tab\tName\" = 1.0 } }",
            "emote name \"Tab\\tName\" must be a single token",
        ),
        (
            "{ emotes = { \"\" = 1.0 } }",
            "emote name \"\" must be a single token",
        ),
        (
            "{ emotes = { Big = 5.0 } }",
            "emote \"Big\" has valence 5; it must be a number from -4 to 4 (VADER's word scale)",
        ),
        (
            "{ emotes = { Low = -4.5 } }",
            "emote \"Low\" has valence -4.5",
        ),
        (
            "{ emotes = { Word = \"high\" } }",
            "invalid type: string \"high\", expected f64",
        ),
        ("{ emote = { Kappa = 1.0 } }", "unknown field `emote`"),
        (
            "{ twitch = \"no\" }",
            "invalid type: string \"no\", expected a boolean",
        ),
        (
            "{ positive_threshold = -0.2, negative_threshold = 0.3 }",
            "negative_threshold (0.3) must be less than positive_threshold (-0.2)",
        ),
        (
            "{ positive_threshold = 0.1, negative_threshold = 0.1 }",
            "negative_threshold (0.1) must be less than positive_threshold (0.1)",
        ),
        (
            "{ positive_threshold = nan }",
            "positive_threshold is null; it must be a finite number",
        ),
        (
            "{ remove_emotes = [\"lul\"] }",
            "remove_emotes: \"lul\" is not a built-in emote \
             (names are case-sensitive: did you mean \"LUL\"?)",
        ),
        (
            "{ remove_emotes = [\"LUL\", \"NotAnEmote\"] }",
            "remove_emotes: \"NotAnEmote\" is not a built-in emote \
             (see data/twitch_emotes.tsv for the list)",
        ),
        (
            "{ remove_emotes = [\"LUL\"], emotes = { LUL = 1.0 } }",
            "emote \"LUL\" is in both emotes and remove_emotes; keep it in one of them",
        ),
        (
            "{ builtin_emotes = false, remove_emotes = [\"LUL\"] }",
            "remove_emotes lists \"LUL\", but builtin_emotes = false already leaves every \
             built-in emote out",
        ),
        // Checked with the extension off too, so turning it on later cannot fail.
        (
            "{ twitch = false, emotes = { \"a b\" = 1.0 } }",
            "emote name \"a b\" must be a single token",
        ),
    ];
    for (with, expected) in cases {
        let err = error(with);
        assert!(
            err.contains(expected),
            "{with}\n  got:      {err}\n  expected: {expected}"
        );
        assert!(
            err.starts_with(|c: char| c.is_lowercase()),
            "{with}: not a lowercase message: {err}"
        );
    }
}

#[test]
fn nan_built_in_rust_is_explained_too() {
    // JSON cannot carry NaN, but a Config built in Rust (as the host's tests do) can.
    let config = sentiment::Config {
        emotes: [("Kappa".to_owned(), f64::NAN)].into(),
        ..Default::default()
    };
    let err = Sentiment::init(config).err().unwrap_or_default();
    assert_eq!(
        err,
        "emote \"Kappa\" has valence NaN; it must be a number from -4 to 4 (VADER's word scale)"
    );
    let config = sentiment::Config {
        positive_threshold: f64::INFINITY,
        ..Default::default()
    };
    let err = Sentiment::init(config).err().unwrap_or_default();
    assert_eq!(
        err,
        "thresholds must be finite numbers (negative_threshold = -0.05, positive_threshold = inf)"
    );
}

#[test]
fn extreme_but_valid_values_are_accepted() {
    let mut p = init_toml("{ emotes = { Top = 4.0, Bottom = -4.0, \"(puke)\" = -2.0 } }")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        num(&one(&mut p, plain("Top")), "compound"),
        compound_of(4.0)
    );
    assert_eq!(
        num(&one(&mut p, plain("Bottom")), "compound"),
        compound_of(-4.0)
    );
    // A name with punctuation at its edges matches as written.
    assert_eq!(
        num(&one(&mut p, plain("(puke)")), "compound"),
        compound_of(-2.0)
    );
}
