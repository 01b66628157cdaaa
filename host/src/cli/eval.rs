//! `streamtap eval sentiment`: runs the sentiment plugin over a hand-labelled CSV and
//! prints accuracy, macro-F1, per-class precision/recall/F1 and a confusion matrix.
//!
//! The plugin runs through the same runtime, wire format and instance API as a pipeline
//! step (via [`super::StandalonePlugin`], shared with `plugin test`), in batches of the
//! pipeline's default size, so the scores are those a pipeline would store.

use super::StandalonePlugin;
use anyhow::Context;
use clap::Subcommand;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use streamtap_plugin_sdk::ChatMessage;
use streamtap_plugin_sdk::codec::Action;

/// Messages per plugin call: the pipeline's default `batch_size`.
const BATCH: usize = 256;

/// Per-call deadline. A batch of sentiment scoring takes milliseconds; this only stops a
/// plugin that hangs, and eval has no latency to protect.
const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Score the sentiment plugin against a labelled CSV and print accuracy, macro-F1,
    /// per-class precision/recall/F1 and a confusion matrix.
    ///
    /// The CSV has a header row naming a `label` and a `text` column (other columns are
    /// ignored); labels are -1 (negative), 0 (neutral) or 1 (positive), and each text is
    /// scored as one chat message without emote positions. The plugin's `sentiment.label`
    /// ("negative", "neutral", "positive") is the prediction. Any bad row is an error naming
    /// file and line.
    Sentiment {
        /// The labelled CSV (`label,text`, labels -1/0/1).
        #[arg(long, value_name = "FILE.csv")]
        labels: PathBuf,
        /// The sentiment component. Default: the one built with this binary,
        /// `<target>/wasm32-wasip2/release/sentiment.wasm` for `<target>/release/streamtap`
        /// (where `make plugins` puts it).
        #[arg(long, value_name = "PATH.wasm")]
        plugin: Option<PathBuf>,
        /// A `with` entry for the plugin, `key=value`, as for `plugin test`. Repeatable.
        #[arg(long = "with", value_name = "KEY=VALUE")]
        with: Vec<String>,
    },
}

/// Runs an `eval` subcommand.
pub fn run(command: EvalCommand) -> anyhow::Result<()> {
    match command {
        EvalCommand::Sentiment {
            labels,
            plugin,
            with,
        } => eval_sentiment(&labels, plugin, &with),
    }
}

/// A sentiment class, as labelled (-1/0/1) and as the plugin names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    // Discriminants are the report's row/column indexes; the label is one less.
    Negative = 0,
    Neutral = 1,
    Positive = 2,
}

impl Class {
    /// In the order of the report's rows and columns.
    pub const ALL: [Class; 3] = [Class::Negative, Class::Neutral, Class::Positive];

    fn index(self) -> usize {
        self as usize
    }

    fn value(self) -> i8 {
        self as i8 - 1
    }

    fn name(self) -> &'static str {
        match self {
            Class::Negative => "negative",
            Class::Neutral => "neutral",
            Class::Positive => "positive",
        }
    }

    /// A gold label from the CSV: exactly `-1`, `0` or `1` (surrounding spaces allowed).
    fn from_gold(s: &str) -> Option<Class> {
        match s.trim() {
            "-1" => Some(Class::Negative),
            "0" => Some(Class::Neutral),
            "1" => Some(Class::Positive),
            _ => None,
        }
    }

    /// The plugin's `sentiment.label`.
    fn from_plugin(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// One labelled row; `line` is where the row starts in the file (1-based).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub line: u64,
    pub label: Class,
    pub text: String,
}

/// Everything that makes a labels file or a plugin's answer unusable. Each names the file,
/// and the line where there is one.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: empty file; expected a header row `label,text` and labelled rows")]
    Empty { file: String },
    #[error(
        "{file}:{line}: header has no {column:?} column (found {found:?}); the first row must name the columns, e.g. `label,text`"
    )]
    NoColumn {
        file: String,
        line: u64,
        column: &'static str,
        found: Vec<String>,
    },
    #[error("{file}:{line}: header names the {column:?} column twice")]
    DuplicateColumn {
        file: String,
        line: u64,
        column: &'static str,
    },
    #[error("{file}:{line}: not valid CSV: {reason}")]
    Csv {
        file: String,
        line: u64,
        reason: String,
    },
    #[error(
        "{file}:{line}: missing {column} column: the row has {fields} field(s), {column} is column {number}"
    )]
    MissingField {
        file: String,
        line: u64,
        column: &'static str,
        fields: usize,
        number: usize,
    },
    #[error("{file}:{line}: label {value:?} is not -1, 0 or 1")]
    BadLabel {
        file: String,
        line: u64,
        value: String,
    },
    #[error("{file}:{line}: text is empty")]
    EmptyText { file: String, line: u64 },
    // Chat messages never contain line breaks, so a text that does is almost always an
    // unclosed quote that swallowed the rows after it: refuse rather than lose them.
    #[error(
        "{file}:{line}: text contains a line break ({text:?}); is a quote left unclosed on this line?"
    )]
    MultilineText {
        file: String,
        line: u64,
        text: String,
    },
    #[error("{file}: no labelled rows after the header")]
    NoRows { file: String },
    #[error("{file}:{first}-{last}: plugin call failed: {reason}")]
    Call {
        file: String,
        first: u64,
        last: u64,
        reason: String,
    },
    #[error("{file}:{line}: {reason}")]
    Prediction {
        file: String,
        line: u64,
        reason: String,
    },
}

/// Reads and validates a labels file.
pub fn read_labels(path: &Path) -> Result<Vec<Row>, EvalError> {
    let file = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| EvalError::Read {
        file: file.clone(),
        source,
    })?;
    parse_labels(&file, &data)
}

/// The 1-based line where the record at `pos` starts. The csv crate's own line count does
/// not advance over the blank lines it skips, and its byte offset points at the first of
/// them, so count line breaks up to the record's first non-blank byte instead.
fn line_at(data: &[u8], pos: &csv::Position) -> u64 {
    let start = (pos.byte() as usize).min(data.len());
    let blank = data[start..]
        .iter()
        .take_while(|&&b| b == b'\n' || b == b'\r')
        .count();
    let before = &data[..start + blank];
    1 + before.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Parses a labels CSV; `file` names it in errors.
pub fn parse_labels(file: &str, data: &[u8]) -> Result<Vec<Row>, EvalError> {
    let csv_error = |e: csv::Error| {
        let line = e.position().map_or(0, |p| line_at(data, p));
        let reason = match e.kind() {
            csv::ErrorKind::Utf8 { err, .. } => {
                format!("field {} is not valid UTF-8", err.field() + 1)
            }
            _ => e.to_string(),
        };
        EvalError::Csv {
            file: file.to_owned(),
            line,
            reason,
        }
    };
    let mut reader = csv::ReaderBuilder::new()
        // Rows may be shorter or longer than the header: longer rows carry ignored extra
        // columns, shorter ones get a `MissingField` error naming the column, which says
        // more than the crate's generic "unequal lengths".
        .flexible(true)
        .trim(csv::Trim::Headers)
        .from_reader(data);
    let header = reader.headers().map_err(csv_error)?.clone();
    if header.iter().all(str::is_empty) {
        return Err(EvalError::Empty {
            file: file.to_owned(),
        });
    }
    let header_line = header.position().map_or(1, |p| line_at(data, p));
    let column = |name: &'static str| {
        // Case-insensitive: spreadsheets often capitalise headers ("Label", "Text").
        let mut found = header
            .iter()
            .enumerate()
            .filter(|(_, h)| h.eq_ignore_ascii_case(name));
        match (found.next(), found.next()) {
            (Some((i, _)), None) => Ok(i),
            (Some(_), Some(_)) => Err(EvalError::DuplicateColumn {
                file: file.to_owned(),
                line: header_line,
                column: name,
            }),
            (None, _) => Err(EvalError::NoColumn {
                file: file.to_owned(),
                line: header_line,
                column: name,
                found: header.iter().map(str::to_owned).collect(),
            }),
        }
    };
    let label_col = column("label")?;
    let text_col = column("text")?;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        let line = record.position().map_or(0, |p| line_at(data, p));
        let field = |col: usize, name: &'static str| {
            record.get(col).ok_or(EvalError::MissingField {
                file: file.to_owned(),
                line,
                column: name,
                fields: record.len(),
                number: col + 1,
            })
        };
        let raw_label = field(label_col, "label")?;
        let label = Class::from_gold(raw_label).ok_or_else(|| EvalError::BadLabel {
            file: file.to_owned(),
            line,
            value: raw_label.to_owned(),
        })?;
        let text = field(text_col, "text")?;
        if text.trim().is_empty() {
            return Err(EvalError::EmptyText {
                file: file.to_owned(),
                line,
            });
        }
        if text.contains(['\n', '\r']) {
            return Err(EvalError::MultilineText {
                file: file.to_owned(),
                line,
                text: super::cut(text, 60),
            });
        }
        rows.push(Row {
            line,
            label,
            text: text.to_owned(),
        });
    }
    if rows.is_empty() {
        return Err(EvalError::NoRows {
            file: file.to_owned(),
        });
    }
    Ok(rows)
}

/// The prediction in one message's actions: the last `sentiment` field set, its `label`.
fn predicted(actions: &[Action]) -> Result<Class, String> {
    let mut sentiment = None;
    for a in actions {
        match a {
            Action::Drop { reason } => {
                return Err(format!(
                    "the plugin dropped the message ({reason:?}); every row needs a prediction"
                ));
            }
            Action::Set { name, value } if name == "sentiment" => sentiment = Some(value),
            _ => {}
        }
    }
    let value = sentiment.ok_or(
        "the plugin set no \"sentiment\" field; is --plugin the sentiment plugin?".to_owned(),
    )?;
    let label = value.get("label").and_then(|l| l.as_str()).ok_or_else(|| {
        format!(
            "the plugin's \"sentiment\" field has no string \"label\": {}",
            value.to_json()
        )
    })?;
    Class::from_plugin(label).ok_or_else(|| {
        format!("the plugin's sentiment.label {label:?} is not \"negative\", \"neutral\" or \"positive\"")
    })
}

/// Gold × predicted counts, indexed by [`Class::index`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confusion {
    pub counts: [[u64; 3]; 3],
}

/// Precision, recall and F1 of one class; 0 where undefined (no predictions or no gold
/// rows of the class), as scikit-learn reports with `zero_division=0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl Confusion {
    pub fn add(&mut self, gold: Class, predicted: Class) {
        self.counts[gold.index()][predicted.index()] += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    pub fn correct(&self) -> u64 {
        (0..3).map(|i| self.counts[i][i]).sum()
    }

    pub fn accuracy(&self) -> f64 {
        ratio(self.correct(), self.total())
    }

    fn gold_count(&self, c: Class) -> u64 {
        self.counts[c.index()].iter().sum()
    }

    fn predicted_count(&self, c: Class) -> u64 {
        self.counts.iter().map(|r| r[c.index()]).sum()
    }

    pub fn scores(&self, c: Class) -> ClassScores {
        let tp = self.counts[c.index()][c.index()];
        let precision = ratio(tp, self.predicted_count(c));
        let recall = ratio(tp, self.gold_count(c));
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        ClassScores {
            precision,
            recall,
            f1,
            support: self.gold_count(c),
        }
    }

    /// Unweighted mean F1 over the classes that occur as gold labels or predictions (as
    /// scikit-learn's `average="macro"` does), so a file without, say, neutral rows is not
    /// marked down for a class it cannot score.
    pub fn macro_f1(&self) -> f64 {
        let present: Vec<Class> = Class::ALL
            .into_iter()
            .filter(|&c| self.gold_count(c) + self.predicted_count(c) > 0)
            .collect();
        if present.is_empty() {
            return 0.0;
        }
        present.iter().map(|&c| self.scores(c).f1).sum::<f64>() / present.len() as f64
    }

    /// The metrics block of the report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            s,
            "accuracy  {:.3} ({}/{})",
            self.accuracy(),
            self.correct(),
            self.total()
        );
        let _ = writeln!(s, "macro-F1  {:.3}", self.macro_f1());
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<12} {:>9} {:>7} {:>6} {:>8}",
            "class", "precision", "recall", "F1", "support"
        );
        for c in Class::ALL {
            let sc = self.scores(c);
            let _ = writeln!(
                s,
                "{:<12} {:>9.3} {:>7.3} {:>6.3} {:>8}",
                format!("{:>2} {}", c.value(), c.name()),
                sc.precision,
                sc.recall,
                sc.f1,
                sc.support
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "confusion matrix (rows = gold, columns = predicted)");
        let _ = writeln!(s, "{:<12} {:>6} {:>6} {:>6}", "gold \\ pred", -1, 0, 1);
        for g in Class::ALL {
            let r = &self.counts[g.index()];
            let _ = writeln!(
                s,
                "{:<12} {:>6} {:>6} {:>6}",
                format!("{:>2}", g.value()),
                r[0],
                r[1],
                r[2]
            );
        }
        s
    }
}

/// The chat message one row becomes: only the text matters to the sentiment plugin.
fn message(row: &Row) -> ChatMessage {
    ChatMessage {
        id: format!("line-{}", row.line),
        kind: "privmsg".into(),
        channel: "eval".into(),
        user: "eval".into(),
        display_name: "eval".into(),
        text: row.text.clone(),
        ..ChatMessage::default()
    }
}

/// Runs the plugin over every row, `BATCH` rows per call.
fn evaluate(
    plugin: &mut StandalonePlugin,
    file: &str,
    rows: &[Row],
) -> Result<Confusion, EvalError> {
    let mut confusion = Confusion::default();
    for chunk in rows.chunks(BATCH) {
        let msgs: Vec<ChatMessage> = chunk.iter().map(message).collect();
        let actions = plugin.process(&msgs).map_err(|e| EvalError::Call {
            file: file.to_owned(),
            first: chunk[0].line,
            last: chunk[chunk.len() - 1].line,
            reason: e.to_string(),
        })?;
        for (row, actions) in chunk.iter().zip(&actions) {
            let p = predicted(actions).map_err(|reason| EvalError::Prediction {
                file: file.to_owned(),
                line: row.line,
                reason,
            })?;
            confusion.add(row.label, p);
        }
    }
    Ok(confusion)
}

/// The plugin `make plugins` builds alongside this binary: cargo puts host binaries in
/// `<target>/release/` and wasm32-wasip2 builds in `<target>/wasm32-wasip2/release/`, so this
/// also finds it when `CARGO_TARGET_DIR` moves the target directory.
fn default_plugin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()
        .context("cannot locate this binary to find the default plugin; pass --plugin")?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .with_context(|| format!("cannot derive a target directory from {}", exe.display()))?;
    let p = target.join("wasm32-wasip2/release/sentiment.wasm");
    if !p.is_file() {
        anyhow::bail!(
            "no sentiment plugin at {} (the default, next to this binary): build it with `make plugins`, or pass --plugin PATH.wasm",
            p.display()
        );
    }
    Ok(p)
}

fn eval_sentiment(labels: &Path, plugin: Option<PathBuf>, with: &[String]) -> anyhow::Result<()> {
    // The CSV first: a bad row is reported before the plugin is compiled.
    let rows = read_labels(labels)?;
    let plugin_path = match plugin {
        Some(p) => p,
        None => default_plugin()?,
    };
    let mut plugin = StandalonePlugin::load(&plugin_path, with, DEADLINE, Vec::new())?;
    let file = labels.display().to_string();
    let confusion = evaluate(&mut plugin, &file, &rows)?;
    println!(
        "plugin    {} from {}",
        plugin.describe(),
        plugin_path.display()
    );
    println!("labels    {file}: {} rows", rows.len());
    println!();
    print!("{}", confusion.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<Row>, EvalError> {
        parse_labels("t.csv", s.as_bytes())
    }

    #[test]
    fn quoted_fields_extra_columns_and_line_numbers() {
        let rows = parse(
            "id,Label,text,note\n\
             a,1,\"gg, well played\",x\n\
             b, -1 ,\"he said \"\"nope\"\"\"\r\n\
             \n\
             \r\n\
             c,0,what game is this?,y,z\n\
             \n\
             d,1,\"last, no newline\"",
        )
        .unwrap();
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.line, r.label, r.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (2, Class::Positive, "gg, well played"),
                (3, Class::Negative, "he said \"nope\""),
                (6, Class::Neutral, "what game is this?"),
                (8, Class::Positive, "last, no newline"),
            ]
        );
    }

    #[test]
    fn byte_order_mark_is_not_part_of_the_header() {
        let rows = parse("\u{feff}label,text\n1,nice\n").unwrap();
        assert_eq!(rows[0].text, "nice");
    }

    #[test]
    fn bad_rows_name_file_line_and_value() {
        let cases = [
            (
                "\n\nlabel,text\n\n1,ok\n\n\n5,bad\n",
                "t.csv:8: label \"5\" is not -1, 0 or 1",
            ),
            (
                "label,text\n1,ok\n2,bad\n",
                "t.csv:3: label \"2\" is not -1, 0 or 1",
            ),
            ("label,text\n1,ok\n0\n", "t.csv:3: missing text column"),
            ("text,label\nhi\n", "t.csv:2: missing label column"),
            ("label,text\n1,\"  \"\n", "t.csv:2: text is empty"),
            (
                "label,text\n1,\"open\n0,next\n",
                "t.csv:2: text contains a line break",
            ),
            ("label,text\n", "t.csv: no labelled rows"),
            ("", "t.csv: empty file"),
            ("1,great\n0,ok\n", "t.csv:1: header has no \"label\" column"),
            (
                "label,text,text\n1,a,b\n",
                "t.csv:1: header names the \"text\" column twice",
            ),
        ];
        for (input, want) in cases {
            let e = parse(input).expect_err(input).to_string();
            assert!(e.starts_with(want), "{input:?}: {e}");
        }
        let e = parse_labels("t.csv", b"label,text\n1,ok\n1,\xff\xfe\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.csv:3: not valid CSV: field 2 is not valid UTF-8"
        );
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        let mut c = Confusion::default();
        // gold -1: 2 right, 1 as neutral; gold 0: 1 as negative, 3 right; gold 1: 1 as
        // neutral, 2 right.
        let pairs = [
            (Class::Negative, Class::Negative, 2),
            (Class::Negative, Class::Neutral, 1),
            (Class::Neutral, Class::Negative, 1),
            (Class::Neutral, Class::Neutral, 3),
            (Class::Positive, Class::Neutral, 1),
            (Class::Positive, Class::Positive, 2),
        ];
        for (g, p, n) in pairs {
            for _ in 0..n {
                c.add(g, p);
            }
        }
        assert_eq!(c.counts, [[2, 1, 0], [1, 3, 0], [0, 1, 2]]);
        assert_eq!((c.correct(), c.total()), (7, 10));
        let neg = c.scores(Class::Negative);
        assert_eq!((neg.precision, neg.recall), (2.0 / 3.0, 2.0 / 3.0));
        let neu = c.scores(Class::Neutral);
        assert_eq!((neu.precision, neu.recall), (0.6, 0.75));
        let pos = c.scores(Class::Positive);
        assert_eq!(
            (pos.precision, pos.recall, pos.support),
            (1.0, 2.0 / 3.0, 3)
        );
        let f1 = [2.0 / 3.0, 2.0 * 0.6 * 0.75 / 1.35, 0.8];
        assert!((c.macro_f1() - f1.iter().sum::<f64>() / 3.0).abs() < 1e-12);
    }

    #[test]
    fn undefined_scores_are_zero_and_absent_classes_leave_the_macro_average() {
        let mut c = Confusion::default();
        c.add(Class::Positive, Class::Positive);
        c.add(Class::Negative, Class::Positive);
        let neg = c.scores(Class::Negative);
        assert_eq!((neg.precision, neg.recall, neg.f1), (0.0, 0.0, 0.0));
        // Neutral never occurs: macro-F1 over negative (0) and positive (2/3).
        assert!((c.macro_f1() - (2.0 / 3.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn prediction_comes_from_sentiment_label() {
        use streamtap_plugin_sdk::Value;
        let set = |label: &str| Action::Set {
            name: "sentiment".into(),
            value: Value::map([("label", Value::from(label))]),
        };
        assert_eq!(predicted(&[set("negative")]), Ok(Class::Negative));
        assert_eq!(
            predicted(&[set("positive"), set("neutral")]),
            Ok(Class::Neutral)
        );
        assert!(predicted(&[set("meh")]).unwrap_err().contains("\"meh\""));
        assert!(
            predicted(&[])
                .unwrap_err()
                .contains("no \"sentiment\" field")
        );
        let drop = Action::Drop {
            reason: "spam".into(),
        };
        assert!(
            predicted(&[set("neutral"), drop])
                .unwrap_err()
                .contains("dropped")
        );
    }
}
