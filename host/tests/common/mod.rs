//! Shared helpers for the host's integration tests: building real guest plugins and
//! writing chat logs.
#![allow(dead_code)]

pub mod fake_translate;
pub mod media;
pub mod mock_helix;
pub mod mock_twitch;
pub mod moto;
pub mod run;
pub mod server;
pub mod system;
pub mod tansu;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

static BUILD_LOCK: Mutex<()> = Mutex::new(());

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds a plugin crate of this workspace for wasm32-wasip2 (a no-op when up to date,
/// e.g. after `make plugins`) and returns the component's path. `features` selects a build
/// variant, which gets its own target directory so variants do not overwrite each other.
pub fn plugin(package: &str, features: &[&str]) -> PathBuf {
    let _g = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = workspace_root();
    let target = if features.is_empty() {
        target_dir()
    } else {
        target_dir().join(format!("variant-{}", features.join("-")))
    };
    let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    cmd.current_dir(&root)
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
        ])
        .arg("--target-dir")
        .arg(&target);
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    let status = cmd.status().expect("run cargo build for a test plugin");
    assert!(status.success(), "building test plugin {package} failed");
    let wasm = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    assert!(wasm.is_file(), "{} missing after build", wasm.display());
    wasm
}

/// One raw Twitch IRC PRIVMSG line with tags.
pub fn irc_line(i: usize, channel: &str, text: &str, ts_ms: i64) -> String {
    format!(
        "@badge-info=;badges=;color=;display-name=User{u};emotes=;first-msg=0;flags=;id=msg-{i:06};mod=0;room-id=9{c};subscriber=0;tmi-sent-ts={ts_ms};turbo=0;user-id={u};user-type= :user{u}!user{u}@user{u}.tmi.twitch.tv PRIVMSG #{channel} :{text}",
        u = i % 50,
        c = channel.len(),
    )
}

/// The IRC `emotes` tag marking every whole-word occurrence of `words` (Twitch's inclusive
/// code-point ranges).
pub fn emotes_tag(text: &str, words: &[&str]) -> String {
    let mut per: Vec<String> = Vec::new();
    for (n, w) in words.iter().enumerate() {
        let mut ranges = Vec::new();
        let mut pos = 0;
        for token in text.split(' ') {
            let len = token.chars().count();
            if token == *w {
                ranges.push(format!("{pos}-{}", pos + len - 1));
            }
            pos += len + 1;
        }
        per.push(format!("{}:{}", 1000 + n, ranges.join(",")));
    }
    per.join("/")
}

/// Writes `n` messages over `channels` to `path`.
pub fn write_log(path: &Path, n: usize, channels: &[&str]) {
    let mut s = String::new();
    for i in 0..n {
        let ch = channels[i % channels.len()];
        s.push_str(&irc_line(
            i,
            ch,
            &format!("message number {i} hello chat"),
            1_732_700_000_000 + i as i64,
        ));
        s.push('\n');
    }
    std::fs::write(path, s).expect("write chat log");
}

/// The `streamtap` binary built for this test run.
pub fn streamtap_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_streamtap"))
}

/// The target directory this test run builds into (`CARGO_TARGET_DIR` respected): plugins
/// land next to the binary, where `streamtap` looks for its default plugins.
pub fn target_dir() -> PathBuf {
    streamtap_bin()
        .ancestors()
        .nth(2)
        .expect("binary in <target>/release")
        .to_owned()
}

/// Runs `streamtap ARGS` in `dir` with the shared compiled-plugin cache.
pub fn streamtap(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(streamtap_bin())
        .args(args)
        .current_dir(dir)
        .env(
            "STREAMTAP_CACHE_DIR",
            target_dir().join("test-plugin-cache"),
        )
        .output()
        .expect("run streamtap")
}

/// Runs `streamtap plugin test WASM ARGS` with `input` lines on stdin.
pub fn plugin_test(wasm: &Path, args: &[&str], input: &[String]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(streamtap_bin())
        .args(["plugin", "test"])
        .arg(wasm)
        .args(args)
        .env(
            "STREAMTAP_CACHE_DIR",
            target_dir().join("test-plugin-cache"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start streamtap plugin test");
    let mut stdin = child.stdin.take().expect("piped stdin");
    for line in input {
        writeln!(stdin, "{line}").expect("write to plugin test");
    }
    drop(stdin);
    child.wait_with_output().expect("wait for plugin test")
}

/// Asserts the command succeeded (showing its output when not) and returns its stdout.
pub fn stdout_ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "streamtap failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

/// The `streamtap_*` series names the alerting rules and the Grafana dashboard use,
/// per file (histogram suffixes folded into their family).
pub fn deploy_series() -> Vec<(&'static str, Vec<String>)> {
    [
        "deploy/grafana/streamtap.json",
        "deploy/prometheus/rules/streamtap.rules.yml",
    ]
    .into_iter()
    .map(|file| {
        let text = std::fs::read_to_string(workspace_root().join(file)).unwrap();
        let names = text
            .match_indices("streamtap_")
            .map(|(at, _)| {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .map_or(name.clone(), str::to_owned)
            })
            .collect();
        (file, names)
    })
    .collect()
}

/// Fails unless every series of `deploy/` starting with one of `prefixes` has a `# TYPE`
/// line in `live` (a scrape of `who`).
pub fn assert_deploy_series_exported(live: &str, prefixes: &[&str], who: &str) {
    let mut checked = 0;
    for (file, names) in deploy_series() {
        for name in names {
            if prefixes.iter().any(|p| name.starts_with(p)) {
                assert!(
                    live.contains(&format!("# TYPE {name} ")),
                    "{file} uses {name}, which {who} does not export"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no deploy/ series start with {prefixes:?}");
}
