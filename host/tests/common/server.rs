//! Real servers for tests: start a process on a free loopback port, wait until it accepts
//! connections, stop it (kill -9) and start it again on the same port and data.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `f` until it returns `Some`, panicking with `what` after `limit`.
pub fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tool from the repository's Python environment (`make venv`).
pub fn venv_tool(name: &str) -> PathBuf {
    let p = super::workspace_root().join(".venv/bin").join(name);
    assert!(
        p.is_file(),
        "{} missing: run `make venv` (scripts/requirements-dev.txt)",
        p.display()
    );
    p
}

/// A server process the test owns; killed when dropped.
pub struct Server {
    pub name: String,
    pub port: u16,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Starts `program args` (which must listen on 127.0.0.1:`port`) and waits until the
    /// port accepts connections. Output goes to `log`, printed if it never comes up.
    pub fn start(name: &str, program: &Path, args: &[String], port: u16, log: &Path) -> Server {
        let mut s = Server {
            name: name.into(),
            port,
            program: program.to_owned(),
            args: args.to_vec(),
            log: log.to_owned(),
            child: None,
        };
        s.restart();
        s
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the process (SIGKILL: no clean shutdown) and waits until the port is closed.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        wait_until(
            &format!("{} to stop", self.name),
            Duration::from_secs(10),
            || {
                TcpStream::connect(("127.0.0.1", self.port))
                    .is_err()
                    .then_some(())
            },
        );
    }

    /// (Re)starts the process with the same arguments and waits for its port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log");
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {} ({}): {e}", self.name, self.program.display()));
        self.child = Some(child);
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited with {status} before listening:\n{}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{} did not listen on port {} within 60s:\n{}",
                self.name,
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A SecantusDB server (MongoDB wire protocol) with its data in `dir`, kept across restarts.
/// `--sync-on-commit` makes an acknowledged write survive `kill -9`, as a journaled
/// MongoDB does; without it the last writes before a kill can vanish.
pub fn secantus(dir: &Path) -> Server {
    let port = free_port();
    let data = dir.join("secantus-data");
    std::fs::create_dir_all(&data).expect("secantus data dir");
    Server::start(
        "secantusdb",
        &venv_tool("secantusd-py"),
        &[
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--storage-path".into(),
            data.display().to_string(),
            "--log-level".into(),
            "WARNING".into(),
            "--sync-on-commit".into(),
        ],
        port,
        &dir.join("secantus.log"),
    )
}
