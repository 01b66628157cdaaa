//! `streamtap eval sentiment` end to end: the built binary and the real sentiment plugin on
//! a small fixture whose predictions are known, and bad labels files.

mod common;

use std::path::{Path, PathBuf};

use common::{stdout_ok, streamtap};

/// A workspace plugin built for wasm32-wasip2 next to the binary (its default plugin path).
fn plugin(package: &str) -> PathBuf {
    common::plugin(package, &[])
}

/// Fixture rows: (gold label, text, what the plugin predicts with its defaults). Texts are
/// chosen so VADER's label is unambiguous (compound far from the ±0.05 thresholds); some
/// gold labels disagree with it on purpose, so the matrix has off-diagonal cells.
const FIXTURE: &[(i8, &str, &str)] = &[
    (1, "I love this stream, it is great", "positive"),
    (1, "awesome play, so good", "positive"),
    (1, "great stream", "positive"),
    (1, "what game is this", "neutral"),
    (-1, "this is terrible and I hate it", "negative"),
    (-1, "the stream starts at 8", "neutral"),
    (0, "what time is it", "neutral"),
    (0, "worst stream ever, so boring", "negative"),
    (0, "\"love it\" he said", "positive"),
];

fn csv_field(s: &str) -> String {
    if s.contains([',', '"']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The fixture as CSV with an ignored extra column before the two that count.
fn fixture_csv() -> String {
    let mut s = String::from("id,label,text\n");
    for (i, (label, text, _)) in FIXTURE.iter().enumerate() {
        s.push_str(&format!("r{i},{label},{}\n", csv_field(text)));
    }
    s
}

/// Checks the fixture's assumption (the plugin's label for each text) with `plugin test`,
/// so a change to the plugin fails here, by name, rather than as a wrong number below.
fn assert_fixture_predictions(wasm: &Path) {
    let input: Vec<String> = FIXTURE
        .iter()
        .map(|(_, text, _)| serde_json::json!({ "text": text }).to_string())
        .collect();
    let out = stdout_ok(&common::plugin_test(wasm, &[], &input));
    for ((_, text, want), line) in FIXTURE.iter().zip(out.lines()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let label = v["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["set"] == "sentiment")
            .map(|a| a["value"]["label"].clone());
        assert_eq!(
            label.as_ref().and_then(|l| l.as_str()),
            Some(*want),
            "fixture assumes the plugin labels {text:?} {want}: {line}"
        );
    }
}

#[test]
fn sentiment_report_counts_match_the_fixture() {
    let wasm = plugin("sentiment");
    assert_fixture_predictions(&wasm);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fixture.csv"), fixture_csv()).unwrap();
    let wasm_arg = wasm.display().to_string();
    let out = stdout_ok(&streamtap(
        dir.path(),
        &[
            "eval",
            "sentiment",
            "--labels",
            "fixture.csv",
            "--plugin",
            &wasm_arg,
        ],
    ));
    // Gold × predicted: -1 → [1 1 0], 0 → [1 1 1], 1 → [0 1 3]; 5 of 9 right.
    // Precision/recall: -1 1/2, 1/2; 0 1/3, 1/3; 1 3/4, 3/4. Macro-F1 (1/2+1/3+3/4)/3.
    let expected = "\
accuracy  0.556 (5/9)
macro-F1  0.528

class        precision  recall     F1  support
-1 negative      0.500   0.500  0.500        2
 0 neutral       0.333   0.333  0.333        3
 1 positive      0.750   0.750  0.750        4

confusion matrix (rows = gold, columns = predicted)
gold \\ pred      -1      0      1
-1                1      1      0
 0                1      1      1
 1                0      1      3
";
    assert!(out.ends_with(expected), "report:\n{out}");
    assert!(out.contains("labels    fixture.csv: 9 rows"), "{out}");
    assert!(out.contains(&format!("from {wasm_arg}")), "{out}");

    // Without --plugin: the component built next to the binary, the same one here.
    let default = stdout_ok(&streamtap(
        dir.path(),
        &["eval", "sentiment", "--labels", "fixture.csv"],
    ));
    assert!(default.ends_with(expected), "report:\n{default}");

    // --with reaches the plugin's init: thresholds no text reaches make all neutral.
    let all_neutral = stdout_ok(&streamtap(
        dir.path(),
        &[
            "eval",
            "sentiment",
            "--labels",
            "fixture.csv",
            "--with",
            "positive_threshold=0.999",
            "--with",
            "negative_threshold=-0.999",
        ],
    ));
    assert!(
        all_neutral.contains("accuracy  0.333 (3/9)")
            && all_neutral.contains("-1                0      2      0"),
        "{all_neutral}"
    );
}

#[test]
fn the_checked_in_labels_file_evaluates() {
    plugin("sentiment");
    let labels = common::workspace_root().join("data/sentiment-labels.csv");
    let out = stdout_ok(&streamtap(
        &common::workspace_root(),
        &[
            "eval",
            "sentiment",
            "--labels",
            &labels.display().to_string(),
        ],
    ));
    let rows: usize = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("labels    ")?
                .split(": ")
                .nth(1)?
                .strip_suffix(" rows")
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no row count in:\n{out}"));
    assert!(rows >= 300, "{out}");
    // Every row lands in the matrix (its last three lines): nothing skipped.
    let counted: usize = out
        .lines()
        .rev()
        .take(3)
        .flat_map(|l| l.split_whitespace().skip(1))
        .map(|n| n.parse::<usize>().unwrap())
        .sum();
    assert_eq!(counted, rows, "{out}");
}

#[test]
fn bad_labels_files_fail_naming_file_line_and_value() {
    let wasm = plugin("sentiment");
    let wasm_arg = wasm.display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "label-2.csv",
            b"label,text\n1,nice\n2,hmm\n",
            "label-2.csv:3: label \"2\" is not -1, 0 or 1",
        ),
        (
            "label-word.csv",
            b"label,text\npositive,nice\n",
            "label-word.csv:2: label \"positive\" is not -1, 0 or 1",
        ),
        (
            "label-empty.csv",
            b"label,text\n,nice\n",
            "label-empty.csv:2: label \"\" is not -1, 0 or 1",
        ),
        (
            "no-text.csv",
            b"label,text\n1,nice\n0\n",
            "no-text.csv:3: missing text column: the row has 1 field(s), text is column 2",
        ),
        (
            "empty-text.csv",
            b"label,text\n1,nice\n-1,\n",
            "empty-text.csv:3: text is empty",
        ),
        (
            "no-header.csv",
            b"1,nice\n0,ok\n",
            "no-header.csv:1: header has no \"label\" column (found [\"1\", \"nice\"])",
        ),
        (
            "text-twice.csv",
            b"label,text,Text\n1,a,b\n",
            "text-twice.csv:1: header names the \"text\" column twice",
        ),
        (
            "unclosed.csv",
            b"label,text\n1,\"nice\n0,ok\n",
            "unclosed.csv:2: text contains a line break",
        ),
        (
            "latin1.csv",
            b"label,text\n1,caf\xe9\n",
            "latin1.csv:2: not valid CSV: field 2 is not valid UTF-8",
        ),
        (
            "header-only.csv",
            b"label,text\n",
            "header-only.csv: no labelled rows after the header",
        ),
        ("empty.csv", b"", "empty.csv: empty file"),
        (
            "blank-lines.csv",
            b"\nlabel,text\n\n1,nice\r\n\r\n\n7,meh\n",
            "blank-lines.csv:7: label \"7\" is not -1, 0 or 1",
        ),
    ];
    for (name, content, want) in cases {
        std::fs::write(dir.path().join(name), content).unwrap();
        let out = streamtap(
            dir.path(),
            &["eval", "sentiment", "--labels", name, "--plugin", &wasm_arg],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: expected failure");
        assert!(
            stderr.contains(want),
            "{name}: want {want:?}\nstderr:\n{stderr}"
        );
        assert!(out.stdout.is_empty(), "{name}: printed a report");
    }

    let out = streamtap(
        dir.path(),
        &[
            "eval",
            "sentiment",
            "--labels",
            "missing.csv",
            "--plugin",
            &wasm_arg,
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read missing.csv"));
}

#[test]
fn a_plugin_that_sets_no_sentiment_label_is_an_error() {
    let noop = plugin("noop").display().to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("l.csv"), "label,text\n1,nice\n").unwrap();
    let out = streamtap(
        dir.path(),
        &["eval", "sentiment", "--labels", "l.csv", "--plugin", &noop],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("l.csv:2: the plugin set no \"sentiment\" field"),
        "{stderr}"
    );
}
