//! Analytics end to end: a replay with a scripted burst through `analytics` and `alerts`
//! stores exact `channel_stats` rows (including the windows only the end-of-run flush
//! closes), and `streamtap report` draws them with the alert marker, as HTML and PNG, with
//! clear errors for an unknown channel, an empty range, a bad output name and a store
//! without analytics.

mod common;

use common::{stdout_ok as ok, streamtap};
use std::path::Path;

/// Window-aligned base time (a multiple of 10 s).
const T: i64 = 1_732_700_000_000;

/// `calm`: 4 messages over three 10 s windows. `busy`: a burst of 30 messages within one
/// window (fires the `hype` rule at 25), then 2 more in the next window.
fn write_script(d: &Path) {
    let mut lines = Vec::new();
    let mut i = 0;
    let mut push = |channel: &str, ts: i64| {
        lines.push(common::irc_line(i, channel, "hello chat PogChamp", ts));
        i += 1;
    };
    for ts in [T + 1_000, T + 5_000, T + 12_000, T + 25_000] {
        push("calm", ts);
    }
    for k in 0..30 {
        push("busy", T + 30_000 + k * 100);
    }
    push("busy", T + 45_000);
    push("busy", T + 47_000);
    // The replay sends lines in file order; order them by time like a real log.
    lines.sort_by_key(|l| {
        l.split("tmi-sent-ts=").nth(1).unwrap()[..13]
            .parse::<i64>()
            .unwrap()
    });
    std::fs::write(d.join("chat.log"), lines.join("\n") + "\n").unwrap();
}

fn pipeline(d: &Path, with_analytics: bool) {
    let analytics = common::plugin("analytics", &[]);
    let alerts = common::plugin("alerts", &[]);
    let analytics_step = if with_analytics {
        format!(
            "[[steps]]\nname = \"analytics\"\nuses = \"{}\"\nwith = {{ window = \"10s\", grace = \"0s\" }}\n\n",
            analytics.display()
        )
    } else {
        String::new()
    };
    std::fs::write(
        d.join("p.toml"),
        format!(
            "[source.replay]\npath = \"chat.log\"\n\n{analytics_step}\
             [[steps]]\nname = \"alerts\"\nuses = \"{}\"\n\n\
             [[steps.with.rules]]\nname = \"hype\"\nchannels = [\"*\"]\nwindow = \"10s\"\nthreshold = 25\ntopic = \"hype\"\nseverity = \"info\"\n\n\
             [sink.sqlite]\npath = \"out.db\"\n",
            alerts.display()
        ),
    )
    .unwrap();
}

fn run_scripted(d: &Path, with_analytics: bool) {
    write_script(d);
    pipeline(d, with_analytics);
    let summary = ok(&streamtap(d, &["run", "p.toml", "--no-reload", "--quiet"]));
    assert!(summary.contains("36 stored"), "{summary}");
    assert!(summary.contains("alerts fired: 1"), "{summary}");
}

fn rows(db: &Path, sql: &str) -> Vec<Vec<String>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut st = conn.prepare(sql).unwrap();
    let n = st.column_count();
    st.query_map([], |r| {
        (0..n)
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => "null".to_owned(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    rusqlite::types::ValueRef::Real(v) => v.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into(),
                    rusqlite::types::ValueRef::Blob(_) => "blob".to_owned(),
                })
            })
            .collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn stderr_of(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn channel_stats_rows_are_exact_and_the_report_shows_them_with_the_alert() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_scripted(d, true);
    let db = d.join("out.db");

    // Five windows: three closed by later messages, two (calm's and busy's last) only by
    // the flush at the end of the run.
    let got = rows(
        &db,
        "SELECT channel, window_start - 1732700000000, window_end - window_start, messages, unique_chatters, late
         FROM channel_stats ORDER BY channel, window_start",
    );
    let want: Vec<Vec<String>> = [
        ["busy", "30000", "10000", "30", "30", "0"],
        ["busy", "40000", "10000", "2", "2", "0"],
        ["calm", "0", "10000", "2", "2", "0"],
        ["calm", "10000", "10000", "1", "1", "0"],
        ["calm", "20000", "10000", "1", "1", "0"],
    ]
    .iter()
    .map(|r| r.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(got, want);
    // The rest of the record is kept as JSON; valid records do not go to `records`.
    let langs = rows(
        &db,
        "SELECT langs, json_extract(extra, '$.subs') FROM channel_stats WHERE channel = 'calm' LIMIT 1",
    );
    assert_eq!(langs, [["{\"und\":2}".to_owned(), "0".to_owned()]]);
    assert_eq!(
        rows(
            &db,
            "SELECT COUNT(*) FROM records WHERE tbl = 'channel_stats'"
        ),
        [["0"]]
    );
    let alerts = rows(&db, "SELECT channel, title FROM alerts");
    assert_eq!(
        alerts,
        [[
            "busy".to_owned(),
            "hype: #busy 25 messages in 10s".to_owned()
        ]]
    );

    // HTML: both channels, one chart each, the alert marker and its row.
    let out = ok(&streamtap(d, &["report", "p.toml", "--out", "r.html"]));
    assert!(
        out.contains("r.html (2 channel(s), 5 window(s), 1 alert marker(s))"),
        "{out}"
    );
    let html = std::fs::read_to_string(d.join("r.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 2, "one chart per channel");
    for want in [
        "#busy",
        "#calm",
        "hype: #busy 25 messages in 10s",
        "<td>30 at 09:33</td>",
    ] {
        assert!(html.contains(want), "{want:?} missing from the report");
    }

    // One channel only.
    ok(&streamtap(
        d,
        &[
            "report",
            "p.toml",
            "--channel",
            "calm",
            "--out",
            "calm.html",
        ],
    ));
    let html = std::fs::read_to_string(d.join("calm.html")).unwrap();
    assert!(html.contains("#calm") && !html.contains("#busy"));
    assert!(html.contains("<h2>Alerts (0)</h2>"));

    // PNG: the size the layout gives two channels, real content, and the alert's red.
    ok(&streamtap(d, &["report", "p.toml", "--out", "r.png"]));
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(d.join("r.png")).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1200, 44 + 2 * 300));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let px: Vec<&[u8]> = buf[..info.buffer_size()].chunks(3).collect();
    let white = px.iter().filter(|p| **p == [255, 255, 255]).count();
    let dark = px.iter().filter(|p| p.iter().all(|c| *c < 80)).count();
    let red = px.iter().filter(|p| **p == [219, 68, 55]).count();
    assert!(white < px.len() * 95 / 100, "mostly blank: {white} white");
    assert!(dark > 2_000, "too little text or axes: {dark} dark pixels");
    assert!(red > 100, "no alert marker: {red} red pixels");
}

#[test]
fn report_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_scripted(d, true);
    let err = stderr_of(&streamtap(
        d,
        &["report", "p.toml", "--channel", "nope", "--out", "r.html"],
    ));
    assert!(
        err.contains("unknown channel \"nope\"") && err.contains("busy, calm"),
        "{err}"
    );
    // The scripted chat is from 2024: nothing in the last hour.
    let err = stderr_of(&streamtap(
        d,
        &["report", "p.toml", "--since", "1h", "--out", "r.html"],
    ));
    assert!(
        err.contains("no channel_stats windows since 1h")
            && err.contains("the stored windows span 2024-11-27 09:33 UTC to 2024-11-27 09:34 UTC"),
        "{err}"
    );
    let err = stderr_of(&streamtap(d, &["report", "p.toml", "--out", "r.pdf"]));
    assert!(err.contains("must end in .html or .png"), "{err}");
    assert!(!d.join("r.html").exists());

    // A pipeline without the analytics step has nothing to draw.
    let other = tempfile::tempdir().unwrap();
    run_scripted(other.path(), false);
    let err = stderr_of(&streamtap(
        other.path(),
        &["report", "p.toml", "--out", "r.png"],
    ));
    assert!(
        err.contains("no channel_stats windows stored; add the analytics step"),
        "{err}"
    );
}
