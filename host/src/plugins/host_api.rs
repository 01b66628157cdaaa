//! Host side of the plugin imports (`wit/plugin.wit`): logging, clock, per-step key-value
//! state and allowlisted HTTP.

use super::StepState;
use super::streamtap::plugin::{host, http, kv};
use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

/// Longest log line a plugin may write; longer ones are cut so a plugin cannot flood logs.
const MAX_LOG_LINE: usize = 4096;

/// Per-step key-value state, shared by every instance of the step across reloads.
#[derive(Debug)]
pub struct KvStore {
    /// The entries and their total size (keys + values), kept together so a write costs
    /// O(1) rather than a walk over the whole store.
    map: Mutex<(HashMap<String, Vec<u8>>, usize)>,
    max_bytes: usize,
}

impl KvStore {
    /// A store holding at most `max_bytes` of keys and values.
    pub fn new(max_bytes: usize) -> Self {
        KvStore {
            map: Mutex::new((HashMap::new(), 0)),
            max_bytes,
        }
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.map.lock().expect("kv lock").0.get(key).cloned()
    }

    pub fn set(&self, key: String, value: Vec<u8>) -> Result<(), String> {
        let mut guard = self.map.lock().expect("kv lock");
        let (map, used) = &mut *guard;
        let old = map.get(&key).map(|v| key.len() + v.len()).unwrap_or(0);
        let after = *used - old + key.len() + value.len();
        if after > self.max_bytes {
            return Err(format!(
                "key-value state would grow to {after} bytes, over the step's cap of {} bytes",
                self.max_bytes
            ));
        }
        *used = after;
        map.insert(key, value);
        Ok(())
    }

    pub fn delete(&self, key: &str) {
        let mut guard = self.map.lock().expect("kv lock");
        let (map, used) = &mut *guard;
        if let Some(v) = map.remove(key) {
            *used -= key.len() + v.len();
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().expect("kv lock").0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What outbound HTTP a step may make.
#[derive(Debug, Clone)]
pub struct HttpPolicy {
    /// Allowed `host` or `host:port` entries; empty denies all requests.
    pub allow: Vec<String>,
    /// Upper bound for one request (a plugin may ask for less).
    pub timeout: Duration,
    /// Largest response body accepted, in bytes.
    pub max_response: u64,
}

impl HttpPolicy {
    /// A policy that allows nothing.
    pub fn deny_all() -> Self {
        HttpPolicy {
            allow: Vec::new(),
            timeout: Duration::from_secs(5),
            max_response: 1 << 20,
        }
    }

    /// Checks a URL against the allowlist; returns the `host[:port]` it names.
    pub fn check(&self, url: &str) -> Result<(), String> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| format!("{url:?} is not an http(s) URL"))?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return Err(format!("{url:?}: credentials in URLs are not allowed"));
        }
        let host = authority
            .rsplit_once(':')
            .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
            .map(|(h, _)| h)
            .unwrap_or(authority);
        let ok = self
            .allow
            .iter()
            .any(|a| a.eq_ignore_ascii_case(authority) || a.eq_ignore_ascii_case(host));
        if ok {
            Ok(())
        } else {
            Err(authority.to_owned())
        }
    }
}

impl host::Host for StepState {
    fn log(&mut self, level: host::Level, message: String) {
        let mut m = message;
        if m.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !m.is_char_boundary(cut) {
                cut -= 1;
            }
            m.truncate(cut);
            m.push('…');
        }
        let step = &*self.caps.step;
        match level {
            host::Level::Trace => tracing::trace!(step, "{m}"),
            host::Level::Debug => tracing::debug!(step, "{m}"),
            host::Level::Info => tracing::info!(step, "{m}"),
            host::Level::Warn => tracing::warn!(step, "{m}"),
            host::Level::Error => tracing::error!(step, "{m}"),
        }
    }

    fn now_ms(&mut self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

impl kv::Host for StepState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.caps.kv.get(&key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.caps.kv.set(key, value)
    }

    fn delete(&mut self, key: String) {
        self.caps.kv.delete(&key)
    }
}

impl http::Host for StepState {
    fn send(&mut self, req: http::Request) -> Result<http::Response, http::HttpError> {
        let policy = &self.caps.http;
        if let Err(authority) = policy.check(&req.url) {
            tracing::warn!(step = &*self.caps.step, host = %authority, "plugin HTTP request denied: not in allow_http");
            return Err(http::HttpError::NotAllowed(authority));
        }
        let timeout = req
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into()).min(policy.timeout))
            .unwrap_or(policy.timeout);
        let max = policy.max_response;
        let agent = self.http_agent.get_or_insert_with(|| {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                // Plugins must reach only the allowlisted host, not wherever it redirects.
                .max_redirects(0)
                // Reuse only within a burst: servers close idle keep-alive connections
                // after a few seconds (gunicorn's default is 2 s), and a POST on a
                // connection the server already closed fails rather than retrying.
                .max_idle_age(Duration::from_secs(1))
                .build()
                .into()
        });
        let started = std::time::Instant::now();
        let res = send_http(agent, &req, timeout, max);
        // Waiting on the network is not the plugin's computation: see `CallTiming`.
        self.timing.host_wait += started.elapsed();
        res
    }
}

fn send_http(
    agent: &ureq::Agent,
    req: &http::Request,
    timeout: Duration,
    max: u64,
) -> Result<http::Response, http::HttpError> {
    let transport = |e: &dyn std::fmt::Display| http::HttpError::Transport(e.to_string());
    let mut builder = ureq::http::Request::builder()
        .method(req.method.as_str())
        .uri(&req.url);
    for (k, v) in &req.headers {
        builder = builder.header(k, v);
    }
    let request = builder.body(req.body.clone()).map_err(|e| transport(&e))?;
    // The timeout is per request: the plugin may ask for less than the step allows.
    let request = agent
        .configure_request(request)
        .timeout_global(Some(timeout))
        .build();
    let resp = agent.run(request).map_err(|e| match e {
        ureq::Error::Timeout(_) => http::HttpError::Timeout,
        other => transport(&other),
    })?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    let mut reader = resp.into_body().into_reader().take(max + 1);
    reader.read_to_end(&mut body).map_err(|e| {
        if e.kind() == std::io::ErrorKind::TimedOut {
            http::HttpError::Timeout
        } else {
            transport(&e)
        }
    })?;
    if body.len() as u64 > max {
        return Err(http::HttpError::TooLarge(max));
    }
    Ok(http::Response {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matches_host_or_host_port() {
        let p = HttpPolicy {
            allow: vec!["api.example.com".into(), "127.0.0.1:5000".into()],
            ..HttpPolicy::deny_all()
        };
        assert!(p.check("https://api.example.com/x").is_ok());
        assert!(p.check("https://api.example.com:8443/x").is_ok());
        assert!(p.check("http://127.0.0.1:5000/translate").is_ok());
        assert_eq!(
            p.check("http://127.0.0.1:5001/").unwrap_err(),
            "127.0.0.1:5001"
        );
        assert!(p.check("http://evil.com/?api.example.com").is_err());
        assert!(p.check("http://api.example.com@evil.com/").is_err());
        assert!(p.check("file:///etc/passwd").is_err());
        assert!(
            HttpPolicy::deny_all()
                .check("http://api.example.com/")
                .is_err()
        );
    }

    #[test]
    fn kv_enforces_cap() {
        let kv = KvStore::new(10);
        kv.set("a".into(), vec![0; 5]).unwrap();
        assert!(kv.set("b".into(), vec![0; 5]).is_err());
        kv.set("a".into(), vec![0; 9]).unwrap();
        assert_eq!(kv.get("a").unwrap().len(), 9);
        kv.delete("a");
        kv.set("b".into(), vec![0; 9]).unwrap();
    }
}
