//! The `twitch` source end to end: the real `streamtap` binary and the real `twitch-irc`
//! client against the mock Twitch IRC server (`common/mock_twitch.rs`) over TCP on
//! 127.0.0.1. Covers the JOIN rate limit as the server sees it, RECONNECT and abrupt
//! disconnects (no message sent after the rejoin lost, every gap recorded), live channel
//! edits, OAuth login without the token reaching the logs, bad channels, captured lines
//! stored verbatim, sharding, and that `pipelines/live.toml` passes `streamtap check`.

mod common;

use common::mock_helix::MockHelix;
use common::mock_twitch::{MockTwitch, privmsg};
use common::run::{count, query, scrape, series, start, wait_for};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

fn pipeline(mock: &MockTwitch, channels: &[&str], extra: &str) -> String {
    let list: Vec<String> = channels.iter().map(|c| format!("{c:?}")).collect();
    format!(
        r#"[source.twitch]
channels = [{}]
connection = "tcp"
server = "{}"
reconnect_min = "100ms"
reconnect_max = "1s"
{extra}

[sink.sqlite]
path = "out.db"
"#,
        list.join(", "),
        mock.addr()
    )
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn joins_respect_twitchs_default_limit_at_the_server() {
    // 25 channels with the default limit (20 per 10 s): the server must never see more
    // than 20 JOINs in any 10 s window, and every channel exactly once.
    let mock = MockTwitch::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let chans: Vec<String> = (0..25).map(|i| format!("chan{i:02}")).collect();
    let refs: Vec<&str> = chans.iter().map(String::as_str).collect();
    std::fs::write(d.join("p.toml"), pipeline(&mock, &refs, "")).unwrap();
    let mut run = start(d, "p.toml", &[], &[], "info");
    wait_for(&mut run, "25 JOINs", Duration::from_secs(40), || {
        mock.joins().len() >= 25
    });
    // Nothing more is sent once every channel is confirmed.
    std::thread::sleep(Duration::from_millis(500));
    let joins = mock.joins();
    assert_eq!(joins.len(), 25, "{joins:?}");
    let unique: BTreeSet<_> = joins.iter().map(|j| j.channel.clone()).collect();
    assert_eq!(unique.len(), 25);
    for (i, j) in joins.iter().enumerate() {
        let in_window = joins[i..]
            .iter()
            .filter(|k| k.at.duration_since(j.at) < Duration::from_secs(10))
            .count();
        assert!(in_window <= 20, "{in_window} JOINs within 10 s of JOIN {i}");
    }
    // The limiter, not luck: the 21st waited for the window.
    assert!(joins[20].at.duration_since(joins[0].at) >= Duration::from_secs(10));
    assert_eq!(mock.joined().len(), 25);
    run.stop();
}

#[test]
fn reconnect_and_abrupt_disconnect_lose_nothing_after_rejoin_and_record_gaps() {
    let mock = MockTwitch::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("out.db");
    std::fs::write(d.join("p.toml"), pipeline(&mock, &["alpha", "beta"], "")).unwrap();
    let mut run = start(d, "p.toml", &[], &[], "info");
    let both = set(&["alpha", "beta"]);
    let mut sent = 0;
    let send_round = |round: usize| {
        for ch in ["alpha", "beta"] {
            for i in 0..5 {
                let id = format!("{ch}-{round}-{i}");
                let n = mock
                    .send_to_channel(ch, &privmsg(ch, &id, "hello", 1_732_700_000_000 + i as i64));
                assert_eq!(n, 1, "{id} reached {n} connections");
            }
        }
    };
    for (round, break_it) in [(0, None), (1, Some("reconnect")), (2, Some("drop"))] {
        match break_it {
            Some("reconnect") => mock.reconnect_all(),
            Some(_) => mock.drop_all(),
            None => {}
        }
        wait_for(
            &mut run,
            "channels (re)joined",
            Duration::from_secs(20),
            || mock.joined() == both && mock.open_connections() == 1,
        );
        send_round(round);
        sent += 10;
        wait_for(&mut run, "messages stored", Duration::from_secs(20), || {
            count(&db, "SELECT COUNT(*) FROM messages") == sent
        });
    }
    let (stdout, _) = run.stop();
    assert_eq!(count(&db, "SELECT COUNT(*) FROM messages"), 30);
    let gaps: Vec<Vec<String>> = query(
        &db,
        "SELECT channel, CAST(from_ts AS TEXT), CAST(to_ts AS TEXT), reason FROM gaps ORDER BY from_ts, channel",
    );
    assert_eq!(gaps.len(), 4, "{gaps:?}");
    for g in &gaps {
        let (from, to): (i64, i64) = (g[1].parse().unwrap(), g[2].parse().unwrap());
        assert!(from <= to, "{g:?}");
    }
    let by_channel: BTreeMap<&str, usize> = gaps.iter().fold(BTreeMap::new(), |mut m, g| {
        *m.entry(g[0].as_str()).or_default() += 1;
        m
    });
    assert_eq!(by_channel, BTreeMap::from([("alpha", 2), ("beta", 2)]));
    assert!(gaps[0][3].contains("RECONNECT"), "{gaps:?}");
    assert!(gaps[3][3].contains("closed"), "{gaps:?}");
    // The crate-level reconnects never re-sent a JOIN for a channel twice per connection.
    let joins = mock.joins();
    let mut per_conn: BTreeMap<(u64, String), usize> = BTreeMap::new();
    for j in &joins {
        *per_conn.entry((j.conn, j.channel.clone())).or_default() += 1;
    }
    assert!(per_conn.values().all(|n| *n == 1), "{per_conn:?}");
    assert!(stdout.contains("collection gaps recorded: 4"), "{stdout}");
}

#[test]
fn live_channel_edits_oauth_login_and_bad_channels() {
    let mock = MockTwitch::start();
    mock.mark_bad("ghost");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("out.db");
    let auth = "login = \"MyBot\"\ntoken = { env = \"TEST_TWITCH_TOKEN\" }";
    let file = d.join("p.toml");
    let port = common::server::free_port();
    let metrics = format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    std::fs::write(
        &file,
        pipeline(&mock, &["alpha", "beta", "ghost"], auth) + &metrics,
    )
    .unwrap();
    let secret = "s3cr3ttokenvalue";
    let mut run = start(
        d,
        "p.toml",
        &[],
        &[("TEST_TWITCH_TOKEN", &format!("oauth:{secret}"))],
        "trace",
    );
    wait_for(
        &mut run,
        "alpha and beta joined",
        Duration::from_secs(20),
        || mock.joined() == set(&["alpha", "beta"]),
    );
    assert_eq!(mock.passwords(), [format!("oauth:{secret}")]);
    assert_eq!(mock.nicks(), ["mybot"]);
    // A server PING is answered.
    mock.ping_all();
    wait_for(&mut run, "PONG", Duration::from_secs(10), || {
        mock.pongs() >= 1
    });
    wait_for(
        &mut run,
        "the bad-channel NOTICE logged",
        Duration::from_secs(10),
        || run_stderr_contains(&run_log(d), "msg_channel_suspended"),
    );

    std::fs::write(&file, pipeline(&mock, &["beta", "gamma"], auth) + &metrics).unwrap();
    wait_for(
        &mut run,
        "gamma joined, alpha parted",
        Duration::from_secs(20),
        || mock.joined() == set(&["beta", "gamma"]),
    );
    assert!(mock.parts().iter().any(|(_, c)| c == "alpha"));
    // alpha's PART, and ghost's (its JOIN was sent; Twitch refused it with a NOTICE).
    wait_for(
        &mut run,
        "each PART counted",
        Duration::from_secs(5),
        || {
            let parts = mock.parts().len() as f64;
            let counted =
                scrape(port).and_then(|m| series(&m, "streamtap_twitch_parts_sent_total"));
            parts >= 1.0 && counted == Some(parts)
        },
    );
    assert_eq!(
        mock.send_to_channel("gamma", &privmsg("gamma", "g-1", "hi", 1)),
        1
    );
    wait_for(
        &mut run,
        "gamma's message stored",
        Duration::from_secs(10),
        || count(&db, "SELECT COUNT(*) FROM messages WHERE channel = 'gamma'") == 1,
    );
    let (_, stderr) = run.stop();
    // beta stayed joined through the edit: one JOIN only.
    let beta = mock.joins().iter().filter(|j| j.channel == "beta").count();
    assert_eq!(beta, 1);
    assert!(!stderr.contains(secret), "token leaked into the log");
    assert!(stderr.contains("channel list changed"), "{stderr}");
}

fn run_log(d: &Path) -> std::path::PathBuf {
    d.join("p.toml.stderr.log")
}

fn run_stderr_contains(log: &Path, needle: &str) -> bool {
    std::fs::read_to_string(log).is_ok_and(|s| s.contains(needle))
}

#[test]
fn captured_lines_are_stored_verbatim_with_their_kinds() {
    let mock = MockTwitch::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("out.db");
    std::fs::write(
        d.join("p.toml"),
        pipeline(&mock, &["pixelqueen", "raidsquad"], ""),
    )
    .unwrap();
    let mut run = start(d, "p.toml", &[], &[], "info");
    wait_for(&mut run, "joined", Duration::from_secs(20), || {
        mock.joined() == set(&["pixelqueen", "raidsquad"])
    });
    let fixture = std::fs::read_to_string(
        common::workspace_root().join("tests/fixtures/twitch-captured.log"),
    )
    .unwrap();
    let mut expected = BTreeMap::new();
    for line in fixture.lines() {
        let m = streamtap::sources::irc::parse_line(line).unwrap();
        assert_eq!(mock.send_to_channel(&m.channel, line), 1);
        expected.insert(m.id.clone(), (m.kind.clone(), line.to_owned()));
    }
    wait_for(&mut run, "all stored", Duration::from_secs(20), || {
        count(&db, "SELECT COUNT(*) FROM messages") == expected.len() as i64
    });
    run.stop();
    let rows: Vec<Vec<String>> = query(
        &db,
        "SELECT id, kind, json_extract(fields, '$.raw') FROM messages",
    );
    let stored: BTreeMap<String, (String, String)> = rows
        .into_iter()
        .map(|r| (r[0].clone(), (r[1].clone(), r[2].clone())))
        .collect();
    assert_eq!(stored, expected);
}

#[test]
fn shards_split_the_channel_list_with_no_double_joins() {
    let mock = MockTwitch::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let chans: Vec<String> = (0..12).map(|i| format!("shardchan{i}")).collect();
    let refs: Vec<&str> = chans.iter().map(String::as_str).collect();
    let mut runs = Vec::new();
    for i in 0..2 {
        let text = pipeline(&mock, &refs, "").replace("out.db", &format!("out{i}.db"));
        std::fs::write(d.join(format!("p{i}.toml")), text).unwrap();
        runs.push(start(
            d,
            &format!("p{i}.toml"),
            &["--shard", &format!("{i}/2")],
            &[],
            "info",
        ));
    }
    wait_for(
        &mut runs[0],
        "all 12 joined",
        Duration::from_secs(20),
        || mock.joined().len() == 12,
    );
    std::thread::sleep(Duration::from_millis(300));
    let joins = mock.joins();
    assert_eq!(joins.len(), 12, "{joins:?}");
    // Each channel once, on the instance its hash names.
    let nicks = mock.nicks();
    assert_eq!(nicks.len(), 2);
    let mut by_conn: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for j in &joins {
        by_conn.entry(j.conn).or_default().push(j.channel.clone());
    }
    assert_eq!(by_conn.len(), 2);
    for chans in by_conn.values() {
        let shards: BTreeSet<u32> = chans
            .iter()
            .map(|c| streamtap::sources::twitch::shard_of(c, 2))
            .collect();
        assert_eq!(shards.len(), 1, "{chans:?} mixes shards");
    }
    for r in runs {
        r.stop();
    }
}

#[test]
fn live_pipeline_passes_check() {
    // `pipelines/live.toml` as shipped, in a copy of the layout it expects.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("pipelines")).unwrap();
    std::fs::create_dir_all(d.join("target/wasm32-wasip2/release")).unwrap();
    let text =
        std::fs::read_to_string(common::workspace_root().join("pipelines/live.toml")).unwrap();
    std::fs::write(d.join("pipelines/live.toml"), &text).unwrap();
    std::fs::copy(
        common::plugin("sentiment", &[]),
        d.join("target/wasm32-wasip2/release/sentiment.wasm"),
    )
    .unwrap();
    let out = common::streamtap(d, &["check", "pipelines/live.toml"]);
    let stdout = common::stdout_ok(&out);
    assert!(stdout.contains("sentiment"), "{stdout}");
    let p = streamtap::pipeline::config::Pipeline::parse(&d.join("pipelines/live.toml"), &text)
        .map(|p| p.source);
    // Anonymous, TLS, the default JOIN limit: what a user without credentials gets.
    match p {
        Ok(streamtap::pipeline::config::SourceConfig::Twitch(t)) => {
            assert!(t.token.is_none() && t.login.is_none());
            assert_eq!(
                t.connection,
                streamtap::pipeline::config::TwitchConnection::Tls
            );
            assert!(t.channel_logins().len() >= 3);
        }
        other => panic!("live.toml is not a twitch pipeline: {other:?}"),
    }
}

#[test]
fn websocket_connection_reads_chat_and_survives_a_disconnect() {
    // `connection = "ws"` through a WebSocket front of the mock: the same client, the
    // WebSocket transport.
    let mock = MockTwitch::start();
    let ws_port = common::mock_twitch::websocket_front(&mock);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("out.db");
    let text = pipeline(&mock, &["wschan"], "")
        .replace("connection = \"tcp\"", "connection = \"ws\"")
        .replace(&mock.addr(), &format!("127.0.0.1:{ws_port}"));
    std::fs::write(d.join("p.toml"), text).unwrap();
    let mut run = start(d, "p.toml", &[], &[], "info");
    for round in 0..2 {
        wait_for(&mut run, "joined over ws", Duration::from_secs(20), || {
            mock.joined() == set(&["wschan"]) && mock.open_connections() == 1
        });
        let id = format!("ws-{round}");
        assert_eq!(
            mock.send_to_channel("wschan", &privmsg("wschan", &id, "over ws", 1)),
            1
        );
        wait_for(&mut run, "stored", Duration::from_secs(10), || {
            count(&db, "SELECT COUNT(*) FROM messages") == round + 1
        });
        if round == 0 {
            mock.drop_all();
        }
    }
    run.stop();
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM gaps WHERE channel = 'wschan'"),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Helix stream status (`[source.twitch.helix]`) against the mock Helix server.

const HELIX_CLIENT: &str = "testclientid";
const HELIX_SECRET: &str = "s3cr3t-helix-client-secret";

fn helix_section(h: &MockHelix, interval: &str, points: u32) -> String {
    format!(
        r#"join_limit = 2000

[source.twitch.helix]
client_id = "{HELIX_CLIENT}"
client_secret = {{ env = "STREAMTAP_TEST_HELIX_SECRET" }}
api_url = "{}"
token_url = "{}"
interval = "{interval}"
points_per_minute = {points}
"#,
        h.api_url(),
        h.token_url()
    )
}

/// Stream events stored so far: (id, kind, channel, stream_id field).
fn stream_events(db: &Path) -> Vec<Vec<String>> {
    query::<String>(
        db,
        "SELECT id, kind, channel, json_extract(fields, '$.stream_id') FROM messages \
         WHERE kind LIKE 'stream.%' ORDER BY rowid",
    )
}

#[test]
fn helix_status_changes_become_stored_events_in_batches_of_100() {
    let irc = MockTwitch::start();
    let helix = MockHelix::start(HELIX_CLIENT, HELIX_SECRET, 800);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 150 channels: two Get Streams requests per poll.
    let chans: Vec<String> = (0..150).map(|i| format!("hx{i:03}")).collect();
    let refs: Vec<&str> = chans.iter().map(String::as_str).collect();
    let text = pipeline(&irc, &refs, &helix_section(&helix, "1s", 800));
    std::fs::write(d.join("p.toml"), text).unwrap();
    helix.set_live("hx007", "1001", "first stream");
    let mut run = start(
        d,
        "p.toml",
        &[],
        &[("STREAMTAP_TEST_HELIX_SECRET", HELIX_SECRET)],
        "info,streamtap=debug",
    );
    let db = d.join("out.db");
    let has = |id: &str| stream_events(&db).iter().any(|r| r[0] == id);
    wait_for(&mut run, "hx007 online", Duration::from_secs(30), || {
        has("stream.online:1001")
    });

    // The token is revoked (expired early): the next request gets 401, a new token is
    // fetched, and polling goes on. hx007 ends, hx140 goes live.
    helix.revoke_tokens();
    helix.set_offline("hx007");
    helix.set_live("hx140", "2002", "late stream");
    wait_for(
        &mut run,
        "offline and new online",
        Duration::from_secs(30),
        || has("stream.offline:1001") && has("stream.online:2002"),
    );
    assert!(helix.tokens_issued() >= 2, "a 401 gets a new token");

    // A new stream id on a live channel: the old one ends, the new one starts.
    helix.set_live("hx140", "2003", "restarted");
    wait_for(&mut run, "restart seen", Duration::from_secs(30), || {
        has("stream.offline:2002") && has("stream.online:2003")
    });
    let (_, stderr) = run.stop();

    let events = stream_events(&db);
    let got: Vec<(String, String, String)> = events
        .iter()
        .map(|r| (r[1].clone(), r[2].clone(), r[3].clone()))
        .collect();
    let want = |k: &str, c: &str, s: &str| (k.to_owned(), c.to_owned(), s.to_owned());
    assert_eq!(
        got,
        vec![
            want("stream.online", "hx007", "1001"),
            want("stream.offline", "hx007", "1001"),
            want("stream.online", "hx140", "2002"),
            want("stream.offline", "hx140", "2002"),
            want("stream.online", "hx140", "2003"),
        ]
    );
    let title = query::<String>(
        &db,
        "SELECT json_extract(fields, '$.title') || '|' || json_extract(fields, '$.game_name') \
         FROM messages WHERE id = 'stream.online:1001'",
    );
    assert_eq!(title, vec![vec!["first stream|Just Chatting".to_owned()]]);

    // Batches of at most 100, together covering every channel.
    let reqs = helix.requests();
    assert!(reqs.iter().all(|r| r.logins.len() <= 100), "batch over 100");
    let seen: BTreeSet<String> = reqs.iter().flat_map(|r| r.logins.clone()).collect();
    assert_eq!(seen.len(), 150);
    assert_eq!(helix.bad_secrets(), 0);
    // The secret and the tokens stay out of the log and the URLs.
    assert!(!stderr.contains(HELIX_SECRET), "secret in the log");
    assert!(!stderr.contains("apptoken"), "token in the log");
    assert!(helix.raw_queries().iter().all(|q| !q.contains("apptoken")));
}

#[test]
fn a_wrong_helix_secret_is_reported_without_showing_it() {
    let irc = MockTwitch::start();
    let helix = MockHelix::start(HELIX_CLIENT, HELIX_SECRET, 800);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = pipeline(&irc, &["one"], &helix_section(&helix, "1s", 800));
    std::fs::write(d.join("p.toml"), text).unwrap();
    let wrong = "wrong-secret-value-123";
    let mut run = start(
        d,
        "p.toml",
        &[],
        &[("STREAMTAP_TEST_HELIX_SECRET", wrong)],
        "info",
    );
    wait_for(
        &mut run,
        "a refused token request",
        Duration::from_secs(20),
        || helix.bad_secrets() >= 2,
    );
    let stderr = run.stderr();
    let (_, stderr_end) = run.stop();
    assert!(
        stderr.contains("token request") && stderr.contains("HTTP 403"),
        "{stderr}"
    );
    assert!(!stderr_end.contains(wrong), "secret in the log");
}

/// Three collectors with one client id, sharded over 300 channels, polling every second
/// (each wants ~60 requests a minute, together ~3x the budget): the server must never see
/// more than the budget in any 60 s, never answer 429, and the budget must be used.
#[test]
fn three_instances_share_one_helix_budget_through_mongodb() {
    let points = 60;
    let irc = MockTwitch::start();
    let helix = MockHelix::start(HELIX_CLIENT, HELIX_SECRET, points);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mongo = common::server::secantus(d);
    let chans: Vec<String> = (0..300).map(|i| format!("bud{i:03}")).collect();
    let refs: Vec<&str> = chans.iter().map(String::as_str).collect();
    let mut runs = Vec::new();
    for i in 0..3 {
        let text = pipeline(&irc, &refs, &helix_section(&helix, "1s", points)).replace(
            "[sink.sqlite]\npath = \"out.db\"",
            &format!(
                "[sink.mongodb]\nuri = \"mongodb://{}\"\ndatabase = \"budget\"\nalert_outbox = \"outbox{i}.db\"",
                mongo.addr()
            ),
        );
        std::fs::write(d.join(format!("p{i}.toml")), text).unwrap();
        runs.push(start(
            d,
            &format!("p{i}.toml"),
            &["--shard", &format!("{i}/3")],
            &[("STREAMTAP_TEST_HELIX_SECRET", HELIX_SECRET)],
            "info",
        ));
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        for r in &mut runs {
            if let Some(status) = r.child.try_wait().unwrap() {
                panic!("an instance exited ({status})\n{}", r.stderr());
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for r in runs {
        r.stop();
    }
    let (busiest, limited) = helix.busiest(Duration::from_secs(60));
    let reqs = helix.requests();
    eprintln!(
        "three instances, budget {points}/min: {} requests in 120 s, at most {busiest} in any 60 s, {limited} answered 429",
        reqs.len()
    );
    assert_eq!(limited, 0, "the server answered 429");
    assert!(
        busiest <= points as usize,
        "{busiest} requests in one minute, budget {points}"
    );
    // Our bucket: 6 at once plus 54 a minute, so about 114 in two minutes; allow for start-up.
    assert!(
        reqs.len() >= 80,
        "budget left unused: {} requests",
        reqs.len()
    );
    // Every instance got its turn (each shard's channels were polled).
    let shards: BTreeSet<u32> = reqs
        .iter()
        .flat_map(|r| r.logins.iter())
        .map(|c| streamtap::sources::twitch::shard_of(c, 3))
        .collect();
    assert_eq!(shards.len(), 3);
}

/// The pipeline stalls (its SQLite store locked by another writer) while chat keeps coming:
/// the source keeps reading its connection — lines beyond `buffer_lines` go to the spill
/// file, and a server PING is answered during the stall — and once the store is free every
/// line is stored, with no gap. (With `spill_max_mb = 0` this fails: the PING waits behind
/// thousands of unread lines, and Twitch would drop the connection.)
#[test]
fn a_stalled_pipeline_spills_chat_to_disk_keeps_reading_and_loses_nothing() {
    let mock = MockTwitch::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("out.db");
    let port = common::server::free_port();
    let text = pipeline(
        &mock,
        &["stall"],
        "buffer_lines = 100\nspill_dir = \"spill\"\n",
    ) + &format!(
        "\n[transport.memory]\ncapacity = 100\nbatch_size = 50\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    std::fs::write(d.join("p.toml"), text).unwrap();
    let mut run = start(d, "p.toml", &[], &[], "info");
    wait_for(&mut run, "joined", Duration::from_secs(20), || {
        mock.joined() == set(&["stall"])
    });
    let line = |i: usize| {
        let text = format!("message {i} {}", "padding ".repeat(20));
        (
            "stall".to_string(),
            privmsg(
                "stall",
                &format!("s-{i:06}"),
                &text,
                1_732_700_000_000 + i as i64,
            ),
        )
    };
    mock.send_many(&(0..100).map(line).collect::<Vec<_>>());
    wait_for(
        &mut run,
        "the first 100 stored",
        Duration::from_secs(20),
        || count(&db, "SELECT COUNT(*) FROM messages") == 100,
    );

    // Another writer holds the database for 4 s (the sink's busy timeout is 5 s).
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = {
        let db = db.clone();
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&db).unwrap();
            c.execute_batch("BEGIN EXCLUSIVE").unwrap();
            locked_tx.send(Instant::now()).unwrap();
            std::thread::sleep(Duration::from_secs(4));
            c.execute_batch("COMMIT").unwrap();
            Instant::now()
        })
    };
    let locked_at = locked_rx.recv().unwrap();
    const BURST: usize = 20_000;
    assert_eq!(
        mock.send_many(&(100..100 + BURST).map(line).collect::<Vec<_>>()),
        BURST
    );
    let pongs = mock.pongs();
    mock.ping_all();
    // Read and answered while the store is still locked.
    let mut spilled = 0.0;
    while mock.pongs() == pongs || spilled == 0.0 {
        assert!(
            locked_at.elapsed() < Duration::from_millis(3_800),
            "no PONG ({}) or nothing spilled ({spilled}) while the pipeline was stalled",
            mock.pongs() - pongs
        );
        if let Some(m) = scrape(port) {
            spilled = series(&m, "streamtap_twitch_spilled_lines").unwrap_or(0.0);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nothing was stored meanwhile: the pipeline really was stalled.
    let during = count(&db, "SELECT COUNT(*) FROM messages");
    if locked_at.elapsed() < Duration::from_millis(3_900) {
        assert_eq!(during, 100);
    }
    let released = holder.join().unwrap();
    wait_for(
        &mut run,
        "every line stored",
        Duration::from_secs(60),
        || count(&db, "SELECT COUNT(*) FROM messages") == (100 + BURST) as i64,
    );
    eprintln!(
        "{spilled} lines were on disk during the stall; all {BURST} stored {:.1} s after it",
        released.elapsed().as_secs_f64()
    );
    let m = scrape(port).unwrap();
    common::run::promtool_check_metrics(&m);
    assert_eq!(series(&m, "streamtap_twitch_spilled_lines"), Some(0.0));
    assert_eq!(series(&m, "streamtap_twitch_spilled_bytes"), Some(0.0));
    assert_eq!(
        series(&m, "streamtap_twitch_connections_lost_total"),
        Some(0.0)
    );
    // The spill file had no name: nothing left behind.
    assert_eq!(std::fs::read_dir(d.join("spill")).unwrap().count(), 0);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM gaps"), 0);
    // Stored once each, in the order they were sent.
    let ids: Vec<String> = query::<String>(&db, "SELECT id FROM messages ORDER BY rowid")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let want: Vec<String> = (0..100 + BURST).map(|i| format!("s-{i:06}")).collect();
    assert!(ids == want, "stored out of order or not once each");

    // Stopped while behind: the backlog is handed on within a bound, and what is left
    // is a recorded gap, never a silent loss.
    let holder = {
        let db = db.clone();
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&db).unwrap();
            c.execute_batch("BEGIN EXCLUSIVE").unwrap();
            std::thread::sleep(Duration::from_secs(4));
            c.execute_batch("COMMIT").unwrap();
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let total = 100 + 2 * BURST;
    mock.send_many(&(100 + BURST..total).map(line).collect::<Vec<_>>());
    let (_, stderr) = run.stop();
    holder.join().unwrap();
    let stored = count(&db, "SELECT COUNT(*) FROM messages");
    let stopped_gaps = count(
        &db,
        "SELECT COUNT(*) FROM gaps WHERE channel = 'stall' AND reason LIKE 'stopped with %'",
    );
    eprintln!("stopped while behind: {stored} of {total} stored, {stopped_gaps} gap(s)");
    let have: BTreeSet<String> = query::<String>(&db, "SELECT id FROM messages")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let missing: Vec<String> = (0..total)
        .map(|i| format!("s-{i:06}"))
        .filter(|id| !have.contains(id))
        .take(5)
        .collect();
    assert!(
        stored == total as i64 || stopped_gaps == 1,
        "{stored} of {total} stored (missing {missing:?}) and no gap recorded:\n{}",
        stderr
            .lines()
            .filter(|l| !l.contains("DEBUG"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
