//! The plugin end to end through the SDK's native test harness: detection fields,
//! cleaning, translation batching and caching, and every failure path. The translation
//! backend is faked with `testing::set_http` (per test thread, like the kv stand-in).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::json;
use streamtap_plugin_sdk::codec::{self, ChatMessage, Emote};
use streamtap_plugin_sdk::host::http::{Error, Request, Response};
use streamtap_plugin_sdk::host::kv;
use streamtap_plugin_sdk::{Action, Actions, Plugin, Value, testing};
use translate::Translate;

// Lines whose language whatlang gets right with full confidence, so translation tests do
// not depend on the detector's borderline cases.
const JA: &str = "今日の配信ありがとうございました";
const KO: &str = "오늘 방송 감사합니다 재밌었어요";
const RU: &str = "спасибо за стрим сегодня было круто";
const EN: &str = "that was the cleanest clutch I have ever seen";
/// Six distinct lines to translate, for tests that need more texts than one batch sends.
const SIX: [&str; 6] = [
    JA,
    KO,
    RU,
    "明日の配信も楽しみにしています",
    "오늘도 좋은 하루 보내세요 감사합니다",
    "спасибо большое за игру было очень весело",
];

fn msg(text: &str) -> ChatMessage {
    testing::message("chan", "user", text)
}

fn with_emotes(text: &str, emotes: &[(&str, u32, u32)]) -> ChatMessage {
    let mut m = msg(text);
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

/// The value of field `name` in one message's actions.
fn field(actions: &[Action], name: &str) -> Option<Value> {
    actions.iter().rev().find_map(|a| match a {
        Action::Set { name: n, value } if n == name => Some(value.clone()),
        _ => None,
    })
}

fn lang(actions: &[Action]) -> String {
    field(actions, "lang")
        .and_then(|v| v.as_str().map(str::to_owned))
        .expect("lang is always set")
}

fn confidence(actions: &[Action]) -> f64 {
    field(actions, "lang_confidence")
        .and_then(|v| v.as_f64())
        .expect("lang_confidence is always set")
}

fn detect_one(m: ChatMessage) -> (String, f64) {
    let mut p: Translate = testing::init(json!({})).unwrap();
    let out = testing::run(&mut p, &[m]);
    (lang(&out[0]), confidence(&out[0]))
}

// ---------------------------------------------------------------------------------------
// Detection

#[test]
fn every_message_gets_lang_and_confidence() {
    let mut p: Translate = testing::init(json!({})).unwrap();
    let out = testing::run(&mut p, &[msg(EN), msg(JA), msg("gg"), msg("")]);
    assert_eq!(lang(&out[0]), "en");
    assert_eq!(lang(&out[1]), "ja");
    assert!(confidence(&out[1]) > 0.9);
    for o in &out[2..] {
        assert_eq!(lang(o), "und");
        assert_eq!(confidence(o), 0.0);
    }
    // Detection only: no translation field when translation is off.
    assert!(out.iter().all(|o| field(o, "translation").is_none()));
}

#[test]
fn emotes_are_stripped_by_position() {
    // Emote-only (with a multi-byte emoji before them, so byte and char positions differ).
    let m = with_emotes(
        "😂 Kappa PogChamp Kappa",
        &[("25", 2, 6), ("88", 8, 15), ("25", 17, 21)],
    );
    assert_eq!(detect_one(m), ("und".into(), 0.0));
    // The same words without positions would be letters enough to detect something.
    let (l, _) = detect_one(msg("😂 Kappa PogChamp Kappa Kreygasm"));
    assert_eq!(l, "und", "default emote_words strip them too");
    let mut p: Translate =
        testing::init(json!({"emote_words": [], "min_confidence": 0.0})).unwrap();
    let out = testing::run(&mut p, &[msg("Kappa PogChamp Kappa Kreygasm")]);
    assert_ne!(
        lang(&out[0]),
        "und",
        "without stripping, emote names look like words"
    );

    // An emote in the middle of real text leaves the text detectable.
    let text = "LUL спасибо за стрим LUL сегодня было круто";
    let m = with_emotes(text, &[("425618", 0, 2), ("425618", 21, 23)]);
    assert_eq!(detect_one(m).0, "ru");
}

#[test]
fn mentions_and_links_are_stripped() {
    // Only a mention and a link plus two short words: nothing left to detect.
    let (l, _) = detect_one(msg(
        "@SomeLongUserName_123 https://clips.twitch.tv/FunnyClipName look here",
    ));
    assert_eq!(l, "und");
    let (l, _) = detect_one(msg("@Streamer twitch.tv/other_channel www.example.com"));
    assert_eq!(l, "und");
    // Text around them is still detected.
    let (l, _) = detect_one(msg(
        "@streamer спасибо за стрим сегодня было круто https://youtu.be/dQw4w9WgXcQ",
    ));
    assert_eq!(l, "ru");
}

#[test]
fn stretched_words_are_collapsed_before_counting() {
    // 2 letters after collapsing ("noo" → 3, "woow" → 4 ... still < 8).
    assert_eq!(detect_one(msg("noooooooooo wooooooooow")).0, "und");
    assert_eq!(detect_one(msg("lmaooooooooooooooo")).0, "und");
}

#[test]
fn short_text_is_undetermined() {
    for t in [
        "gg",
        "lol",
        "hi chat",
        "F",
        "!!!!!!!!!!!!",
        "1234567890",
        "😂😂😂😂😂😂😂😂😂",
    ] {
        assert_eq!(detect_one(msg(t)), ("und".into(), 0.0), "{t:?}");
    }
    // min_chars is configurable.
    let mut p: Translate = testing::init(json!({"min_chars": 2})).unwrap();
    let out = testing::run(&mut p, &[msg("ㅋㅋㅋㅋㅋ")]);
    assert_eq!(lang(&out[0]), "ko");
}

#[test]
fn allowlist_restricts_answers() {
    let mut p: Translate =
        testing::init(json!({"languages": ["es", "en"], "min_confidence": 0.0})).unwrap();
    let out = testing::run(&mut p, &[msg("vamos que se puede ganar esta partida")]);
    assert_eq!(lang(&out[0]), "es");
}

// ---------------------------------------------------------------------------------------
// Translation

/// Records every request and answers with `respond`.
fn fake_backend(
    respond: impl Fn(&Request) -> Result<Response, Error> + 'static,
) -> Rc<RefCell<Vec<Request>>> {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    testing::set_http(move |req| {
        l.borrow_mut().push(req.clone());
        respond(req)
    });
    log
}

fn ok(body: serde_json::Value) -> Result<Response, Error> {
    Ok(Response {
        status: 200,
        headers: vec![],
        body: body.to_string().into_bytes(),
    })
}

/// A LibreTranslate stand-in: translates each `q` to `EN(<q>)`.
fn libretranslate_echo(req: &Request) -> Result<Response, Error> {
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    let q = body["q"].as_array().unwrap();
    let out: Vec<String> = q
        .iter()
        .map(|t| format!("EN({})", t.as_str().unwrap()))
        .collect();
    ok(json!({ "translatedText": out }))
}

fn lt_config() -> serde_json::Value {
    json!({
        "target": "en",
        "backend": "libretranslate",
        "url": "http://127.0.0.1:5000/",
        "api_key": "sekrit",
        "failure_cooldown_ms": 0,
    })
}

#[test]
fn one_request_per_batch_then_cached() {
    let log = fake_backend(libretranslate_echo);
    let mut p: Translate = testing::init(lt_config()).unwrap();
    let batch = vec![
        msg(JA),
        msg(EN), // already in the target language
        msg(KO),
        msg("gg"), // und
        msg(RU),
        msg(JA), // repeated: sent once
        with_emotes(
            "Kappa Kappa Kappa",
            &[("25", 0, 4), ("25", 6, 10), ("25", 12, 16)],
        ),
    ];
    let out = testing::run(&mut p, &batch);

    assert_eq!(log.borrow().len(), 1, "one request for the whole batch");
    let req = log.borrow()[0].clone();
    assert_eq!(req.method, "POST");
    assert_eq!(req.url, "http://127.0.0.1:5000/translate");
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        body,
        json!({"q": [JA, KO, RU], "source": "auto", "target": "en", "format": "text", "api_key": "sekrit"})
    );

    let tr = |i: usize| field(&out[i], "translation");
    assert_eq!(
        tr(0).unwrap(),
        Value::map([
            ("text", Value::from(format!("EN({JA})"))),
            ("source", Value::from("ja")),
            ("target", Value::from("en")),
            ("backend", Value::from("libretranslate")),
        ])
    );
    assert_eq!(tr(5), tr(0));
    assert_eq!(
        tr(2).unwrap().get("text").and_then(Value::as_str),
        Some(format!("EN({KO})").as_str())
    );
    assert_eq!(
        tr(4).unwrap().get("source").and_then(Value::as_str),
        Some("ru")
    );
    for i in [1, 3, 6] {
        assert_eq!(tr(i), None, "message {i} must not be translated");
    }

    // Second time: everything is in the cache, no request.
    let again = testing::run(&mut p, &batch);
    assert_eq!(log.borrow().len(), 1, "cached texts are not sent again");
    assert_eq!(again, out);

    // A new plugin instance (hot reload) shares the step's kv state, so the cache too.
    let mut reloaded: Translate = testing::init(lt_config()).unwrap();
    testing::run(&mut reloaded, &[msg(RU)]);
    assert_eq!(log.borrow().len(), 1);
}

#[test]
fn only_uncached_texts_are_sent() {
    let log = fake_backend(libretranslate_echo);
    let mut p: Translate = testing::init(lt_config()).unwrap();
    testing::run(&mut p, &[msg(JA)]);
    testing::run(&mut p, &[msg(JA), msg(KO)]);
    let log = log.borrow();
    assert_eq!(log.len(), 2);
    let body: serde_json::Value = serde_json::from_slice(&log[1].body).unwrap();
    assert_eq!(body["q"], json!([KO]));
}

#[test]
fn large_batches_are_split_at_max_batch() {
    let log = fake_backend(libretranslate_echo);
    let mut cfg = lt_config();
    cfg["max_batch"] = json!(2);
    let mut p: Translate = testing::init(cfg).unwrap();
    let out = testing::run(&mut p, &[msg(JA), msg(KO), msg(RU)]);
    assert_eq!(log.borrow().len(), 2);
    assert!(
        out.iter()
            .all(|o| field(o, "translation").unwrap().get("text").is_some())
    );
}

/// The translated text of a message, or `None` when it got an error or no translation.
fn translated(actions: &[Action]) -> Option<String> {
    field(actions, "translation")?
        .get("text")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[test]
fn requests_stop_when_the_call_budget_would_run_out() {
    const SLEEP_MS: u64 = 100;
    const BUDGET_MS: u64 = 250;
    let log = fake_backend(|req| {
        std::thread::sleep(Duration::from_millis(SLEEP_MS));
        libretranslate_echo(req)
    });
    let mut cfg = lt_config();
    cfg["max_batch"] = json!(1);
    cfg["budget_ms"] = json!(BUDGET_MS);
    let mut p: Translate = testing::init(cfg).unwrap();
    let batch: Vec<ChatMessage> = SIX.iter().map(|t| msg(t)).collect();

    let started = Instant::now();
    let out = testing::run(&mut p, &batch);
    let took = started.elapsed();

    // Requests end at about 100 and 200 ms; a third would end at 300, past the budget.
    // A loaded machine may fit only one, never none and never all six.
    let sent = log.borrow().len();
    assert!((1..=2).contains(&sent), "{sent} requests sent");
    assert!(
        took < Duration::from_millis(BUDGET_MS + SLEEP_MS),
        "the call took {took:?}, over budget_ms plus one request"
    );
    for (i, (o, text)) in out.iter().zip(SIX).enumerate() {
        assert_ne!(lang(o), "und", "message {i} keeps its detected lang");
        if i < sent {
            assert_eq!(translated(o), Some(format!("EN({text})")), "message {i}");
        } else {
            let tr = field(o, "translation").unwrap();
            let err = tr.get("error").and_then(Value::as_str).unwrap();
            assert!(
                err.starts_with("skipped: the call's time budget would run out")
                    && err.contains("budget_ms = 250"),
                "message {i}: {err}"
            );
        }
    }
    // Each request may wait only for what is left of the budget.
    let timeouts: Vec<u32> = log.borrow().iter().map(|r| r.timeout_ms.unwrap()).collect();
    assert!(
        (200..=250).contains(&timeouts[0]),
        "first request: {timeouts:?}"
    );
    if sent == 2 {
        assert!(timeouts[1] <= 150, "second request: {timeouts:?}");
    }
    // Every request not sent is counted, as kind `budget`.
    let expect: Vec<(String, f64)> = (1..=6 - sent)
        .map(|n| ("budget".to_string(), n as f64))
        .collect();
    assert_eq!(failure_metrics(&out[0]), expect);

    // Running out of time says nothing about the backend: no cooldown, and the next call
    // has a whole budget for the rest (the first ones are cached).
    let again = testing::run(&mut p, &batch);
    assert!(log.borrow().len() > sent, "the next call sends again");
    assert!(translated(&again[sent]).is_some());
}

#[test]
fn the_first_request_gets_the_budget_as_timeout_when_that_is_lower() {
    let log = fake_backend(libretranslate_echo);
    let mut cfg = lt_config();
    cfg["timeout_ms"] = json!(2_000);
    let mut p: Translate = testing::init(cfg.clone()).unwrap();
    testing::run(&mut p, &[msg(JA)]);
    cfg["budget_ms"] = json!(700);
    let mut p: Translate = testing::init(cfg).unwrap();
    testing::run(&mut p, &[msg(KO)]);
    let timeouts: Vec<u32> = log.borrow().iter().map(|r| r.timeout_ms.unwrap()).collect();
    assert_eq!(timeouts[0], 2_000, "timeout_ms when the budget is larger");
    assert!(
        (650..=700).contains(&timeouts[1]),
        "at most budget_ms: {timeouts:?}"
    );
}

fn cache_key(text: &str) -> String {
    format!("tr:en:{text}")
}

#[test]
fn the_cache_keeps_the_most_recent_translations() {
    let log = fake_backend(libretranslate_echo);
    let mut cfg = lt_config();
    cfg["cache_entries"] = json!(3);
    let five = &SIX[..5];
    let mut p: Translate = testing::init(cfg.clone()).unwrap();
    // One batch per text, so the order of use is known.
    for t in five {
        testing::run(&mut p, &[msg(t)]);
    }
    assert_eq!(log.borrow().len(), 5);
    // The two oldest are gone from the step's state, not just forgotten.
    for (i, t) in five.iter().enumerate() {
        assert_eq!(kv::get(&cache_key(t)).is_some(), i >= 2, "text {i}");
    }

    // A new instance (hot reload) finds the three newest in the state, and the order.
    let mut reloaded: Translate = testing::init(cfg).unwrap();
    let batch: Vec<ChatMessage> = five.iter().map(|t| msg(t)).collect();
    let out = testing::run(&mut reloaded, &batch);
    assert_eq!(
        log.borrow().len(),
        6,
        "one request for the two evicted texts"
    );
    let body: serde_json::Value = serde_json::from_slice(&log.borrow()[5].body).unwrap();
    assert_eq!(body["q"], json!([five[0], five[1]]));
    for (o, t) in out.iter().zip(five) {
        assert_eq!(translated(o), Some(format!("EN({t})")));
    }
    // Still three entries: the refetched two are the newest, and of the three found in
    // the cache the one used last (text 4) stays.
    for (i, t) in five.iter().enumerate() {
        assert_eq!(
            kv::get(&cache_key(t)).is_some(),
            [0, 1, 4].contains(&i),
            "text {i}"
        );
    }
}

#[test]
fn a_cache_hit_counts_as_recent_use() {
    let log = fake_backend(libretranslate_echo);
    let mut cfg = lt_config();
    cfg["cache_entries"] = json!(2);
    let mut p: Translate = testing::init(cfg).unwrap();
    testing::run(&mut p, &[msg(JA)]);
    testing::run(&mut p, &[msg(KO)]);
    testing::run(&mut p, &[msg(JA)]); // a hit: KO is now the least recently used
    testing::run(&mut p, &[msg(RU)]);
    assert_eq!(log.borrow().len(), 3);
    assert!(kv::get(&cache_key(JA)).is_some());
    assert!(kv::get(&cache_key(KO)).is_none());
    testing::run(&mut p, &[msg(JA), msg(RU)]);
    assert_eq!(log.borrow().len(), 3, "both still cached");
}

#[test]
fn single_message_path_translates_too() {
    // `process` (one message) is what a host calling without batching would use.
    let log = fake_backend(libretranslate_echo);
    let mut p: Translate = testing::init(lt_config()).unwrap();
    let buf = codec::encode_batch(&[msg(KO)]);
    let views = codec::decode_batch(&buf).unwrap();
    let mut out = Actions::default();
    p.process(&views[0], &mut out);
    assert_eq!(log.borrow().len(), 1);
    assert_eq!(
        field(&out.to_vec(), "translation")
            .unwrap()
            .get("text")
            .and_then(Value::as_str),
        Some(format!("EN({KO})").as_str())
    );
}

/// Runs a batch of three translatable and one English message against a backend that
/// answers with `respond`; returns each message's `translation` field.
fn translations_with(
    respond: impl Fn(&Request) -> Result<Response, Error> + 'static,
) -> Vec<Option<Value>> {
    fake_backend(respond);
    let mut p: Translate = testing::init(lt_config()).unwrap();
    let out = testing::run(&mut p, &[msg(JA), msg(EN), msg(KO), msg(RU)]);
    // Detection is unaffected by translation failures.
    assert_eq!(lang(&out[0]), "ja");
    assert_eq!(lang(&out[1]), "en");
    out.iter().map(|o| field(o, "translation")).collect()
}

fn assert_errors(trs: &[Option<Value>], expect: &str) {
    assert_eq!(trs[1], None);
    for i in [0, 2, 3] {
        let t = trs[i]
            .as_ref()
            .expect("failed translation still sets the field");
        let err = t.get("error").and_then(Value::as_str).expect("error set");
        assert!(err.contains(expect), "{err:?} should contain {expect:?}");
        assert_eq!(t.get("backend"), Some(&Value::from("libretranslate")));
        assert_eq!(t.get("text"), None);
    }
}

#[test]
fn http_500_sets_error() {
    let trs = translations_with(|_| {
        Ok(Response {
            status: 500,
            headers: vec![],
            body: br#"{"error":"model not loaded"}"#.to_vec(),
        })
    });
    assert_errors(&trs, "HTTP 500: model not loaded");
}

#[test]
fn malformed_json_sets_error() {
    let trs = translations_with(|_| {
        Ok(Response {
            status: 200,
            headers: vec![],
            body: b"<html>502 Bad Gateway</html>".to_vec(),
        })
    });
    assert_errors(&trs, "malformed response");
    let trs = translations_with(|_| ok(json!({"translatedText": [1, 2, 3]})));
    assert_errors(&trs, "malformed response");
}

#[test]
fn wrong_array_length_sets_error() {
    let trs = translations_with(|_| ok(json!({"translatedText": ["only one"]})));
    assert_errors(&trs, "1 translations for 3 texts");
}

#[test]
fn transport_errors_set_error() {
    let trs = translations_with(|_| Err(Error::Timeout));
    assert_errors(&trs, "timed out");
    let trs = translations_with(|_| Err(Error::NotAllowed("127.0.0.1".into())));
    assert_errors(&trs, "allow_http");
}

#[test]
fn failures_are_not_cached_and_cool_down() {
    let fail = Rc::new(RefCell::new(true));
    let f = fail.clone();
    let log = fake_backend(move |req| {
        if *f.borrow() {
            Err(Error::Transport("connection refused".into()))
        } else {
            libretranslate_echo(req)
        }
    });
    let mut cfg = lt_config();
    cfg["failure_cooldown_ms"] = json!(60_000);
    let mut p: Translate = testing::init(cfg).unwrap();
    let out = testing::run(&mut p, &[msg(JA)]);
    assert!(
        field(&out[0], "translation")
            .unwrap()
            .get("error")
            .is_some()
    );
    assert_eq!(log.borrow().len(), 1);

    // Within the cooldown the backend is not called; the message says why.
    *fail.borrow_mut() = false;
    let out = testing::run(&mut p, &[msg(JA)]);
    assert_eq!(log.borrow().len(), 1);
    let err = field(&out[0], "translation").unwrap();
    let err = err.get("error").and_then(Value::as_str).unwrap();
    assert!(
        err.starts_with("skipped") && err.contains("connection refused"),
        "{err}"
    );

    // With no cooldown the failure was not cached: the next batch asks again and succeeds.
    let mut p: Translate = testing::init(lt_config()).unwrap();
    let out = testing::run(&mut p, &[msg(JA)]);
    assert_eq!(log.borrow().len(), 2);
    assert!(field(&out[0], "translation").unwrap().get("text").is_some());
}

/// The `translate_backend_failures` samples in one message's actions: (kind, value).
fn failure_metrics(actions: &[Action]) -> Vec<(String, f64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Metric {
                name,
                value,
                labels,
            } if name == "translate_backend_failures" => {
                assert_eq!(labels.len(), 1, "{labels:?}");
                assert_eq!(labels[0].0, "kind");
                Some((labels[0].1.clone(), *value))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn each_failed_request_emits_a_running_failure_count() {
    let answer = Rc::new(RefCell::new(Err(Error::Timeout)));
    let a = answer.clone();
    fake_backend(move |_| a.borrow().clone());
    let mut cfg = lt_config();
    cfg["max_batch"] = json!(2);
    let mut p: Translate = testing::init(cfg).unwrap();

    // Three texts at max_batch 2: two requests, both time out. Both samples ride on the
    // first message that needed translation; the English one gets none.
    let out = testing::run(&mut p, &[msg(EN), msg(JA), msg(KO), msg(RU)]);
    assert_eq!(failure_metrics(&out[0]), vec![]);
    assert_eq!(
        failure_metrics(&out[1]),
        vec![("timeout".into(), 1.0), ("timeout".into(), 2.0)]
    );
    assert!(out[2..].iter().all(|o| failure_metrics(o).is_empty()));

    // Another kind has its own total; the timeout total carries on where it was.
    *answer.borrow_mut() = Ok(Response {
        status: 429,
        headers: vec![],
        body: br#"{"error":"Too many request limits violations"}"#.to_vec(),
    });
    let out = testing::run(&mut p, &[msg(JA)]);
    assert_eq!(failure_metrics(&out[0]), vec![("status".into(), 1.0)]);
    *answer.borrow_mut() = Err(Error::Timeout);
    // A new instance (hot reload) keeps counting: the totals live in the step's state.
    let mut reloaded: Translate = testing::init(lt_config()).unwrap();
    let out = testing::run(&mut reloaded, &[msg(KO)]);
    assert_eq!(failure_metrics(&out[0]), vec![("timeout".into(), 3.0)]);

    // Success emits nothing.
    fake_backend(libretranslate_echo);
    let out = testing::run(&mut reloaded, &[msg(KO)]);
    assert_eq!(failure_metrics(&out[0]), vec![]);
}

#[test]
fn failure_kinds_are_labelled() {
    let cases: Vec<(Result<Response, Error>, &str)> = vec![
        (Err(Error::Timeout), "timeout"),
        (Err(Error::TooLarge(1024)), "too_large"),
        (
            Err(Error::NotAllowed("127.0.0.1:5000".into())),
            "not_allowed",
        ),
        (
            Err(Error::Transport("connection refused".into())),
            "transport",
        ),
        (
            Ok(Response {
                status: 503,
                headers: vec![],
                body: vec![],
            }),
            "status",
        ),
        (ok(json!({"translatedText": 7})), "malformed"),
    ];
    for (answer, kind) in cases {
        fake_backend(move |_| answer.clone());
        let mut p: Translate = testing::init(lt_config()).unwrap();
        let out = testing::run(&mut p, &[msg(JA)]);
        let m = failure_metrics(&out[0]);
        assert_eq!(m.len(), 1, "{kind}: {m:?}");
        assert_eq!(m[0].0, kind);
    }
}

#[test]
fn cooldown_skips_are_not_counted_as_failures() {
    let log = fake_backend(|_| Err(Error::Timeout));
    let mut cfg = lt_config();
    cfg["failure_cooldown_ms"] = json!(60_000);
    let mut p: Translate = testing::init(cfg).unwrap();
    let first = testing::run(&mut p, &[msg(JA)]);
    let second = testing::run(&mut p, &[msg(KO)]);
    assert_eq!(log.borrow().len(), 1);
    assert_eq!(failure_metrics(&first[0]).len(), 1);
    assert_eq!(failure_metrics(&second[0]), vec![]);
}

#[test]
fn cache_false_asks_again_but_never_twice_in_one_batch() {
    let log = fake_backend(libretranslate_echo);
    let mut cfg = lt_config();
    cfg["cache"] = json!(false);
    let mut p: Translate = testing::init(cfg).unwrap();
    let first = testing::run(&mut p, &[msg(JA), msg(JA), msg(KO)]);
    let second = testing::run(&mut p, &[msg(JA)]);
    let log = log.borrow();
    assert_eq!(log.len(), 2, "the second batch is asked again");
    let body: serde_json::Value = serde_json::from_slice(&log[0].body).unwrap();
    assert_eq!(
        body["q"],
        json!([JA, KO]),
        "a repeat within a batch is sent once"
    );
    assert_eq!(
        field(&first[1], "translation"),
        field(&second[0], "translation")
    );
}

#[test]
fn an_echoed_api_key_is_redacted_from_errors() {
    // A proxy that quotes the request in its error page must not get the key stored,
    // neither whole nor cut in half by the 200-character cap on quoted error details
    // (the padding puts the key across that cut).
    for pad in [0, 196] {
        fake_backend(move |req| {
            let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
            let key = body["api_key"].as_str().unwrap();
            Ok(Response {
                status: 403,
                headers: vec![],
                body: format!(
                    r#"{{"error":"{}{key} is not a valid key"}}"#,
                    "x".repeat(pad)
                )
                .into_bytes(),
            })
        });
        let mut p: Translate = testing::init(lt_config()).unwrap();
        let out = testing::run(&mut p, &[msg(JA)]);
        let err = field(&out[0], "translation").unwrap();
        let err = err.get("error").and_then(Value::as_str).unwrap().to_owned();
        assert!(err.starts_with("HTTP 403: "), "{err}");
        if pad == 0 {
            assert!(err.contains("<redacted> is not a valid key"), "{err}");
        }
        for part in ["sekrit", "sekr", "rit"] {
            assert!(!err.contains(part), "{part:?} of the key in {err:?}");
        }
    }
}

#[test]
fn deepl_backend() {
    let log = fake_backend(|req| {
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        let n = body["text"].as_array().unwrap().len();
        let items: Vec<_> = (0..n)
            .map(|i| json!({"detected_source_language": "JA", "text": format!("t{i}")}))
            .collect();
        ok(json!({ "translations": items }))
    });
    let mut p: Translate = testing::init(json!({
        "target": "en",
        "backend": "deepl",
        "url": "https://api-free.deepl.com",
        "api_key": "k:fx",
    }))
    .unwrap();
    let out = testing::run(&mut p, &[msg(JA), msg(KO)]);
    let req = log.borrow()[0].clone();
    assert_eq!(req.url, "https://api-free.deepl.com/v2/translate");
    assert!(
        req.headers
            .contains(&("authorization".into(), "DeepL-Auth-Key k:fx".into()))
    );
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body, json!({"text": [JA, KO], "target_lang": "EN"}));
    assert_eq!(
        field(&out[1], "translation").unwrap(),
        Value::map([
            ("text", Value::from("t1")),
            ("source", Value::from("ja")),
            ("target", Value::from("en")),
            ("backend", Value::from("deepl")),
        ])
    );
}

// ---------------------------------------------------------------------------------------
// Config

fn init_err(with: serde_json::Value) -> String {
    match testing::init::<Translate>(with) {
        Ok(_) => panic!("config should be rejected"),
        Err(e) => e,
    }
}

#[test]
fn config_is_validated_with_the_bad_value_named() {
    let e = init_err(json!({"backend": "libretranslate", "target": "en"}));
    assert!(e.contains("libretranslate") && e.contains("url"), "{e}");
    let e = init_err(json!({"backend": "libretranslate", "url": "http://x"}));
    assert!(e.contains("target"), "{e}");
    let e = init_err(json!({"backend": "libretranslate", "url": "http://x", "target": "eng"}));
    assert!(e.contains("\"eng\""), "{e}");
    let e = init_err(json!({"backend": "libretranslate", "url": "http://x", "target": "EN"}));
    assert!(e.contains("\"EN\""), "{e}");
    let e = init_err(json!({"target": "en"}));
    assert!(e.contains("\"en\"") && e.contains("backend"), "{e}");
    let e = init_err(json!({"backend": "google", "url": "http://x", "target": "en"}));
    assert!(e.contains("google"), "{e}");
    let e = init_err(json!({"backend": "deepl", "url": "https://api.deepl.com", "target": "en"}));
    assert!(e.contains("api_key"), "{e}");
    let e = init_err(json!({"backend": "libretranslate", "url": "127.0.0.1:5000", "target": "en"}));
    assert!(e.contains("127.0.0.1:5000"), "{e}");
    let e = init_err(json!({"min_confidence": 1.5}));
    assert!(e.contains("1.5"), "{e}");
    let e = init_err(json!({"languages": ["en", "xx"]}));
    assert!(e.contains("\"xx\""), "{e}");
    let e = init_err(json!({"target_lang": "en"}));
    assert!(e.contains("target_lang"), "{e}");
    let e = init_err(
        json!({"backend": "libretranslate", "url": "http://x", "target": "en", "max_batch": 0}),
    );
    assert!(e.contains("max_batch"), "{e}");
    let e = init_err(
        json!({"backend": "libretranslate", "url": "http://x", "target": "en", "budget_ms": 0}),
    );
    assert!(e.contains("budget_ms = 0"), "{e}");
    let e = init_err(
        json!({"backend": "libretranslate", "url": "http://x", "target": "en", "cache_entries": 0}),
    );
    assert!(e.contains("cache_entries = 0"), "{e}");
    // With the cache off the bound means nothing, so 0 is not an error there.
    testing::init::<Translate>(json!({
        "backend": "libretranslate", "url": "http://x", "target": "en",
        "cache": false, "cache_entries": 0,
    }))
    .unwrap();
}

#[test]
fn config_debug_hides_the_api_key() {
    let c: translate::Config = serde_json::from_value(json!({"api_key": "sekrit"})).unwrap();
    let d = format!("{c:?}");
    assert!(!d.contains("sekrit") && d.contains("redacted"), "{d}");
}

// ---------------------------------------------------------------------------------------
// Robustness

#[test]
fn arbitrary_input_never_panics() {
    // A tiny deterministic generator: texts mixing scripts, emoji, mentions and links,
    // with emote ranges that are often reversed or past the end.
    let alphabet: Vec<char> = "aZé ßж中ㅋ@:/.😂\u{200d}\u{0301}\t\n!#w".chars().collect();
    let mut seed: u64 = 0x5eed;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    fake_backend(libretranslate_echo);
    let mut p: Translate = testing::init(lt_config()).unwrap();
    for _ in 0..50 {
        let batch: Vec<ChatMessage> = (0..20)
            .map(|_| {
                let len = next() % 80;
                let text: String = (0..len)
                    .map(|_| alphabet[next() % alphabet.len()])
                    .collect();
                let emotes: Vec<(&str, u32, u32)> = (0..next() % 4)
                    .map(|_| ("1", (next() % 100) as u32, (next() % 100) as u32))
                    .collect();
                with_emotes(&text, &emotes)
            })
            .collect();
        let out = testing::run(&mut p, &batch);
        assert_eq!(out.len(), batch.len());
        assert!(out.iter().all(|o| field(o, "lang").is_some()));
    }
    // Extreme emote positions.
    let out = testing::run(
        &mut p,
        &[with_emotes(
            "abc",
            &[("1", u32::MAX, u32::MAX), ("1", 0, u32::MAX)],
        )],
    );
    assert_eq!(lang(&out[0]), "und");
}
