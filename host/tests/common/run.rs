//! Running the real `streamtap` binary in a test: start it with a pipeline file, wait for
//! a condition while watching that it is still alive, stop it with Ctrl-C, and read the
//! SQLite store it wrote.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Run {
    pub child: Child,
    pub log: std::path::PathBuf,
}

pub fn start(dir: &Path, file: &str, args: &[&str], envs: &[(&str, &str)], rust_log: &str) -> Run {
    start_role(dir, "run", file, args, envs, rust_log)
}

/// [`start`] for another subcommand with the same shape (`collect`, `process`); each
/// role logs to its own `{file}.{role}.stderr.log` beside `run`'s.
pub fn start_role(
    dir: &Path,
    role: &str,
    file: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    rust_log: &str,
) -> Run {
    let log = match role {
        "run" => dir.join(format!("{file}.stderr.log")),
        _ => dir.join(format!("{file}.{role}.stderr.log")),
    };
    let mut cmd = Command::new(super::streamtap_bin());
    cmd.args([role, file, "--quiet"])
        .args(args)
        .current_dir(dir)
        .env(
            "STREAMTAP_CACHE_DIR",
            super::target_dir().join("test-plugin-cache"),
        )
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Run {
        child: cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start streamtap {role}: {e}")),
        log,
    }
}

impl Run {
    /// Ctrl-C, then waits for the drained exit; returns (stdout, stderr).
    pub fn stop(mut self) -> (String, String) {
        use std::io::Read;
        let pid = self.child.id().to_string();
        let st = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(st.success());
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_string(&mut stdout).unwrap();
        }
        let status = self.child.wait().unwrap();
        let stderr = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "streamtap failed: {status}\n{stderr}");
        (stdout, stderr)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A test that fails mid-way must not leave its `streamtap` running.
impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls until `cond` holds, failing if the run exits or `limit` passes.
pub fn wait_for(run: &mut Run, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    loop {
        if cond() {
            return;
        }
        if let Some(status) = run.child.try_wait().unwrap() {
            panic!(
                "streamtap exited ({status}) while waiting for {what}\n{}",
                run.stderr()
            );
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}\n{}",
            run.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn query<T: rusqlite::types::FromSql>(db: &Path, sql: &str) -> Vec<Vec<T>> {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(sql) else {
        return Vec::new();
    };
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

pub fn count(db: &Path, sql: &str) -> i64 {
    query::<i64>(db, sql)
        .first()
        .and_then(|r| r.first().copied())
        .unwrap_or(0)
}

/// `GET path` (HTTP/1.0) of a running pipeline's `[metrics]` endpoint: the whole response.
fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

/// `GET /metrics` of a running pipeline's `[metrics]` endpoint.
pub fn scrape(port: u16) -> Option<String> {
    Some(get(port, "/metrics")?.split_once("\r\n\r\n")?.1.to_owned())
}

/// `GET /ready` of a running pipeline's `[metrics]` endpoint: `Some(true)` on 200,
/// `Some(false)` on 503, `None` when it does not answer.
pub fn ready(port: u16) -> Option<bool> {
    match get(port, "/ready")?.split_whitespace().nth(1)? {
        "200" => Some(true),
        "503" => Some(false),
        _ => None,
    }
}

/// The value of the series `name` (exactly, labels included) in a scrape.
pub fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The cumulative buckets `(le, count)` of the unlabelled histogram `name` in a scrape,
/// in increasing `le` (`+Inf` last).
pub fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut out: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let (le, count) = l.strip_prefix(&prefix)?.split_once("\"} ")?;
            Some((le.parse().ok()?, count.trim().parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The `q` quantile of a histogram's buckets, interpolated linearly inside the bucket that
/// holds it (as Prometheus's `histogram_quantile`); `None` when it is empty.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let inside = count - lower.1;
            let frac = if inside > 0.0 {
                (rank - lower.1) / inside
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * frac);
        }
        lower = (le, count);
    }
    None
}

/// `promtool check metrics` on a scrape (names, types, HELP, suffixes); fails the test on
/// any finding.
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; .ci/run installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
