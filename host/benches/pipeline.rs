//! Core benchmarks (`cargo bench -p streamtap`, or `make bench`). Each figure is printed with
//! a reference measured in the same run and their ratio:
//!
//! 1. no-op plugin step, per message, at batch sizes 1, 16 and 256: a chain of four no-op
//!    steps minus a chain of none, per step (reference: the chain with no steps, which every
//!    message pays once whatever the steps);
//! 2. the sentiment step as WASM vs the same plugin code compiled natively, both through
//!    the wire format (target: WASM ≤ 1.5× native);
//! 3. demo pipeline throughput (reference: the same pipeline with no steps);
//! 4. hot-reload latency: plugin file written → first message processed by the new version,
//!    p50/p99 over 20 reloads (reference: the debounce, the floor of any reload).
//!
//! Messages are real-looking chat lines from `data/demo-chat.log`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamtap::pipeline::chain::Chain;
use streamtap::pipeline::config::Pipeline;
use streamtap::pipeline::runner::{self, RunOptions};
use streamtap::pipeline::{StepRegistry, build_chain};
use streamtap::plugins::Runtime;
use streamtap_plugin_sdk::ChatMessage;
use streamtap_plugin_sdk::codec::{self, BatchWriter};
use tokio_util::sync::CancellationToken;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn wasm(name: &str) -> PathBuf {
    let p = root()
        .join("target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} missing: run `make plugins` first",
        p.display()
    );
    p
}

fn messages() -> Vec<ChatMessage> {
    let path = root().join("data/demo-chat.log");
    let text = std::fs::read_to_string(&path).expect("demo log");
    streamtap::sources::replay::parse_log(&path, &text).0
}

/// Median of `runs` measurements of `f`, each returning (elapsed, items).
fn median_ns_per_item(runs: usize, mut f: impl FnMut() -> (Duration, usize)) -> f64 {
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let (d, n) = f();
            d.as_nanos() as f64 / n as f64
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn chain_for(rt: &Arc<Runtime>, dir: &Path, steps: &[(&str, &str)]) -> Chain {
    let mut text = String::from("[source.replay]\npath = \"x.log\"\n\n");
    for (i, (name, with)) in steps.iter().enumerate() {
        text.push_str(&format!(
            "[[steps]]\nname = \"{name}-{i}\"\nuses = {:?}\nwith = {with}\ndeadline = \"10s\"\n\n",
            wasm(name).display().to_string()
        ));
    }
    text.push_str("[sink.sqlite]\npath = \"x.db\"\n");
    let p = Pipeline::parse(&dir.join("bench.toml"), &text).expect("pipeline");
    build_chain(rt, &p, &StepRegistry::default()).expect("chain")
}

fn row(name: &str, figure: String, reference: String, ratio: f64) {
    println!("| {name} | {figure} | {reference} | {ratio:.2}× |");
}

fn bench_noop(rt: &Arc<Runtime>, dir: &Path, msgs: &[ChatMessage]) {
    const STEPS: usize = 4;
    let mut none = Chain::new(Vec::new());
    let noops = vec![("noop", "{}"); STEPS];
    let mut chain = chain_for(rt, dir, &noops);
    let total = 25_600;
    // The message stream, built once so no measurement pays for it.
    let stream: Vec<&ChatMessage> = msgs.iter().cycle().take(total).collect();
    // One timed pass over the stream; batches are cloned before the clock starts: cloning
    // ~10 heap strings per message costs more than a step and varies a lot here.
    let pass = |chain: &mut Chain, batch: usize| {
        let batches: Vec<Vec<ChatMessage>> = stream
            .chunks(batch)
            .map(|c| c.iter().map(|m| (*m).clone()).collect())
            .collect();
        let mut done = 0;
        let start = Instant::now();
        for b in batches {
            done += chain.process(b).messages.len();
        }
        start.elapsed().as_nanos() as f64 / done as f64
    };
    for batch in [1usize, 16, 256] {
        // A chain of N no-op steps minus a chain of none, over N: what one more step costs,
        // everything a step does included (batch encode, the call, output decode, apply).
        // The two are measured alternately and the median taken of the per-round
        // differences, so a slow phase of this shared machine hits both sides alike.
        let (mut diffs, mut bases) = (Vec::new(), Vec::new());
        for _ in 0..9 {
            let base = pass(&mut none, batch);
            let with = pass(&mut chain, batch);
            diffs.push((with - base) / STEPS as f64);
            bases.push(base);
        }
        diffs.sort_by(|a, b| a.total_cmp(b));
        bases.sort_by(|a, b| a.total_cmp(b));
        let (step_ns, base) = (diffs[diffs.len() / 2].max(0.0), bases[bases.len() / 2]);
        row(
            &format!("no-op step, batch {batch} (ns/msg per step; target ≤ 100 at 256)"),
            format!("{step_ns:.0} ns"),
            format!("{base:.0} ns chain with no steps (header encode, move to output)"),
            step_ns / base,
        );
    }
}

/// Splits the no-op step's cost: the bare component call on a pre-encoded batch (guest
/// decode + encode, canonical ABI copies), and host-side output decoding.
fn bench_noop_parts(rt: &Arc<Runtime>, msgs: &[ChatMessage]) {
    use streamtap::plugins::{Capabilities, HttpPolicy, KvStore, Limits};
    let plugin = rt.load(&wasm("noop")).unwrap();
    let caps = Capabilities {
        step: "noop".into(),
        kv: Arc::new(KvStore::new(1 << 20)),
        http: Arc::new(HttpPolicy::deny_all()),
    };
    let limits = Limits {
        deadline: Duration::from_secs(10),
        memory: 64 << 20,
    };
    let mut inst = rt.instantiate(&plugin, caps, limits, "{}").unwrap();
    let batch: Vec<ChatMessage> = msgs.iter().take(256).cloned().collect();
    let buf = codec::encode_batch(&batch);
    let call_ns = median_ns_per_item(9, || {
        let start = Instant::now();
        for _ in 0..100 {
            std::hint::black_box(inst.process(&buf).unwrap());
        }
        (start.elapsed(), 25_600)
    });
    let out = inst.process(&buf).unwrap();
    let decode_ns = median_ns_per_item(9, || {
        let start = Instant::now();
        for _ in 0..100 {
            std::hint::black_box(codec::decode_output(&out, 256).unwrap());
        }
        (start.elapsed(), 25_600)
    });
    let native = native_guest_work(msgs);
    row(
        "no-op batch 256: guest-side decode+encode compiled natively (ns/msg)",
        format!("{native:.0} ns"),
        format!("{call_ns:.0} ns as a component call"),
        native / call_ns,
    );
    row(
        "no-op batch 256: bare component call (pre-encoded, ns/msg)",
        format!("{call_ns:.0} ns"),
        format!("{decode_ns:.0} ns host output decode"),
        call_ns / decode_ns.max(0.001),
    );
}

fn bench_sentiment(rt: &Arc<Runtime>, dir: &Path, msgs: &[ChatMessage]) {
    use streamtap_plugin_sdk::Plugin;
    let batch: Vec<ChatMessage> = msgs.iter().take(256).cloned().collect();
    let wasm_plugin = rt.load(&wasm("sentiment")).expect("load");
    let _ = wasm_plugin;
    let mut chain = chain_for(rt, dir, &[("sentiment", "{}")]);
    let wasm_ns = median_ns_per_item(9, || {
        let start = Instant::now();
        let mut n = 0;
        for _ in 0..20 {
            n += chain.process(batch.clone()).messages.len();
        }
        (start.elapsed(), n)
    });
    // Native: the same plugin code through the same wire format and host-side decoding.
    let mut native = sentiment::Sentiment::init(Default::default()).expect("native init");
    let buf = codec::encode_batch(&batch);
    let native_ns = median_ns_per_item(9, || {
        let start = Instant::now();
        let mut n = 0;
        for _ in 0..20 {
            let b = batch.clone();
            let mut w = BatchWriter::new(b.len(), Vec::with_capacity(buf.len()));
            for m in &b {
                w.push(&codec::encode_header(m), &m.fields);
            }
            let input = w.finish();
            let out = streamtap_plugin_sdk::__private::process_with(&mut native, &input).unwrap();
            n += codec::decode_output(&out, b.len()).unwrap().len();
        }
        (start.elapsed(), n)
    });
    row(
        "sentiment step, batch 256: WASM vs native (ns/msg)",
        format!("{wasm_ns:.0} ns"),
        format!("{native_ns:.0} ns native"),
        wasm_ns / native_ns,
    );
}

fn demo_pipeline(dir: &Path, steps: bool) -> PathBuf {
    let demo = std::fs::read_to_string(root().join("pipelines/demo.toml")).unwrap();
    let base = root().join("pipelines").canonicalize().unwrap();
    // Alerts are stored but not printed: the console sink would write the run's alerts
    // into the benchmark's output (`make bench` puts that output in docs/PERFORMANCE.md).
    let mut text = demo
        .replace("default = [\"console\"]", "default = []")
        .replace("rate = 1000", "rate = \"max\"")
        .replace("\"../", &format!("\"{}/../", base.display()))
        .replace(
            &format!("\"{}/../data/demo.db\"", base.display()),
            "\"demo.db\"",
        );
    if !steps {
        let start = text.find("[[steps]]").unwrap();
        let end = text.find("[sink.sqlite]").unwrap();
        text.replace_range(start..end, "");
    }
    let f = dir.join(if steps {
        "demo.toml"
    } else {
        "demo-nosteps.toml"
    });
    std::fs::write(&f, text).unwrap();
    let _ = std::fs::remove_file(dir.join("demo.db"));
    f
}

fn bench_demo(rt: &Arc<Runtime>, dir: &Path) {
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let measure = |steps: bool| {
        let mut v: Vec<f64> = (0..3)
            .map(|_| {
                let f = demo_pipeline(dir, steps);
                let p = Pipeline::load(&f).unwrap();
                let opts = RunOptions {
                    progress: None,
                    hot_reload: false,
                    ..RunOptions::default()
                };
                let s = tokio
                    .block_on(runner::run(p, rt.clone(), opts, CancellationToken::new()))
                    .unwrap();
                s.stats.processed.get() as f64 / s.elapsed.as_secs_f64()
            })
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[1]
    };
    let with = measure(true);
    let without = measure(false);
    row(
        "demo pipeline throughput (3 steps, msg/s)",
        format!("{with:.0} msg/s"),
        format!("{without:.0} msg/s with no steps"),
        with / without,
    );
}

fn bench_reload(rt: &Arc<Runtime>, dir: &Path) {
    let v1 = std::fs::read(wasm("versioned")).unwrap();
    let v2_path = root().join("target/variant-v2/wasm32-wasip2/release/versioned.wasm");
    let Ok(v2) = std::fs::read(&v2_path) else {
        println!(
            "| hot reload | skipped: {} missing (run the tests first) | | |",
            v2_path.display()
        );
        return;
    };
    let d = dir.join("reload");
    std::fs::create_dir_all(&d).unwrap();
    let log = root().join("data/demo-chat.log");
    std::fs::write(d.join("plugin.wasm"), &v1).unwrap();
    let pfile = d.join("p.toml");
    std::fs::write(
        &pfile,
        format!(
            "[source.replay]\npath = {:?}\nrate = 2000\nloop = true\n\n[[steps]]\nname = \"tagger\"\nuses = \"plugin.wasm\"\n\n[sink.sqlite]\npath = \"r.db\"\n",
            log.display().to_string()
        ),
    )
    .unwrap();
    let db = d.join("r.db");
    let _ = std::fs::remove_file(&db);
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let cancel = CancellationToken::new();
    let p = Pipeline::load(&pfile).unwrap();
    let handle = tokio.spawn(runner::run(
        p,
        rt.clone(),
        RunOptions {
            progress: None,
            hot_reload: true,
            ..RunOptions::default()
        },
        cancel.clone(),
    ));
    std::thread::sleep(Duration::from_millis(1500));
    let conn = || {
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap()
    };
    let mut lat = Vec::new();
    for i in 0..20 {
        let (bytes, tag) = if i % 2 == 0 { (&v2, "v2") } else { (&v1, "v1") };
        let c = conn();
        let max_rowid: i64 = c
            .query_row("SELECT COALESCE(MAX(rowid), 0) FROM messages", [], |r| {
                r.get(0)
            })
            .unwrap();
        let t0 = Instant::now();
        std::fs::write(d.join("plugin.wasm"), bytes).unwrap();
        loop {
            let seen: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM messages WHERE rowid > ?1 AND json_extract(fields, '$.version') = ?2",
                    rusqlite::params![max_rowid, tag],
                    |r| r.get(0),
                )
                .unwrap_or(0);
            if seen > 0 {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "reload {i} never took effect"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(200));
    }
    cancel.cancel();
    tokio.block_on(handle).unwrap().unwrap();
    lat.sort_by(|a, b| a.total_cmp(b));
    let p50 = lat[lat.len() / 2];
    let p99 = lat[((lat.len() as f64 * 0.99).ceil() as usize).min(lat.len()) - 1];
    let debounce = streamtap::pipeline::reload::DEBOUNCE.as_secs_f64() * 1000.0;
    row(
        "hot reload p50 (file written → first message on new version)",
        format!("{p50:.0} ms"),
        format!("{debounce:.0} ms debounce; target ≤ 300 ms"),
        p50 / debounce,
    );
    row(
        "hot reload p99 (20 reloads)",
        format!("{p99:.0} ms"),
        format!("{debounce:.0} ms debounce"),
        p99 / debounce,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would run this too, so only
    // benchmark when asked to.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(Some(dir.path().join("cache"))).unwrap();
    let msgs = messages();
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::env::consts::ARCH
    );
    println!("| benchmark | figure | reference (same run) | ratio |");
    println!("|---|---|---|---|");
    // `STREAMTAP_BENCH=noop` (a substring) runs only the matching benchmarks.
    let only = std::env::var("STREAMTAP_BENCH").unwrap_or_default();
    let on = |name: &str| name.contains(only.as_str());
    if on("noop") {
        bench_noop_parts(&rt, &msgs);
        bench_noop(&rt, dir.path(), &msgs);
    }
    if on("sentiment") {
        bench_sentiment(&rt, dir.path(), &msgs);
    }
    if on("demo") {
        bench_demo(&rt, dir.path());
    }
    if on("reload") {
        bench_reload(&rt, dir.path());
    }
}

#[allow(dead_code)]
fn native_guest_work(msgs: &[ChatMessage]) -> f64 {
    let batch: Vec<ChatMessage> = msgs.iter().take(256).cloned().collect();
    let buf = codec::encode_batch(&batch);
    median_ns_per_item(9, || {
        let start = Instant::now();
        for _ in 0..100 {
            let v = codec::decode_batch(&buf).unwrap();
            let mut w = codec::OutputWriter::new(v.len());
            for _ in &v {
                w.begin_message();
            }
            std::hint::black_box(w.finish());
        }
        (start.elapsed(), 25_600)
    })
}
