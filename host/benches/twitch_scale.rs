//! Collector scale benchmark (`cargo bench -p streamtap --bench twitch_scale`, part of
//! `make bench`): the real `streamtap run` with `[source.twitch]` reading 10,000 channels
//! from the mock Twitch IRC server (`tests/common/mock_twitch.rs`, real TCP) that sends
//! 20,000 msg/s in aggregate for 60 s, stored by the SQLite sink with no steps. Reports
//! messages lost (sent by the server, not stored), gaps recorded, the most chat that
//! waited in the spill file, the collector's peak RSS and its CPU.
//!
//! Reference, same run: the same messages as a log replayed by `streamtap run` with
//! `[source.replay]` into the same sink, as fast as it goes: CPU per message of live
//! collection vs of reading a file (what the Twitch client, the connections and the join
//! bookkeeping add).
//!
//! `SCALE_CHANNELS`, `SCALE_RATE` and `SCALE_SECONDS` override 10,000 / 20,000 / 60.

#[path = "../tests/common/mod.rs"]
mod common;

use common::media::usage;
use common::mock_twitch::{MockTwitch, privmsg};
use common::server::wait_until;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn stored(db: &Path) -> i64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| {
            c.query_row(
                "SELECT count(*) FROM messages WHERE kind = 'privmsg'",
                [],
                |r| r.get(0),
            )
        })
        .unwrap_or(0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let channels = env_or("SCALE_CHANNELS", 10_000);
    let rate = env_or("SCALE_RATE", 20_000);
    let seconds = env_or("SCALE_SECONDS", 60);
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let mock = MockTwitch::start();
    let metrics_port = common::server::free_port();
    // The most chat waiting on disk at any sample (the pipeline behind the server).
    let mut peak_spill = 0.0f64;
    let mut sample_spill = || {
        if let Some(m) = common::run::scrape(metrics_port) {
            let v = common::run::series(&m, "streamtap_twitch_spilled_bytes").unwrap_or(0.0);
            peak_spill = peak_spill.max(v);
        }
    };
    let names: Vec<String> = (0..channels).map(|i| format!("scale{i:05}")).collect();
    let list: Vec<String> = names.iter().map(|c| format!("\"{c}\"")).collect();
    std::fs::write(
        d.join("live.toml"),
        format!(
            r#"[source.twitch]
channels = [{}]
connection = "tcp"
server = "{}"
# A verified bot's JOIN limit, so 10,000 channels are joined in under a minute.
join_limit = 2000

[sink.sqlite]
path = "live.db"

[metrics]
listen = "127.0.0.1:{}"
"#,
            list.join(", "),
            mock.addr(),
            metrics_port
        ),
    )
    .unwrap();
    println!(
        "machine: {} cores; {channels} channels, {rate} msg/s for {seconds} s from the mock Twitch server",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let mut st = Command::new(common::streamtap_bin())
        .args(["run", "live.toml", "--quiet", "--no-reload"])
        .current_dir(d)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("live.log")).unwrap())
        .spawn()
        .expect("streamtap run");
    let joined_in = Instant::now();
    wait_until("every channel joined", Duration::from_secs(300), || {
        (mock.joined().len() == channels).then_some(())
    });
    let join_s = joined_in.elapsed().as_secs_f64();
    let (cpu0, _) = usage(st.id()).expect("collector running");

    // 20,000 msg/s as 100 ticks a second of 200 lines, round-robin over the channels.
    let tick = Duration::from_millis(10);
    let per_tick = rate / 100;
    let start = Instant::now();
    let (mut sent, mut peak_rss, mut next) = (0usize, 0u64, 0usize);
    let base_ts = 1_800_000_000_000_i64;
    let mut t = 0u32;
    while start.elapsed() < Duration::from_secs(seconds as u64) {
        let items: Vec<(String, String)> = (0..per_tick)
            .map(|_| {
                let c = &names[next % channels];
                let id = format!("scale-{next}");
                next += 1;
                (
                    c.clone(),
                    privmsg(c, &id, "PogChamp scale test KEKW", base_ts + next as i64),
                )
            })
            .collect();
        if t.is_multiple_of(50)
            && let Some((_, rss)) = usage(st.id())
        {
            peak_rss = peak_rss.max(rss);
            sample_spill();
        }
        sent += mock.send_many(&items);
        t += 1;
        let due = start + tick * t;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let send_s = start.elapsed().as_secs_f64();
    let db = d.join("live.db");
    let drained = Instant::now();
    let mut last = (stored(&db), Instant::now());
    loop {
        let n = stored(&db);
        if let Some((_, rss)) = usage(st.id()) {
            peak_rss = peak_rss.max(rss);
        }
        sample_spill();
        if n as usize >= sent {
            break;
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(20) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let drain_s = drained.elapsed().as_secs_f64();
    let (cpu1, _) = usage(st.id()).expect("collector running");
    let _ = Command::new("kill")
        .args(["-INT", &st.id().to_string()])
        .status();
    let _ = st.wait();
    let got = stored(&db) as usize;
    let gaps = common::run::count(&db, "SELECT COUNT(*) FROM gaps");
    let live_cpu = cpu1 - cpu0;

    // Reference: the same kind of lines replayed from a file into the same sink.
    let n_ref = sent.min(200_000);
    let mut log = String::new();
    for i in 0..n_ref {
        let c = &names[i % channels];
        log.push_str(&privmsg(
            c,
            &format!("ref-{i}"),
            "PogChamp scale test KEKW",
            base_ts + i as i64,
        ));
        log.push('\n');
    }
    std::fs::write(d.join("ref.log"), log).unwrap();
    std::fs::write(
        d.join("ref.toml"),
        "[source.replay]\npath = \"ref.log\"\nrate = \"max\"\n\n[sink.sqlite]\npath = \"ref.db\"\n",
    )
    .unwrap();
    let mut r = Command::new(common::streamtap_bin())
        .args(["run", "ref.toml", "--quiet", "--no-reload"])
        .current_dir(d)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("streamtap run (replay)");
    let pid = r.id();
    let mut ref_cpu = 0.0;
    let mut ref_rss = 0;
    loop {
        if let Some((c, rss)) = usage(pid) {
            ref_cpu = c;
            ref_rss = ref_rss.max(rss);
        }
        if r.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let live_per_k = live_cpu / got.max(1) as f64 * 1000.0;
    let ref_per_k = ref_cpu / n_ref.max(1) as f64 * 1000.0;
    println!(
        "| figure | live collection | reference: replay of {n_ref} lines, same sink | ratio |"
    );
    println!("|---|---|---|---|");
    println!(
        "| messages sent / stored / lost | {sent} / {got} / {} | | |",
        sent.saturating_sub(got)
    );
    println!(
        "| achieved send rate | {:.0} msg/s over {send_s:.1} s (target {rate}) | | |",
        sent as f64 / send_s
    );
    println!("| gaps recorded | {gaps} | | |");
    println!(
        "| most chat waiting on disk (spill file) | {:.1} MB | | |",
        peak_spill / 1e6
    );
    println!("| join of {channels} channels | {join_s:.1} s | | |");
    println!("| drain after the last line | {drain_s:.1} s | | |");
    println!(
        "| collector peak RSS | {:.0} MB (target ≤ 300) | {:.0} MB | {:.2}x |",
        peak_rss as f64 / 1e6,
        ref_rss as f64 / 1e6,
        peak_rss as f64 / ref_rss.max(1) as f64
    );
    println!(
        "| collector CPU | {:.2} s per 1,000 msgs ({:.0} % of a core at {rate}/s) | {:.2} s per 1,000 msgs | {:.2}x |",
        live_per_k,
        live_cpu / (send_s + drain_s) * 100.0,
        ref_per_k,
        live_per_k / ref_per_k.max(1e-9)
    );
}
