//! The translate plugin (the real `translate.wasm`) through the real `streamtap` binary and
//! the host's HTTP capability, against local LibreTranslate and DeepL stand-ins
//! (`common::fake_translate`) that check the request contract strictly.
//!
//! Covered: translations stored as `{text, source, target, backend}`; cleaned text sent
//! (emotes by position, mentions, links, stretched words); the API key taken from a secret
//! and never in the logs or the store; every failure (slow, 5xx, garbage, oversized, rate
//! limit, quota, bad key, host not in `allow_http`) stored as `translation.error`, counted
//! in the `translate_backend_failures` metric and never stalling the run; and the cache's
//! effect on backend requests per 10,000 replayed messages.

mod common;

use common::fake_translate::{Api, FakeTranslate, Mode};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The API key the fake servers require: random-looking, so any 8 characters of it in a
/// row are a leak, not a coincidence.
const KEY: &str = "stk-q7Zx9f3b2c71d4e0a6b8";
const KEY_ENV: &str = "STREAMTAP_TEST_TRANSLATE_KEY";
/// The plugin's `timeout_ms` in the failure runs: short, so slow runs stay quick.
const TIMEOUT_MS: u64 = 300;
/// How long the slow server takes: far past the timeout, so a plugin that did not time
/// out would blow every time bound below.
const SLOW: Duration = Duration::from_secs(10);
/// Step deadline: the HTTP call happens inside the plugin call, so the deadline must
/// cover the timeout (see docs/TRANSLATE.md).
const DEADLINE: &str = "3s";

/// One chat line of the test log.
struct Line {
    /// Language of the text as written (what the fake server "detects").
    lang: &'static str,
    text: &'static str,
    /// Emote words marked by position in the IRC `emotes` tag.
    emotes: &'static [&'static str],
    /// The text the plugin must send: emotes, mentions and links removed, runs cut.
    cleaned: &'static str,
}

const fn line(lang: &'static str, text: &'static str) -> Line {
    Line {
        lang,
        text,
        emotes: &[],
        cleaned: text,
    }
}

/// Lines the detector reads right with the default config, so that which messages get
/// translated is known; plus lines that must not be translated (English, too short).
const POOL: &[Line] = &[
    line("en", "that was the cleanest clutch I have ever seen"),
    Line {
        lang: "en",
        text: "@pixelqueen can you explain the build again please",
        emotes: &[],
        cleaned: "can you explain the build again please",
    },
    line("ru", "спасибо за стрим сегодня было круто"),
    line("ja", "今日の配信ありがとうございました"),
    line("ko", "오늘 방송 감사합니다 재밌었어요"),
    line(
        "es",
        "no entiendo nada de lo que está pasando en este juego",
    ),
    line("de", "kann mir jemand erklären was gerade passiert ist"),
    line("fr", "je comprends rien à ce qui se passe aujourd'hui"),
    line("tr", "bugünkü yayın için teşekkürler çok güzeldi"),
    line("pl", "dzięki za dzisiejszy stream był świetny"),
    // Twitch emotes by position: removed before detection and translation, so this shares
    // the plain Russian line's cache entry.
    Line {
        lang: "ru",
        text: "Kappa спасибо за стрим Kappa сегодня было круто",
        emotes: &["Kappa"],
        cleaned: "спасибо за стрим сегодня было круто",
    },
    // A mention and a link around Korean text.
    Line {
        lang: "ko",
        text: "@streamer 오늘 방송 감사합니다 재밌었어요 https://clips.twitch.tv/AbcDef",
        emotes: &[],
        cleaned: "오늘 방송 감사합니다 재밌었어요",
    },
    // Stretched words are cut to two repeats.
    Line {
        lang: "ru",
        text: "спасибооооо за стрим сегодня было круууууто",
        emotes: &[],
        cleaned: "спасибоо за стрим сегодня было крууто",
    },
    line("und", "gg"),
    line("und", "LUL LUL LUL"),
    line("und", "!!!!!!!!"),
    Line {
        lang: "und",
        text: "PogChamp PogChamp",
        emotes: &["PogChamp"],
        cleaned: "",
    },
];

/// Languages the fake "detects": the cleaned text of every line.
fn pool_langs(pool: &[Line]) -> HashMap<String, String> {
    pool.iter()
        .filter(|l| !l.cleaned.is_empty())
        .map(|l| (l.cleaned.to_string(), l.lang.to_string()))
        .collect()
}

fn irc_line(i: usize, text: &str, emotes: &str) -> String {
    format!(
        "@badge-info=;badges=;color=;display-name=User{u};emotes={emotes};first-msg=0;flags=;id=msg-{i:06};mod=0;room-id=91;subscriber=0;tmi-sent-ts={ts};turbo=0;user-id={u};user-type= :user{u}!user{u}@user{u}.tmi.twitch.tv PRIVMSG #polyglot :{text}",
        u = i % 37,
        ts = 1_732_700_000_000 + i as i64 * 250,
    )
}

/// Writes `lines` (indexes into `pool`) as a chat log.
fn write_log(path: &Path, pool: &[Line], order: &[usize]) {
    let mut s = String::new();
    for (i, &k) in order.iter().enumerate() {
        let l = &pool[k];
        s.push_str(&irc_line(i, l.text, &common::emotes_tag(l.text, l.emotes)));
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

/// The pool once, then the translatable lines again (repeats must come from the cache).
fn small_log_order() -> Vec<usize> {
    let mut v: Vec<usize> = (0..POOL.len()).collect();
    v.extend([2, 3, 4, 5, 2, 3]);
    v
}

/// What the step is configured with.
struct Setup {
    backend: &'static str,
    url: String,
    allow: String,
    batch_size: usize,
    cooldown_ms: u64,
    cache: bool,
    http_max_response: &'static str,
    /// The secret's value in the environment (the key the plugin will send).
    key: &'static str,
    rust_log: &'static str,
    deadline: &'static str,
}

impl Setup {
    fn new(backend: &'static str, server: &FakeTranslate) -> Self {
        Setup {
            backend,
            url: server.url(),
            allow: format!("127.0.0.1:{}", server.port),
            batch_size: 1,
            cooldown_ms: 0,
            cache: true,
            http_max_response: "64KiB",
            key: KEY,
            rust_log: "info",
            deadline: DEADLINE,
        }
    }
}

/// What one run left behind.
struct Run {
    elapsed: Duration,
    stderr: String,
    stdout: String,
    dir: tempfile::TempDir,
}

impl Run {
    fn db(&self) -> PathBuf {
        self.dir.path().join("out.db")
    }
}

fn translate_wasm() -> PathBuf {
    common::plugin("translate", &[])
}

/// Runs `streamtap run` on `order` lines of `pool` with `setup`, failing if it takes
/// longer than `limit` or exits unsuccessfully.
fn run(setup: &Setup, pool: &[Line], order: &[usize], limit: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_log(&d.join("chat.log"), pool, order);
    std::fs::copy(translate_wasm(), d.join("translate.wasm")).unwrap();
    let toml = format!(
        r#"[source.replay]
path = "chat.log"

[transport.memory]
batch_size = {batch}

[[steps]]
name = "lang"
uses = "translate.wasm"
deadline = "{deadline}"
allow_http = ["{allow}"]
http_max_response = "{max}"
with = {{ target = "en", backend = "{backend}", url = "{url}", timeout_ms = {TIMEOUT_MS}, failure_cooldown_ms = {cooldown}, cache = {cache} }}
secrets = {{ api_key = {{ env = "{KEY_ENV}" }} }}

[sink.sqlite]
path = "out.db"
"#,
        batch = setup.batch_size,
        allow = setup.allow,
        max = setup.http_max_response,
        backend = setup.backend,
        url = setup.url,
        cooldown = setup.cooldown_ms,
        cache = setup.cache,
        deadline = setup.deadline,
    );
    assert!(
        !toml.contains(setup.key),
        "the key must not be in the pipeline text"
    );
    std::fs::write(d.join("p.toml"), toml).unwrap();
    let started = Instant::now();
    let mut child = Command::new(common::streamtap_bin())
        .args(["run", "p.toml", "--no-reload", "--quiet"])
        .current_dir(d)
        // Shared with the cli tests: the component is compiled once, not per run.
        .env(
            "STREAMTAP_CACHE_DIR",
            common::workspace_root().join("target/test-plugin-cache"),
        )
        .env("RUST_LOG", setup.rust_log)
        .env(KEY_ENV, setup.key)
        .stdout(std::fs::File::create(d.join("stdout.log")).unwrap())
        .stderr(std::fs::File::create(d.join("stderr.log")).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .expect("start streamtap");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "streamtap still running after {limit:?}: the pipeline stalled\n{}",
                std::fs::read_to_string(d.join("stderr.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let stderr = std::fs::read_to_string(d.join("stderr.log")).unwrap();
    let stdout = std::fs::read_to_string(d.join("stdout.log")).unwrap();
    assert!(status.success(), "streamtap failed ({status}):\n{stderr}");
    Run {
        elapsed,
        stderr,
        stdout,
        dir,
    }
}

/// One stored message.
#[derive(Debug)]
struct Row {
    id: String,
    lang: String,
    translation: Option<Value>,
}

fn stored(db: &Path) -> Vec<Row> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT id, json_extract(fields, '$.lang'), json_extract(fields, '$.translation')
             FROM messages ORDER BY id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok(Row {
            id: r.get(0)?,
            // Missing when the step failed on the message and passed it on unchanged.
            lang: r
                .get::<_, Option<String>>(1)?
                .unwrap_or_else(|| "<no lang field>".to_string()),
            translation: r
                .get::<_, Option<String>>(2)?
                .map(|s| serde_json::from_str(&s).unwrap()),
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// The pool line message `id` (`msg-000012`) was made from.
fn source_line<'a>(pool: &'a [Line], order: &[usize], id: &str) -> &'a Line {
    let i: usize = id.trim_start_matches("msg-").parse().unwrap();
    &pool[order[i]]
}

/// The latest `translate_backend_failures` sample: (kind, running total). Each series
/// (label set) is its own row, keyed `name{kind="…"}`; the runs here fail in one way only.
fn failure_metric(db: &Path) -> Option<(String, f64)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let (key, v): (String, String) = conn
        .query_row(
            "SELECT key, value FROM records WHERE tbl = 'plugin_metrics' AND key LIKE 'translate_backend_failures%'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok()?;
    let v: Value = serde_json::from_str(&v).unwrap();
    let kind = v["labels"]["kind"].as_str().unwrap().to_string();
    assert_eq!(key, format!("translate_backend_failures{{kind={kind:?}}}"));
    Some((kind, v["value"].as_f64().unwrap()))
}

/// Whether a message in `lang` should be sent for translation into `en`.
fn translatable(lang: &str) -> bool {
    lang != "en" && lang != "und"
}

/// Asserts the detection the test relies on and returns the rows that must carry a
/// translation (or its error).
fn check_detection<'a>(rows: &'a [Row], pool: &[Line], order: &[usize]) -> Vec<&'a Row> {
    assert_eq!(rows.len(), order.len(), "every message is stored");
    for r in rows {
        let l = source_line(pool, order, &r.id);
        assert_eq!(
            r.lang, l.lang,
            "{} {:?} detected as {}",
            r.id, l.text, r.lang
        );
    }
    rows.iter().filter(|r| translatable(&r.lang)).collect()
}

/// Asserts that no 8 characters of the key in a row are in `text`. Windows, not the whole
/// key: a hex dump of a request (ureq logs one at trace level) prints 16 bytes per line,
/// so the whole key never appears on one line, but a piece of at least 9 characters does.
fn assert_no_key(what: &str, text: &[u8]) {
    let hay = String::from_utf8_lossy(text);
    let key: Vec<char> = KEY.chars().collect();
    for w in key.windows(8) {
        let piece: String = w.iter().collect();
        if let Some(at) = hay.find(&piece) {
            let line_start = hay[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = hay[at..].find('\n').map_or(hay.len(), |i| at + i);
            panic!(
                "{piece:?} of the API key is in {what}: {}",
                &hay[line_start..line_end]
            );
        }
    }
}

/// Asserts the key is nowhere in the run's output or store (database, WAL, shared memory).
fn assert_key_secret(r: &Run) {
    assert_no_key("stderr", r.stderr.as_bytes());
    assert_no_key("stdout", r.stdout.as_bytes());
    for entry in std::fs::read_dir(r.dir.path()).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("out.db") {
            assert_no_key(&name, &std::fs::read(&p).unwrap());
        }
    }
}

#[test]
fn libretranslate_translates_cleaned_text_and_keeps_the_key_secret() {
    let server = FakeTranslate::start(Api::LibreTranslate, Some(KEY), pool_langs(POOL));
    let order = small_log_order();
    let mut setup = Setup::new("libretranslate", &server);
    // Several messages per call, so requests carry arrays of texts.
    setup.batch_size = 8;
    // The most verbose logging there is: whatever the host, ureq (which hex-dumps request
    // heads at trace) or the plugin log, the key, in the request body here, must not be
    // in it.
    setup.rust_log = "trace";
    let r = run(&setup, POOL, &order, Duration::from_secs(60));

    assert_eq!(server.violations(), Vec::<String>::new());
    let rows = stored(&r.db());
    let want = check_detection(&rows, POOL, &order);
    assert!(
        want.len() >= 12,
        "only {} messages to translate",
        want.len()
    );
    for row in &rows {
        let l = source_line(POOL, &order, &row.id);
        if translatable(&row.lang) {
            assert_eq!(
                row.translation,
                Some(json!({
                    "text": format!("[en] {}", l.cleaned),
                    "source": l.lang,
                    "target": "en",
                    "backend": "libretranslate",
                })),
                "{} {:?}",
                row.id,
                l.text
            );
        } else {
            assert_eq!(row.translation, None, "{} {:?}", row.id, l.text);
        }
    }
    // Repeats (the same line, the emote and mention variants) come from the cache or the
    // batch's own dedup: no text reaches the backend twice.
    let sent: Vec<String> = server.seen().into_iter().flat_map(|s| s.texts).collect();
    let distinct: HashSet<&String> = sent.iter().collect();
    assert_eq!(
        distinct.len(),
        sent.len(),
        "a text was sent twice: {sent:?}"
    );
    assert!(server.seen().iter().all(|s| s.status == 200));
    assert_eq!(
        failure_metric(&r.db()),
        None,
        "no failure, no failure metric"
    );

    // The run logged plenty (so the check below looks at something), but not the key.
    assert!(
        r.stderr.contains("loaded step") && r.stderr.lines().count() > 20,
        "{}",
        r.stderr
    );
    assert_key_secret(&r);

    // A server that quotes the key back in its error: the error is stored and logged,
    // the key is not. At debug, because at trace the host's ureq dumps the response body
    // as received (see `key_stays_out_of_trace_logs`).
    server.set_mode(Mode::EchoKey);
    setup.rust_log = "debug";
    let r = run(&setup, POOL, &order, Duration::from_secs(60));
    let rows = stored(&r.db());
    for row in check_detection(&rows, POOL, &order) {
        let err = row.translation.as_ref().unwrap()["error"].as_str().unwrap();
        assert!(
            err.starts_with("HTTP 403: api key <redacted> is not valid"),
            "{err}"
        );
    }
    assert!(
        r.stderr.contains("<redacted>"),
        "the error was not logged: {}",
        r.stderr
    );
    assert_key_secret(&r);
}

/// At trace level ureq (`ureq_proto::util`) hex-dumps every request head and response
/// body: DeepL's `Authorization` header, key included, and any response that quotes the
/// key (the plugin redacts it only after the host has read the body). The host caps the
/// `ureq` and `ureq_proto` targets at debug whatever `RUST_LOG` says (`NO_WIRE_DUMPS` in
/// `host/src/cli/mod.rs`); this test runs at `RUST_LOG=trace` and fails if a dump, or any
/// other 8 characters of the key in a row, reaches stderr again.
#[test]
fn key_stays_out_of_trace_logs() {
    for (api, backend, mode) in [
        (Api::Deepl, "deepl", Mode::Normal),
        (Api::LibreTranslate, "libretranslate", Mode::EchoKey),
    ] {
        let server = FakeTranslate::start(api, Some(KEY), pool_langs(POOL));
        server.set_mode(mode);
        let mut setup = Setup::new(backend, &server);
        setup.rust_log = "trace";
        let r = run(&setup, POOL, &small_log_order(), Duration::from_secs(60));
        assert!(server.requests() > 0);
        assert_key_secret(&r);
    }
}

#[test]
fn deepl_translates_with_the_auth_header_and_reports_key_quota_and_rate_errors() {
    let server = FakeTranslate::start(Api::Deepl, Some(KEY), pool_langs(POOL));
    let order = small_log_order();
    let mut setup = Setup::new("deepl", &server);
    setup.batch_size = 8;
    // The key travels in a header here; ureq's debug line prints requests with their
    // headers, and must redact it.
    setup.rust_log = "debug";
    let r = run(&setup, POOL, &order, Duration::from_secs(60));
    assert_eq!(server.violations(), Vec::<String>::new());
    let rows = stored(&r.db());
    for row in check_detection(&rows, POOL, &order) {
        let l = source_line(POOL, &order, &row.id);
        assert_eq!(
            row.translation,
            Some(json!({
                "text": format!("[en] {}", l.cleaned),
                "source": l.lang,
                "target": "en",
                "backend": "deepl",
            })),
            "{}",
            row.id
        );
    }
    assert_key_secret(&r);

    // Errors DeepL answers with, each its own run: (server mode, key sent, error prefix).
    let cases: [(Mode, &'static str, &str); 3] = [
        (Mode::Normal, "stk-wrong-key", "HTTP 403: Wrong API key"),
        (Mode::Status(456), KEY, "HTTP 456: Quota exceeded"),
        (Mode::Status(429), KEY, "HTTP 429: Too many request"),
    ];
    for (mode, key, expect) in cases {
        server.set_mode(mode);
        server.reset();
        let mut setup = Setup::new("deepl", &server);
        setup.key = key;
        let r = run(&setup, POOL, &order, Duration::from_secs(60));
        let rows = stored(&r.db());
        let failed = check_detection(&rows, POOL, &order);
        for row in &failed {
            let t = row.translation.as_ref().unwrap();
            assert_eq!(t["backend"], "deepl");
            assert!(t.get("text").is_none());
            let err = t["error"].as_str().unwrap();
            assert!(err.starts_with(expect), "{mode:?}: {err:?}");
        }
        // Batch size 1, no cooldown, failures not cached: one request per message.
        assert_eq!(server.requests(), failed.len(), "{mode:?}");
        assert_eq!(
            failure_metric(&r.db()),
            Some(("status".to_string(), failed.len() as f64)),
            "{mode:?}"
        );
        assert_eq!(server.violations(), Vec::<String>::new(), "{mode:?}");
        assert_key_secret(&r);
    }
}

/// A failure run: what the server does, what the error says, which kind is counted.
struct FailureCase {
    mode: Mode,
    expect: &'static str,
    kind: &'static str,
}

#[test]
fn backend_failures_are_stored_counted_and_do_not_stall() {
    let server = FakeTranslate::start(Api::LibreTranslate, Some(KEY), pool_langs(POOL));
    let order = small_log_order();
    // The time a run takes when nothing fails, measured here rather than assumed.
    let baseline = run(
        &Setup::new("libretranslate", &server),
        POOL,
        &order,
        Duration::from_secs(60),
    )
    .elapsed;

    let cases = [
        FailureCase {
            mode: Mode::Slow(SLOW),
            expect: "request timed out after 300 ms",
            kind: "timeout",
        },
        FailureCase {
            mode: Mode::Status(500),
            expect: "HTTP 500: Cannot translate text: model crashed",
            kind: "status",
        },
        FailureCase {
            mode: Mode::Status(429),
            expect: "HTTP 429: Too many request limits violations",
            kind: "status",
        },
        FailureCase {
            mode: Mode::Garbage,
            expect: "malformed response: expected value at line 1 column 1 (body starts \"<html>",
            kind: "malformed",
        },
        FailureCase {
            mode: Mode::Oversized(128 * 1024),
            expect: "response larger than 65536 bytes (the step's http_max_response)",
            kind: "too_large",
        },
    ];
    for case in cases {
        server.set_mode(case.mode);
        server.reset();
        let setup = Setup::new("libretranslate", &server);
        let r = run(&setup, POOL, &order, Duration::from_secs(120));
        println!(
            "{:?}: run took {:?} (no failures: {baseline:?})",
            case.mode, r.elapsed
        );
        let rows = stored(&r.db());
        let failed = check_detection(&rows, POOL, &order);
        for row in &failed {
            let t = row.translation.as_ref().expect("translation field set");
            assert_eq!(t["backend"], "libretranslate");
            assert!(t.get("text").is_none(), "{t}");
            let err = t["error"].as_str().unwrap();
            assert!(err.starts_with(case.expect), "{:?}: {err:?}", case.mode);
        }
        // Batch size 1 and no cooldown: each translatable message made one request, which
        // failed, and each failure was counted.
        assert_eq!(server.requests(), failed.len(), "{:?}", case.mode);
        assert_eq!(
            failure_metric(&r.db()),
            Some((case.kind.to_string(), failed.len() as f64)),
            "{:?}",
            case.mode
        );
        assert_eq!(server.violations(), Vec::<String>::new());

        // No stall: at most one timeout per request on top of a normal run (generous
        // slack for a loaded machine), never the server's 10 s.
        let timeouts = if matches!(case.mode, Mode::Slow(_)) {
            failed.len() as u32
        } else {
            0
        };
        let bound =
            baseline + Duration::from_millis(TIMEOUT_MS + 200) * timeouts + Duration::from_secs(10);
        assert!(
            r.elapsed < bound,
            "{:?}: run took {:?}, bound {bound:?}",
            case.mode,
            r.elapsed
        );
        if timeouts > 0 {
            // The bound is far below one full server delay per message, so waiting for
            // the server instead of timing out could not pass.
            assert!(bound < SLOW * timeouts, "the bound would not catch a stall");
            // The timeouts did happen (this is not a fast path that skipped the server).
            assert!(
                r.elapsed >= Duration::from_millis(TIMEOUT_MS) * timeouts,
                "{:?}",
                r.elapsed
            );
        }
    }
}

#[test]
fn a_slow_backend_is_skipped_during_the_cooldown() {
    let server = FakeTranslate::start(Api::LibreTranslate, Some(KEY), pool_langs(POOL));
    server.set_mode(Mode::Slow(SLOW));
    let order = small_log_order();
    let mut setup = Setup::new("libretranslate", &server);
    setup.cooldown_ms = 60_000;
    let r = run(&setup, POOL, &order, Duration::from_secs(60));
    let rows = stored(&r.db());
    let failed = check_detection(&rows, POOL, &order);
    // One timeout, then the backend is left alone: every later message says why.
    assert_eq!(server.requests(), 1);
    let errors: Vec<&str> = failed
        .iter()
        .map(|r| r.translation.as_ref().unwrap()["error"].as_str().unwrap())
        .collect();
    assert!(errors[0].starts_with("request timed out"), "{errors:?}");
    for e in &errors[1..] {
        assert!(
            e.starts_with("skipped: backend failed") && e.contains("request timed out"),
            "{e:?}"
        );
    }
    assert_eq!(failure_metric(&r.db()), Some(("timeout".to_string(), 1.0)));
    // One timeout's worth of waiting, not one per message.
    assert!(
        r.elapsed < Duration::from_secs(15),
        "run took {:?}",
        r.elapsed
    );
}

#[test]
fn a_backend_outside_allow_http_is_refused_naming_the_host() {
    let server = FakeTranslate::start(Api::LibreTranslate, Some(KEY), pool_langs(POOL));
    let order = small_log_order();
    let mut setup = Setup::new("libretranslate", &server);
    // The allowlist names the address; the URL names the host differently. The check is
    // on the name in the URL, before any DNS lookup or connection.
    setup.url = format!("http://localhost:{}", server.port);
    let r = run(&setup, POOL, &order, Duration::from_secs(60));
    let rows = stored(&r.db());
    let failed = check_detection(&rows, POOL, &order);
    let host = format!("localhost:{}", server.port);
    for row in &failed {
        let err = row.translation.as_ref().unwrap()["error"].as_str().unwrap();
        assert_eq!(
            err,
            format!("host \"{host}\" is not in the step's allow_http")
        );
    }
    assert_eq!(server.requests(), 0, "nothing reached the server");
    assert_eq!(
        failure_metric(&r.db()),
        Some(("not_allowed".to_string(), failed.len() as f64))
    );
    assert!(
        r.stderr.contains("not in allow_http") && r.stderr.contains(&host),
        "{}",
        r.stderr
    );
}

// ---------------------------------------------------------------------------------------
// Cache effectiveness

/// Cuts runs of one character to two, as the plugin's cleaning does ("kkkkk" → "kk").
fn collapse_runs(text: &str) -> String {
    let mut out = String::new();
    let (mut prev, mut run) = (None, 0);
    for c in text.chars() {
        run = if Some(c) == prev { run + 1 } else { 1 };
        prev = Some(c);
        if run <= 2 {
            out.push(c);
        }
    }
    out
}

/// Default `emote_words` entries that occur in `short_messages.tsv`.
const TSV_EMOTE_WORDS: &[&str] = &["LUL"];

/// Short lines and emote spam: the most repeated messages in a busy chat, never
/// translated (`und`).
const SPAM: &[&str] = &[
    "gg",
    "lol",
    "LUL",
    "KEKW KEKW",
    "W",
    "L",
    "first",
    "hi chat",
    "!!!",
    "o7",
    "F",
    "Pog",
    "xd",
    "ez",
    "nice",
    "LETS GO",
    "???",
    "monkaS",
    "Sadge",
    "gg wp",
];

/// A pool line from owned text, leaked so `Line`'s `&'static str` fields can hold it.
fn leaked_line(lang: &str, text: String) -> Line {
    // The plugin's cleaning of these lines: no emotes by position, mentions or links in
    // the set, so only emote words and stretched words change the text. If the set gains
    // another emote word, the fake server reports the uncleaned text by name.
    let words: Vec<&str> = text
        .split(' ')
        .filter(|w| !TSV_EMOTE_WORDS.contains(w))
        .collect();
    let cleaned = collapse_runs(&words.join(" "));
    Line {
        lang: Box::leak(lang.to_string().into_boxed_str()),
        text: Box::leak(text.into_boxed_str()),
        emotes: &[],
        cleaned: Box::leak(cleaned.into_boxed_str()),
    }
}

/// The multilingual pool, most frequent first: the spam lines, then the accuracy set's 216
/// chat lines in 12 languages, then every ordered pair of two lines of one language
/// ("line A line B", 3,672 of them) as the long tail of messages seen about once. Each
/// group is shuffled (fixed seed) so frequency does not follow the file's order.
fn big_pool(next: &mut impl FnMut() -> f64) -> Vec<Line> {
    let tsv = std::fs::read_to_string(
        common::workspace_root().join("plugins/translate/tests/short_messages.tsv"),
    )
    .unwrap();
    let set: Vec<(&str, &str)> = tsv
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_once('\t').unwrap())
        .collect();
    let mut shuffle = |v: &mut Vec<Line>| {
        for i in (1..v.len()).rev() {
            let j = (next() * (i + 1) as f64) as usize;
            v.swap(i, j);
        }
    };
    let mut spam: Vec<Line> = SPAM.iter().map(|t| line("und", t)).collect();
    let mut singles: Vec<Line> = set
        .iter()
        .map(|(lang, t)| leaked_line(lang, t.to_string()))
        .collect();
    let mut pairs: Vec<Line> = Vec::new();
    for (i, (la, a)) in set.iter().enumerate() {
        for (j, (lb, b)) in set.iter().enumerate() {
            if i != j && la == lb {
                pairs.push(leaked_line(la, format!("{a} {b}")));
            }
        }
    }
    shuffle(&mut spam);
    shuffle(&mut singles);
    shuffle(&mut pairs);
    spam.into_iter().chain(singles).chain(pairs).collect()
}

/// `n` indexes into a pool of `len` lines, index r drawn with weight 1/(r+1) (Zipf,
/// s = 1): the spam at the top repeats constantly, the pairs in the tail mostly appear
/// once or not at all.
fn zipf_order(len: usize, n: usize, next: &mut impl FnMut() -> f64) -> Vec<usize> {
    let mut cumulative = Vec::with_capacity(len);
    let mut total = 0.0;
    for r in 1..=len {
        total += 1.0 / r as f64;
        cumulative.push(total);
    }
    (0..n)
        .map(|_| {
            let x = next() * total;
            cumulative.partition_point(|&c| c <= x).min(len - 1)
        })
        .collect()
}

/// A deterministic uniform [0, 1) generator (64-bit LCG, top 53 bits).
fn lcg(mut seed: u64) -> impl FnMut() -> f64 {
    move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Backend traffic of one 10,000-message run.
struct Traffic {
    requests: usize,
    texts: usize,
    chars: usize,
    translated: usize,
    /// Distinct (cleaned) texts among the translated messages.
    distinct: usize,
}

fn traffic_run(
    server: &FakeTranslate,
    pool: &[Line],
    order: &[usize],
    batch: usize,
    cache: bool,
) -> Traffic {
    server.reset();
    let mut setup = Setup::new("libretranslate", server);
    setup.batch_size = batch;
    setup.cache = cache;
    setup.rust_log = "warn";
    let r = run(&setup, pool, order, Duration::from_secs(300));
    assert_eq!(server.violations(), Vec::<String>::new());
    let rows = stored(&r.db());
    assert_eq!(rows.len(), order.len(), "every message is stored");
    // Both ways every translatable message ends up translated; only the traffic differs.
    let mut translated = 0;
    let mut distinct = HashSet::new();
    for row in &rows {
        if translatable(&row.lang) {
            let t = row.translation.as_ref().expect("translated");
            let l = source_line(pool, order, &row.id);
            assert_eq!(t["text"], format!("[en] {}", l.cleaned), "{}", row.id);
            translated += 1;
            distinct.insert(l.cleaned);
        }
    }
    let seen = server.seen();
    let texts: Vec<&String> = seen.iter().flat_map(|s| &s.texts).collect();
    if cache {
        let distinct: HashSet<&&String> = texts.iter().collect();
        assert_eq!(
            distinct.len(),
            texts.len(),
            "with the cache a text is sent once"
        );
    }
    Traffic {
        requests: seen.len(),
        texts: texts.len(),
        chars: texts.iter().map(|t| t.chars().count()).sum(),
        translated,
        distinct: distinct.len(),
    }
}

#[test]
fn cache_cuts_backend_requests_per_10k_messages() {
    let mut next = lcg(0x7a11_5eed);
    let pool = big_pool(&mut next);
    let order = zipf_order(pool.len(), 10_000, &mut next);
    let server = FakeTranslate::start(Api::LibreTranslate, Some(KEY), pool_langs(&pool));
    let distinct_lines = order.iter().collect::<HashSet<_>>().len();
    let top_share = order.iter().filter(|&&i| i < SPAM.len()).count() as f64 / 100.0;
    println!(
        "10,000 messages: {distinct_lines} distinct texts from a pool of {} (Zipf s = 1); \
         {:.1}% repeat an earlier message; {top_share:.1}% are short spam",
        pool.len(),
        100.0 * (order.len() - distinct_lines) as f64 / order.len() as f64,
    );
    println!("batch_size  cache  requests  texts sent  characters sent  messages translated");
    let mut table = String::from(
        "| `batch_size` | cache | requests | texts sent | characters sent |\n\
         |---:|---|---:|---:|---:|\n",
    );
    for batch in [1, 256] {
        let on = traffic_run(&server, &pool, &order, batch, true);
        let off = traffic_run(&server, &pool, &order, batch, false);
        for (name, t) in [("on", &on), ("off", &off)] {
            println!(
                "{batch:>10}  {name:>5}  {:>8}  {:>10}  {:>15}  {:>19}",
                t.requests, t.texts, t.chars, t.translated
            );
            // One message per call is exact for a given log; at 256 the batch boundaries
            // depend on how fast the source fills the queue, so those rows vary a little
            // run to run and stay out of the checked table.
            if batch == 1 {
                table.push_str(&format!(
                    "| {batch} | {name} | {} | {} | {} |\n",
                    thousands(t.requests),
                    thousands(t.texts),
                    thousands(t.chars)
                ));
            }
        }
        assert_eq!(on.translated, off.translated);
        assert!(
            on.translated > 1000,
            "too few translatable messages to measure"
        );
        assert!(
            on.requests < off.requests,
            "batch {batch}: {} requests with the cache, {} without",
            on.requests,
            off.requests
        );
        assert!(on.texts < off.texts);
        // With the cache each distinct text is sent exactly once (no repeats was checked
        // in traffic_run; none missing, since every translation came from the server).
        assert_eq!(on.texts, on.distinct);
        if batch == 1 {
            // One message per call: without the cache every translatable message is a
            // request; with it, only a text's first appearance.
            assert_eq!(off.requests, off.translated);
            assert_eq!(on.requests, on.distinct);
        }
    }
    // The log is generated from a fixed seed, so the batch-1 figures are exact and the
    // table in the docs must match them.
    check_or_write_doc(&table, CACHE_TABLE_BEGIN, CACHE_TABLE_END);
}

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/TRANSLATE.md");
const CACHE_TABLE_BEGIN: &str =
    "<!-- cache-table:begin (generated by host/tests/translate_http.rs) -->";
const CACHE_TABLE_END: &str = "<!-- cache-table:end -->";

/// `1234567` as `1,234,567`.
fn thousands(n: impl std::fmt::Display) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Compares `table` with the one between the markers in `docs/TRANSLATE.md`, or writes it
/// there when `STREAMTAP_WRITE_DOCS=1`.
fn check_or_write_doc(table: &str, begin: &str, end: &str) {
    let doc = std::fs::read_to_string(DOC).unwrap_or_else(|e| panic!("read {DOC}: {e}"));
    let (Some(b), Some(e)) = (doc.find(begin), doc.find(end)) else {
        panic!("{DOC} lacks the markers {begin:?} … {end:?}");
    };
    let start = b + begin.len();
    let current = doc[start..e].trim();
    if std::env::var("STREAMTAP_WRITE_DOCS").as_deref() == Ok("1") {
        let new = format!("{}\n\n{}\n\n{}", &doc[..start], table.trim(), &doc[e..]);
        std::fs::write(DOC, new).unwrap_or_else(|e| panic!("write {DOC}: {e}"));
        return;
    }
    assert!(
        current == table.trim(),
        "the table after {begin:?} in docs/TRANSLATE.md is stale; refresh it with \
         `STREAMTAP_WRITE_DOCS=1 cargo test --release -p streamtap --test translate_http cache`\n\
         checked in:\n{current}\n\nmeasured now:\n{}",
        table.trim()
    );
}

/// The HTTP capability blocks only the step that uses it: the plugin call, and with it
/// every request, runs on a blocking thread of its own, never on the async runtime that
/// ingests chat, serves `/metrics` and `/health`, and runs the sink. With a backend that
/// never answers in time, the pipeline's processing waits (steps are ordered), but the
/// endpoint keeps answering at once and the source keeps reading into the transport
/// while the step is stuck in its requests, even with a single runtime worker thread.
#[test]
fn a_hanging_backend_holds_only_its_own_step() {
    let server = FakeTranslate::start(Api::LibreTranslate, Some(KEY), pool_langs(POOL));
    server.set_mode(Mode::Slow(SLOW));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let order = small_log_order();
    write_log(&d.join("chat.log"), POOL, &order);
    std::fs::copy(translate_wasm(), d.join("translate.wasm")).unwrap();
    let port = common::server::free_port();
    std::fs::write(
        d.join("p.toml"),
        format!(
            r#"[source.replay]
path = "chat.log"
rate = 200
loop = true

[transport.memory]
batch_size = 4
capacity = 2000

[[steps]]
name = "lang"
uses = "translate.wasm"
allow_http = ["127.0.0.1:{port_b}"]
http_timeout = "2s"
with = {{ target = "en", backend = "libretranslate", url = "{url}", timeout_ms = 2000, failure_cooldown_ms = 0, budget_ms = 2000 }}
secrets = {{ api_key = {{ env = "{KEY_ENV}" }} }}

[sink.sqlite]
path = "out.db"

[metrics]
listen = "127.0.0.1:{port}"
"#,
            port_b = server.port,
            url = server.url(),
        ),
    )
    .unwrap();
    // One runtime worker: were the plugin call (and its HTTP wait) on the async runtime
    // instead of a blocking thread, nothing else could run and the checks below would fail.
    let mut run = common::run::start(
        d,
        "p.toml",
        &[],
        &[(KEY_ENV, KEY), ("TOKIO_WORKER_THREADS", "1")],
        "info",
    );
    common::run::wait_for(
        &mut run,
        "a request stuck in the backend",
        Duration::from_secs(60),
        || server.requests() > 0,
    );
    let counter = |text: &str, name: &str| common::run::series(text, name).unwrap_or(0.0);
    let mut samples = Vec::new();
    for _ in 0..10 {
        let asked = Instant::now();
        let text = common::run::scrape(port).expect("/metrics answers");
        let took = asked.elapsed();
        // Far below the 2 s each stuck request takes: the endpoint does not wait for it.
        assert!(took < Duration::from_millis(500), "/metrics took {took:?}");
        samples.push((
            counter(&text, "streamtap_source_messages_total"),
            counter(&text, "streamtap_sink_stored_total"),
        ));
        std::thread::sleep(Duration::from_millis(300));
    }
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    println!("(source, stored) over 3 s with the backend hanging: {first:?} -> {last:?}");
    // The source went on reading (about 200 msg/s into a 2,000-message buffer) while each
    // batch of 4 spent two seconds in the stuck step.
    assert!(
        last.0 - first.0 >= 200.0,
        "ingest stalled with the step: {samples:?}"
    );
    assert!(
        last.1 - first.1 < last.0 - first.0,
        "the stuck step should be the bottleneck: {samples:?}"
    );
    // Recovered, the backend lets the shutdown drain the buffered messages quickly.
    server.set_mode(Mode::Normal);
    run.stop();
}

/// The HTTP request happens inside the plugin call, and a backend that answers well
/// within `timeout_ms` but later than the step's deadline (150 ms against the default
/// 100 ms here; real DeepL or a remote LibreTranslate often takes that long) used to have
/// its answer thrown away with the call, and the message lost every field of the step,
/// `lang` included (measured then: 21 of 23 messages stored with no field at all). The
/// host now credits time blocked in its HTTP capability back to the call, up to one
/// `http_timeout` per call (`CallTiming` in `host/src/plugins/mod.rs`), so under the
/// default deadline every message must come back translated.
#[test]
fn a_backend_slower_than_the_deadline_but_within_the_timeout_still_translates() {
    let server = FakeTranslate::start(Api::LibreTranslate, Some(KEY), pool_langs(POOL));
    server.set_mode(Mode::Slow(Duration::from_millis(150)));
    let order = small_log_order();
    let mut setup = Setup::new("libretranslate", &server);
    setup.deadline = "100ms";
    let r = run(&setup, POOL, &order, Duration::from_secs(120));
    let rows = stored(&r.db());
    for row in check_detection(&rows, POOL, &order) {
        let t = row.translation.as_ref().expect("translation set");
        assert!(t.get("text").is_some(), "{}: {t}", row.id);
    }
}

// ---------------------------------------------------------------------------------------
// The stand-in itself

/// POSTs `body` with `content_type` (and `auth`) to the fake; returns (status, body).
fn post(url: &str, content_type: &str, auth: Option<&str>, body: &str) -> (u16, Value) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut req = agent.post(url).header("content-type", content_type);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let mut resp = req.send(body).unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The fake server's strictness is what makes the tests above catch contract breaks, so
/// it is checked directly: valid requests in both body encodings pass, and each kind of
/// break is answered as the service would and recorded.
#[test]
fn the_stand_ins_accept_the_contract_and_flag_breaks() {
    let langs = pool_langs(POOL);
    let ru = "спасибо за стрим сегодня было круто";

    let lt = FakeTranslate::start(Api::LibreTranslate, Some(KEY), langs.clone());
    let url = format!("{}/translate", lt.url());
    // A form with one `q`: LibreTranslate answers with strings, not arrays.
    let form = format!("q={}&source=auto&target=en&api_key={KEY}", form_encode(ru));
    let (status, body) = post(&url, "application/x-www-form-urlencoded", None, &form);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["translatedText"], format!("[en] {ru}"));
    assert_eq!(body["detectedLanguage"]["language"], "ru");
    let ok = json!({"q": [ru], "source": "auto", "target": "en", "format": "text", "api_key": KEY});
    let (status, body) = post(&url, "application/json", None, &ok.to_string());
    assert_eq!(
        (status, body["translatedText"][0].clone()),
        (200, json!(format!("[en] {ru}")))
    );
    assert_eq!(lt.violations(), Vec::<String>::new());
    // Wrong key: refused, but not a contract break.
    let mut bad = ok.clone();
    bad["api_key"] = json!("nope");
    assert_eq!(
        post(&url, "application/json", None, &bad.to_string()).0,
        403
    );
    assert_eq!(lt.violations(), Vec::<String>::new());
    let breaks = [
        json!({"source": "auto", "target": "en", "api_key": KEY}),
        json!({"q": [ru], "target": "en", "api_key": KEY}),
        json!({"q": [ru], "source": "auto", "target": "english", "api_key": KEY}),
        json!({"q": [ru], "source": "auto", "target": "en", "format": "markdown", "api_key": KEY}),
        json!({"q": [ru], "source": "auto", "target": "en", "api_key": KEY, "sauce": 1}),
        json!({"q": ["Kappa спасибо"], "source": "auto", "target": "en", "api_key": KEY}),
    ];
    for (i, b) in breaks.iter().enumerate() {
        let (status, body) = post(&url, "application/json", None, &b.to_string());
        assert_eq!(status, 400, "{b}: {body}");
        assert!(body["error"].is_string());
        assert_eq!(lt.violations().len(), i + 1, "{b}");
    }
    assert_eq!(post(&url, "text/plain", None, &ok.to_string()).0, 400);

    let dl = FakeTranslate::start(Api::Deepl, Some(KEY), langs);
    let url = format!("{}/v2/translate", dl.url());
    let auth = format!("DeepL-Auth-Key {KEY}");
    let ok = json!({"text": [ru], "target_lang": "EN-US"});
    let (status, body) = post(&url, "application/json", Some(&auth), &ok.to_string());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["translations"][0]["detected_source_language"], "RU");
    assert_eq!(body["translations"][0]["text"], format!("[en] {ru}"));
    assert_eq!(post(&url, "application/json", None, &ok.to_string()).0, 403);
    assert_eq!(dl.violations(), Vec::<String>::new());
    let breaks = [
        json!({"text": [ru], "target_lang": "en"}),
        json!({"text": ru, "target_lang": "EN"}),
        json!({"text": [ru], "target_lang": "EN", "source_lang": "ru"}),
        json!({"text": [ru], "target_lang": "EN", "source_lang": "EN-US"}),
        json!({"text": [], "target_lang": "EN"}),
        json!({"text": [ru], "target_lang": "EN", "auth_key": KEY}),
    ];
    for (i, b) in breaks.iter().enumerate() {
        let (status, body) = post(&url, "application/json", Some(&auth), &b.to_string());
        assert!(status == 400 || status == 403, "{b}: {status} {body}");
        assert!(body["message"].is_string());
        assert_eq!(dl.violations().len(), i + 1, "{b}");
    }
}
