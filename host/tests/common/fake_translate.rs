//! A local stand-in for LibreTranslate and DeepL, for tests of the translate plugin through
//! the real host HTTP capability.
//!
//! It implements each service's request contract strictly: a request the real service
//! would reject (wrong path or method, missing or mistyped field, lowercase DeepL language,
//! unknown parameter, unexpected content type) is answered the way the service answers it
//! *and* recorded as a violation, so a test that checks [`FakeTranslate::violations`]
//! fails on a contract break even when the plugin copes with the error answer. Texts are
//! also checked against the pool the test sent, which catches uncleaned text (an emote or
//! @mention left in) being sent for translation.
//!
//! Contracts (as documented by the services):
//! * LibreTranslate: `POST /translate`, JSON or form body, `q` a string or an array of
//!   strings, `source` (`auto` or a code), `target`, optional `format` (`text`/`html`) and
//!   `api_key`; answers `{"translatedText": ..., "detectedLanguage": ...}` (string or
//!   array, following `q`), errors `{"error": "..."}` with 400/403/429/500.
//! * DeepL: `POST /v2/translate`, `Authorization: DeepL-Auth-Key KEY`, JSON or form body,
//!   `text` an array of 1..=50 strings, `target_lang` uppercase, optional uppercase
//!   `source_lang`; answers `{"translations": [{"detected_source_language", "text"}]}`,
//!   errors `{"message": "..."}` with 400/403/429/456.
//!
//! The translation is deterministic: `[<target>] <text>`, and the detected language is the
//! pool's label for the text.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which service to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    LibreTranslate,
    Deepl,
}

/// How the server answers a valid, authorised request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A correct translation.
    Normal,
    /// A correct translation after this long: longer than the client's timeout.
    Slow(Duration),
    /// This status with the service's error body (`{"error"}` or `{"message"}`).
    Status(u16),
    /// 200 with an HTML page, as a misconfigured proxy sends.
    Garbage,
    /// 200 with a well-formed answer padded to at least this many bytes.
    Oversized(usize),
    /// 403 whose error message quotes the API key the client sent.
    EchoKey,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The texts to translate, in order (empty when the body did not parse).
    pub texts: Vec<String>,
    /// The status answered.
    pub status: u16,
}

struct State {
    api: Api,
    key: Option<String>,
    /// Pool text → ISO 639-1 code the fake "detects".
    langs: HashMap<String, String>,
    mode: Mutex<Mode>,
    seen: Mutex<Vec<Seen>>,
    violations: Mutex<Vec<String>>,
}

/// A running fake server on 127.0.0.1 (random port); stops when dropped.
pub struct FakeTranslate {
    pub port: u16,
    state: Arc<State>,
    rt: Option<tokio::runtime::Runtime>,
}

impl FakeTranslate {
    /// Starts a server for `api` that requires `key` (when `Some`) and knows the texts in
    /// `langs` (text → language code).
    pub fn start(api: Api, key: Option<&str>, langs: HashMap<String, String>) -> Self {
        let state = Arc::new(State {
            api,
            key: key.map(str::to_owned),
            langs,
            mode: Mutex::new(Mode::Normal),
            seen: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let st = state.clone();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(&st, req).await) }
                    });
                    // A client that gives up (timeout) closes the connection mid-answer;
                    // that is expected here, not an error of the test.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeTranslate {
            port,
            state,
            rt: Some(rt),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    /// Contract violations seen so far (empty when the client behaved).
    pub fn violations(&self) -> Vec<String> {
        self.state.violations.lock().unwrap().clone()
    }

    /// Forgets the requests and violations seen so far.
    pub fn reset(&self) {
        self.state.seen.lock().unwrap().clear();
        self.state.violations.lock().unwrap().clear();
    }
}

impl Drop for FakeTranslate {
    fn drop(&mut self) {
        // Slow-mode handlers may still be sleeping: do not wait for them.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn answer(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .unwrap()
}

/// Languages LibreTranslate's default install offers (a subset is enough: the tests
/// translate into `en`).
const LT_LANGS: &[&str] = &[
    "ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "tr", "uk", "zh",
];
/// DeepL target languages (`EN` and `PT` are deprecated but still accepted).
const DEEPL_TARGETS: &[&str] = &[
    "AR", "BG", "CS", "DA", "DE", "EL", "EN", "EN-GB", "EN-US", "ES", "ET", "FI", "FR", "HU", "ID",
    "IT", "JA", "KO", "LT", "LV", "NB", "NL", "PL", "PT", "PT-BR", "PT-PT", "RO", "RU", "SK", "SL",
    "SV", "TR", "UK", "ZH",
];
/// DeepL source languages: no regional variants.
const DEEPL_SOURCES: &[&str] = &[
    "AR", "BG", "CS", "DA", "DE", "EL", "EN", "ES", "ET", "FI", "FR", "HU", "ID", "IT", "JA", "KO",
    "LT", "LV", "NB", "NL", "PL", "PT", "RO", "RU", "SK", "SL", "SV", "TR", "UK", "ZH",
];
/// Optional DeepL parameters the real API accepts; anything else is a violation.
const DEEPL_OPTIONAL: &[&str] = &[
    "source_lang",
    "context",
    "split_sentences",
    "preserve_formatting",
    "formality",
    "glossary_id",
    "tag_handling",
    "outline_detection",
    "non_splitting_tags",
    "splitting_tags",
    "ignore_tags",
    "model_type",
    "show_billed_characters",
];

/// Decodes `application/x-www-form-urlencoded` into key → values (repeated keys are how
/// forms send arrays).
fn parse_form(body: &[u8]) -> Result<HashMap<String, Vec<String>>, String> {
    fn decode(s: &str) -> Result<String, String> {
        let mut out = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = s
                        .get(i + 1..i + 3)
                        .ok_or_else(|| format!("truncated escape in {s:?}"))?;
                    out.push(
                        u8::from_str_radix(hex, 16)
                            .map_err(|_| format!("bad escape %{hex} in {s:?}"))?,
                    );
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
    }
    let text = std::str::from_utf8(body).map_err(|_| "form body is not UTF-8".to_string())?;
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.entry(decode(k)?).or_default().push(decode(v)?);
    }
    Ok(map)
}

/// A form as JSON: one value → string, several → array, the way both services read it.
fn form_as_json(form: HashMap<String, Vec<String>>) -> Value {
    let mut obj = serde_json::Map::new();
    for (k, mut v) in form {
        let value = if v.len() == 1 {
            Value::String(v.pop().unwrap())
        } else {
            json!(v)
        };
        obj.insert(k, value);
    }
    Value::Object(obj)
}

/// The body as a JSON object, by content type; `Err` is the reason it is not acceptable.
fn body_object(content_type: &str, body: &[u8]) -> Result<serde_json::Map<String, Value>, String> {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    let v = match mime {
        "application/json" => {
            serde_json::from_slice::<Value>(body).map_err(|e| format!("body is not JSON: {e}"))?
        }
        "application/x-www-form-urlencoded" => form_as_json(parse_form(body)?),
        other => return Err(format!("content-type {other:?} is neither JSON nor a form")),
    };
    match v {
        Value::Object(m) => Ok(m),
        other => Err(format!("body is not an object: {other}")),
    }
}

async fn handle(st: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_owned);
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type").unwrap_or_default();
    let auth = header("authorization");
    // A generous cap: the plugin sends at most max_batch short chat lines.
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return *reject(
                st,
                Vec::new(),
                413,
                &format!("request body unreadable: {e}"),
            );
        }
    };
    let outcome = match st.api {
        Api::LibreTranslate => libretranslate(st, &method, &path, &content_type, &body),
        Api::Deepl => deepl(
            st,
            &method,
            &path,
            query.as_deref(),
            &content_type,
            auth,
            &body,
        ),
    };
    let v = match outcome {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let mode = *st.mode.lock().unwrap();
    let status = match mode {
        Mode::Status(s) => s,
        Mode::EchoKey => 403,
        _ => 200,
    };
    st.seen.lock().unwrap().push(Seen {
        texts: v.texts.clone(),
        status,
    });
    match mode {
        Mode::Normal => translated(st, &v, 0),
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            translated(st, &v, 0)
        }
        Mode::Oversized(n) => translated(st, &v, n),
        Mode::Garbage => answer(
            200,
            "text/html",
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        ),
        Mode::Status(s) => {
            let msg = match s {
                400 => "Invalid request",
                403 => "Invalid API key",
                429 => "Too many request limits violations",
                456 => "Quota exceeded. The character limit has been reached",
                _ => "Cannot translate text: model crashed",
            };
            error_body(st.api, s, msg)
        }
        Mode::EchoKey => error_body(
            st.api,
            403,
            &format!("api key {} is not valid", v.key_sent.unwrap_or_default()),
        ),
    }
}

fn error_body(api: Api, status: u16, msg: &str) -> Response<Full<Bytes>> {
    let body = match api {
        Api::LibreTranslate => json!({ "error": msg }),
        Api::Deepl => json!({ "message": msg }),
    };
    answer(status, "application/json", body.to_string())
}

/// Records a contract violation and answers as the service would.
fn reject(st: &State, texts: Vec<String>, status: u16, why: &str) -> Box<Response<Full<Bytes>>> {
    st.violations.lock().unwrap().push(why.to_string());
    st.seen.lock().unwrap().push(Seen { texts, status });
    Box::new(error_body(st.api, status, why))
}

/// A request that was valid but not authorised: recorded, but not a contract violation
/// (tests send wrong keys on purpose).
fn unauthorised(st: &State, texts: Vec<String>, msg: &str) -> Box<Response<Full<Bytes>>> {
    st.seen.lock().unwrap().push(Seen { texts, status: 403 });
    Box::new(error_body(st.api, 403, msg))
}

/// The texts must be strings the test sent (cleaned): anything else means the plugin sent
/// text it should have cleaned or not sent at all.
fn check_texts(st: &State, texts: &[String]) -> Result<(), String> {
    for t in texts {
        if t.trim().is_empty() {
            return Err("empty text to translate".to_string());
        }
        if !st.langs.contains_key(t) {
            return Err(format!("text {t:?} is not in the test's pool (uncleaned?)"));
        }
    }
    Ok(())
}

/// A request that passed the contract checks.
struct Valid {
    texts: Vec<String>,
    /// The target language as sent.
    target: String,
    /// The key the client sent, if any.
    key_sent: Option<String>,
    /// LibreTranslate `q` was one string: the answer is a string too.
    single: bool,
}

/// An error answer is boxed: a response is large and this is the rare path.
type Parsed = Result<Valid, Box<Response<Full<Bytes>>>>;

fn libretranslate(st: &State, method: &hyper::Method, path: &str, ct: &str, body: &[u8]) -> Parsed {
    if path != "/translate" {
        return Err(reject(st, vec![], 404, &format!("no route {path:?}")));
    }
    if method != hyper::Method::POST {
        return Err(reject(
            st,
            vec![],
            405,
            &format!("method {method} on /translate"),
        ));
    }
    let obj = body_object(ct, body).map_err(|e| reject(st, vec![], 400, &e))?;
    for k in obj.keys() {
        if !["q", "source", "target", "format", "api_key", "alternatives"].contains(&k.as_str()) {
            return Err(reject(st, vec![], 400, &format!("unknown parameter {k:?}")));
        }
    }
    let texts: Vec<String> = match obj.get("q") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() => {
            let mut v = Vec::new();
            for x in a {
                match x {
                    Value::String(s) => v.push(s.clone()),
                    other => {
                        return Err(reject(
                            st,
                            vec![],
                            400,
                            &format!("q element {other} is not a string"),
                        ));
                    }
                }
            }
            v
        }
        other => {
            return Err(reject(
                st,
                vec![],
                400,
                &format!("invalid request: missing q parameter (got {other:?})"),
            ));
        }
    };
    let single = matches!(obj.get("q"), Some(Value::String(_)));
    let str_field = |k: &str| obj.get(k).and_then(Value::as_str);
    match str_field("source") {
        Some("auto") => {}
        Some(s) if LT_LANGS.contains(&s) => {}
        other => {
            return Err(reject(
                st,
                texts,
                400,
                &format!("source {other:?} is not \"auto\" or a supported language"),
            ));
        }
    }
    let target = match str_field("target") {
        Some(t) if LT_LANGS.contains(&t) => t.to_string(),
        other => {
            return Err(reject(
                st,
                texts,
                400,
                &format!("target {other:?} is not a supported language"),
            ));
        }
    };
    if let Some(f) = obj.get("format")
        && f != "text"
        && f != "html"
    {
        return Err(reject(
            st,
            texts,
            400,
            &format!("format {f} is not \"text\" or \"html\""),
        ));
    }
    let key_sent = str_field("api_key").map(str::to_owned);
    if let Some(v) = obj.get("api_key")
        && !v.is_string()
    {
        return Err(reject(
            st,
            texts,
            400,
            &format!("api_key {v} is not a string"),
        ));
    }
    if let Err(e) = check_texts(st, &texts) {
        return Err(reject(st, texts, 400, &e));
    }
    if st.key.is_some() && key_sent != st.key && *st.mode.lock().unwrap() != Mode::EchoKey {
        return Err(unauthorised(st, texts, "Invalid API key"));
    }
    Ok(Valid {
        texts,
        target,
        key_sent,
        single,
    })
}

fn deepl(
    st: &State,
    method: &hyper::Method,
    path: &str,
    query: Option<&str>,
    ct: &str,
    auth: Option<String>,
    body: &[u8],
) -> Parsed {
    if path != "/v2/translate" {
        return Err(reject(st, vec![], 404, &format!("no route {path:?}")));
    }
    if method != hyper::Method::POST {
        return Err(reject(
            st,
            vec![],
            405,
            &format!("method {method} on /v2/translate"),
        ));
    }
    if let Some(q) = query {
        // Keys in the query string end up in access logs; DeepL no longer accepts them.
        return Err(reject(
            st,
            vec![],
            400,
            &format!("query string {q:?} on a POST"),
        ));
    }
    let obj = body_object(ct, body).map_err(|e| reject(st, vec![], 400, &e))?;
    for k in obj.keys() {
        if k == "auth_key" {
            return Err(reject(
                st,
                vec![],
                403,
                "auth_key in the body: use the Authorization header",
            ));
        }
        if k != "text" && k != "target_lang" && !DEEPL_OPTIONAL.contains(&k.as_str()) {
            return Err(reject(st, vec![], 400, &format!("unknown parameter {k:?}")));
        }
    }
    let json = ct.starts_with("application/json");
    let texts: Vec<String> = match obj.get("text") {
        // JSON bodies must carry an array; a form's single value is a one-element list.
        Some(Value::String(s)) if !json => vec![s.clone()],
        Some(Value::Array(a)) if (1..=50).contains(&a.len()) => {
            let mut v = Vec::new();
            for x in a {
                match x {
                    Value::String(s) => v.push(s.clone()),
                    other => {
                        return Err(reject(
                            st,
                            vec![],
                            400,
                            &format!("text element {other} is not a string"),
                        ));
                    }
                }
            }
            v
        }
        other => {
            return Err(reject(
                st,
                vec![],
                400,
                &format!("text must be an array of 1 to 50 strings, got {other:?}"),
            ));
        }
    };
    let target = match obj.get("target_lang").and_then(Value::as_str) {
        Some(t) if DEEPL_TARGETS.contains(&t) => t.to_string(),
        other => {
            return Err(reject(
                st,
                texts,
                400,
                &format!("target_lang {other:?} is not an uppercase DeepL target language"),
            ));
        }
    };
    if let Some(s) = obj.get("source_lang")
        && !s.as_str().is_some_and(|s| DEEPL_SOURCES.contains(&s))
    {
        return Err(reject(
            st,
            texts,
            400,
            &format!("source_lang {s} is not an uppercase DeepL source language"),
        ));
    }
    if let Err(e) = check_texts(st, &texts) {
        return Err(reject(st, texts, 400, &e));
    }
    let key_sent = auth
        .as_deref()
        .and_then(|a| a.strip_prefix("DeepL-Auth-Key "))
        .map(str::to_owned);
    if auth.is_some() && key_sent.is_none() {
        return Err(reject(
            st,
            texts,
            403,
            &format!(
                "authorization scheme of {:?} is not DeepL-Auth-Key",
                auth.unwrap_or_default().split(' ').next().unwrap_or("")
            ),
        ));
    }
    if key_sent != st.key && *st.mode.lock().unwrap() != Mode::EchoKey {
        return Err(unauthorised(st, texts, "Wrong API key"));
    }
    Ok(Valid {
        texts,
        target,
        key_sent,
        single: false,
    })
}

/// The success body, padded with spaces (valid JSON whitespace) to `pad_to` bytes.
fn translated(st: &State, v: &Valid, pad_to: usize) -> Response<Full<Bytes>> {
    let texts = &v.texts;
    let lang = |t: &String| st.langs.get(t).cloned().unwrap_or_default();
    let target_lc = v.target.to_ascii_lowercase();
    let base = target_lc.split('-').next().unwrap_or("");
    let out: Vec<String> = texts.iter().map(|t| format!("[{base}] {t}")).collect();
    let body = match st.api {
        Api::LibreTranslate if v.single => json!({
            "translatedText": out[0],
            "detectedLanguage": {"confidence": 90.0, "language": lang(&texts[0])},
        }),
        Api::LibreTranslate => json!({
            "translatedText": out,
            "detectedLanguage": texts
                .iter()
                .map(|t| json!({"confidence": 90.0, "language": lang(t)}))
                .collect::<Vec<_>>(),
        }),
        Api::Deepl => json!({
            "translations": texts
                .iter()
                .zip(&out)
                .map(|(t, o)| json!({
                    "detected_source_language": lang(t).to_ascii_uppercase(),
                    "text": o,
                }))
                .collect::<Vec<_>>(),
        }),
    };
    let mut s = body.to_string();
    if s.len() < pad_to {
        s.push_str(&" ".repeat(pad_to - s.len()));
    }
    answer(200, "application/json", s)
}
