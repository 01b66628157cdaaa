//! A real Kafka-compatible broker for tests: `tansu` (crates.io, `cargo install tansu`),
//! found on PATH or in ~/.cargo/bin, run through [`super::server::Server`] with SQLite
//! storage in the test's directory (kept across kill/restart).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::server::{Server, free_port};

/// The `tansu` binary: PATH first, then ~/.cargo/bin.
pub fn tansu_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("tansu"))
            .find(|p| p.is_file())
    });
    let p = on_path.unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo/bin/tansu")
    });
    assert!(
        p.is_file(),
        "tansu missing: `cargo install tansu --version 0.6.0 --features libsql,dynostore` (.ci/run does it)"
    );
    p
}

/// Starts a broker on a free port with its data in `dir`.
pub fn broker(dir: &Path) -> Server {
    let port = free_port();
    std::fs::create_dir_all(dir).expect("tansu dir");
    let url = format!("tcp://127.0.0.1:{port}");
    // tansu 0.6 resolves the sqlite URL's path against the working directory after
    // stripping the leading `/` (`sqlite:///tmp/x.db` opens `$PWD/tmp/x.db`), so the
    // absolute path needs four slashes.
    let db = dir.canonicalize().expect("tansu dir").join("tansu.db");
    let args = vec![
        "broker".to_string(),
        "--listener-url".into(),
        url.clone(),
        "--advertised-listener-url".into(),
        url,
        "--storage-engine".into(),
        format!("sqlite://{}", db.display()).replacen("sqlite://", "sqlite:///", 1),
    ];
    Server::start("tansu", &tansu_bin(), &args, port, &dir.join("tansu.log"))
}

/// Creates `topic` with `partitions` partitions on the broker.
pub fn create_topic(broker: &Server, topic: &str, partitions: u32) {
    let out = Command::new(tansu_bin())
        .args(["topic", "create", "--broker"])
        .arg(format!("tcp://{}", broker.addr()))
        .arg("--partitions")
        .arg(partitions.to_string())
        .arg(topic)
        .output()
        .expect("run tansu topic create");
    assert!(
        out.status.success(),
        "tansu topic create {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
