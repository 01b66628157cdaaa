//! Recorder benchmark (`cargo bench -p streamtap --bench recorder`, part of `make bench`):
//! N concurrent recordings (N = 1, 10, 50) of a local live stream through the real
//! `streamtap run` with the real `streamlink`, against one `streamlink` started by hand on
//! the same stream in the same run (the reference: what a recording costs anyway).
//!
//! One `ffmpeg` makes a live HLS stream from `lavfi` test sources; Python's `http.server`
//! serves it under N channel names (symlinks), so N recordings cost N downloads, not N
//! encoders. The mock Helix server reports every channel live. Over a fixed window after
//! every recording started, CPU time (utime + stime from `/proc/PID/stat`) and resident
//! memory (`VmRSS`) are read for each streamlink and for `streamtap` itself.
//!
//! Needs `ffmpeg`, `python3` and `.venv/bin/streamlink` (`make venv`).

#[path = "../tests/common/mod.rs"]
mod common;

use common::media::{LiveHls, Quality, http_server, usage};
use common::mock_helix::MockHelix;
use common::mock_twitch::MockTwitch;
use common::server::{venv_tool, wait_until};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long each configuration is measured once all its recordings run.
const WINDOW: Duration = Duration::from_secs(20);

/// Pids of processes whose command line contains `needle` (streamlink runs as a Python
/// script, so its pid is the interpreter's).
fn pids_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains(needle) && cmd.contains("streamlink") {
            out.push(pid);
        }
    }
    out
}

/// CPU (fraction of one core) and RSS of `pids` over `WINDOW`, summed.
fn measure(pids: &[u32]) -> (f64, u64) {
    let before: Vec<f64> = pids.iter().filter_map(|p| usage(*p)).map(|u| u.0).collect();
    let start = Instant::now();
    std::thread::sleep(WINDOW);
    let after: Vec<(f64, u64)> = pids.iter().filter_map(|p| usage(*p)).collect();
    assert_eq!(after.len(), pids.len(), "a measured process exited");
    let cpu: f64 = after.iter().map(|u| u.0).sum::<f64>() - before.iter().sum::<f64>();
    let rss: u64 = after.iter().map(|u| u.1).sum();
    (cpu / start.elapsed().as_secs_f64(), rss)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let hls = d.join("hls");
    let _ffmpeg = LiveHls::start(
        &hls.join("live"),
        Quality {
            size: "320x240",
            fps: 25,
            video_kbps: 800,
        },
    );
    let _http = http_server(&hls);
    let http_port = _http.port;
    let streamlink = venv_tool("streamlink");
    println!(
        "machine: {} cores; stream: 320x240 25 fps ~830 kbit/s HLS, 1 s segments; window {} s",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        WINDOW.as_secs()
    );

    // Reference: one streamlink by hand.
    let mut bare = Command::new(&streamlink)
        .args(["--hls-live-edge", "1", "--output"])
        .arg(d.join("bare.ts"))
        .arg(format!("hls://http://127.0.0.1:{http_port}/live/live.m3u8"))
        .arg("best")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("streamlink");
    wait_until("bare streamlink writing", Duration::from_secs(30), || {
        std::fs::metadata(d.join("bare.ts"))
            .ok()
            .filter(|m| m.len() > 0)
    });
    let (ref_cpu, ref_rss) = measure(&[bare.id()]);
    let _ = bare.kill();
    let _ = bare.wait();

    println!(
        "| recordings | CPU per recording (% of a core) | RSS per recording | streamtap CPU / RSS | reference: one bare streamlink | ratio (CPU, RSS) |"
    );
    println!("|---|---|---|---|---|---|");
    for n in [1usize, 10, 50] {
        let chans: Vec<String> = (0..n).map(|i| format!("bench{i:02}")).collect();
        for c in &chans {
            let link = hls.join(c);
            if !link.exists() {
                std::os::unix::fs::symlink(hls.join("live"), &link).unwrap();
            }
        }
        let irc = MockTwitch::start();
        let helix = MockHelix::start("benchclient", "benchsecret", 800);
        for (i, c) in chans.iter().enumerate() {
            helix.set_live(c, &format!("{}", 900_000 + n * 100 + i), "bench");
        }
        let entries: Vec<String> = chans
            .iter()
            .map(|c| format!("{{ login = \"{c}\", record = true }}"))
            .collect();
        let run_dir = d.join(format!("n{n}"));
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::write(
            run_dir.join("p.toml"),
            format!(
                r#"[source.twitch]
channels = [{}]
connection = "tcp"
server = "{}"
join_limit = 1000

[source.twitch.helix]
client_id = "benchclient"
client_secret = {{ env = "BENCH_HELIX_SECRET" }}
api_url = "{}"
token_url = "{}"
interval = "5s"

[recorder]
dir = "rec"
streamlink = "{}"
url = "hls://http://127.0.0.1:{http_port}/{{channel}}/live.m3u8"
args = ["--hls-live-edge", "1"]
max_concurrent = {n}
min_free_disk_mb = 100

[sink.sqlite]
path = "out.db"
"#,
                entries.join(", "),
                irc.addr(),
                helix.api_url(),
                helix.token_url(),
                streamlink.display()
            ),
        )
        .unwrap();
        let mut st = Command::new(common::streamtap_bin())
            .args(["run", "p.toml", "--quiet", "--no-reload"])
            .current_dir(&run_dir)
            .env("BENCH_HELIX_SECRET", "benchsecret")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(run_dir.join("stderr.log")).unwrap())
            .spawn()
            .expect("streamtap run");
        let rec = run_dir.join("rec");
        wait_until(
            &format!("{n} recordings writing"),
            Duration::from_secs(120),
            || {
                let writing = chans
                    .iter()
                    .filter(|c| {
                        std::fs::read_dir(rec.join(c))
                            .map(|rd| {
                                rd.flatten().any(|e| {
                                    e.file_name().to_string_lossy().ends_with(".part")
                                        && e.metadata().is_ok_and(|m| m.len() > 0)
                                })
                            })
                            .unwrap_or(false)
                    })
                    .count();
                (writing == n).then_some(())
            },
        );
        // The pipeline's `dir` is relative, so streamlink's command line has `rec/benchNN/…`;
        // the previous configuration's processes are gone (its run was stopped).
        let pids = pids_with("rec/bench");
        assert_eq!(pids.len(), n, "one streamlink per recording");
        let before: Option<(f64, u64)> = usage(st.id());
        let (cpu, rss) = measure(&pids);
        let after = usage(st.id());
        let (st_cpu, st_rss) = match (before, after) {
            (Some(b), Some(a)) => ((a.0 - b.0) / WINDOW.as_secs_f64(), a.1),
            _ => (0.0, 0),
        };
        let (per_cpu, per_rss) = (cpu / n as f64, rss / n as u64);
        println!(
            "| {n} | {:.2} % | {:.1} MB | {:.2} % / {:.1} MB | {:.2} % / {:.1} MB | {:.2}x, {:.2}x |",
            per_cpu * 100.0,
            per_rss as f64 / 1e6,
            st_cpu * 100.0,
            st_rss as f64 / 1e6,
            ref_cpu * 100.0,
            ref_rss as f64 / 1e6,
            per_cpu / ref_cpu.max(1e-9),
            per_rss as f64 / ref_rss.max(1) as f64,
        );
        let _ = Command::new("kill")
            .args(["-INT", &st.id().to_string()])
            .status();
        let _ = st.wait();
    }
}
