//! The fault drill (`make drill`; part of `make test`): the deployment of `common::system`
//! under steady chat, broken on purpose, one fault at a time:
//!
//! 1. `kill -9` of a processor, started again after the group dropped it;
//! 2. the broker killed for 15 s;
//! 3. MongoDB killed for 15 s;
//! 4. SNS unreachable for 15 s while a burst raises an alert;
//! 5. the mock Twitch sends RECONNECT on every connection, then cuts them all;
//! 6. a poison payload published straight to the chat topic;
//! 7. a plugin that traps on every 100th message added to the processors' chain (hot reload).
//!
//! For each: messages lost (sent to a collector during the fault's phase and never stored;
//! target 0), duplicates stored (target 0), and the recovery time: from the fault's end
//! until every message sent before it is stored (for SNS: until the alert is in the SQS
//! queue). The table is printed at the end; the test fails on any loss or duplicate.

mod common;

use common::system::{BURST_CHANNEL, HYPE_THRESHOLD, Role, System};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Steady chat, messages per second.
const RATE: usize = 100;
/// How long the broker, MongoDB and SNS are away.
const OUTAGE: Duration = Duration::from_secs(15);
/// Longest a recovery may take before the drill fails.
const RECOVERY_LIMIT: Duration = Duration::from_secs(120);
/// The flaky plugin's step.
const FLAKY: &str = r#"[[steps]]
name = "flaky"
uses = "plugins/hostile.wasm"
with = { trap_every = 100 }
"#;

/// One fault's outcome.
struct Outcome {
    name: &'static str,
    /// First and last id sent during the fault's phase.
    first: String,
    last: String,
    sent: usize,
    recovery: Duration,
    note: String,
}

/// Sends steady chat for `d`.
fn chat(sys: &mut System, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        sys.send_spread(RATE / 10);
        sys.assert_running("chat");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Chats until every message sent up to now is stored; returns how long it took.
fn recover(sys: &mut System, what: &str) -> Duration {
    let t = Instant::now();
    let first = sys.sent.keys().next().cloned().expect("something was sent");
    let last = sys.sent.keys().next_back().cloned().unwrap();
    let want = sys.sent.len() as u64;
    loop {
        if sys.stored_between(&first, &last) == Some(want) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < RECOVERY_LIMIT,
            "{what}: {:?} of {want} stored after {RECOVERY_LIMIT:?}",
            sys.stored_between(&first, &last)
        );
        chat(sys, Duration::from_millis(250));
    }
}

/// Runs one fault: 3 s of chat, `inject`, chat for `during`, `restore`, then chat until
/// recovered. Returns the outcome with the ids sent from injection to recovery.
fn drill(
    sys: &mut System,
    name: &'static str,
    during: Duration,
    inject: impl FnOnce(&mut System),
    restore: impl FnOnce(&mut System) -> String,
) -> Outcome {
    chat(sys, Duration::from_secs(3));
    let first = sys.next_id();
    let before = sys.sent.len();
    eprintln!("drill: {name}");
    inject(sys);
    chat(sys, during);
    let note = restore(sys);
    let recovery = recover(sys, name);
    Outcome {
        name,
        first,
        last: sys.sent.keys().next_back().cloned().unwrap(),
        sent: sys.sent.len() - before,
        recovery,
        note,
    }
}

/// A series' value summed over the running processors.
fn processors_sum(sys: &System, name: &str, must_contain: &[&str]) -> f64 {
    sys.processors
        .iter()
        .filter(|p| p.run.is_some())
        .filter_map(System::scrape)
        .map(|t| {
            t.lines()
                .filter(|l| l.starts_with(name) && must_contain.iter().all(|c| l.contains(c)))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        })
        .sum()
}

#[test]
fn fault_drill_loses_and_duplicates_nothing() {
    let t0 = Instant::now();
    let mut sys = System::start();
    sys.write_pipelines(HYPE_THRESHOLD, "");
    let mut outcomes = Vec::new();

    outcomes.push(drill(
        &mut sys,
        "kill -9 a processor, restart it",
        // The group drops the dead member after its 6 s session timeout; a restart before
        // that waits on tansu for minutes (see tests/kafka.rs, wait_out_the_dead_member).
        Duration::from_secs(8),
        |s| s.kill_instance(Role::Processor, 0),
        |s| {
            s.start_instance(Role::Processor, 0);
            String::new()
        },
    ));

    outcomes.push(drill(
        &mut sys,
        "broker down 15 s",
        OUTAGE,
        |s| s.broker.kill(),
        |s| {
            s.broker.restart();
            String::new()
        },
    ));

    outcomes.push(drill(
        &mut sys,
        "MongoDB down 15 s",
        OUTAGE,
        |s| s.mongo.kill(),
        |s| {
            s.mongo.restart();
            String::new()
        },
    ));

    // SNS away while a burst crosses the hype rule: the alert waits in the outbox.
    let mut sns_up_at = Instant::now();
    outcomes.push(drill(
        &mut sys,
        "SNS down 15 s (alert raised meanwhile)",
        OUTAGE,
        |s| {
            s.sns.down();
            s.send_to(BURST_CHANNEL, HYPE_THRESHOLD as usize + 50);
        },
        |s| {
            s.sns.up();
            sns_up_at = Instant::now();
            String::new()
        },
    ));
    let mut alerts = Vec::new();
    while alerts.is_empty() {
        assert!(
            sns_up_at.elapsed() < RECOVERY_LIMIT,
            "the alert raised during the SNS outage never reached SQS"
        );
        alerts.extend(sys.drain_alerts());
        chat(&mut sys, Duration::from_millis(250));
    }
    let alert_recovery = sns_up_at.elapsed();
    outcomes.last_mut().unwrap().recovery = alert_recovery.max(outcomes.last().unwrap().recovery);
    outcomes.last_mut().unwrap().note = format!(
        "alert in SQS {:.1} s after SNS was back",
        alert_recovery.as_secs_f64()
    );

    outcomes.push(drill(
        &mut sys,
        "Twitch RECONNECT, then every connection cut",
        Duration::from_secs(5),
        |s| s.irc.reconnect_all(),
        |s| {
            s.irc.drop_all();
            // Chat goes on while the collectors reconnect and rejoin; what the mock sends to
            // a channel no connection has joined yet never reaches a collector (Twitch does
            // not replay either: the collector records the gap) and is not counted as sent.
            let all = common::system::CHANNELS;
            let t = Instant::now();
            while s.irc.joined().len() < all {
                assert!(t.elapsed() < RECOVERY_LIMIT, "channels not rejoined");
                chat(s, Duration::from_millis(500));
            }
            format!(
                "rejoined {all} channels {:.1} s after the cut",
                t.elapsed().as_secs_f64()
            )
        },
    ));

    // A record no collector wrote: the processor dead-letters it and the partition flows.
    let poison = br#"{"v":1,"id":"drill-poison","ts":"soon"}"#;
    let brokers = sys.broker.addr();
    outcomes.push(drill(
        &mut sys,
        "poison payload on the chat topic",
        Duration::from_secs(3),
        |s| {
            s.block_on(async {
                use rdkafka::producer::{FutureProducer, FutureRecord};
                let p: FutureProducer = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .create()
                    .expect("raw producer");
                p.send(
                    FutureRecord::to("chat")
                        .key(BURST_CHANNEL)
                        .payload(&poison[..]),
                    Duration::from_secs(30),
                )
                .await
                .expect("poison published");
            })
        },
        |_| String::new(),
    ));
    let lib = common::tansu::bundled_librdkafka();
    let dlq = common::tansu::kcat(&lib, &sys.broker.addr())
        .args(["-C", "-t", "chat-dlq", "-e", "-q", "-f", "%s\\n"])
        .output()
        .expect("kcat reads the dead-letter topic");
    let dlq = String::from_utf8_lossy(&dlq.stdout).into_owned();
    assert_eq!(
        dlq.matches("drill-poison").count(),
        1,
        "the poison record is dead-lettered once: {dlq}"
    );
    outcomes.last_mut().unwrap().note = "dead-lettered once (read back with kcat)".into();

    // A trap poisons the instance; the host replaces it and retries the batch's messages
    // one by one, so a plugin that traps on every 100th message it sees fails no message:
    // the replacements show as restarts, not as errors.
    let restarts = |s: &System| processors_sum(s, "streamtap_step_restarts_total", &["flaky"]);
    let restarts_before = restarts(&sys);
    outcomes.push(drill(
        &mut sys,
        "plugin trapping on every 100th message",
        Duration::from_secs(10),
        |s| s.write_pipelines(HYPE_THRESHOLD, FLAKY),
        |_| String::new(),
    ));
    let traps = restarts(&sys) - restarts_before;
    let failed = processors_sum(&sys, "streamtap_step_errors_total", &["flaky"]);
    assert!(traps > 0.0, "the flaky step never trapped: was it loaded?");
    outcomes.last_mut().unwrap().note = format!(
        "{traps:.0} traps (instance replaced, batch retried message by message), {failed:.0} messages failed the step"
    );

    // Everything sent is stored once; the one alert reached SQS once.
    let drain = sys.wait_all_stored(RECOVERY_LIMIT);
    std::thread::sleep(Duration::from_secs(3));
    alerts.extend(sys.drain_alerts());
    sys.stop_all();
    let ids = sys.stored_ids().expect("MongoDB answers");
    let gaps = sys.all("gaps").len();
    if let Some(o) = outcomes.iter_mut().find(|o| o.name.starts_with("Twitch")) {
        o.note
            .push_str(&format!("; {gaps} gaps recorded in MongoDB"));
    }
    let twice: HashMap<&String, &usize> = ids.iter().filter(|(_, n)| **n > 1).collect();

    let mut table = String::from(
        "| fault | messages sent during it | lost | duplicates stored | recovery | notes |\n|---|---|---|---|---|---|\n",
    );
    let mut lost_total = 0;
    for o in &outcomes {
        let lost = sys
            .sent
            .range(o.first.clone()..=o.last.clone())
            .filter(|(id, _)| !ids.contains_key(*id))
            .count();
        let dups = twice
            .keys()
            .filter(|id| ***id >= o.first && ***id <= o.last)
            .count();
        lost_total += lost;
        table.push_str(&format!(
            "| {} | {} | {lost} | {dups} | {:.1} s | {} |\n",
            o.name,
            o.sent,
            o.recovery.as_secs_f64(),
            o.note
        ));
    }
    eprintln!(
        "\nfault drill: {} messages sent, {} stored, drained {:.1} s after chat stopped, {:.0} s in all\n\n{table}",
        sys.sent.len(),
        ids.len(),
        drain.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    let lost_ids: Vec<&String> = sys
        .sent
        .keys()
        .filter(|id| !ids.contains_key(*id))
        .collect();
    assert_eq!(
        lost_total,
        0,
        "lost: {:?}",
        &lost_ids[..lost_ids.len().min(10)]
    );
    assert!(lost_ids.is_empty(), "lost outside a fault: {lost_ids:?}");
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert_eq!(alerts.len(), 1, "the burst's alert, once: {alerts:#?}");
}
