//! A mock Twitch Helix API over real HTTP/1.1 on 127.0.0.1: the client-credentials token
//! endpoint (`POST /oauth2/token`) and Get Streams (`GET /helix/streams?user_login=...`),
//! with Twitch's rate limiting: a bucket of `points` per minute (full at start, refilled
//! continuously), `Ratelimit-Limit/Remaining/Reset` headers on every answer and 429 when
//! empty. Tests set which channels are live and read back every request it saw, with the
//! time it arrived, to count requests per minute server-side.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One Get Streams request as the server saw it.
#[derive(Debug, Clone)]
pub struct StreamsRequest {
    pub at: Instant,
    pub logins: Vec<String>,
    /// Answered 429.
    pub limited: bool,
    /// Refused 401 (unknown token or wrong client id).
    pub unauthorized: bool,
}

struct State {
    client_id: String,
    secret: String,
    points: f64,
    tokens_left: f64,
    refilled: Instant,
    valid_tokens: Vec<String>,
    issued: usize,
    bad_secret: usize,
    live: HashMap<String, serde_json::Value>,
    requests: Vec<StreamsRequest>,
    raw_queries: Vec<String>,
}

#[derive(Clone)]
pub struct MockHelix {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl MockHelix {
    /// A server for one application (`client_id`, `secret`) with `points` per minute.
    pub fn start(client_id: &str, secret: &str, points: u32) -> MockHelix {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind mock helix");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            client_id: client_id.into(),
            secret: secret.into(),
            points: f64::from(points),
            tokens_left: f64::from(points),
            refilled: Instant::now(),
            valid_tokens: Vec::new(),
            issued: 0,
            bad_secret: 0,
            live: HashMap::new(),
            requests: Vec::new(),
            raw_queries: Vec::new(),
        }));
        let s = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(s, stream));
            }
        });
        MockHelix { port, state }
    }

    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/helix", self.port)
    }

    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/oauth2/token", self.port)
    }

    /// Marks `login` live with stream `stream_id`.
    pub fn set_live(&self, login: &str, stream_id: &str, title: &str) {
        let v = serde_json::json!({
            "id": stream_id,
            "user_id": format!("{login}-uid"),
            "user_login": login,
            "user_name": login.to_uppercase(),
            "game_id": "509658",
            "game_name": "Just Chatting",
            "type": "live",
            "title": title,
            "viewer_count": 1234,
            "started_at": "2026-11-27T10:00:00Z",
            "language": "en",
            "thumbnail_url": "",
            "tag_ids": [],
            "tags": [],
            "is_mature": false
        });
        self.state.lock().unwrap().live.insert(login.into(), v);
    }

    pub fn set_offline(&self, login: &str) {
        self.state.lock().unwrap().live.remove(login);
    }

    /// Invalidates every token issued so far (the next request with one gets 401).
    pub fn revoke_tokens(&self) {
        self.state.lock().unwrap().valid_tokens.clear();
    }

    pub fn tokens_issued(&self) -> usize {
        self.state.lock().unwrap().issued
    }

    pub fn bad_secrets(&self) -> usize {
        self.state.lock().unwrap().bad_secret
    }

    pub fn requests(&self) -> Vec<StreamsRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The raw query strings of Get Streams requests (to check nothing secret is in them).
    pub fn raw_queries(&self) -> Vec<String> {
        self.state.lock().unwrap().raw_queries.clone()
    }

    /// The most requests that arrived within any `window`, and how many got 429.
    pub fn busiest(&self, window: Duration) -> (usize, usize) {
        let reqs = self.requests();
        let mut most = 0;
        for (i, r) in reqs.iter().enumerate() {
            let n = reqs[i..]
                .iter()
                .take_while(|q| q.at.duration_since(r.at) < window)
                .count();
            most = most.max(n);
        }
        (most, reqs.iter().filter(|r| r.limited).count())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn serve(state: Arc<Mutex<State>>, stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let (status, extra, text) = match (method.as_str(), path) {
            ("POST", "/oauth2/token") => token(&state, &String::from_utf8_lossy(&body)),
            ("GET", "/helix/streams") => streams(&state, &headers, query),
            _ => (
                404,
                Vec::new(),
                r#"{"error":"Not Found","status":404}"#.to_owned(),
            ),
        };
        let mut resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            text.len()
        );
        for (k, v) in extra {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        resp.push_str(&text);
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%20", " ")))
        .collect()
}

fn token(state: &Mutex<State>, body: &str) -> (u16, Vec<(String, String)>, String) {
    let f = form(body);
    let mut s = state.lock().unwrap();
    let ok = f.get("client_id") == Some(&s.client_id)
        && f.get("client_secret") == Some(&s.secret)
        && f.get("grant_type").map(String::as_str) == Some("client_credentials");
    if !ok {
        s.bad_secret += 1;
        return (
            403,
            Vec::new(),
            r#"{"status":403,"message":"invalid client secret"}"#.into(),
        );
    }
    s.issued += 1;
    let t = format!("apptoken{}", s.issued);
    s.valid_tokens.push(t.clone());
    (
        200,
        Vec::new(),
        serde_json::json!({"access_token": t, "expires_in": 5_000_000, "token_type": "bearer"})
            .to_string(),
    )
}

fn streams(
    state: &Mutex<State>,
    headers: &HashMap<String, String>,
    query: &str,
) -> (u16, Vec<(String, String)>, String) {
    let logins: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("user_login="))
        .map(str::to_owned)
        .collect();
    let mut s = state.lock().unwrap();
    s.raw_queries.push(query.to_owned());
    let auth_ok = headers.get("client-id") == Some(&s.client_id)
        && headers
            .get("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| s.valid_tokens.iter().any(|v| v == t));
    let now = Instant::now();
    if !auth_ok {
        s.requests.push(StreamsRequest {
            at: now,
            logins,
            limited: false,
            unauthorized: true,
        });
        return (
            401,
            Vec::new(),
            r#"{"error":"Unauthorized","status":401,"message":"Invalid OAuth token"}"#.into(),
        );
    }
    // Twitch's bucket: `points` per minute, refilled continuously, full at start.
    let per_sec = s.points / 60.0;
    let refill = now.duration_since(s.refilled).as_secs_f64() * per_sec;
    s.tokens_left = (s.tokens_left + refill).min(s.points);
    s.refilled = now;
    let limited = s.tokens_left < 1.0;
    if !limited {
        s.tokens_left -= 1.0;
    }
    let until_full = ((s.points - s.tokens_left) / per_sec).ceil() as u64;
    let rate = vec![
        ("Ratelimit-Limit".to_owned(), format!("{}", s.points as u64)),
        (
            "Ratelimit-Remaining".to_owned(),
            format!("{}", s.tokens_left.floor() as u64),
        ),
        (
            "Ratelimit-Reset".to_owned(),
            format!("{}", unix_now() + until_full.max(1)),
        ),
    ];
    s.requests.push(StreamsRequest {
        at: now,
        logins: logins.clone(),
        limited,
        unauthorized: false,
    });
    if limited {
        return (
            429,
            rate,
            r#"{"error":"Too Many Requests","status":429,"message":""}"#.into(),
        );
    }
    if logins.len() > 100 {
        return (
            400,
            rate,
            r#"{"error":"Bad Request","status":400,"message":"too many user_login"}"#.into(),
        );
    }
    let data: Vec<serde_json::Value> = logins
        .iter()
        .filter_map(|l| s.live.get(l).cloned())
        .collect();
    (
        200,
        rate,
        serde_json::json!({"data": data, "pagination": {}}).to_string(),
    )
}
