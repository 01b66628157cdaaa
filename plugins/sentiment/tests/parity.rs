//! Parity with the reference: every line of `corpus.txt` scored by vaderSentiment 3.3.2
//! (`expected.jsonl`, made by `scripts/vader/gen_vectors.py`) must be reproduced by
//! [`sentiment::polarity_scores`] to within 1e-3 on all four scores.
//!
//! Timing (informational, never asserted):
//! `cargo test --release -p sentiment --test parity -- --nocapture time_per_message`

use sentiment::{EmoteLexicon, Scorer, Scores, polarity_scores};
use std::time::Instant;

const CORPUS: &str = include_str!("corpus.txt");
const EXPECTED: &str = include_str!("expected.jsonl");
const TOLERANCE: f64 = 1e-3;

struct Vector {
    text: String,
    expected: Scores,
}

/// Splits on "\n" only, like the generator: some inputs contain other line separators.
fn corpus_lines() -> Vec<&'static str> {
    let mut lines: Vec<&str> = CORPUS.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    lines
}

fn vectors() -> Vec<Vector> {
    EXPECTED
        .split('\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(n, line)| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("expected.jsonl line {}: {e}", n + 1));
            let num = |k: &str| {
                v[k].as_f64()
                    .unwrap_or_else(|| panic!("expected.jsonl line {}: no {k}", n + 1))
            };
            Vector {
                text: v["text"].as_str().unwrap_or_default().to_owned(),
                expected: Scores {
                    neg: num("neg"),
                    neu: num("neu"),
                    pos: num("pos"),
                    compound: num("compound"),
                },
            }
        })
        .collect()
}

#[test]
fn vectors_match_the_corpus() {
    let corpus = corpus_lines();
    let vectors = vectors();
    assert!(
        corpus.len() >= 2000,
        "corpus has only {} lines",
        corpus.len()
    );
    assert_eq!(
        corpus.len(),
        vectors.len(),
        "corpus.txt and expected.jsonl disagree: rerun scripts/vader/gen_vectors.py"
    );
    for (n, (line, v)) in corpus.iter().zip(&vectors).enumerate() {
        assert_eq!(*line, v.text, "line {}: regenerate expected.jsonl", n + 1);
    }
}

#[test]
fn scores_match_vader_3_3_2() {
    let vectors = vectors();
    let mut mismatches = Vec::new();
    let mut exact = 0;
    for (n, v) in vectors.iter().enumerate() {
        let got = polarity_scores(&v.text);
        let e = &v.expected;
        let diffs = [
            ("neg", got.neg, e.neg),
            ("neu", got.neu, e.neu),
            ("pos", got.pos, e.pos),
            ("compound", got.compound, e.compound),
        ];
        if got == *e {
            exact += 1;
        }
        // The tiny slack absorbs the binary representation of 0.001 itself.
        if diffs
            .iter()
            .any(|(_, g, x)| (g - x).abs() > TOLERANCE + 1e-12)
        {
            mismatches.push((n + 1, v, got));
        }
    }
    println!(
        "parity: {}/{} within {TOLERANCE} ({exact} bit-identical), {} mismatches",
        vectors.len() - mismatches.len(),
        vectors.len(),
        mismatches.len()
    );
    for (line, v, got) in mismatches.iter().take(10) {
        println!(
            "  line {line}: {:?}\n    expected {:?}\n    got      {:?}",
            v.text, v.expected, got
        );
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} corpus lines differ from vaderSentiment 3.3.2 (first ones printed above)",
        mismatches.len(),
        vectors.len()
    );
}

#[test]
fn reusable_scorer_agrees_with_the_free_function() {
    let mut scorer = Scorer::new();
    let none = EmoteLexicon::empty();
    for v in vectors() {
        assert_eq!(
            scorer.score(&v.text, &none),
            polarity_scores(&v.text),
            "{:?}",
            v.text
        );
    }
}

#[test]
fn time_per_message() {
    // Informational only: meaningful with --release, printed with --nocapture.
    let texts: Vec<String> = vectors().into_iter().map(|v| v.text).collect();
    let rounds = if cfg!(debug_assertions) { 2 } else { 50 };
    let mut sink = 0.0;

    let start = Instant::now();
    for _ in 0..rounds {
        for t in &texts {
            sink += polarity_scores(t).compound;
        }
    }
    let free = start.elapsed();

    let mut scorer = Scorer::new();
    let none = EmoteLexicon::empty();
    let start = Instant::now();
    for _ in 0..rounds {
        for t in &texts {
            sink += scorer.score(t, &none).compound;
        }
    }
    let reused = start.elapsed();

    let n = (rounds * texts.len()) as f64;
    let bytes: usize = texts.iter().map(String::len).sum();
    println!(
        "polarity_scores: {:.0} ns/message, reused Scorer: {:.0} ns/message \
         ({} messages, mean {} bytes, {} build, checksum {sink:.4})",
        free.as_nanos() as f64 / n,
        reused.as_nanos() as f64 / n,
        texts.len(),
        bytes / texts.len().max(1),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
}
