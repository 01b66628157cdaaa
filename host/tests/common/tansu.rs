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

/// The directory holding the `librdkafka.so.1` rdkafka-sys built for this profile (beside
/// the static library streamtap links). Debian's `kcat` 1.7.1 runs with it: Debian's own
/// librdkafka 2.0.2 cannot parse tansu 0.6's ApiVersions reply.
pub fn bundled_librdkafka() -> PathBuf {
    let build = super::streamtap_bin()
        .parent()
        .expect("profile dir")
        .join("build");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&build)
        .expect("target build dir")
        .filter_map(|e| {
            let dir = e.ok()?.path();
            let name = dir.file_name()?.to_str()?.to_owned();
            let lib = dir.join("out/src/librdkafka.so.1");
            (name.starts_with("rdkafka-sys-") && lib.is_file()).then(|| {
                Some((
                    lib.metadata().ok()?.modified().ok()?,
                    lib.parent()?.to_owned(),
                ))
            })?
        })
        .collect();
    found.sort();
    found.pop().map(|(_, d)| d).unwrap_or_else(|| {
        panic!(
            "no rdkafka-sys-*/out/src/librdkafka.so.1 under {}",
            build.display()
        )
    })
}

/// `kcat -b BROKERS` with our librdkafka, ended after 5 minutes whatever it is doing.
pub fn kcat(lib: &Path, brokers: &str) -> Command {
    let mut c = Command::new("timeout");
    c.args(["300", "kcat"])
        .env("LD_LIBRARY_PATH", lib)
        .arg("-b")
        .arg(brokers);
    c
}
