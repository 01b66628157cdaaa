//! Translation backends: building one HTTP request for many texts and reading the answer.
//!
//! Pure functions over [`Request`] / [`Response`], so every parse path is unit-testable
//! without a host. Every failure is an `Err(reason)`; the caller turns it into a
//! `translation.error` field on the affected messages.

use serde::Deserialize;
use serde_json::json;
use streamtap_plugin_sdk::host::http::{Request, Response};

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
) -> Result<Vec<Translated>, String> {
    if resp.status >= 400 {
        return Err(status_error(resp));
    }
    let out = match backend {
        Backend::Libretranslate => parse_libretranslate(&resp.body)?,
        Backend::Deepl => parse_deepl(&resp.body)?,
    };
    if out.len() != expected {
        return Err(format!(
            "response has {} translations for {expected} texts",
            out.len()
        ));
    }
    Ok(out)
}

/// `HTTP 503: <server message>`, quoting the `error` / `message` field of a JSON error
/// body (both servers use one of those) or the start of a plain-text body.
fn status_error(resp: &Response) -> String {
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

fn malformed(e: impl std::fmt::Display) -> String {
    format!("malformed response: {e}")
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
    let b: Body = serde_json::from_slice(body).map_err(malformed)?;
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
    let b: Body = serde_json::from_slice(body).map_err(malformed)?;
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
        assert_eq!(e, "HTTP 400: Invalid request: missing q parameter");
        let e = parse_response(Backend::Deepl, &resp(456, ""), 1).unwrap_err();
        assert_eq!(e, "HTTP 456");
        let long = "x".repeat(5000);
        let e = parse_response(Backend::Deepl, &resp(500, &long), 1).unwrap_err();
        assert!(e.len() < 300, "{e}");
        let e = parse_response(Backend::Libretranslate, &resp(200, "<html>"), 1).unwrap_err();
        assert!(e.starts_with("malformed response"), "{e}");
        let e = parse_response(
            Backend::Libretranslate,
            &resp(200, r#"{"translatedText":["a"]}"#),
            2,
        )
        .unwrap_err();
        assert_eq!(e, "response has 1 translations for 2 texts");
        let e =
            parse_response(Backend::Deepl, &resp(200, r#"{"translations":{}}"#), 1).unwrap_err();
        assert!(e.starts_with("malformed response"), "{e}");
    }
}
