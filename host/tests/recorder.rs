//! The recorder end to end, with a real live stream: Debian `ffmpeg` makes a live HLS
//! stream from `lavfi` test sources, a plain HTTP server serves it on 127.0.0.1, the mock
//! Helix server says when the channel is live, and the real `streamtap` binary records it
//! with the real `streamlink` (from the repo's `.venv`). `ffprobe` measures what was saved.

mod common;

use common::media::{self, LiveHls, http_server};
use common::mock_helix::MockHelix;
use common::mock_twitch::MockTwitch;
use common::run::{Run, query, scrape, start, wait_for};
use common::server::{Server, free_port, venv_tool};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CLIENT: &str = "recclient";
const SECRET: &str = "rec-helix-secret";
const API_HEADER: &str = "Authorization=OAuth rec-api-header-value-987";

/// The channel list of most tests: one recorded channel and one that is not.
const REC1: &str = r#""quiet", { login = "rec1", record = true }"#;

/// What a recorder test runs against: one live stream served under each of the given
/// channel names, the mock Twitch chat and Helix servers, and a directory for the run.
struct Rig {
    dir: tempfile::TempDir,
    _live: LiveHls,
    http: Server,
    irc: MockTwitch,
    helix: MockHelix,
}

impl Rig {
    fn new(channels: &[&str]) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let hls = dir.path().join("hls");
        let live = LiveHls::start(&hls.join("live"), media::SMALL);
        for c in channels {
            std::os::unix::fs::symlink(hls.join("live"), hls.join(c)).unwrap();
        }
        Rig {
            http: http_server(&hls),
            _live: live,
            irc: MockTwitch::start(),
            helix: MockHelix::start(CLIENT, SECRET, 800),
            dir,
        }
    }

    fn d(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `p.toml` with these channel entries and extra `[recorder]` keys; its text.
    fn write_pipeline(&self, channels: &str, extra: &str) -> String {
        let text = pipeline_for(channels, &self.irc, &self.helix, &self.http, extra);
        std::fs::write(self.d().join("p.toml"), &text).unwrap();
        text
    }
}

fn pipeline_for(
    channels: &str,
    irc: &MockTwitch,
    helix: &MockHelix,
    http: &Server,
    extra: &str,
) -> String {
    format!(
        r#"[source.twitch]
channels = [{channels}]
connection = "tcp"
server = "{irc}"

[source.twitch.helix]
client_id = "{CLIENT}"
client_secret = {{ env = "STREAMTAP_TEST_HELIX_SECRET" }}
api_url = "{api}"
token_url = "{token}"
interval = "1s"

[recorder]
dir = "rec"
streamlink = "{streamlink}"
url = "hls://http://{http}/{{channel}}/live.m3u8"
args = ["--hls-live-edge", "1", "--stream-timeout", "20"]
api_header = {{ env = "STREAMTAP_TEST_API_HEADER" }}
restart_min = "300ms"
restart_max = "2s"
stop_timeout = "5s"
{extra}

[metrics]
listen = "127.0.0.1:{metrics_port}"

[sink.sqlite]
path = "out.db"
"#,
        irc = irc.addr(),
        api = helix.api_url(),
        token = helix.token_url(),
        streamlink = venv_tool("streamlink").display(),
        http = http.addr(),
        metrics_port = free_port(),
    )
}

/// The port `[metrics]` listens on in a pipeline text.
fn metrics_port(pipeline: &str) -> u16 {
    pipeline
        .lines()
        .find_map(|l| l.strip_prefix("listen = \"127.0.0.1:"))
        .and_then(|p| p.trim_end_matches('"').parse().ok())
        .expect("a [metrics] listen line")
}

fn run(d: &Path) -> Run {
    start(
        d,
        "p.toml",
        &[],
        &[
            ("STREAMTAP_TEST_HELIX_SECRET", SECRET),
            ("STREAMTAP_TEST_API_HEADER", API_HEADER),
        ],
        "info,streamtap=debug",
    )
}

/// Pids and command lines of processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains(needle) && !cmd.contains("streamtap run") {
            out.push((pid, cmd));
        }
    }
    out
}

/// The stored `recordings` row of `stream_id`: (status, files, restarts, bytes).
fn recording(db: &Path, stream_id: &str) -> Option<(String, String, i64, i64)> {
    query::<rusqlite::types::Value>(
        db,
        &format!(
            "SELECT status, files, restarts, bytes FROM recordings WHERE stream_id = '{stream_id}'"
        ),
    )
    .into_iter()
    .next()
    .map(|r| {
        let s = |v: &rusqlite::types::Value| match v {
            rusqlite::types::Value::Text(t) => t.clone(),
            other => format!("{other:?}"),
        };
        let i = |v: &rusqlite::types::Value| match v {
            rusqlite::types::Value::Integer(n) => *n,
            _ => -1,
        };
        (s(&r[0]), s(&r[1]), i(&r[2]), i(&r[3]))
    })
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn records_a_live_stream_by_stream_id_restarts_into_parts_and_finalises_offline() {
    let rig = Rig::new(&["rec1"]);
    let (d, helix) = (rig.d(), &rig.helix);
    let text = rig.write_pipeline(REC1, "");
    let mut run = run(d);
    let chan = d.join("rec/rec1");
    let db = d.join("out.db");

    // Live: streamlink starts writing `<stream id>.ts.part`.
    helix.set_live("rec1", "5001", "recorded stream");
    let part0 = chan.join("5001.ts.part");
    wait_for(&mut run, "the first part", Duration::from_secs(60), || {
        std::fs::metadata(&part0).is_ok_and(|m| m.len() > 0)
    });
    let first_bytes = Instant::now();
    // The API header reaches streamlink in a config file, not on its command line.
    let procs = processes_with("5001.ts.part");
    assert_eq!(procs.len(), 1, "one streamlink for the stream: {procs:?}");
    let (pid, cmdline) = procs[0].clone();
    assert!(cmdline.contains("--config"), "{cmdline}");
    assert!(!cmdline.contains("rec-api-header-value"), "{cmdline}");
    std::thread::sleep(Duration::from_secs(12));

    // streamlink dies mid-stream: the part is kept and a second part starts.
    let killed_at = Instant::now();
    let wall0 = killed_at.duration_since(first_bytes).as_secs_f64();
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let part1 = chan.join("5001.1.ts.part");
    wait_for(&mut run, "the second part", Duration::from_secs(60), || {
        std::fs::metadata(&part1).is_ok_and(|m| m.len() > 0)
    });
    assert!(chan.join("5001.ts").is_file(), "{:?}", files_in(&chan));
    wait_for(
        &mut run,
        "restarts = 1 stored",
        Duration::from_secs(20),
        || recording(&db, "5001").is_some_and(|r| r.2 == 1),
    );
    std::thread::sleep(Duration::from_secs(4));

    // Offline: streamlink is stopped and the last part finalised.
    helix.set_offline("rec1");
    wait_for(
        &mut run,
        "the recording finished",
        Duration::from_secs(30),
        || recording(&db, "5001").is_some_and(|r| r.0 == "finished"),
    );
    assert_eq!(files_in(&chan), vec!["5001.1.ts", "5001.ts"]);
    let (status, files, restarts, bytes) = recording(&db, "5001").unwrap();
    assert_eq!(
        (status.as_str(), files.as_str(), restarts),
        ("finished", r#"["5001.ts","5001.1.ts"]"#, 1)
    );
    let on_disk: u64 = ["5001.ts", "5001.1.ts"]
        .iter()
        .map(|f| std::fs::metadata(chan.join(f)).unwrap().len())
        .sum();
    assert_eq!(bytes as u64, on_disk);
    // The first part holds about as much media as the wall time it was recorded.
    let got = media::duration_s(&chan.join("5001.ts"));
    eprintln!("part 0: {got:.1} s of media for {wall0:.1} s of wall time");
    assert!(
        (got - wall0).abs() <= 0.2 * wall0,
        "{got:.1} s of media for {wall0:.1} s recorded"
    );
    assert!(
        processes_with("5001.").is_empty(),
        "streamlink left running"
    );

    // A new stream id on the channel: a new file set.
    helix.set_live("rec1", "5002", "second stream");
    wait_for(
        &mut run,
        "the new stream's file",
        Duration::from_secs(60),
        || std::fs::metadata(chan.join("5002.ts.part")).is_ok_and(|m| m.len() > 0),
    );
    // The live-collection series the alerting rules and dashboard use all exist (the
    // replay pipeline of tests/metrics.rs cannot show them).
    let live = scrape(metrics_port(&text)).expect("scrape /metrics");
    common::run::promtool_check_metrics(&live);
    for series in [
        "streamtap_recorder_active 1",
        "streamtap_recorder_restarts_total 1",
        "streamtap_helix_channel_live{channel=\"rec1\"} 1",
        "streamtap_helix_channel_live{channel=\"quiet\"} 0",
        "streamtap_twitch_channel_messages_total{channel=\"quiet\"} 0",
    ] {
        assert!(live.contains(series), "{series:?} missing from:\n{live}");
    }
    common::assert_deploy_series_exported(
        &live,
        &[
            "streamtap_twitch_",
            "streamtap_helix_",
            "streamtap_recorder_",
        ],
        "a live pipeline",
    );
    let (_, stderr) = run.stop();
    // Shutdown finalises too.
    assert_eq!(files_in(&chan), vec!["5001.1.ts", "5001.ts", "5002.ts"]);
    assert_eq!(recording(&db, "5002").unwrap().0, "finished");
    assert!(
        !stderr.contains("rec-api-header-value"),
        "API header in the log"
    );
    assert!(!stderr.contains(SECRET), "client secret in the log");
    // The private config files are gone.
    assert!(
        files_in(&d.join("rec"))
            .iter()
            .all(|f| !f.starts_with(".streamlink-")),
        "{:?}",
        files_in(&d.join("rec"))
    );
}

#[test]
fn the_disk_guard_refuses_a_new_recording() {
    let rig = Rig::new(&["rec1"]);
    let (d, helix) = (rig.d(), &rig.helix);
    // More free space than any disk here has.
    rig.write_pipeline(REC1, "min_free_disk_mb = 1000000000");
    let mut run = run(d);
    helix.set_live("rec1", "6001", "not recorded");
    let db = d.join("out.db");
    wait_for(
        &mut run,
        "the refusal stored",
        Duration::from_secs(30),
        || recording(&db, "6001").is_some_and(|r| r.0.starts_with("refused: ")),
    );
    std::thread::sleep(Duration::from_secs(3));
    let (_, stderr) = run.stop();
    let status = recording(&db, "6001").unwrap().0;
    assert!(
        status.contains("below min_free_disk_mb 1000000000"),
        "{status}"
    );
    assert!(files_in(&d.join("rec/rec1")).is_empty());
    assert!(processes_with("6001.ts").is_empty());
    assert!(stderr.contains("recorder: not recording"), "{stderr}");
}

#[test]
fn max_concurrent_refuses_the_stream_over_the_limit() {
    // Two recorded channels, one stream.
    let rig = Rig::new(&["reca", "recb"]);
    let (d, helix) = (rig.d(), &rig.helix);
    rig.write_pipeline(
        r#"{ login = "reca", record = true }, { login = "recb", record = true }"#,
        "max_concurrent = 1",
    );
    let mut run = run(d);
    let db = d.join("out.db");
    helix.set_live("reca", "7001", "a");
    wait_for(&mut run, "reca recording", Duration::from_secs(60), || {
        recording(&db, "7001").is_some_and(|r| r.0 == "recording")
    });
    helix.set_live("recb", "7002", "b");
    wait_for(&mut run, "recb refused", Duration::from_secs(30), || {
        recording(&db, "7002").is_some_and(|r| r.0 == "refused: max_concurrent 1 reached")
    });
    // A slot frees when reca goes offline, and recb (still live) is recorded then.
    helix.set_offline("reca");
    wait_for(
        &mut run,
        "recb recorded after all",
        Duration::from_secs(60),
        || recording(&db, "7002").is_some_and(|r| r.0 == "recording"),
    );
    let part = d.join("rec/recb/7002.ts.part");
    wait_for(&mut run, "recb writing", Duration::from_secs(60), || {
        std::fs::metadata(&part).is_ok_and(|m| m.len() > 0)
    });
    run.stop();
    assert_eq!(recording(&db, "7001").unwrap().0, "finished");
    assert_eq!(recording(&db, "7002").unwrap().0, "finished");
    assert!(d.join("rec/recb/7002.ts").is_file());
}

/// The split deployment records too: two `streamtap collect --shard i/2` (the collector
/// role, with `[transport.kafka]`) run the recorder, each for the recorded channels of its
/// shard only, so each stream has exactly one streamlink; the recordings' metadata reaches
/// the store through Kafka and `streamtap process` like any other event, and the video
/// stays on the collectors' disk.
#[test]
fn sharded_collectors_record_each_stream_once_and_process_stores_the_recordings() {
    use streamtap::sources::twitch::shard_of;
    // Two recorded channels in different shards of 2.
    let other = (2..100)
        .map(|i| format!("rec{i}"))
        .find(|c| shard_of(c, 2) != shard_of("rec1", 2))
        .unwrap();
    let rig = Rig::new(&["rec1", &other]);
    let (d, helix) = (rig.d(), &rig.helix);
    let broker = common::tansu::broker(&d.join("tansu"));
    common::tansu::create_topic(&broker, "chat", 2);
    common::tansu::create_topic(&broker, "chat-dlq", 1);
    let kafka = format!(
        "\n[transport.kafka]\nbrokers = \"{}\"\ntopic = \"chat\"\ndead_letter_topic = \"chat-dlq\"\ngroup_id = \"rec\"\n",
        broker.addr()
    );
    let text = rig.write_pipeline(
        &format!(r#"{{ login = "rec1", record = true }}, {{ login = "{other}", record = true }}"#),
        &kafka,
    );
    // Three processes on one host: no `[metrics]` (they would share its port).
    let port = metrics_port(&text);
    let text = text.replace(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\""), "");
    assert!(!text.contains("[metrics]"));
    std::fs::write(d.join("p.toml"), text).unwrap();
    let envs = [
        ("STREAMTAP_TEST_HELIX_SECRET", SECRET),
        ("STREAMTAP_TEST_API_HEADER", API_HEADER),
    ];
    let log = "info,streamtap=debug,rdkafka=warn";
    // Each collector records into its own directory (`rec0`, `rec1`), so the test sees
    // which one recorded a stream.
    let start = |role: &str, args: &[&str]| {
        let shard = args.last().map_or("", |s| &s[..1]);
        let file = format!("{role}{shard}.toml");
        let text = std::fs::read_to_string(d.join("p.toml")).unwrap();
        let text = text.replace("dir = \"rec\"", &format!("dir = \"rec{shard}\""));
        std::fs::write(d.join(&file), text).unwrap();
        common::run::start_role(d, role, &file, args, &envs, log)
    };
    let mut collectors = [
        start("collect", &["--shard", "0/2"]),
        start("collect", &["--shard", "1/2"]),
    ];
    let mut process = start("process", &[]);
    let db = d.join("out.db");

    let streams = [("rec1", "8001"), (other.as_str(), "8002")];
    for (chan, id) in streams {
        helix.set_live(chan, id, "split stream");
    }
    let owner_dir = |chan: &str| d.join(format!("rec{}/{chan}", shard_of(chan, 2)));
    let other_dir = |chan: &str| d.join(format!("rec{}/{chan}", 1 - shard_of(chan, 2)));
    for (chan, id) in streams {
        let part = owner_dir(chan).join(format!("{id}.ts.part"));
        let owner = &mut collectors[shard_of(chan, 2) as usize];
        wait_for(
            owner,
            "the collector recording",
            Duration::from_secs(60),
            || std::fs::metadata(&part).is_ok_and(|m| m.len() > 0),
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    for (_, id) in streams {
        let procs = processes_with(&format!("{id}.ts.part"));
        assert_eq!(procs.len(), 1, "one streamlink for stream {id}: {procs:?}");
        wait_for(
            &mut process,
            "the recording stored by the processor",
            Duration::from_secs(60),
            || recording(&db, id).is_some_and(|r| r.0 == "recording"),
        );
    }
    for (chan, _) in streams {
        helix.set_offline(chan);
    }
    for (chan, id) in streams {
        wait_for(
            &mut process,
            "the finished recording stored",
            Duration::from_secs(60),
            || recording(&db, id).is_some_and(|r| r.0 == "finished"),
        );
        let dir = owner_dir(chan);
        assert_eq!(files_in(&dir), vec![format!("{id}.ts")]);
        assert!(
            files_in(&other_dir(chan)).is_empty(),
            "the other shard recorded {chan} too"
        );
        let (_, files, restarts, bytes) = recording(&db, id).unwrap();
        assert_eq!((files, restarts), (format!(r#"["{id}.ts"]"#), 0));
        assert_eq!(
            bytes as u64,
            std::fs::metadata(dir.join(format!("{id}.ts")))
                .unwrap()
                .len()
        );
        assert!(
            processes_with(&format!("{id}.")).is_empty(),
            "streamlink left running"
        );
    }
    for c in collectors {
        c.stop();
    }
    process.stop();
}
