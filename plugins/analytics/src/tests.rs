use super::*;
use serde_json::json;
use streamtap_plugin_sdk::testing;
use streamtap_plugin_sdk::{Action, ChatMessage, Emote};

/// A window-aligned base time (a multiple of 60 s).
const B: i64 = 1_700_000_040_000;

fn plugin(with: serde_json::Value) -> Analytics {
    testing::init::<Analytics>(with).expect("valid config")
}

fn msg(channel: &str, user_id: &str, ts: i64) -> ChatMessage {
    let mut m = testing::message(channel, user_id, "hi");
    m.id = format!("{channel}-{user_id}-{ts}");
    m.user_id = user_id.into();
    m.ts_ms = ts;
    m
}

fn with_field(mut m: ChatMessage, name: &str, v: Value) -> ChatMessage {
    m.fields.insert(name.into(), v);
    m
}

/// The `channel_stats` records of each message's action list.
fn records_per_message(out: &[Vec<Action>]) -> Vec<Vec<(String, Value)>> {
    out.iter()
        .map(|acts| {
            acts.iter()
                .filter_map(|a| match a {
                    Action::Record { table, key, value } if table == RECORD_TABLE => {
                        Some((key.clone(), value.clone()))
                    }
                    _ => None,
                })
                .collect()
        })
        .collect()
}

fn records(out: &[Vec<Action>]) -> Vec<(String, Value)> {
    records_per_message(out).into_iter().flatten().collect()
}

fn int(v: &Value, key: &str) -> i64 {
    match v.get(key) {
        Some(Value::Int(n)) => *n,
        other => panic!("{key}: expected an integer, got {other:?} in {v:?}"),
    }
}

fn counts(v: &Value, key: &str) -> Vec<(String, i64)> {
    match v.get(key) {
        Some(Value::Map(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::Int(n) => (k.clone(), *n),
                other => panic!("{key}.{k}: {other:?}"),
            })
            .collect(),
        other => panic!("{key}: expected a map, got {other:?}"),
    }
}

#[test]
fn message_exactly_at_window_end_opens_the_next_window() {
    let mut p = plugin(json!({ "grace": "0s" }));
    let out = testing::run(
        &mut p,
        &[
            msg("wb", "1", B),
            msg("wb", "2", B + 59_999),
            msg("wb", "3", B + 60_000),
            msg("wb", "4", B + 120_000),
        ],
    );
    let per = records_per_message(&out);
    assert!(per[0].is_empty() && per[1].is_empty());
    // The message at the end closes the first window (grace 0) and is not in it.
    assert_eq!(per[2].len(), 1);
    let (key, v) = &per[2][0];
    assert_eq!(key, &format!("wb:{B}"));
    assert_eq!(int(v, "messages"), 2);
    assert_eq!(int(v, "window_start_ms"), B);
    assert_eq!(int(v, "window_end_ms"), B + 60_000);
    assert_eq!(per[3].len(), 1);
    assert_eq!(per[3][0].0, format!("wb:{}", B + 60_000));
    assert_eq!(int(&per[3][0].1, "messages"), 1);
}

#[test]
fn window_closes_only_when_grace_has_passed() {
    let mut p = plugin(json!({ "window": "1m", "grace": "10s" }));
    let out = testing::run(
        &mut p,
        &[
            msg("gr", "1", B),
            msg("gr", "2", B + 60_000),
            msg("gr", "3", B + 69_999),
        ],
    );
    assert!(records(&out).is_empty(), "closed too early: {out:?}");
    let out = testing::run(&mut p, &[msg("gr", "4", B + 70_000)]);
    let recs = records(&out);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].0, format!("gr:{B}"));
    assert_eq!(int(&recs[0].1, "messages"), 1);
}

#[test]
fn late_within_grace_folds_in_and_later_is_counted_as_late() {
    let mut p = plugin(json!({ "window": "60s", "grace": "10s" }));
    let out = testing::run(
        &mut p,
        &[
            msg("late", "a", B),
            msg("late", "b", B + 60_000),  // next window; B still open
            msg("late", "c", B + 5_000),   // late but within grace: folds into B
            msg("late", "d", B + 70_000),  // closes B
            msg("late", "e", B + 1_000),   // B closed: late, counted in B+60s
            msg("late", "f", B + 130_000), // closes B+60s
        ],
    );
    let per = records_per_message(&out);
    assert_eq!(
        per.iter().map(Vec::len).collect::<Vec<_>>(),
        [0, 0, 0, 1, 0, 1]
    );
    let first = &per[3][0].1;
    assert_eq!(int(first, "messages"), 2);
    assert_eq!(int(first, "unique_chatters"), 2); // a and c
    assert_eq!(int(first, "late"), 0);
    let second = &per[5][0].1;
    assert_eq!(per[5][0].0, format!("late:{}", B + 60_000));
    assert_eq!(int(second, "messages"), 2); // b and d; e is only late
    assert_eq!(int(second, "unique_chatters"), 2);
    assert_eq!(int(second, "late"), 1);
}

#[test]
fn channels_have_independent_windows() {
    let mut p = plugin(json!({ "grace": "0s" }));
    let out = testing::run(
        &mut p,
        &[
            msg("ind-a", "1", B),
            msg("ind-b", "1", B + 61_000), // must not close ind-a's window
            msg("ind-a", "2", B + 1_000),
        ],
    );
    assert!(records(&out).is_empty());
    let out = testing::run(&mut p, &[msg("ind-a", "3", B + 60_000)]);
    let recs = records(&out);
    assert_eq!(recs.len(), 1);
    assert_eq!(int(&recs[0].1, "messages"), 2);
    assert_eq!(int(&recs[0].1, "late"), 0);
}

#[test]
fn unique_chatters_are_exact_and_capped() {
    let mut p = plugin(json!({ "grace": "0s", "max_chatters": 2 }));
    let out = testing::run(
        &mut p,
        &[
            msg("uc", "a", B),
            msg("uc", "b", B + 1),
            msg("uc", "a", B + 2),
            msg("uc", "c", B + 3), // set full
            msg("uc", "a", B + 60_000),
            msg("uc", "b", B + 60_001),
            msg("uc", "a", B + 60_002),
            msg("uc", "x", B + 120_000),
        ],
    );
    let recs = records(&out);
    assert_eq!(recs.len(), 2);
    assert_eq!(int(&recs[0].1, "messages"), 4);
    assert_eq!(int(&recs[0].1, "unique_chatters"), 2);
    assert_eq!(recs[0].1.get("chatters_capped"), Some(&Value::Bool(true)));
    assert_eq!(int(&recs[1].1, "messages"), 3);
    assert_eq!(int(&recs[1].1, "unique_chatters"), 2);
    assert_eq!(recs[1].1.get("chatters_capped"), Some(&Value::Bool(false)));
}

fn emote_msg(channel: &str, ts: i64, text: &str, emotes: &[(u32, u32)]) -> ChatMessage {
    let mut m = msg(channel, "u", ts);
    m.text = text.into();
    m.emotes = emotes
        .iter()
        .map(|&(start, end)| Emote {
            id: "1".into(),
            start,
            end,
        })
        .collect();
    m
}

fn top(v: &Value) -> Vec<(String, i64)> {
    match v.get("top_emotes") {
        Some(Value::List(l)) => l
            .iter()
            .map(|e| {
                (
                    e.get("emote").and_then(Value::as_str).unwrap().to_owned(),
                    int(e, "count"),
                )
            })
            .collect(),
        other => panic!("top_emotes: {other:?}"),
    }
}

#[test]
fn top_emotes_are_ordered_by_count_then_name() {
    for reversed in [false, true] {
        let ch = if reversed { "em-r" } else { "em" };
        let mut p = plugin(json!({ "grace": "0s", "top_emotes": 3 }));
        // "LUL" x1, "Kappa" x2, "PogChamp" x2, "BibleThump" x1, "zzz" x3.
        let mut batch = vec![
            emote_msg(ch, B, "PogChamp Kappa", &[(0, 7), (9, 13)]),
            emote_msg(ch, B + 1, "Kappa LUL PogChamp", &[(0, 4), (6, 8), (10, 17)]),
            emote_msg(ch, B + 2, "BibleThump", &[(0, 9)]),
            emote_msg(ch, B + 3, "zzz zzz zzz", &[(0, 2), (4, 6), (8, 10)]),
        ];
        if reversed {
            batch.reverse();
        }
        batch.push(msg(ch, "z", B + 60_000));
        let recs = records(&testing::run(&mut p, &batch));
        assert_eq!(recs.len(), 1);
        assert_eq!(
            top(&recs[0].1),
            [
                ("zzz".to_owned(), 3),
                ("Kappa".to_owned(), 2),
                ("PogChamp".to_owned(), 2)
            ],
            "reversed = {reversed}"
        );
    }
}

#[test]
fn emote_positions_are_characters_and_bad_ones_are_skipped() {
    let mut p = plugin(json!({ "grace": "0s", "top_emotes": 10 }));
    let out = testing::run(
        &mut p,
        &[
            // "é" and "日本" are multi-byte: positions count characters, not bytes.
            emote_msg("ep", B, "héllo Kappa 日本 LUL", &[(6, 10), (15, 17)]),
            // Reversed, past the end, huge, and ending past the last character.
            emote_msg(
                "ep",
                B + 1,
                "Kappa",
                &[(3, 1), (10, 12), (0, u32::MAX), (2, 5)],
            ),
            msg("ep", "z", B + 60_000),
        ],
    );
    let recs = records(&out);
    assert_eq!(
        top(&recs[0].1),
        [("Kappa".to_owned(), 1), ("LUL".to_owned(), 1)]
    );
}

#[test]
fn mean_sentiment_counts_only_messages_that_have_a_score() {
    let score = |x: Value| Value::map([("compound", x), ("label", Value::from("x"))]);
    let mut p = plugin(json!({ "grace": "0s" }));
    let out = testing::run(
        &mut p,
        &[
            with_field(msg("se", "1", B), "sentiment", score(Value::Float(0.5))),
            with_field(
                msg("se", "2", B + 1),
                "sentiment",
                score(Value::Float(-0.1)),
            ),
            msg("se", "3", B + 2),
            with_field(
                msg("se", "4", B + 3),
                "sentiment",
                score(Value::from("high")),
            ),
            with_field(msg("se", "5", B + 4), "sentiment", Value::from(0.9)),
            msg("se", "6", B + 60_000),
            msg("se", "7", B + 120_000),
        ],
    );
    let recs = records(&out);
    assert_eq!(recs.len(), 2);
    let mean = recs[0]
        .1
        .get("sentiment_mean")
        .and_then(Value::as_f64)
        .unwrap();
    assert!((mean - 0.2).abs() < 1e-12, "{mean}");
    assert_eq!(int(&recs[0].1, "sentiment_count"), 2);
    assert_eq!(int(&recs[0].1, "messages"), 5);
    assert_eq!(recs[1].1.get("sentiment_mean"), Some(&Value::Null));
    assert_eq!(int(&recs[1].1, "sentiment_count"), 0);
}

#[test]
fn languages_are_counted_with_und_for_missing() {
    let mut p = plugin(json!({ "grace": "0s" }));
    let out = testing::run(
        &mut p,
        &[
            with_field(msg("la", "1", B), "lang", Value::from("en")),
            with_field(msg("la", "2", B + 1), "lang", Value::from("de")),
            with_field(msg("la", "3", B + 2), "lang", Value::from("en")),
            msg("la", "4", B + 3),
            with_field(msg("la", "5", B + 4), "lang", Value::Int(7)),
            msg("la", "6", B + 60_000),
        ],
    );
    let recs = records(&out);
    assert_eq!(
        counts(&recs[0].1, "langs"),
        [
            ("de".to_owned(), 1),
            ("en".to_owned(), 2),
            ("und".to_owned(), 2)
        ]
    );
}

#[test]
fn events_first_time_chatters_subs_and_raids_are_counted() {
    let notice = |user: &str, ts: i64, event: &str| {
        let mut m = with_field(msg("ev", user, ts), "event", Value::from(event));
        m.kind = "usernotice".into();
        m
    };
    let mut raid_kind = msg("ev", "r2", B + 10);
    raid_kind.kind = "raid".into();
    let mut p = plugin(json!({ "grace": "0s" }));
    let out = testing::run(
        &mut p,
        &[
            notice("s1", B, "sub"),
            notice("s2", B + 1, "resub"),
            notice("s3", B + 2, "subgift"),
            notice("s3", B + 3, "submysterygift"),
            notice("r1", B + 4, "raid"),
            raid_kind,
            with_field(msg("ev", "n1", B + 5), "first_msg", Value::Bool(true)),
            with_field(msg("ev", "n2", B + 6), "first_msg", Value::Bool(false)),
            msg("ev", "c", B + 7),
            msg("ev", "c", B + 60_000),
        ],
    );
    let recs = records(&out);
    let v = &recs[0].1;
    assert_eq!(int(v, "messages"), 9);
    assert_eq!(int(v, "subs"), 3);
    assert_eq!(int(v, "raids"), 2);
    assert_eq!(int(v, "first_time_chatters"), 1);
    assert_eq!(
        counts(v, "events"),
        [
            ("raid".to_owned(), 2),
            ("resub".to_owned(), 1),
            ("sub".to_owned(), 1),
            ("subgift".to_owned(), 1),
            ("submysterygift".to_owned(), 1)
        ]
    );
}

#[test]
fn closing_a_window_reports_metrics() {
    let mut p = plugin(json!({ "grace": "0s" }));
    let out = testing::run(
        &mut p,
        &[
            msg("me", "a", B),
            msg("me", "b", B + 1),
            msg("me", "a", B + 60_000),
        ],
    );
    type Sample = (String, f64, Vec<(String, String)>);
    let metrics: Vec<Sample> = out[2]
        .iter()
        .filter_map(|a| match a {
            Action::Metric {
                name,
                value,
                labels,
            } => Some((name.clone(), *value, labels.clone())),
            _ => None,
        })
        .collect();
    let label = vec![("channel".to_owned(), "me".to_owned())];
    assert_eq!(
        metrics,
        [
            ("channel_messages".to_owned(), 2.0, label.clone()),
            ("channel_chatters".to_owned(), 2.0, label)
        ]
    );
    let mut quiet = plugin(json!({ "grace": "0s", "metrics": false }));
    let out = testing::run(
        &mut quiet,
        &[msg("me2", "a", B), msg("me2", "a", B + 60_000)],
    );
    assert_eq!(records(&out).len(), 1);
    assert!(!out[1].iter().any(|a| matches!(a, Action::Metric { .. })));
}

#[test]
fn open_windows_survive_a_reload() {
    let cfg = json!({ "window": "60s", "grace": "10s" });
    let mut old = plugin(cfg.clone());
    let out = testing::run(
        &mut old,
        &[
            with_field(msg("rl", "a", B), "lang", Value::from("en")),
            msg("rl", "b", B + 30_000),
            msg("rl", "c", B + 61_000),
        ],
    );
    assert!(records(&out).is_empty());
    drop(old);

    // A new generation continues from the key-value store.
    let mut new = plugin(cfg);
    let out = testing::run(
        &mut new,
        &[
            msg("rl", "d", B + 65_000), // still within grace of B: folds into B+60s
            msg("rl", "a", B + 5_000),  // within grace of B: folds into B
            msg("rl", "e", B + 70_000), // closes B
        ],
    );
    let recs = records(&out);
    assert_eq!(recs.len(), 1);
    let v = &recs[0].1;
    assert_eq!(recs[0].0, format!("rl:{B}"));
    assert_eq!(int(v, "messages"), 3);
    assert_eq!(int(v, "unique_chatters"), 2);
    assert_eq!(
        counts(v, "langs"),
        [("en".to_owned(), 1), ("und".to_owned(), 2)]
    );

    // The watermark survived too: a message for a long-closed window is late.
    let mut third = plugin(json!({ "window": "60s", "grace": "10s" }));
    let out = testing::run(
        &mut third,
        &[msg("rl", "f", B + 1_000), msg("rl", "g", B + 130_000)],
    );
    let recs = records(&out);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].0, format!("rl:{}", B + 60_000));
    assert_eq!(int(&recs[0].1, "messages"), 3); // c, d, e
    assert_eq!(int(&recs[0].1, "late"), 1); // f
}

#[test]
fn a_reload_with_another_window_length_emits_the_stored_windows() {
    let mut old = plugin(json!({ "window": "60s" }));
    testing::run(&mut old, &[msg("wl", "a", B), msg("wl", "b", B + 1)]);
    drop(old);
    let mut new = plugin(json!({ "window": "30s" }));
    let out = testing::run(&mut new, &[msg("wl", "c", B + 2)]);
    let recs = records(&out);
    assert_eq!(recs.len(), 1);
    assert_eq!(int(&recs[0].1, "messages"), 2);
    assert_eq!(int(&recs[0].1, "window_end_ms"), B + 60_000);
    // The new window starts fresh with 30 s windows.
    let out = testing::run(&mut new, &[msg("wl", "d", B + 40_000)]);
    let recs = records(&out);
    assert_eq!(recs.len(), 1);
    assert_eq!(int(&recs[0].1, "messages"), 1);
    assert_eq!(int(&recs[0].1, "window_end_ms"), B + 30_000);
}

#[test]
fn state_entries_are_written_per_channel_and_bounded() {
    let mut p = plugin(json!({ "grace": "1m", "max_chatters": 10 }));
    let batch: Vec<ChatMessage> = (0..500)
        .map(|i| msg("sz", &format!("user{i}"), B + i * 1_000))
        .collect();
    testing::run(&mut p, &batch);
    let bytes = host::kv::get(&state_key("sz")).expect("state written");
    let st: ChannelState = serde_json::from_slice(&bytes).unwrap();
    assert!(st.windows.len() <= 3, "{} open windows", st.windows.len());
    assert!(st.windows.iter().all(|w| w.chatters.len() <= 10));
    assert_eq!(st.watermark, Some(B + 499_000));
}

#[test]
fn odd_input_does_not_panic() {
    let mut p = plugin(json!({ "grace": "0s" }));
    let mut empty = msg("", "", i64::MIN);
    empty.user = String::new();
    let out = testing::run(
        &mut p,
        &[
            empty,
            msg("odd", "a", i64::MAX),
            msg("odd", "b", i64::MIN),
            msg("odd", "c", 0),
            emote_msg("odd", -1, "", &[(0, 0)]),
        ],
    );
    assert_eq!(out.len(), 5);
    // The far-future message holds the watermark, so the rest are late, not lost.
    let st =
        serde_json::from_slice::<ChannelState>(&host::kv::get(&state_key("odd")).unwrap()).unwrap();
    assert_eq!(st.windows.iter().map(|w| w.late).sum::<u64>(), 3);
}

#[test]
fn config_errors_are_clear() {
    let cases = [
        (
            json!({ "window": "0s" }),
            "`window` = \"0s\" must be longer than zero",
        ),
        (json!({ "window": 60 }), "`window` = 60 is a bare number"),
        (json!({ "window": "1.5m" }), "`window` = \"1.5m\""),
        (json!({ "window": "60" }), "\"60\" has no unit"),
        (
            json!({ "grace": "5sec" }),
            "`grace` = \"5sec\" has unknown unit",
        ),
        (
            json!({ "window": "1m", "grace": "17m" }),
            "`grace` = \"17m\" spans more than 16 windows",
        ),
        (
            json!({ "top_emotes": 101 }),
            "`top_emotes` = 101 is more than 100",
        ),
        (
            json!({ "max_chatters": 0 }),
            "`max_chatters` = 0 must be between",
        ),
        (
            json!({ "max_emotes": 0 }),
            "`max_emotes` = 0 must be between",
        ),
        (json!({ "windw": "60s" }), "unknown field `windw`"),
        (json!({ "top_emotes": -1 }), "expected usize"),
    ];
    for (with, want) in cases {
        let err = testing::init::<Analytics>(with.clone()).unwrap_err();
        assert!(
            err.contains(want),
            "{with}: {err:?} should contain {want:?}"
        );
    }
    for ok in [
        json!({}),
        json!({ "window": "500ms", "grace": "0s" }),
        json!({ "window": "1m", "grace": "16m", "top_emotes": 0 }),
    ] {
        assert!(testing::init::<Analytics>(ok.clone()).is_ok(), "{ok}");
    }
}

/// The `channel_stats` records among flush actions, of one channel (the native key-value
/// store is per thread and shared by the tests that run on it).
fn flushed(p: &mut Analytics, channel: &str) -> Vec<(String, Value)> {
    records(&[testing::flush(p)])
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{channel}:")))
        .collect()
}

#[test]
fn flush_emits_every_open_window_once() {
    let mut p = plugin(json!({ "window": "60s", "grace": "10s" }));
    let out = testing::run(
        &mut p,
        &[
            msg("fl", "a", B),
            msg("fl", "b", B + 61_000), // B is still within grace
            msg("fl2", "c", B + 1_000),
        ],
    );
    assert!(records(&out).is_empty());
    let recs = flushed(&mut p, "fl");
    assert_eq!(
        recs.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        [format!("fl:{B}"), format!("fl:{}", B + 60_000)],
        "oldest first"
    );
    assert_eq!(int(&recs[0].1, "messages"), 1);
    assert_eq!(
        flushed(&mut p, "fl2").len(),
        0,
        "already flushed with fl above"
    );
    // Nothing left: a second flush emits nothing, and later messages for the flushed
    // windows count as late rather than re-opening them.
    assert!(flushed(&mut p, "fl").is_empty());
    let out = testing::run(&mut p, &[msg("fl", "d", B + 62_000)]);
    assert!(records(&out).is_empty());
    let recs = flushed(&mut p, "fl");
    assert_eq!(recs.len(), 1);
    assert_eq!(int(&recs[0].1, "late"), 0);
    assert_eq!(int(&recs[0].1, "messages"), 1);
}

#[test]
fn flush_finds_channels_a_previous_generation_saw() {
    let mut old = plugin(json!({}));
    testing::run(&mut old, &[msg("fg", "a", B), msg("fg", "b", B + 1)]);
    drop(old);
    let mut new = plugin(json!({}));
    let recs = flushed(&mut new, "fg");
    assert_eq!(recs.len(), 1);
    assert_eq!(int(&recs[0].1, "messages"), 2);
    // The flush was saved: another generation has nothing left to emit.
    drop(new);
    let mut third = plugin(json!({}));
    assert!(flushed(&mut third, "fg").is_empty());
}
