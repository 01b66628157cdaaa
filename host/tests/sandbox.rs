//! Sandbox and fault-isolation tests with a real hostile guest plugin
//! (`tests/plugins/hostile`): files, sockets, environment, HTTP allowlisting, deadlines,
//! memory limits, traps and `on_error` policies.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamtap::pipeline::chain::ChainOutput;
use streamtap::pipeline::config::Pipeline;
use streamtap::pipeline::{StepRegistry, build_chain};
use streamtap::plugins::{CallError, Capabilities, HttpPolicy, Instance, KvStore, Limits, Runtime};
use streamtap_plugin_sdk::codec::{self, Action};
use streamtap_plugin_sdk::{ChatMessage, Value};

fn runtime() -> Arc<Runtime> {
    Runtime::new(Some(
        common::workspace_root().join("target/test-plugin-cache"),
    ))
    .expect("runtime")
}

fn instance(rt: &Runtime, allow: Vec<String>, limits: Limits) -> Instance {
    let plugin = rt
        .load(&common::plugin("hostile", &[]))
        .expect("load hostile");
    let caps = Capabilities {
        step: "hostile".into(),
        kv: Arc::new(KvStore::new(1 << 20)),
        http: Arc::new(HttpPolicy {
            allow,
            timeout: Duration::from_secs(2),
            max_response: 1 << 16,
        }),
    };
    rt.instantiate(&plugin, caps, limits, "{}")
        .expect("instantiate")
}

const LIMITS: Limits = Limits {
    deadline: Duration::from_millis(100),
    memory: 16 << 20,
};

fn msg(i: usize, text: &str) -> ChatMessage {
    ChatMessage {
        id: format!("m{i}"),
        kind: "privmsg".into(),
        channel: "chan".into(),
        text: text.into(),
        ..ChatMessage::default()
    }
}

fn run(inst: &mut Instance, text: &str) -> Result<Vec<Action>, CallError> {
    let buf = codec::encode_batch(&[msg(0, text)]);
    let out = inst.process(&buf)?;
    Ok(codec::decode_output(&out, 1).expect("decode").remove(0))
}

fn field(actions: &[Action], name: &str) -> Value {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Set { name: n, value } if n == name => Some(value.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no field {name} in {actions:?}"))
}

#[test]
fn plugin_cannot_open_files_sockets_or_env() {
    let rt = runtime();
    let mut inst = instance(&rt, vec![], LIMITS);

    let fs = field(&run(&mut inst, "fs").unwrap(), "fs_result");
    assert!(fs.as_str().unwrap().starts_with("denied"), "{fs:?}");
    assert!(!std::path::Path::new("/tmp/streamtap-escape").exists());

    // A listener that would accept the connection if the sandbox let it through.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let net = field(
        &run(&mut inst, &format!("net {addr}")).unwrap(),
        "net_result",
    );
    assert!(net.as_str().unwrap().starts_with("denied"), "{net:?}");
    assert!(listener.accept().is_err(), "the plugin reached a socket");

    assert_eq!(
        field(&run(&mut inst, "env").unwrap(), "env_count"),
        Value::Int(0)
    );
}

/// A one-shot HTTP server answering `body` to each request.
fn http_server(body: &'static str) -> (String, std::thread::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let mut served = 0;
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until && served == 0 {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf);
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    served += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        served
    });
    (addr, h)
}

#[test]
fn http_reaches_only_allowlisted_hosts() {
    let rt = runtime();
    // Compile first (slow in debug builds), so the server's wait covers only the request.
    let _warm = instance(&rt, vec![], LIMITS);
    let (allowed, server) = http_server("hi");
    let denied = TcpListener::bind("127.0.0.1:0").unwrap();
    denied.set_nonblocking(true).unwrap();
    let denied_addr = denied.local_addr().unwrap();
    let mut inst = instance(&rt, vec![allowed.clone()], LIMITS);

    let ok = field(
        &run(&mut inst, &format!("http http://{allowed}/x")).unwrap(),
        "http_result",
    );
    assert_eq!(ok, Value::Str("200 hi".into()));
    assert_eq!(server.join().unwrap(), 1);

    let no = field(
        &run(&mut inst, &format!("http http://{denied_addr}/x")).unwrap(),
        "http_result",
    );
    assert_eq!(
        no,
        Value::Str(format!(
            "error: host \"{denied_addr}\" is not in allow_http"
        ))
    );
    assert!(
        denied.accept().is_err(),
        "a denied request reached the server"
    );

    // No allowlist: nothing is reachable.
    let mut closed = instance(&rt, vec![], LIMITS);
    let no = field(
        &run(&mut closed, &format!("http http://{allowed}/x")).unwrap(),
        "http_result",
    );
    assert!(no.as_str().unwrap().contains("not in allow_http"), "{no:?}");
}

#[test]
fn infinite_loop_is_interrupted_and_host_carries_on() {
    let rt = runtime();
    let mut inst = instance(&rt, vec![], LIMITS);
    let started = Instant::now();
    let err = run(&mut inst, "loop").unwrap_err();
    let took = started.elapsed();
    assert_eq!(err, CallError::Timeout(LIMITS.deadline));
    // Without interruption this call would never return; the bound is generous on purpose.
    assert!(took < Duration::from_secs(5), "interrupt took {took:?}");
    assert!(inst.is_poisoned());
    let mut fresh = instance(&rt, vec![], LIMITS);
    assert_eq!(
        field(&run(&mut fresh, "hello").unwrap(), "ok"),
        Value::Bool(true)
    );
}

#[test]
fn memory_bomb_is_refused_at_the_limit() {
    let rt = runtime();
    let mut inst = instance(&rt, vec![], LIMITS);
    let err = run(&mut inst, "oom").unwrap_err();
    assert_eq!(err, CallError::OutOfMemory(16 << 20));
    let mut fresh = instance(&rt, vec![], LIMITS);
    assert_eq!(
        field(&run(&mut fresh, "hello").unwrap(), "ok"),
        Value::Bool(true)
    );
}

fn chain_with(on_error: &str, dir: &std::path::Path) -> streamtap::pipeline::chain::Chain {
    chain_flushing(on_error, "", dir)
}

fn chain_flushing(
    on_error: &str,
    flush: &str,
    dir: &std::path::Path,
) -> streamtap::pipeline::chain::Chain {
    let wasm = common::plugin("hostile", &[]);
    let text = format!(
        "[source.replay]\npath = \"chat.log\"\n\n[[steps]]\nuses = {wasm:?}\non_error = \"{on_error}\"\ndeadline = \"200ms\"\nwith = {{ flush = \"{flush}\" }}\n\n[sink.sqlite]\npath = \"out.db\"\n",
        wasm = wasm.display().to_string()
    );
    let p = Pipeline::parse(&dir.join("p.toml"), &text).expect("pipeline");
    build_chain(&runtime(), &p, &StepRegistry::default()).expect("chain")
}

fn process(on_error: &str, texts: &[&str]) -> (ChainOutput, streamtap::pipeline::chain::Chain) {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = chain_with(on_error, dir.path());
    let batch = texts.iter().enumerate().map(|(i, t)| msg(i, t)).collect();
    let out = chain.process(batch);
    (out, chain)
}

#[test]
fn trap_follows_on_error_skip() {
    let (out, chain) = process("skip", &["a", "trap", "b", "loop", "c"]);
    let ids: Vec<_> = out.messages.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["m0", "m1", "m2", "m3", "m4"]);
    // Failed messages pass unchanged; the others were processed by a restarted instance.
    assert!(!out.messages[1].fields.contains_key("ok"));
    assert!(!out.messages[3].fields.contains_key("ok"));
    assert_eq!(out.messages[4].fields.get("ok"), Some(&Value::Bool(true)));
    let stats = &chain.steps[0].stats;
    let errors = stats.errors.snapshot();
    assert_eq!(errors.get("trap"), Some(&1));
    assert_eq!(errors.get("timeout"), Some(&1));
    assert!(stats.restarts.get() >= 2);
}

#[test]
fn trap_follows_on_error_drop() {
    let (out, _) = process("drop", &["a", "trap", "b"]);
    let ids: Vec<_> = out.messages.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["m0", "m2"]);
    assert_eq!(out.dropped.len(), 1);
    assert_eq!(out.dropped[0].0, "m1");
    assert!(out.dropped[0].2.contains("trap"), "{:?}", out.dropped);
}

#[test]
fn trap_follows_on_error_dead_letter() {
    let (out, _) = process("dead-letter", &["a", "trap", "reserved", "b"]);
    let ids: Vec<_> = out.messages.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["m0", "m3"]);
    assert_eq!(out.dead_letters.len(), 2);
    let trap = &out.dead_letters[0];
    assert_eq!(
        (
            trap.msg.id.as_str(),
            trap.plugin.as_str(),
            trap.version.as_str()
        ),
        ("m1", "hostile", "0.1.0")
    );
    assert!(trap.reason.starts_with("trap:"), "{}", trap.reason);
    assert_eq!(trap.hash.len(), 64);
    let bad = &out.dead_letters[1];
    assert_eq!(bad.msg.id, "m2");
    assert!(bad.reason.contains("reserved"), "{}", bad.reason);
}

#[test]
fn flaky_plugin_loses_only_the_messages_it_traps_on() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = common::plugin("hostile", &[]);
    let text = format!(
        "[source.replay]\npath = \"chat.log\"\n\n[[steps]]\nuses = {:?}\non_error = \"dead-letter\"\nwith = {{ trap_every = 10 }}\n\n[sink.sqlite]\npath = \"out.db\"\n",
        wasm.display().to_string()
    );
    let p = Pipeline::parse(&dir.path().join("p.toml"), &text).unwrap();
    let mut chain = build_chain(&runtime(), &p, &StepRegistry::default()).unwrap();
    let mut stored = 0;
    let mut dead = 0;
    for b in 0..4 {
        let batch = (0..25).map(|i| msg(b * 25 + i, "x")).collect();
        let out = chain.process(batch);
        stored += out.messages.len();
        dead += out.dead_letters.len();
    }
    // Every message is accounted for: stored or dead-lettered, none lost.
    assert_eq!(stored + dead, 100);
    assert!((1..25).contains(&dead), "dead-lettered {dead}");
}

#[test]
fn plugin_drops_remove_exactly_those_messages() {
    let (out, chain) = process("skip", &["drop", "a", "drop", "b", "drop"]);
    let ids: Vec<_> = out.messages.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["m1", "m3"]);
    assert!(
        out.messages
            .iter()
            .all(|m| m.fields.get("ok") == Some(&Value::Bool(true)))
    );
    let dropped: Vec<_> = out
        .dropped
        .iter()
        .map(|d| (d.0.as_str(), d.2.as_str()))
        .collect();
    assert_eq!(
        dropped,
        [
            ("m0", "asked to drop"),
            ("m2", "asked to drop"),
            ("m4", "asked to drop")
        ]
    );
    assert_eq!(chain.steps[0].stats.dropped.get(), 3);
}

#[test]
fn a_failing_flush_is_counted_and_the_host_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    for (mode, kind) in [("trap", "trap"), ("loop", "timeout"), ("set", "bad_output")] {
        let mut chain = chain_flushing("skip", mode, dir.path());
        chain.process(vec![msg(0, "a")]);
        let out = chain.flush();
        assert!(out.records.is_empty() && out.alerts.is_empty(), "{mode}");
        let errors = chain.steps[0].stats.errors.snapshot();
        assert_eq!(errors.get(kind), Some(&1), "{mode}: {errors:?}");
    }
    // A well-behaved flush: its record is collected, tagged with the step.
    let mut chain = chain_flushing("skip", "record", dir.path());
    chain.process(vec![msg(0, "a"), msg(1, "b")]);
    let out = chain.flush();
    assert_eq!(out.records.len(), 1);
    assert_eq!(
        (out.records[0].table.as_str(), &out.records[0].value),
        ("hostile", &Value::Int(2))
    );
    assert_eq!(out.records[0].step, "hostile");
}
