//! `streamtap report`: charts of what the analytics step stored, one row per channel —
//! message volume per window with markers where alerts fired, mean sentiment, and the
//! language mix — as a PNG, or as a self-contained HTML page (inline SVG per channel plus
//! a summary table and the list of alerts).
//!
//! Text is drawn with DejaVu Sans embedded in the binary (the `dejavu` crate, through
//! plotters' `ab_glyph` feature), so neither building nor running needs system fonts or
//! fontconfig.

use crate::pipeline::config::{Pipeline, SinkConfig};
use crate::sinks::mongodb::MongoSink;
use crate::sinks::sqlite::{self, AlertMarker, StoredWindow};
use anyhow::{Context, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Image width, and height of one channel's row, in pixels.
const WIDTH: u32 = 1200;
const ROW_HEIGHT: u32 = 300;
/// Height of the PNG's title band.
const TITLE_HEIGHT: u32 = 44;
/// Languages listed by name per channel; the rest are summed as "other".
const TOP_LANGS: usize = 5;
/// The font family every text element asks for (registered from the embedded font).
const FONT: &str = "sans-serif";

const VOLUME: RGBColor = RGBColor(66, 133, 244);
const SENTIMENT: RGBColor = RGBColor(15, 157, 88);
const ALERT: RGBColor = RGBColor(219, 68, 55);
const LANG: RGBColor = RGBColor(171, 71, 188);

/// What `--out` asks for, by its extension.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Output {
    Png,
    Html,
}

/// One channel's data for the report.
struct ChannelData {
    name: String,
    windows: Vec<StoredWindow>,
    alerts: Vec<AlertMarker>,
}

impl ChannelData {
    fn messages(&self) -> i64 {
        self.windows.iter().map(|w| w.messages).sum()
    }

    /// Mean sentiment over the range, weighted by the messages that had a score.
    fn sentiment(&self) -> Option<f64> {
        let (sum, n) = self
            .windows
            .iter()
            .filter_map(|w| Some((w.sentiment_mean?, w.sentiment_count.max(1))))
            .fold((0.0, 0i64), |(s, n), (m, c)| (s + m * c as f64, n + c));
        (n > 0).then(|| sum / n as f64)
    }

    /// The busiest window: (start, messages).
    fn peak(&self) -> Option<(i64, i64)> {
        self.windows
            .iter()
            .max_by_key(|w| (w.messages, std::cmp::Reverse(w.window_start_ms)))
            .map(|w| (w.window_start_ms, w.messages))
    }

    /// Messages per language over the range: the top [`TOP_LANGS`], then "other".
    fn langs(&self) -> Vec<(String, i64)> {
        let mut all: BTreeMap<&str, i64> = BTreeMap::new();
        for w in &self.windows {
            for (l, n) in &w.langs {
                *all.entry(l.as_str()).or_default() += n;
            }
        }
        let mut v: Vec<(String, i64)> = all.into_iter().map(|(l, n)| (l.to_owned(), n)).collect();
        v.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        if v.len() > TOP_LANGS {
            let rest: i64 = v[TOP_LANGS..].iter().map(|(_, n)| n).sum();
            v.truncate(TOP_LANGS);
            v.push(("other".into(), rest));
        }
        v
    }
}

/// Runs `streamtap report`.
pub fn run(
    file: &Path,
    channel: Option<&str>,
    since_ms: Option<i64>,
    since_text: Option<&str>,
    out: &Path,
) -> anyhow::Result<()> {
    let kind = match out.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("png") => Output::Png,
        Some(e) if e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm") => Output::Html,
        _ => bail!(
            "--out {:?}: the file name must end in .html or .png",
            out.display().to_string()
        ),
    };
    let pipeline = Pipeline::load(file)?;
    let store = Store::open(&pipeline)?;
    let sqlite::ChannelStatsExtent {
        channels: known,
        span,
    } = store.extent()?;
    if known.is_empty() {
        bail!(
            "{}: no channel_stats windows stored; add the analytics step to the pipeline (docs/ANALYTICS.md) and run it",
            store.name
        );
    }
    if let Some(c) = channel
        && !known.iter().any(|k| k == c)
    {
        bail!(
            "unknown channel {c:?}: {} has channel_stats for {}",
            store.name,
            known.join(", ")
        );
    }
    let windows = store.windows(channel, since_ms)?;
    if windows.is_empty() {
        let (from, to) = span.unwrap_or_default();
        bail!(
            "no channel_stats windows{} since {} ({}); the stored windows span {} to {}",
            channel.map(|c| format!(" of {c:?}")).unwrap_or_default(),
            since_text.unwrap_or("?"),
            fmt_time(since_ms.unwrap_or_default(), true),
            fmt_time(from, true),
            fmt_time(to, true),
        );
    }
    let alerts = store.alerts(channel, since_ms)?;
    let data = group(windows, alerts);
    register_fonts()?;
    match kind {
        Output::Png => write_png(&data, out)?,
        Output::Html => {
            let html = render_html(&pipeline.name, &data)?;
            std::fs::write(out, html).with_context(|| format!("writing {}", out.display()))?;
        }
    }
    let n_alerts: usize = data.iter().map(|c| c.alerts.len()).sum();
    println!(
        "report: {} ({} channel(s), {} window(s), {} alert marker(s))",
        out.display(),
        data.len(),
        data.iter().map(|c| c.windows.len()).sum::<usize>(),
        n_alerts
    );
    Ok(())
}

/// Windows and alerts by channel, channels by name. Alerts of channels without windows in
/// range (e.g. a rule on a channel the analytics step does not see) are not drawn.
/// Where the report reads from: the pipeline's sink.
struct Store {
    /// For messages: the file, or the redacted MongoDB target.
    name: String,
    kind: StoreKind,
}

enum StoreKind {
    Sqlite(std::path::PathBuf),
    /// The driver is async; the report is a one-shot command, so it drives it itself.
    Mongo(MongoSink, tokio::runtime::Runtime),
}

impl Store {
    fn open(pipeline: &Pipeline) -> anyhow::Result<Store> {
        match &pipeline.sink {
            SinkConfig::Sqlite(s) => {
                let db = pipeline.resolve(&s.path);
                Ok(Store {
                    name: db.display().to_string(),
                    kind: StoreKind::Sqlite(db),
                })
            }
            SinkConfig::Mongodb(_) => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let sink = rt.block_on(crate::sinks::Sink::open(pipeline))?;
                let crate::sinks::Sink::Mongo { db, .. } = sink else {
                    unreachable!("a [sink.mongodb] opens as MongoDB")
                };
                Ok(Store {
                    name: db.target(),
                    kind: StoreKind::Mongo(db, rt),
                })
            }
        }
    }

    fn extent(&self) -> anyhow::Result<sqlite::ChannelStatsExtent> {
        Ok(match &self.kind {
            StoreKind::Sqlite(p) => sqlite::channel_stats_extent(p)?,
            StoreKind::Mongo(m, rt) => rt.block_on(m.channel_stats_extent())?,
        })
    }

    fn windows(
        &self,
        channel: Option<&str>,
        since: Option<i64>,
    ) -> anyhow::Result<Vec<StoredWindow>> {
        Ok(match &self.kind {
            StoreKind::Sqlite(p) => sqlite::channel_windows(p, channel, since)?,
            StoreKind::Mongo(m, rt) => rt.block_on(m.channel_windows(channel, since))?,
        })
    }

    fn alerts(
        &self,
        channel: Option<&str>,
        since: Option<i64>,
    ) -> anyhow::Result<Vec<AlertMarker>> {
        Ok(match &self.kind {
            StoreKind::Sqlite(p) => sqlite::alert_markers(p, channel, since)?,
            StoreKind::Mongo(m, rt) => rt.block_on(m.alert_markers(channel, since))?,
        })
    }
}

fn group(windows: Vec<StoredWindow>, alerts: Vec<AlertMarker>) -> Vec<ChannelData> {
    let mut by: BTreeMap<String, ChannelData> = BTreeMap::new();
    for w in windows {
        by.entry(w.channel.clone())
            .or_insert_with(|| ChannelData {
                name: w.channel.clone(),
                windows: Vec::new(),
                alerts: Vec::new(),
            })
            .windows
            .push(w);
    }
    for a in alerts {
        if let Some(c) = by.get_mut(&a.channel) {
            c.alerts.push(a);
        }
    }
    by.into_values().collect()
}

fn register_fonts() -> anyhow::Result<()> {
    plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| anyhow::anyhow!("the embedded DejaVu Sans font is not a valid font"))?;
    plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold())
        .map_err(|_| anyhow::anyhow!("the embedded DejaVu Sans Bold font is not a valid font"))
}

/// `HH:MM` (with the date when `date`), UTC.
fn fmt_time(ms: i64, date: bool) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.format(if date { "%Y-%m-%d %H:%M UTC" } else { "%H:%M" })
                .to_string()
        })
        .unwrap_or_else(|| ms.to_string())
}

fn write_png(data: &[ChannelData], out: &Path) -> anyhow::Result<()> {
    let height = TITLE_HEIGHT + ROW_HEIGHT * data.len() as u32;
    let root = BitMapBackend::new(out, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(TITLE_HEIGHT);
    let (from, to) = time_range(data);
    title.draw_text(
        &format!(
            "streamtap report: {} to {}",
            fmt_time(from, true),
            fmt_time(to, true)
        ),
        &(FONT, 22).into_font().style(FontStyle::Bold).color(&BLACK),
        (16, 12),
    )?;
    for (c, area) in data.iter().zip(body.split_evenly((data.len(), 1))) {
        draw_channel(&area, c)?;
    }
    root.present()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// The time range every row shares, so rows line up.
fn time_range(data: &[ChannelData]) -> (i64, i64) {
    let from = data
        .iter()
        .flat_map(|c| c.windows.iter().map(|w| w.window_start_ms))
        .min()
        .unwrap_or(0);
    let to = data
        .iter()
        .flat_map(|c| c.windows.iter().map(|w| w.window_end_ms))
        .max()
        .unwrap_or(from + 1);
    (from, to.max(from + 1))
}

/// One channel's row: volume with alert markers (top left), sentiment (bottom left),
/// languages (right).
fn draw_channel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    c: &ChannelData,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let (from, to) = time_range(std::slice::from_ref(c));
    let (w, h) = area.dim_in_pixel();
    let (left, right) = area.split_horizontally(w * 3 / 4);
    let (vol, sent) = left.split_vertically(h * 3 / 5);
    let date = to - from > 86_400_000;
    let label = |t: &i64| fmt_time(*t, date);

    let ymax = c
        .windows
        .iter()
        .map(|w| w.messages)
        .max()
        .unwrap_or(1)
        .max(1);
    let ytop = ymax + ymax / 5 + 1;
    let window_ms = c
        .windows
        .first()
        .map(|w| w.window_end_ms - w.window_start_ms)
        .unwrap_or(60_000);
    let mut chart = ChartBuilder::on(&vol)
        .caption(
            format!(
                "#{}: messages per {} window ({} total, {} alert(s))",
                c.name,
                humantime::format_duration(std::time::Duration::from_millis(
                    window_ms.max(0) as u64
                )),
                c.messages(),
                c.alerts.len()
            ),
            (FONT, 16).into_font().style(FontStyle::Bold),
        )
        .margin(6)
        .x_label_area_size(20)
        .y_label_area_size(50)
        .build_cartesian_2d(from..to, 0i64..ytop)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(8)
        .x_label_formatter(&label)
        .y_labels(4)
        .y_desc("messages")
        .label_style((FONT, 11))
        .draw()?;
    chart.draw_series(c.windows.iter().map(|w| {
        Rectangle::new(
            [(w.window_start_ms, 0), (w.window_end_ms, w.messages)],
            VOLUME.mix(0.7).filled(),
        )
    }))?;
    for a in &c.alerts {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(a.at_ms, 0), (a.at_ms, ytop)],
            ALERT.stroke_width(2),
        )))?;
        chart.draw_series(std::iter::once(TriangleMarker::new(
            (a.at_ms, ytop - ytop / 20),
            6,
            ALERT.filled(),
        )))?;
        // Labels near the right edge would be cut off: put them left of the line there.
        let right_half = a.at_ms > from + (to - from) / 2;
        let text = format!("⚠ {}", a.title);
        let style = (FONT, 12).into_font().color(&ALERT);
        let style = if right_half {
            style.pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Right,
                plotters::style::text_anchor::VPos::Top,
            ))
        } else {
            style
        };
        chart.draw_series(std::iter::once(Text::new(
            text,
            (a.at_ms, ytop - ytop / 10),
            style,
        )))?;
    }

    let mut chart = ChartBuilder::on(&sent)
        .margin(6)
        .x_label_area_size(20)
        .y_label_area_size(50)
        .build_cartesian_2d(from..to, -1f64..1f64)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(8)
        .x_label_formatter(&label)
        .y_labels(5)
        .y_desc("sentiment")
        .label_style((FONT, 11))
        .draw()?;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(from, 0.0), (to, 0.0)],
        BLACK.mix(0.4),
    )))?;
    let points: Vec<(i64, f64)> = c
        .windows
        .iter()
        .filter_map(|w| {
            Some((
                w.window_start_ms + (w.window_end_ms - w.window_start_ms) / 2,
                w.sentiment_mean?,
            ))
        })
        .collect();
    chart.draw_series(LineSeries::new(points.clone(), SENTIMENT.stroke_width(2)))?;
    chart.draw_series(
        points
            .iter()
            .map(|p| Circle::new(*p, 3, SENTIMENT.filled())),
    )?;

    let langs = c.langs();
    let total: i64 = langs.iter().map(|(_, n)| n).sum::<i64>().max(1);
    let rows = langs.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&right)
        .caption(
            "language mix",
            (FONT, 14).into_font().style(FontStyle::Bold),
        )
        .margin(10)
        .x_label_area_size(20)
        .y_label_area_size(10)
        .build_cartesian_2d(0f64..100f64, 0f64..rows)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(5)
        .x_label_formatter(&|v| format!("{v:.0}%"))
        .y_labels(0)
        .label_style((FONT, 11))
        .draw()?;
    for (i, (lang, n)) in langs.iter().enumerate() {
        let pct = *n as f64 * 100.0 / total as f64;
        let y = rows - i as f64;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, y - 0.15), (pct, y - 0.85)],
            LANG.mix(0.6).filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{lang} {pct:.0}%"),
            (pct.min(60.0) + 1.0, y - 0.3),
            (FONT, 12).into_font().color(&BLACK),
        )))?;
    }
    Ok(())
}

/// One channel's chart as SVG markup.
fn channel_svg(c: &ChannelData) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, ROW_HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        draw_channel(&root, c)?;
        root.present()?;
    }
    Ok(svg)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The self-contained HTML page: summary table, one inline SVG per channel, alert list.
fn render_html(pipeline: &str, data: &[ChannelData]) -> anyhow::Result<String> {
    let (from, to) = time_range(data);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>streamtap report: {p}</title>\n<style>\
         body{{font-family:'DejaVu Sans',Verdana,sans-serif;margin:24px;color:#222}}\
         table{{border-collapse:collapse;margin:12px 0}}\
         td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}\
         .alert{{color:#db4437}} section{{margin:18px 0}}\
         </style></head><body>\n<h1>streamtap report: {p}</h1>\n\
         <p>{f} to {t}. Bars: messages per analytics window; red lines: alerts; \
         green: mean sentiment (−1..1); right: language mix.</p>\n",
        p = esc(pipeline),
        f = fmt_time(from, true),
        t = fmt_time(to, true)
    );
    h.push_str(
        "<table><tr><th>channel</th><th>windows</th><th>messages</th>\
         <th>peak window</th><th>mean sentiment</th><th>languages</th><th>alerts</th></tr>\n",
    );
    for c in data {
        let (peak_at, peak) = c.peak().unwrap_or_default();
        let total: i64 = c.langs().iter().map(|(_, n)| n).sum::<i64>().max(1);
        let langs: Vec<String> = c
            .langs()
            .iter()
            .map(|(l, n)| format!("{} {}%", esc(l), n * 100 / total))
            .collect();
        let _ = writeln!(
            h,
            "<tr><td><a href=\"#ch-{id}\">#{name}</a></td><td>{}</td><td>{}</td>\
             <td>{peak} at {}</td><td>{}</td><td>{}</td><td class=\"alert\">{}</td></tr>",
            c.windows.len(),
            c.messages(),
            fmt_time(peak_at, false),
            c.sentiment()
                .map_or_else(|| "n/a".to_owned(), |m| format!("{m:+.3}")),
            langs.join(", "),
            c.alerts.len(),
            id = esc(&c.name),
            name = esc(&c.name),
        );
    }
    h.push_str("</table>\n");
    for c in data {
        let _ = writeln!(
            h,
            "<section id=\"ch-{}\">\n{}\n</section>",
            esc(&c.name),
            channel_svg(c)?
        );
    }
    let alerts: Vec<&AlertMarker> = data.iter().flat_map(|c| &c.alerts).collect();
    let _ = writeln!(h, "<h2>Alerts ({})</h2>", alerts.len());
    if !alerts.is_empty() {
        h.push_str("<table><tr><th>time</th><th>channel</th><th>alert</th></tr>\n");
        for a in alerts {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>#{}</td><td class=\"alert\">{}</td></tr>",
                fmt_time(a.at_ms, true),
                esc(&a.channel),
                esc(&a.title)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    Ok(h)
}
