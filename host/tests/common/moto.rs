//! A real SNS/SQS emulator for tests: `moto_server` from the repo's `.venv` (`make venv`),
//! started on a free port per test and killed when dropped, with the few SNS and SQS calls
//! the tests need (moto does not check signatures, so the requests carry only the
//! credential scope moto routes on). Plus a TCP forwarder the test can take down and bring
//! back, to simulate an outage without killing moto (which would lose its state).
#![allow(dead_code)]

pub use super::server::free_port;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// moto's default account and region.
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";

/// A running `moto_server`.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

fn auth(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0"
    )
}

/// Form-encodes `pairs` (values are ARNs, names and URLs: only a few characters need it).
fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

impl Moto {
    /// Starts `<repo>/.venv/bin/moto_server` on a free port and waits until it answers.
    pub fn start() -> Moto {
        let bin = super::workspace_root().join(".venv/bin/moto_server");
        assert!(
            bin.is_file(),
            "{} missing: run `make venv` (moto[server] is pinned in scripts/requirements-dev.txt)",
            bin.display()
        );
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto { child, port };
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = agent()
                .get(&format!("{}/moto-api/", moto.url()))
                .call()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ok {
                return moto;
            }
            assert!(
                Instant::now() < until,
                "moto_server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An SNS query-protocol call; returns the XML answer.
    fn sns(&self, pairs: &[(&str, &str)]) -> String {
        let mut all = vec![("Version", "2010-03-31")];
        all.extend_from_slice(pairs);
        let mut r = agent()
            .post(&format!("{}/", self.url()))
            .header("authorization", &auth("sns"))
            .header("content-type", "application/x-www-form-urlencoded")
            .send(form(&all).as_bytes())
            .expect("sns call");
        let status = r.status();
        let body = r.body_mut().read_to_string().unwrap();
        assert!(status.is_success(), "sns {pairs:?}: {status} {body}");
        body
    }

    /// An SQS JSON-protocol call.
    fn sqs(&self, action: &str, body: serde_json::Value) -> serde_json::Value {
        let mut r = agent()
            .post(&format!("{}/", self.url()))
            .header("authorization", &auth("sqs"))
            .header("x-amz-target", &format!("AmazonSQS.{action}"))
            .header("content-type", "application/x-amz-json-1.0")
            .send(body.to_string().as_bytes())
            .expect("sqs call");
        let status = r.status();
        let text = r.body_mut().read_to_string().unwrap();
        assert!(status.is_success(), "sqs {action}: {status} {text}");
        serde_json::from_str(&text).unwrap_or_default()
    }

    /// Creates an SNS topic and returns its ARN.
    pub fn create_topic(&self, name: &str) -> String {
        let xml = self.sns(&[("Action", "CreateTopic"), ("Name", name)]);
        let arn = format!("arn:aws:sns:{REGION}:{ACCOUNT}:{name}");
        assert!(xml.contains(&arn), "CreateTopic answered {xml}");
        arn
    }

    /// Creates an SQS queue subscribed to `topic_arn` and returns its URL.
    pub fn subscribed_queue(&self, name: &str, topic_arn: &str) -> String {
        let url = self.sqs("CreateQueue", serde_json::json!({ "QueueName": name }))["QueueUrl"]
            .as_str()
            .expect("QueueUrl")
            .to_owned();
        let queue_arn = format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}");
        self.sns(&[
            ("Action", "Subscribe"),
            ("TopicArn", topic_arn),
            ("Protocol", "sqs"),
            ("Endpoint", &queue_arn),
        ]);
        url
    }

    /// Every message in the queue now, as the SNS envelopes SQS holds (`Subject`,
    /// `Message`, `MessageAttributes`), each returned once (hidden for 10 minutes after).
    pub fn drain_queue(&self, url: &str) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut empty = 0;
        while empty < 2 {
            let r = self.sqs(
                "ReceiveMessage",
                serde_json::json!({
                    "QueueUrl": url,
                    "MaxNumberOfMessages": 10,
                    "VisibilityTimeout": 600,
                    "WaitTimeSeconds": 0,
                }),
            );
            let msgs = r["Messages"].as_array().cloned().unwrap_or_default();
            if msgs.is_empty() {
                empty += 1;
                continue;
            }
            for m in msgs {
                let body = m["Body"].as_str().expect("message body");
                out.push(serde_json::from_str(body).expect("SNS envelope JSON"));
            }
        }
        out
    }
}

/// Copies bytes between a client and the target until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

struct Running {
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: JoinHandle<()>,
}

/// A TCP forwarder on a fixed local port: `down()` closes the listener and every open
/// connection (clients then get "connection refused"), `up()` listens again.
pub struct Forwarder {
    pub port: u16,
    target: u16,
    running: Mutex<Option<Running>>,
}

impl Forwarder {
    /// A forwarder to `127.0.0.1:target`, listening (up) or not (down) from the start.
    pub fn new(target: u16, up: bool) -> Forwarder {
        let f = Forwarder {
            port: free_port(),
            target,
            running: Mutex::new(None),
        };
        if up {
            f.up();
        }
        f
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Listens again on the same port.
    pub fn up(&self) {
        let mut running = self.running.lock().unwrap();
        if running.is_some() {
            return;
        }
        let until = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        Instant::now() < until,
                        "forwarder cannot rebind {}: {e}",
                        self.port
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (s, c, target) = (stop.clone(), conns.clone(), self.target);
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        let mut open = c.lock().unwrap();
                        open.push(client.try_clone().unwrap());
                        open.push(server.try_clone().unwrap());
                        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                        std::thread::spawn(move || pipe(client, server));
                        std::thread::spawn(move || pipe(s2, c2));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // Dropping the listener here: new connections are refused from now on.
        });
        *running = Some(Running {
            stop,
            conns,
            thread,
        });
    }

    /// Stops listening and cuts every open connection.
    pub fn down(&self) {
        let Some(r) = self.running.lock().unwrap().take() else {
            return;
        };
        r.stop.store(true, Ordering::SeqCst);
        let _ = r.thread.join();
        for c in r.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.down();
    }
}
