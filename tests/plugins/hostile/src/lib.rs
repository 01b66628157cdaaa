//! A hostile plugin for the host's sandbox tests. The message text is a command:
//!
//! - `fs` — tries to read `/etc/passwd` and create a file; sets `fs_result`.
//! - `net HOST:PORT` — tries a TCP connection; sets `net_result`.
//! - `env` — counts environment variables; sets `env_count`.
//! - `http URL` — asks the host for the URL; sets `http_result`.
//! - `loop` — spins forever (the host's deadline must stop it).
//! - `oom` — allocates until the memory limit (the host must refuse, not crash).
//! - `trap` — panics.
//! - `reserved` — tries to overwrite the reserved `id` field.
//! - `drop` — drops the message (a legitimate action).
//!
//! With `trap_every = N`, every Nth message seen traps instead (a flaky plugin). With
//! `flush = "trap" | "loop" | "set" | "record"`, the end-of-run `flush` panics, spins,
//! returns an action that needs a message, or emits one record (a well-behaved flush).

use streamtap_plugin_sdk::host::http;
use streamtap_plugin_sdk::{Actions, Message, Plugin, export, host};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Trap on every Nth message (0 = never).
    pub trap_every: u64,
    /// What `flush` does (empty: nothing).
    pub flush: String,
}

pub struct Hostile {
    trap_every: u64,
    seen: u64,
    flush: String,
}

impl Plugin for Hostile {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        Ok(Hostile {
            trap_every: config.trap_every,
            seen: 0,
            flush: config.flush,
        })
    }

    fn flush(&mut self, out: &mut Actions) {
        match self.flush.as_str() {
            "trap" => panic!("asked to trap in flush"),
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "set" => out.set("ok", true),
            "record" => out.record(
                "hostile",
                "seen",
                streamtap_plugin_sdk::Value::Int(self.seen as i64),
            ),
            _ => {}
        }
    }

    fn process(&mut self, msg: &Message<'_>, out: &mut Actions) {
        self.seen += 1;
        if self.trap_every > 0 && self.seen.is_multiple_of(self.trap_every) {
            panic!("trap on message {}", self.seen);
        }
        let (cmd, arg) = msg.text().split_once(' ').unwrap_or((msg.text(), ""));
        match cmd {
            "fs" => {
                let read = std::fs::read_to_string("/etc/passwd");
                let write = std::fs::write("/tmp/streamtap-escape", b"x");
                let r = match (read, write) {
                    (Err(a), Err(b)) => format!("denied: {a}; {b}"),
                    _ => "ESCAPED".to_string(),
                };
                out.set("fs_result", r);
            }
            "net" => {
                let r = match std::net::TcpStream::connect(arg) {
                    Ok(_) => "ESCAPED".to_string(),
                    Err(e) => format!("denied: {e}"),
                };
                out.set("net_result", r);
            }
            "env" => out.set("env_count", std::env::vars().count() as i64),
            "http" => {
                let r = http::send(&http::Request {
                    method: "GET".into(),
                    url: arg.into(),
                    ..Default::default()
                });
                let v = match r {
                    Ok(resp) => format!("{} {}", resp.status, String::from_utf8_lossy(&resp.body)),
                    Err(e) => format!("error: {e}"),
                };
                out.set("http_result", v);
            }
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("asked to trap"),
            "reserved" => out.set("id", "overwritten"),
            "drop" => out.drop_message("asked to drop"),
            "log" => host::log(host::Level::Info, arg),
            _ => out.set("ok", true),
        }
    }
}

export!(Hostile);
