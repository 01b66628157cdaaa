//! Translation backends: building one HTTP request for many texts and reading the answer.
//!
//! Pure functions over [`Request`] / [`Response`], so every parse path is unit-testable
//! without a host. Every failure is a [`Failure`]: its reason becomes the
//! `translation.error` field of the affected messages, its kind the `kind` label of the
//! `translate_backend_failures` metric.

use serde::Deserialize;
use serde_json::json;
use streamtap_plugin_sdk::host::http::{Error, Request, Response};

/// Which translation service to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A LibreTranslate server (self-hosted or libretranslate.com): `POST {url}/translate`.
    Libretranslate,
    /// DeepL API (free or pro): `POST {url}/v2/translate`.
    Deepl,
}

impl Backend {
    /// The name written into `translation.backend`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Libretranslate => "libretranslate",
            Backend::Deepl => "deepl",
        }
    }
}

/// One translated text.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    pub text: String,
    /// Source language as the backend reported it (ISO 639-1, lowercase), when it did.
    pub source: Option<String>,
}

/// Why a request failed, coarse enough to alert on: the `kind` label of the
/// `translate_backend_failures` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No answer within the timeout.
    Timeout,
    /// The server answered with a non-2xx status (bad key, quota, rate limit, 5xx).
    Status,
    /// A 2xx answer that is not the backend's JSON, or has the wrong number of texts.
    Malformed,
    /// The answer was larger than the step's `http_max_response`.
    TooLarge,
    /// The URL's host is not in the step's `allow_http`: a configuration error.
    NotAllowed,
    /// Connection refused, DNS, TLS and other network errors.
    Transport,
    /// Not sent: the call's `budget_ms` would have run out before the answer came, after
    /// earlier requests of the same call took their time. The backend may be healthy but
    /// slow, so this starts no cooldown.
    Budget,
}

impl FailureKind {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Status => "status",
            FailureKind::Malformed => "malformed",
            FailureKind::TooLarge => "too_large",
            FailureKind::NotAllowed => "not_allowed",
            FailureKind::Transport => "transport",
            FailureKind::Budget => "budget",
        }
    }
}

/// A failed request: what kind of failure and the reason written to `translation.error`.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub kind: FailureKind,
    pub reason: String,
}

impl Failure {
    fn new(kind: FailureKind, reason: impl Into<String>) -> Self {
        Failure {
            kind,
            reason: reason.into(),
        }
    }

    /// A request that was not sent because the call's time budget would run out first:
    /// `used_ms` of `budget_ms` are gone and the slowest request of the call so far took
    /// `slowest_ms`.
    pub fn budget(budget_ms: u32, used_ms: i64, slowest_ms: i64) -> Self {
        Failure::new(
            FailureKind::Budget,
            format!(
                "skipped: the call's time budget would run out (budget_ms = {budget_ms}, {used_ms} ms used, slowest request {slowest_ms} ms)"
            ),
        )
    }

    /// A failure the host's HTTP capability reported. `timeout_ms` is what the plugin
    /// asked for (`timeout_ms` or what was left of `budget_ms`); the host may have cut it
    /// further to the step's `http_timeout`.
    pub fn from_http(e: &Error, timeout_ms: u32) -> Self {
        match e {
            Error::Timeout => Failure::new(
                FailureKind::Timeout,
                format!(
                    "request timed out after {timeout_ms} ms (timeout_ms or the rest of budget_ms; the step's http_timeout if lower)"
                ),
            ),
            Error::TooLarge(n) => Failure::new(
                FailureKind::TooLarge,
                format!("response larger than {n} bytes (the step's http_max_response)"),
            ),
            Error::NotAllowed(host) => Failure::new(
                FailureKind::NotAllowed,
                format!("host {host:?} is not in the step's allow_http"),
            ),
            Error::Transport(e) => {
                Failure::new(FailureKind::Transport, format!("transport error: {e}"))
            }
        }
    }
}

/// Longest slice of an error body quoted in a reason: enough for a server's message,
/// short enough not to flood every message's `translation.error`.
const MAX_ERROR_DETAIL: usize = 200;

/// Builds the one request that translates all of `texts` into `target` (ISO 639-1).
pub fn build_request(
    backend: Backend,
    url: &str,
    api_key: Option<&str>,
    target: &str,
    texts: &[&str],
    timeout_ms: u32,
) -> Request {
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("accept".to_string(), "application/json".to_string()),
    ];
    let (path, body) = match backend {
        Backend::Libretranslate => {
            // `source: auto` rather than our detection: the server's detector sees the
            // same text and is better than ours, and one request can mix languages.
            let mut body = json!({
                "q": texts,
                "source": "auto",
                "target": target,
                "format": "text",
            });
            if let Some(key) = api_key {
                body["api_key"] = json!(key);
            }
            ("/translate", body)
        }
        Backend::Deepl => {
            if let Some(key) = api_key {
                headers.push(("authorization".to_string(), format!("DeepL-Auth-Key {key}")));
            }
            // No `source_lang`: DeepL detects per text, so one request can mix languages.
            let body = json!({
                "text": texts,
                "target_lang": target.to_ascii_uppercase(),
            });
            ("/v2/translate", body)
        }
    };
    Request {
        method: "POST".to_string(),
        url: format!("{url}{path}"),
        headers,
        body: body.to_string().into_bytes(),
        timeout_ms: Some(timeout_ms),
    }
}

/// Reads the backend's answer to a request for `expected` texts, in request order.
pub fn parse_response(
    backend: Backend,
    resp: &Response,
    expected: usize,
) -> Result<Vec<Translated>, Failure> {
    // Not only >= 400: the host follows no redirects, so a 3xx (an http:// URL of an
    // https-only server, a moved endpoint) arrives here and must not be parsed as a
    // translation.
    if !(200..300).contains(&resp.status) {
        return Err(Failure::new(FailureKind::Status, status_error(resp)));
    }
    let out = match backend {
        Backend::Libretranslate => parse_libretranslate(&resp.body),
        Backend::Deepl => parse_deepl(&resp.body),
    }
    .map_err(|e| Failure::new(FailureKind::Malformed, e))?;
    if out.len() != expected {
        return Err(Failure::new(
            FailureKind::Malformed,
            format!(
                "malformed response: {} translations for {expected} texts",
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// `HTTP 503: <server message>`, quoting the `error` / `message` field of a JSON error
/// body (both servers use one of those) or the start of a plain-text body. A redirect
/// names its target instead, since following it is what the user has to configure.
fn status_error(resp: &Response) -> String {
    if (300..400).contains(&resp.status) {
        let location = resp
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("location"))
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        return format!(
            "HTTP {}: redirects are not followed; set url to the target {location:?}",
            resp.status
        );
    }
    let text = String::from_utf8_lossy(&resp.body);
    let detail = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            ["error", "message"]
                .iter()
                .find_map(|k| v.get(*k).and_then(|m| m.as_str()).map(str::to_owned))
        })
        .unwrap_or_else(|| text.trim().to_string());
    let detail: String = detail.chars().take(MAX_ERROR_DETAIL).collect();
    if detail.is_empty() {
        format!("HTTP {}", resp.status)
    } else {
        format!("HTTP {}: {detail}", resp.status)
    }
}

/// `malformed response: <parser error> (body starts "...")`: the start of the body is
/// what tells a proxy's HTML error page from a wrong endpoint.
fn malformed(body: &[u8]) -> impl Fn(serde_json::Error) -> String + '_ {
    move |e| {
        let start: String = String::from_utf8_lossy(body).chars().take(60).collect();
        format!("malformed response: {e} (body starts {start:?})")
    }
}

/// `{"translatedText": [..], "detectedLanguage": [{"language": "es", ..}, ..]}`. A single
/// string is accepted too: older servers answer a one-element `q` that way.
fn parse_libretranslate(body: &[u8]) -> Result<Vec<Translated>, String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    impl<T> OneOrMany<T> {
        fn into_vec(self) -> Vec<T> {
            match self {
                OneOrMany::One(t) => vec![t],
                OneOrMany::Many(v) => v,
            }
        }
    }
    #[derive(Deserialize)]
    struct Detected {
        language: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        translated_text: OneOrMany<String>,
        detected_language: Option<OneOrMany<Detected>>,
    }
    let b: Body = serde_json::from_slice(body).map_err(malformed(body))?;
    let texts = b.translated_text.into_vec();
    let mut sources = b
        .detected_language
        .map(OneOrMany::into_vec)
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.language);
    Ok(texts
        .into_iter()
        .map(|text| Translated {
            text,
            source: sources.next().flatten().and_then(normalize_lang),
        })
        .collect())
}

/// `{"translations": [{"detected_source_language": "DE", "text": ".."}, ..]}`.
fn parse_deepl(body: &[u8]) -> Result<Vec<Translated>, String> {
    #[derive(Deserialize)]
    struct Item {
        text: String,
        detected_source_language: Option<String>,
    }
    #[derive(Deserialize)]
    struct Body {
        translations: Vec<Item>,
    }
    let b: Body = serde_json::from_slice(body).map_err(malformed(body))?;
    Ok(b.translations
        .into_iter()
        .map(|i| Translated {
            text: i.text,
            source: i.detected_source_language.and_then(normalize_lang),
        })
        .collect())
}

/// "DE" / "en-US" / "pt-br" → "de" / "en" / "pt"; anything else (LibreTranslate's
/// "auto" when unsure, garbage) → `None`, so the caller falls back to our own detection.
fn normalize_lang(code: String) -> Option<String> {
    let base = code.split(['-', '_']).next().unwrap_or("");
    (base.len() == 2 && base.chars().all(|c| c.is_ascii_alphabetic()))
        .then(|| base.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn libretranslate_request_shape() {
        let r = build_request(
            Backend::Libretranslate,
            "http://lt:5000",
            Some("k"),
            "en",
            &["hola", "hallo"],
            100,
        );
        assert_eq!(r.url, "http://lt:5000/translate");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            json!({"q": ["hola", "hallo"], "source": "auto", "target": "en", "format": "text", "api_key": "k"})
        );
        assert!(!r.headers.iter().any(|(k, _)| k == "authorization"));
    }

    #[test]
    fn deepl_request_shape() {
        let r = build_request(
            Backend::Deepl,
            "https://api-free.deepl.com",
            Some("secret"),
            "en",
            &["hallo"],
            100,
        );
        assert_eq!(r.url, "https://api-free.deepl.com/v2/translate");
        assert!(
            r.headers
                .contains(&("authorization".into(), "DeepL-Auth-Key secret".into()))
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, json!({"text": ["hallo"], "target_lang": "EN"}));
    }

    #[test]
    fn parses_both_backends() {
        let lt = resp(
            200,
            r#"{"translatedText":["hello","hi"],"detectedLanguage":[{"confidence":90,"language":"es"},{"confidence":0,"language":"auto"}]}"#,
        );
        assert_eq!(
            parse_response(Backend::Libretranslate, &lt, 2).unwrap(),
            vec![
                Translated {
                    text: "hello".into(),
                    source: Some("es".into())
                },
                Translated {
                    text: "hi".into(),
                    source: None
                },
            ]
        );
        let one = resp(200, r#"{"translatedText":"hello"}"#);
        assert_eq!(
            parse_response(Backend::Libretranslate, &one, 1).unwrap()[0].text,
            "hello"
        );
        let dl = resp(
            200,
            r#"{"translations":[{"detected_source_language":"DE","text":"hello"}]}"#,
        );
        assert_eq!(
            parse_response(Backend::Deepl, &dl, 1).unwrap(),
            vec![Translated {
                text: "hello".into(),
                source: Some("de".into())
            }]
        );
    }

    #[test]
    fn failures_have_reasons() {
        let e = parse_response(
            Backend::Libretranslate,
            &resp(400, r#"{"error":"Invalid request: missing q parameter"}"#),
            1,
        )
        .unwrap_err();
        assert_eq!(
            e,
            Failure::new(
                FailureKind::Status,
                "HTTP 400: Invalid request: missing q parameter"
            )
        );
        let e = parse_response(Backend::Deepl, &resp(456, ""), 1).unwrap_err();
        assert_eq!(e, Failure::new(FailureKind::Status, "HTTP 456"));
        let long = "x".repeat(5000);
        let e = parse_response(Backend::Deepl, &resp(500, &long), 1).unwrap_err();
        assert!(e.reason.len() < 300, "{e:?}");
        let e = parse_response(Backend::Libretranslate, &resp(200, "<html>"), 1).unwrap_err();
        assert_eq!(e.kind, FailureKind::Malformed);
        assert!(
            e.reason.starts_with("malformed response") && e.reason.contains("\"<html>\""),
            "{e:?}"
        );
        let e = parse_response(
            Backend::Libretranslate,
            &resp(200, r#"{"translatedText":["a"]}"#),
            2,
        )
        .unwrap_err();
        assert_eq!(
            e,
            Failure::new(
                FailureKind::Malformed,
                "malformed response: 1 translations for 2 texts"
            )
        );
        let e =
            parse_response(Backend::Deepl, &resp(200, r#"{"translations":{}}"#), 1).unwrap_err();
        assert_eq!(e.kind, FailureKind::Malformed);
    }

    #[test]
    fn redirects_are_status_failures_naming_the_target() {
        let r = Response {
            status: 301,
            headers: vec![("Location".into(), "https://lt.example/translate".into())],
            body: b"{}".to_vec(),
        };
        let e = parse_response(Backend::Libretranslate, &r, 1).unwrap_err();
        assert_eq!(e.kind, FailureKind::Status);
        assert!(
            e.reason.contains("\"https://lt.example/translate\""),
            "{e:?}"
        );
    }

    #[test]
    fn host_errors_map_to_kinds() {
        let cases = [
            (Error::Timeout, FailureKind::Timeout, "300 ms"),
            (Error::TooLarge(1024), FailureKind::TooLarge, "1024 bytes"),
            (
                Error::NotAllowed("lt.example:5000".into()),
                FailureKind::NotAllowed,
                "\"lt.example:5000\"",
            ),
            (
                Error::Transport("connection refused".into()),
                FailureKind::Transport,
                "connection refused",
            ),
        ];
        for (err, kind, needle) in cases {
            let f = Failure::from_http(&err, 300);
            assert_eq!(f.kind, kind);
            assert!(f.reason.contains(needle), "{f:?} should name {needle}");
        }
    }
}
