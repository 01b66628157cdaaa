//! Behaviour tests: the plugin runs natively through the real batch codec
//! (`testing::run`), with the SDK's thread-local stand-in for `host::kv`. Each test runs on
//! its own thread, so each starts with an empty store.

use alerts::{Alerts, RECORD_TABLE, WindowState, state_key};
use serde_json::json;
use streamtap_plugin_sdk::testing;
use streamtap_plugin_sdk::{Action, Alert, ChatMessage, Value, host};

/// 2023-11-14T22:13:20Z, a multiple of every window used below, so window boundaries are
/// at `T0 + k * window`.
const T0: i64 = 1_700_000_000_000;

fn msg(channel: &str, text: &str, ts_ms: i64) -> ChatMessage {
    let mut m = testing::message(channel, "viewer", text);
    m.ts_ms = ts_ms;
    m.id = format!("{channel}-{ts_ms}-{text}");
    m
}

fn with_sentiment(channel: &str, ts_ms: i64, compound: Value) -> ChatMessage {
    let mut m = msg(channel, "some text", ts_ms);
    m.fields.insert(
        "sentiment".into(),
        Value::map([("compound", compound), ("label", Value::from("x"))]),
    );
    m
}

fn init(with: serde_json::Value) -> Alerts {
    testing::init(with).expect("valid config")
}

fn init_err(with: serde_json::Value) -> String {
    match testing::init::<Alerts>(with.clone()) {
        Ok(_) => panic!("config was accepted: {with}"),
        Err(e) => e,
    }
}

/// One rule with the given extra keys.
fn one_rule(extra: serde_json::Value) -> serde_json::Value {
    let mut rule = json!({ "name": "hype", "window": "10s", "threshold": 3 });
    if let (Some(r), Some(x)) = (rule.as_object_mut(), extra.as_object()) {
        r.extend(x.clone());
    }
    json!({ "rules": [rule] })
}

/// The alerts of each message, in order: `(message index, alert)`.
fn alerts_of(out: &[Vec<Action>]) -> Vec<(usize, Alert)> {
    out.iter()
        .enumerate()
        .flat_map(|(i, actions)| {
            actions.iter().filter_map(move |a| match a {
                Action::Alert(al) => Some((i, al.clone())),
                _ => None,
            })
        })
        .collect()
}

/// Indexes of the messages that raised an alert.
fn fired_at(out: &[Vec<Action>]) -> Vec<usize> {
    alerts_of(out).into_iter().map(|(i, _)| i).collect()
}

/// `n` messages in `channel`, one per 100 ms from `start`.
fn burst(channel: &str, start: i64, n: usize) -> Vec<ChatMessage> {
    (0..n)
        .map(|i| msg(channel, "hi", start + 100 * i as i64))
        .collect()
}

#[test]
fn threshold_crossing_fires_exactly_once_per_window() {
    let mut p = init(one_rule(json!({})));
    let out = testing::run(&mut p, &burst("chan", T0, 6));
    assert_eq!(
        fired_at(&out),
        vec![2],
        "only the message making count == 3 fires"
    );

    let (_, alert) = alerts_of(&out).remove(0);
    assert_eq!(alert.topic, "hype");
    assert_eq!(alert.severity, "warning");
    assert_eq!(alert.title, "hype: #chan 3 messages in 10s");
    assert_eq!(alert.dedupe_key, format!("hype:chan:{T0}"));
    assert_eq!(
        alert.attributes,
        vec![
            ("channel".to_string(), "chan".to_string()),
            ("rule".to_string(), "hype".to_string()),
            ("severity".to_string(), "warning".to_string()),
            ("count".to_string(), "3".to_string()),
        ]
    );
    for needle in [
        "\"hype\"",
        "#chan",
        "2023-11-14T22:13:20Z to 2023-11-14T22:13:30Z",
        "https://twitch.tv/chan",
        "threshold 3",
    ] {
        assert!(
            alert.body.contains(needle),
            "{needle:?} not in {}",
            alert.body
        );
    }

    // The record goes with the alert, on the same message, under the dedupe key.
    let records: Vec<_> = out[2]
        .iter()
        .filter_map(|a| match a {
            Action::Record { table, key, value } => Some((table, key, value)),
            _ => None,
        })
        .collect();
    assert_eq!(records.len(), 1);
    let (table, key, value) = records[0];
    assert_eq!(table, RECORD_TABLE);
    assert_eq!(key, &format!("hype:chan:{T0}"));
    assert_eq!(value.get("count"), Some(&Value::Int(3)));
    assert_eq!(value.get("window_start_ms"), Some(&Value::Int(T0)));
    assert_eq!(value.get("window_end_ms"), Some(&Value::Int(T0 + 10_000)));

    // Messages pass unchanged: nothing but the alert and record, only on message 2.
    for (i, actions) in out.iter().enumerate() {
        if i != 2 {
            assert!(actions.is_empty(), "message {i}: {actions:?}");
        }
    }
    assert_eq!(out[2].len(), 2);

    // The rest of the window, even in later batches, never fires again.
    let out = testing::run(&mut p, &burst("chan", T0 + 5_000, 10));
    assert!(fired_at(&out).is_empty());
}

#[test]
fn redelivered_batch_does_not_fire_twice() {
    let mut p = init(one_rule(json!({})));
    let batch = burst("chan", T0, 3);
    assert_eq!(fired_at(&testing::run(&mut p, &batch)), vec![2]);
    assert!(fired_at(&testing::run(&mut p, &batch)).is_empty());
}

#[test]
fn batching_does_not_change_results() {
    let msgs = burst("chan", T0, 40);
    let mut whole = init(one_rule(json!({ "window": "1s", "cooldown": "0s" })));
    let all = fired_at(&testing::run(&mut whole, &msgs));
    drop(whole);
    // A fresh store per run: clear what the first run saved.
    host::kv::delete(&state_key("hype", "chan"));
    let mut single = init(one_rule(json!({ "window": "1s", "cooldown": "0s" })));
    let one_by_one: Vec<usize> = msgs
        .iter()
        .enumerate()
        .filter(|(_, m)| !fired_at(&testing::run(&mut single, std::slice::from_ref(m))).is_empty())
        .map(|(i, _)| i)
        .collect();
    // 10 messages per 1s window, the third of each fires.
    assert_eq!(all, vec![2, 12, 22, 32]);
    assert_eq!(one_by_one, all);
}

#[test]
fn second_window_fires_again_after_cooldown() {
    // cooldown defaults to the window (10s).
    let mut p = init(one_rule(json!({})));
    let mut batch = burst("chan", T0 + 1_000, 3); // fires at T0+1.2s
    batch.extend(burst("chan", T0 + 11_200, 3)); // crossing at T0+11.4s: 10.2s later
    let alerts = alerts_of(&testing::run(&mut p, &batch));
    assert_eq!(
        alerts.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![2, 5]
    );
    assert_eq!(alerts[1].1.dedupe_key, format!("hype:chan:{}", T0 + 10_000));
}

#[test]
fn default_cooldown_can_suppress_an_adjacent_window() {
    // Fired late in one window, crossing early in the next: less than `window` apart, so
    // the default cooldown (= window) holds it back. This is the documented rule: at most
    // one alert per `window` of message time per rule and channel.
    let mut p = init(one_rule(json!({})));
    let mut batch = burst("chan", T0 + 9_000, 3); // fires at T0+9.2s
    batch.extend(burst("chan", T0 + 10_000, 3)); // crossing at T0+10.2s
    assert_eq!(fired_at(&testing::run(&mut p, &batch)), vec![2]);
}

#[test]
fn cooldown_suppresses() {
    let mut p = init(one_rule(json!({ "cooldown": "60s" })));
    // Windows at T0, +10s, ..., +60s, each crossing at +0.2s into the window.
    let mut fired = Vec::new();
    for w in 0..7 {
        let out = testing::run(&mut p, &burst("chan", T0 + w * 10_000, 5));
        if !fired_at(&out).is_empty() {
            fired.push(w);
        }
    }
    // Fired at T0+0.2s; +50.2s is still inside the cooldown; +60.2s is not.
    assert_eq!(fired, vec![0, 6]);

    // A window suppressed at its crossing stays quiet even once the cooldown ends inside it.
    let mut p = init(json!({ "rules": [{
        "name": "slow", "window": "10s", "threshold": 2, "cooldown": "15s" }] }));
    let out = testing::run(
        &mut p,
        &[
            msg("c", "a", T0),          // 1
            msg("c", "b", T0 + 100),    // 2: fires
            msg("c", "c", T0 + 10_000), // next window: 1
            msg("c", "d", T0 + 10_100), // 2: in cooldown until T0+15.1s, suppressed
            msg("c", "e", T0 + 16_000), // 3: cooldown over, but this window already crossed
            msg("c", "f", T0 + 20_000), // next window: 1
            msg("c", "g", T0 + 20_100), // 2: fires
        ],
    );
    assert_eq!(fired_at(&out), vec![1, 6]);
}

#[test]
fn cooldown_zero_fires_every_window() {
    let mut p = init(one_rule(json!({ "cooldown": "0s" })));
    let mut batch = burst("chan", T0 + 9_000, 3);
    batch.extend(burst("chan", T0 + 10_000, 3));
    assert_eq!(fired_at(&testing::run(&mut p, &batch)), vec![2, 5]);
}

#[test]
fn channel_globs_select_and_separate_channels() {
    let mut p = init(one_rule(
        json!({ "channels": ["xqc*", "sh?oud"], "threshold": 2 }),
    ));
    let out = testing::run(
        &mut p,
        &[
            msg("xqcow", "a", T0),
            msg("summit1g", "a", T0),
            msg("shroud", "a", T0),
            msg("summit1g", "b", T0),
            msg("xqc", "a", T0),
            msg("shroud", "b", T0),
            msg("xqcow", "b", T0),
            msg("xqc", "b", T0),
        ],
    );
    let alerts = alerts_of(&out);
    let got: Vec<(usize, &str)> = alerts
        .iter()
        .map(|(i, a)| (*i, a.attributes[0].1.as_str()))
        .collect();
    // Counted per channel: summit1g never matches; the others fire on their second message.
    assert_eq!(got, vec![(5, "shroud"), (6, "xqcow"), (7, "xqc")]);
}

#[test]
fn keyword_is_a_case_insensitive_substring() {
    let mut p = init(one_rule(json!({ "keyword": "PoG", "threshold": 2 })));
    let out = testing::run(
        &mut p,
        &[
            msg("c", "hello", T0),
            msg("c", "POGGERS", T0 + 1),
            msg("c", "p o g", T0 + 2),
            msg("c", "so pog", T0 + 3),
        ],
    );
    assert_eq!(fired_at(&out), vec![3]);
    assert!(alerts_of(&out)[0].1.body.contains("text contains \"pog\""));
}

#[test]
fn regex_is_case_sensitive_unless_asked_and_honours_anchors() {
    let mut p = init(json!({ "rules": [
        { "name": "cmd", "window": "10s", "threshold": 2, "regex": "^!drop\\b" },
        { "name": "any-case", "window": "10s", "threshold": 2, "regex": "(?i)^!drop\\b" },
        { "name": "ends", "window": "10s", "threshold": 2, "regex": "KEKW$" },
    ]}));
    let out = testing::run(
        &mut p,
        &[
            msg("c", "!drop now", T0),          // cmd 1, any-case 1
            msg("c", "!DROP now", T0 + 1),      // any-case 2 -> fires
            msg("c", "say !drop", T0 + 2),      // not at the start: nothing
            msg("c", "!dropped", T0 + 3),       // no word boundary: nothing
            msg("c", "KEKW then text", T0 + 4), // not at the end: nothing
            msg("c", "lol KEKW", T0 + 5),       // ends 1
            msg("c", "lol kekw", T0 + 6),       // case differs: nothing
            msg("c", "!drop", T0 + 7),          // cmd 2 -> fires
            msg("c", "KEKW", T0 + 8),           // ends 2 -> fires
        ],
    );
    let got: Vec<(usize, String)> = alerts_of(&out)
        .into_iter()
        .map(|(i, a)| (i, a.topic))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "any-case".into()),
            (7, "cmd".into()),
            (8, "ends".into())
        ]
    );
    let body = &alerts_of(&out)[1].1.body;
    assert!(body.contains("text matches /^!drop\\b/"), "{body}");
}

#[test]
fn regex_matches_unicode_text() {
    // `\w` and `(?i)` are Unicode-aware: accented Spanish words and non-ASCII case.
    let mut p = init(one_rule(
        json!({ "regex": "(?i)\\bqué\\s+\\w+", "threshold": 2 }),
    ));
    let out = testing::run(
        &mut p,
        &[
            msg("c", "QUÉ pasó", T0),        // 1
            msg("c", "que pasó", T0 + 1),    // no accent: nothing
            msg("c", "qué!", T0 + 2),        // no word after it: nothing
            msg("c", "¿Qué ñandú?", T0 + 3), // 2 -> fires
        ],
    );
    assert_eq!(fired_at(&out), vec![3]);
}

#[test]
fn regex_size_limit_leaves_room_for_real_patterns() {
    // The limit refuses `\w{150}` (see the invalid-config table) but not what rules need:
    // an alternation of many emotes, or a run of Unicode word characters.
    let emotes: Vec<String> = (0..300).map(|i| format!("emote{i}")).collect();
    let mut p = init(json!({ "rules": [
        { "name": "emotes", "window": "10s", "threshold": 1,
          "regex": format!("\\b(?:{})\\b", emotes.join("|")) },
        { "name": "long-word", "window": "10s", "threshold": 1, "regex": "(?i)\\w{40}" },
    ]}));
    let out = testing::run(
        &mut p,
        &[
            msg("c", "so emote299 wow", T0),
            msg("c", &"é".repeat(40), T0 + 1),
        ],
    );
    let topics: Vec<String> = alerts_of(&out).into_iter().map(|(_, a)| a.topic).collect();
    assert_eq!(topics, vec!["emotes", "long-word"]);
}

#[test]
fn keyword_and_regex_must_both_match() {
    let mut p = init(one_rule(
        json!({ "keyword": "pog", "regex": "^[A-Z ]+$", "threshold": 2 }),
    ));
    let out = testing::run(
        &mut p,
        &[
            msg("c", "POG POG", T0),     // both: 1
            msg("c", "pog pog", T0 + 1), // keyword only
            msg("c", "HYPE", T0 + 2),    // regex only
            msg("c", "POGGERS", T0 + 3), // both: 2 -> fires
        ],
    );
    assert_eq!(fired_at(&out), vec![3]);
    let body = &alerts_of(&out)[0].1.body;
    assert!(
        body.contains("text contains \"pog\" (any case) and text matches /^[A-Z ]+$/"),
        "{body}"
    );
}

fn with_lang(channel: &str, ts_ms: i64, lang: Value) -> ChatMessage {
    let mut m = msg(channel, "hola", ts_ms);
    m.fields.insert("lang".into(), lang);
    m
}

#[test]
fn equals_and_one_of_compare_string_fields() {
    let mut p = init(json!({ "rules": [
        { "name": "es", "window": "10s", "threshold": 2, "field": "lang", "equals": "es" },
        { "name": "iberian", "window": "10s", "threshold": 3, "field": "lang",
          "one_of": ["es", "pt"] },
        { "name": "pt-only", "window": "10s", "threshold": 1, "field": "lang",
          "equals": "pt", "one_of": ["pt", "gl"] },
    ]}));
    let mut no_lang = msg("c", "hello", T0 + 1);
    no_lang.fields.insert("other".into(), Value::from("es"));
    let out = testing::run(
        &mut p,
        &[
            with_lang("c", T0, Value::from("es")),     // es 1, iberian 1
            no_lang,                                   // no `lang`: nothing
            with_lang("c", T0 + 2, Value::from("ES")), // case differs: nothing
            with_lang("c", T0 + 3, Value::Int(1)),     // not a string: nothing
            with_lang("c", T0 + 4, Value::Null),       // null: nothing
            with_lang("c", T0 + 5, Value::from("en")), // nothing
            with_lang("c", T0 + 6, Value::from("pt")), // iberian 2, pt-only 1 -> fires
            with_lang("c", T0 + 7, Value::from("es")), // es 2 -> fires, iberian 3 -> fires
        ],
    );
    let alerts = alerts_of(&out);
    let got: Vec<(usize, String)> = alerts.iter().map(|(i, a)| (*i, a.topic.clone())).collect();
    assert_eq!(
        got,
        vec![
            (6, "pt-only".into()),
            (7, "es".into()),
            (7, "iberian".into())
        ]
    );
    let body = |topic: &str| {
        alerts
            .iter()
            .find(|(_, a)| a.topic == topic)
            .map(|(_, a)| a.body.clone())
            .unwrap_or_default()
    };
    assert!(
        body("es").contains("Matching: lang = \"es\"\n"),
        "{}",
        body("es")
    );
    assert!(
        body("iberian").contains("Matching: lang one of [\"es\", \"pt\"]\n"),
        "{}",
        body("iberian")
    );
}

#[test]
fn equals_follows_a_dotted_path() {
    let mut p = init(one_rule(
        json!({ "field": "sentiment.label", "equals": "x", "threshold": 1 }),
    ));
    let out = testing::run(&mut p, &[with_sentiment("c", T0, Value::Float(0.1))]);
    assert_eq!(fired_at(&out), vec![0]);
}

#[test]
fn field_below_counts_negative_sentiment_from_an_earlier_step() {
    let mut p = init(one_rule(json!({
        "name": "toxic", "field": "sentiment.compound", "below": -0.5, "threshold": 2,
        "topic": "moderation", "severity": "critical",
    })));
    let mut no_field = msg("c", "x", T0 + 1);
    no_field.fields.insert("other".into(), Value::Int(1));
    let out = testing::run(
        &mut p,
        &[
            with_sentiment("c", T0, Value::Float(-0.9)), // counts: 1
            no_field,                                    // no sentiment
            with_sentiment("c", T0 + 2, Value::Float(-0.5)), // not < -0.5
            with_sentiment("c", T0 + 3, Value::Str("-0.9".into())), // not a number
            with_sentiment("c", T0 + 4, Value::Int(-1)), // counts: 2, fires
        ],
    );
    let alerts = alerts_of(&out);
    assert_eq!(alerts.len(), 1);
    let (i, a) = &alerts[0];
    assert_eq!(*i, 4);
    assert_eq!(a.topic, "moderation");
    assert_eq!(a.severity, "critical");
    assert_eq!(a.title, "toxic: #c 2 messages in 10s");
    assert!(a.body.contains("sentiment.compound < -0.5"), "{}", a.body);
}

#[test]
fn field_above_between_and_present() {
    let mut p = init(json!({ "rules": [
        { "name": "up", "window": "10s", "threshold": 2, "field": "sentiment.compound", "above": 0.5 },
        { "name": "mid", "window": "10s", "threshold": 2, "field": "sentiment.compound", "above": -0.1, "below": 0.1 },
        { "name": "any", "window": "10s", "threshold": 2, "field": "sentiment" },
    ]}));
    let out = testing::run(
        &mut p,
        &[
            with_sentiment("c", T0, Value::Float(0.9)), // up 1, any 1
            with_sentiment("c", T0 + 1, Value::Float(0.0)), // mid 1, any 2 -> any fires
            with_sentiment("c", T0 + 2, Value::Float(0.5)), // nothing (not > 0.5)
            with_sentiment("c", T0 + 3, Value::Float(0.05)), // mid 2 -> fires
            with_sentiment("c", T0 + 4, Value::Float(0.7)), // up 2 -> fires
        ],
    );
    let got: Vec<(usize, String)> = alerts_of(&out)
        .into_iter()
        .map(|(i, a)| (i, a.topic))
        .collect();
    assert_eq!(
        got,
        vec![(1, "any".into()), (3, "mid".into()), (4, "up".into())]
    );
}

#[test]
fn rules_are_independent() {
    let mut p = init(json!({ "rules": [
        { "name": "a", "window": "10s", "threshold": 2 },
        { "name": "b", "window": "1m", "threshold": 2, "keyword": "x" },
    ]}));
    let out = testing::run(&mut p, &[msg("c", "x", T0), msg("c", "x", T0 + 1)]);
    let topics: Vec<String> = alerts_of(&out).into_iter().map(|(_, a)| a.topic).collect();
    assert_eq!(topics, vec!["a", "b"]);
    // Both on the same message, each with its own record.
    assert_eq!(out[1].len(), 4);
}

#[test]
fn state_survives_reinit() {
    let config = one_rule(json!({ "threshold": 5 }));
    let mut p = init(config.clone());
    assert!(fired_at(&testing::run(&mut p, &burst("chan", T0, 3))).is_empty());
    drop(p);

    // A hot reload: a new instance, the same (thread-local) key-value store.
    let mut p = init(config.clone());
    let out = testing::run(&mut p, &burst("chan", T0 + 1_000, 3));
    assert_eq!(fired_at(&out), vec![1], "counting continued from 3");
    drop(p);

    // The cooldown survives too: the next window is within 10s of the last alert.
    let mut p = init(config);
    assert!(fired_at(&testing::run(&mut p, &burst("chan", T0 + 10_000, 5))).is_empty());
}

#[test]
fn reload_while_old_instance_still_runs_sees_its_latest_counts() {
    // The host builds (inits) the new generation while the old one keeps processing, then
    // swaps between batches. The new instance must see everything the old one counted.
    let config = one_rule(json!({ "threshold": 4 }));
    let mut old = init(config.clone());
    testing::run(&mut old, &burst("chan", T0, 1));
    let mut new = init(config);
    testing::run(&mut old, &burst("chan", T0 + 1_000, 2)); // count 3, after `new` was built
    drop(old);
    assert_eq!(
        fired_at(&testing::run(&mut new, &burst("chan", T0 + 2_000, 1))),
        vec![0]
    );
}

#[test]
fn reload_with_a_new_window_restarts_counting() {
    let mut p = init(one_rule(json!({ "threshold": 3 })));
    testing::run(&mut p, &burst("chan", T0, 2));
    drop(p);
    let mut p = init(one_rule(json!({ "threshold": 3, "window": "20s" })));
    // The 10s-window count of 2 does not carry over into a 20s window.
    assert!(fired_at(&testing::run(&mut p, &burst("chan", T0 + 1_000, 2))).is_empty());
    assert_eq!(
        fired_at(&testing::run(&mut p, &burst("chan", T0 + 2_000, 1))),
        vec![0]
    );
}

#[test]
fn reload_lowering_the_threshold_fires_at_the_next_message() {
    let mut p = init(one_rule(json!({ "threshold": 10 })));
    testing::run(&mut p, &burst("chan", T0, 5));
    drop(p);
    let mut p = init(one_rule(json!({ "threshold": 3 })));
    // Count is already past 3: the next matching message fires (once).
    assert_eq!(
        fired_at(&testing::run(&mut p, &burst("chan", T0 + 1_000, 3))),
        vec![0]
    );
}

#[test]
fn late_messages_are_counted_not_ignored() {
    let mut p = init(one_rule(json!({ "threshold": 2 })));
    testing::run(&mut p, &[msg("chan", "a", T0 + 10_000)]); // opens window +10s
    let out = testing::run(
        &mut p,
        &[
            msg("chan", "late1", T0 + 9_999), // previous window: late
            msg("chan", "late2", T0),         // late
            msg("other", "old", T0),          // first message of `other`: not late
        ],
    );
    assert!(
        fired_at(&out).is_empty(),
        "late messages do not count toward the window"
    );
    assert_eq!(p.late_count("hype", "chan"), Some(2));
    assert_eq!(p.late_count("hype", "other"), Some(0));
    // Out of order *within* the current window is fine.
    let out = testing::run(&mut p, &[msg("chan", "b", T0 + 19_999)]);
    assert_eq!(fired_at(&out), vec![0]);

    // The late total is part of the saved state, so it survives a reload.
    drop(p);
    let bytes = host::kv::get(&state_key("hype", "chan")).expect("state saved");
    let st: WindowState = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(st.late, 2);
    assert_eq!(st.count, 2);
    assert_eq!(st.start, Some(T0 + 10_000));
    let p = init(one_rule(json!({ "threshold": 2 })));
    assert_eq!(p.late_count("hype", "chan"), Some(2));
}

#[test]
fn unreadable_state_is_replaced() {
    host::kv::set(&state_key("hype", "chan"), b"not json").unwrap();
    let mut p = init(one_rule(json!({})));
    assert_eq!(
        fired_at(&testing::run(&mut p, &burst("chan", T0, 3))),
        vec![2]
    );
}

#[test]
fn hostile_input_does_not_panic() {
    let mut p = init(json!({ "rules": [
        { "name": "a", "window": "1ms", "threshold": 1, "cooldown": "0s" },
        { "name": "b", "window": "9999999h", "threshold": 2, "keyword": "ß",
          "field": "x.y.z", "above": 0.0 },
    ]}));
    let mut deep = msg("c", "SS ß", 0);
    deep.fields.insert(
        "x".into(),
        Value::map([("y", Value::map([("z", Value::Float(f64::NAN))]))]),
    );
    let msgs = vec![
        msg("", "", i64::MIN),
        msg("c", "", i64::MAX),
        msg("c", "", i64::MIN + 1),
        msg("#weird chan/é", "\u{0}", -1),
        msg("c", "", i64::MAX),
        deep,
    ];
    let out = testing::run(&mut p, &msgs);
    assert_eq!(out.len(), msgs.len());
    for (_, a) in alerts_of(&out) {
        assert!(a.body.contains("ms since the Unix epoch") || a.body.contains('T'));
    }
}

#[test]
fn invalid_configs_are_rejected_with_clear_messages() {
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (json!({}), "no rules"),
        (json!({ "rules": [] }), "no rules"),
        (
            json!({ "rules": [
                { "name": "hype", "window": "10s", "threshold": 1 },
                { "name": "hype", "window": "20s", "threshold": 2 },
            ]}),
            "rule #2: name \"hype\" is used by an earlier rule",
        ),
        (
            one_rule(json!({ "threshold": 0 })),
            "rule \"hype\": `threshold` = 0",
        ),
        (
            json!({ "rules": [{ "name": "hype", "window": "10s" }] }),
            "rule \"hype\": `threshold` is required",
        ),
        (
            json!({ "rules": [{ "window": "10s", "threshold": 1 }] }),
            "rule #1: `name` is required",
        ),
        (
            one_rule(json!({ "name": "a b" })),
            "rule #1 \"a b\": `name` contains ' '",
        ),
        (
            one_rule(json!({ "window": "10" })),
            "rule \"hype\": `window` = \"10\" has no unit",
        ),
        (
            one_rule(json!({ "window": "10sec" })),
            "rule \"hype\": `window` = \"10sec\" has unknown unit \"sec\"",
        ),
        (
            one_rule(json!({ "window": "0s" })),
            "rule \"hype\": `window` = \"0s\" must be longer than zero",
        ),
        (
            json!({ "rules": [{ "name": "hype", "threshold": 1 }] }),
            "rule \"hype\": `window` is required",
        ),
        (
            one_rule(json!({ "cooldown": "1.5m" })),
            "rule \"hype\": `cooldown` = \"1.5m\" has unknown unit \".5m\"",
        ),
        (
            one_rule(json!({ "below": -0.5 })),
            "rule \"hype\": `below` = -0.5 needs `field`",
        ),
        (
            one_rule(json!({ "above": 0.5 })),
            "rule \"hype\": `above` = 0.5 needs `field`",
        ),
        (
            one_rule(json!({ "field": "s.c", "above": 0.5, "below": -0.5 })),
            "rule \"hype\": `above` = 0.5 and `below` = -0.5 leave no value",
        ),
        (
            one_rule(json!({ "field": "sentiment..compound", "below": 0 })),
            "rule \"hype\": `field` = \"sentiment..compound\" is not a dotted path",
        ),
        (
            one_rule(json!({ "channels": ["#xqc"] })),
            "rule \"hype\": `channels`: channel pattern \"#xqc\" contains '#'",
        ),
        (
            one_rule(json!({ "channels": ["xq[c]"] })),
            "channel pattern \"xq[c]\" contains '['",
        ),
        (
            one_rule(json!({ "channels": [""] })),
            "rule \"hype\": `channels`: empty channel pattern",
        ),
        (
            one_rule(json!({ "channels": [] })),
            "rule \"hype\": `channels` is empty",
        ),
        (
            one_rule(json!({ "keyword": "" })),
            "rule \"hype\": `keyword` is empty",
        ),
        (
            one_rule(json!({ "regex": "" })),
            "rule \"hype\": `regex` is empty",
        ),
        (
            one_rule(json!({ "regex": "(unclosed" })),
            "rule \"hype\": `regex` = \"(unclosed\" is not a valid pattern: unclosed group",
        ),
        (
            one_rule(json!({ "regex": "a{1,2" })),
            "rule \"hype\": `regex` = \"a{1,2\" is not a valid pattern: unclosed counted repetition",
        ),
        (
            // Unicode `\w` is thousands of bytes compiled; 150 of them exceed 1 MiB.
            one_rule(json!({ "regex": "\\w{150}" })),
            "rule \"hype\": `regex` = \"\\\\w{150}\" is too big: compiled, it exceeds the 1048576-byte limit",
        ),
        (
            one_rule(json!({ "regex": "(?:a{1000}){1000}" })),
            "rule \"hype\": `regex` = \"(?:a{1000}){1000}\" is too big",
        ),
        (
            one_rule(json!({ "regex": "\\p{Greek}" })),
            "rule \"hype\": `regex` = \"\\\\p{Greek}\" is not a valid pattern: Unicode property not found",
        ),
        (
            one_rule(json!({ "equals": "es" })),
            "rule \"hype\": `equals` needs `field`",
        ),
        (
            one_rule(json!({ "one_of": ["es"] })),
            "rule \"hype\": `one_of` needs `field`",
        ),
        (
            one_rule(json!({ "field": "lang", "one_of": [] })),
            "rule \"hype\": `one_of` is empty",
        ),
        (
            one_rule(json!({ "field": "lang", "equals": "es", "below": 1 })),
            "rule \"hype\": `equals` compares strings and `below` compares numbers",
        ),
        (
            one_rule(json!({ "field": "lang", "one_of": ["es"], "above": 0 })),
            "rule \"hype\": `one_of` compares strings and `above` compares numbers",
        ),
        (
            one_rule(json!({ "field": "lang", "equals": "es", "one_of": ["pt"] })),
            "rule \"hype\": `equals` = \"es\" is not in `one_of` = [\"pt\"]",
        ),
        (
            one_rule(json!({ "field": "lang", "equals": 1 })),
            "invalid type",
        ),
        (
            one_rule(json!({ "field": "lang", "one_of": "es" })),
            "invalid type",
        ),
        (
            one_rule(json!({ "topic": "" })),
            "rule \"hype\": `topic` is empty",
        ),
        (
            one_rule(json!({ "severity": "" })),
            "rule \"hype\": `severity` is empty",
        ),
        // Typos are caught by serde (`deny_unknown_fields`) at both levels.
        (
            one_rule(json!({ "treshold": 5 })),
            "unknown field `treshold`",
        ),
        (json!({ "rule": [] }), "unknown field `rule`"),
        (one_rule(json!({ "threshold": -1 })), "invalid value"),
    ];
    for (config, expected) in cases {
        let err = init_err(config.clone());
        assert!(
            err.contains(expected),
            "config {config}\n  expected message containing: {expected}\n  got: {err}"
        );
    }
}

#[test]
fn demo_pipeline_rules_are_valid() {
    // The two rules of pipelines/demo.toml, as the host hands them over (JSON).
    init(json!({ "rules": [
        { "name": "hype", "channels": ["*"], "window": "20s", "threshold": 150,
          "topic": "hype", "severity": "info" },
        { "name": "toxic-wave", "channels": ["*"], "window": "60s", "threshold": 40,
          "field": "sentiment.compound", "below": -0.5, "topic": "moderation",
          "severity": "warning" },
    ]}));
}

#[test]
fn crate_doc_example_rule_is_valid_and_matches() {
    // The second rule of the example at the top of src/lib.rs.
    let mut p = init(json!({ "rules": [
        { "name": "iberian-commands", "window": "30s", "threshold": 2,
          "regex": "(?i)^!(drop|giveaway)\\b", "field": "lang", "one_of": ["es", "pt"] },
    ]}));
    let mut es = with_lang("c", T0, Value::from("es"));
    es.text = "!DROP ya".into();
    let mut en = with_lang("c", T0 + 1, Value::from("en"));
    en.text = "!drop".into();
    let mut pt = with_lang("c", T0 + 2, Value::from("pt"));
    pt.text = "!giveaway agora".into();
    assert_eq!(fired_at(&testing::run(&mut p, &[es, en, pt])), vec![2]);
}
