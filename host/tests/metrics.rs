//! The `[metrics]` endpoint of a running `streamtap run`: `/health`, `/ready` and
//! `/metrics`, whose output passes `promtool check metrics`, and a real Prometheus server
//! (Debian's `prometheus`) scraping it: `up == 1` and the message counter increasing, read
//! back through Prometheus's HTTP API.

mod common;

use common::server::{free_port, wait_until};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// GET → (status, body); `None` while nothing answers.
fn get(url: &str) -> Option<(u16, String)> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent();
    let mut r = agent.get(url).call().ok()?;
    let status = r.status().as_u16();
    Some((status, r.body_mut().read_to_string().ok()?))
}

/// Metric families only a `[source.twitch]` pipeline with Helix and a recorder exports
/// (checked in tests/recorder.rs), or only the Kafka roles (tests/kafka.rs).
const LIVE_ONLY_PREFIXES: [&str; 4] = [
    "streamtap_twitch_",
    "streamtap_helix_",
    "streamtap_recorder_",
    "streamtap_kafka_",
];

/// Kills the child when the test ends, pass or fail.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of an unlabelled sample (`name value`) in Prometheus text format.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn start_pipeline(d: &Path, port: u16) -> Guard {
    let noop = common::plugin("noop", &[]);
    std::fs::copy(&noop, d.join("noop.wasm")).unwrap();
    // Sentiment then analytics, as in the demo, so the per-channel gauges (mean sentiment
    // included) are exported.
    for p in ["sentiment", "analytics"] {
        std::fs::copy(common::plugin(p, &[]), d.join(format!("{p}.wasm"))).unwrap();
    }
    common::write_log(&d.join("chat.log"), 500, &["alpha", "beta"]);
    std::fs::write(
        d.join("p.toml"),
        format!(
            "[source.replay]\npath = \"chat.log\"\nrate = 300\nloop = true\n\n\
             [[steps]]\nuses = \"noop.wasm\"\n\n\
             [[steps]]\nuses = \"sentiment.wasm\"\n\n\
             [[steps]]\nuses = \"analytics.wasm\"\nwith = {{ window = \"100ms\", grace = \"0s\" }}\n\n\
             [sink.sqlite]\npath = \"out.db\"\n\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();
    let child = Command::new(common::streamtap_bin())
        .args(["run", "p.toml", "--quiet"])
        .current_dir(d)
        .env("STREAMTAP_CACHE_DIR", d.join("cache"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("stderr.log")).unwrap())
        .spawn()
        .expect("start streamtap");
    Guard(child)
}

#[test]
fn metrics_endpoint_serves_valid_metrics_health_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let _run = start_pipeline(d, port);
    let base = format!("http://127.0.0.1:{port}");

    let (status, body) = wait_until("/health", Duration::from_secs(60), || {
        get(&format!("{base}/health"))
    });
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _) = wait_until("/ready", Duration::from_secs(30), || {
        get(&format!("{base}/ready")).filter(|(s, _)| *s == 200)
    });
    assert_eq!(status, 200);
    assert_eq!(get(&format!("{base}/nope")).map(|r| r.0), Some(404));

    let processed = |text: &str| sample(text, "streamtap_processed_messages_total");
    let first = wait_until("messages processed", Duration::from_secs(30), || {
        let (_, t) = get(&format!("{base}/metrics"))?;
        processed(&t).filter(|n| *n > 0.0).map(|_| t)
    });
    let n1 = processed(&first).unwrap();
    for series in [
        "streamtap_source_messages_total ",
        "streamtap_sink_stored_total ",
        "streamtap_step_messages_total{step=\"noop\"} ",
        "streamtap_step_call_duration_seconds_bucket{plugin_hash=\"",
        "streamtap_sink_batches_total ",
        "streamtap_sink_write_duration_seconds_bucket{le=",
        "streamtap_sink_batch_size_count ",
        "streamtap_sink_errors_total 0",
        "streamtap_step_errors_total{kind=\"timeout\",step=\"noop\"} 0",
        "streamtap_transport_queue_depth ",
        "streamtap_build_info{version=",
        "# HELP streamtap_reloads_total ",
        "streamtap_channel_stats_invalid_total 0",
    ] {
        assert!(first.contains(series), "{series:?} missing from:\n{first}");
    }
    wait_until("the counter to increase", Duration::from_secs(30), || {
        let (_, t) = get(&format!("{base}/metrics"))?;
        processed(&t).filter(|n| *n > n1)
    });

    // The analytics step's windows (100 ms of message time) close as the replay loops.
    let second = wait_until("channel gauges", Duration::from_secs(30), || {
        let (_, t) = get(&format!("{base}/metrics"))?;
        t.contains("streamtap_channel_window_messages{channel=\"alpha\"} ")
            .then_some(t)
    });
    for series in [
        "streamtap_channel_window_chatters{channel=\"beta\"} ",
        "streamtap_channel_window_sentiment_mean{channel=\"alpha\"} ",
        "streamtap_channel_stats_stored_total ",
        "streamtap_channel_stats_untracked_total 0",
    ] {
        assert!(
            second.contains(series),
            "{series:?} missing from:\n{second}"
        );
    }
    // The dashboards and alerting rules in deploy/ may only use series that exist.
    let live: std::collections::BTreeSet<&str> = second
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for (file, names) in common::deploy_series() {
        let mut used = 0;
        for family in names {
            // The live-collection and Kafka components are not in this replay pipeline;
            // their series are checked against live ones in tests/recorder.rs and
            // tests/kafka.rs.
            if LIVE_ONLY_PREFIXES.iter().any(|p| family.starts_with(p)) {
                continue;
            }
            assert!(
                live.contains(family.as_str()),
                "{file} uses {family}, which the running pipeline does not export"
            );
            used += 1;
        }
        assert!(used > 3, "{file}: expected streamtap_ series, found {used}");
    }

    // promtool lints names, types, HELP and suffixes; non-zero exit on any problem.
    common::run::promtool_check_metrics(&second);
}

#[test]
fn prometheus_server_scrapes_a_running_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let _run = start_pipeline(d, port);
    wait_until("/health", Duration::from_secs(60), || {
        get(&format!("http://127.0.0.1:{port}/health"))
    });

    let prom_port = free_port();
    std::fs::write(
        d.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: streamtap\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let prom = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            d.join("prometheus.yml").display()
        ))
        .arg(format!("--storage.tsdb.path={}", d.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (Debian package `prometheus`; .ci/run installs it)");
    let _prom = Guard(prom);

    let query = |q: &str| -> Option<f64> {
        let url = format!("http://127.0.0.1:{prom_port}/api/v1/query?query={q}");
        let (status, body) = get(&url)?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let up = wait_until("up == 1 in Prometheus", Duration::from_secs(60), || {
        query("up%7Bjob%3D%22streamtap%22%7D").filter(|v| *v == 1.0)
    });
    assert_eq!(up, 1.0);
    let first = wait_until("the counter in Prometheus", Duration::from_secs(30), || {
        query("streamtap_processed_messages_total").filter(|v| *v > 0.0)
    });
    let later = wait_until(
        "the counter to increase in Prometheus",
        Duration::from_secs(30),
        || query("streamtap_processed_messages_total").filter(|v| *v > first),
    );
    assert!(later > first);
}
