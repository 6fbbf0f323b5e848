//! `report.html`: one self-contained page per run — its identity (scenario, seed, backend,
//! digest, version), the charts inlined as SVG, the expectations with pass/fail and the command
//! that reproduces the run — and `index.html` over the reports of a folder of scenarios. No
//! script, stylesheet, font or image is fetched: the page opens offline.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use pipeline::time::Millis;

use super::Report;
use super::charts::{self, ChartError};
use super::series::{ALERT_BUCKET_MS, AlertKind, Series};
use crate::scenario::Backend;

/// The page's style: plain, printable, no external font.
const STYLE: &str = "
body { font-family: sans-serif; margin: 24px auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
h3 { margin: 0 0 0.2em 0; font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.6em 0; }
table#expectations { width: 100%; table-layout: fixed; }
table#expectations th:first-child { width: 3.5em; }
table#expectations td { overflow-wrap: anywhere; }
table#index code { word-break: normal; white-space: nowrap; }
th, td { text-align: left; padding: 3px 10px; border-bottom: 1px solid #eee; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f4f4f4; padding: 1px 4px; word-break: break-all; }
.pass { color: #1a7f37; font-weight: bold; }
.fail { color: #cf222e; font-weight: bold; }
figure.chart { margin: 1.4em 0; }
figure.chart svg { display: block; border: 1px solid #ddd; }
figcaption p { margin: 0.2em 0 0.5em 0; color: #444; }
";

/// One chart of the page: an id the browser test looks for, a title, what it shows at the
/// peak in words, and the SVG.
struct Chart {
    id: &'static str,
    title: &'static str,
    caption: String,
    svg: String,
}

/// The command that reproduces a run.
pub fn reproduce(report: &Report) -> String {
    let backend = match report.backend {
        Backend::Memory => String::new(),
        Backend::Services => " --backend services".to_owned(),
        Backend::Containers => " --backend containers".to_owned(),
    };
    let features = match report.backend {
        Backend::Memory => "",
        Backend::Services => " --features services",
        Backend::Containers => " --features containers",
    };
    let speed = report
        .replay_speed
        .map(|s| format!(" --speed {s}"))
        .unwrap_or_default();
    format!(
        "cargo run --release -p simulator{features} -- run {} --seed {}{backend}{speed}",
        report.file, report.seed
    )
}

/// The page of one run.
pub fn render(report: &Report) -> Result<String, ChartError> {
    let s = &report.series;
    let charts = [
        Chart {
            id: "mobility",
            title: "Mobility index over time, with its category bands",
            caption: mobility_caption(s),
            svg: charts::mobility(s)?,
        },
        Chart {
            id: "zone-speed",
            title: "Average traffic speed per zone",
            caption: heatmap_caption(s),
            svg: charts::heatmap(s)?,
        },
        Chart {
            id: "alerts",
            title: "Alerts by kind",
            caption: alerts_caption(s),
            svg: charts::alerts(s)?,
        },
        Chart {
            id: "throughput",
            title: "Throughput over simulated time: offered vs processed",
            caption: throughput_caption(s),
            svg: charts::throughput(s)?,
        },
        Chart {
            id: "latency",
            title: "Latency distributions (CDF): alerts, final windows, trigger writes",
            caption: latency_caption(report),
            svg: charts::latency(s)?,
        },
    ];
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Simulator report: " (report.scenario) ", seed " (report.seed) }
                // No favicon to fetch.
                link rel="icon" href="data:,";
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 {
                    (report.scenario) " "
                    @if report.passed { span.pass { "passed" } } @else { span.fail { "FAILED" } }
                }
                p { (report.description) }
                (identity(report))
                h2 { "Charts" }
                @for c in &charts {
                    figure.chart id={ "chart-" (c.id) } data-chart=(c.id) {
                        figcaption { h3 { (c.title) } p { (c.caption) } }
                        (PreEscaped(strip_declaration(&c.svg)))
                    }
                }
                (expectations(report))
            }
        }
    };
    Ok(page.into_string())
}

/// A run's identity and headline figures.
fn identity(r: &Report) -> Markup {
    let offered: u64 = r.offered.values().sum();
    let t = &r.throughput;
    html! {
        table.identity {
            tr { th { "scenario" } td { (r.scenario) " (" code { (r.file) } ")" } }
            tr { th { "seed" } td { (r.seed) } }
            tr { th { "backend" } td {
                (format!("{:?}", r.backend).to_lowercase())
                @if let Some(speed) = r.replay_speed { ", replayed at " (speed) "x" }
            } }
            tr { th { "simulated" } td {
                (format!("{:.2}", r.duration_ms as f64 / 3_600_000.0)) " h from " (r.start)
            } }
            tr { th { "output digest" } td { code { (r.digest) } } }
            tr { th { "version" } td { "simulator " (r.version) } }
            tr { th { "records offered" } td {
                (offered) " (" (format!("{:.0}", t.offered_msg_per_min)) " msg/min on the counted topics)"
            } }
            tr { th { "throughput" } td {
                "sustainable " (format!("{:.0}", t.sustainable_records_per_min)) " records/min: "
                @if t.keeps_up { span.pass { "keeps up" } } @else { span.fail { "falls behind" } }
            } }
            tr { th { "wall time" } td {
                (format!("{:.3}", r.wall.total_s)) " s (" (format!("{:.0}", r.wall.speedup)) "x real time)"
            } }
        }
    }
}

/// The expectations table and the reproduce command.
fn expectations(r: &Report) -> Markup {
    let failed = r.expectations.iter().filter(|v| !v.pass).count();
    html! {
        h2 { "Expectations" }
        p {
            (r.expectations.len() - failed) " of " (r.expectations.len()) " hold"
            @if failed > 0 { ", " span.fail { (failed) " failed" } }
            "."
        }
        table id="expectations" {
            tr { th { "" } th { "check" } th { "expected" } th { "actual" } }
            @for v in &r.expectations {
                tr {
                    td { @if v.pass { span.pass { "pass" } } @else { span.fail { "FAIL" } } }
                    td { (v.check) }
                    td { (v.expected) }
                    td { (v.actual) }
                }
            }
        }
        p { "Reproduce this run: " code id="reproduce" { (reproduce(r)) } }
    }
}

/// plotters' SVG has no XML declaration today; one inside HTML would be an error.
fn strip_declaration(svg: &str) -> &str {
    match svg.strip_prefix("<?xml") {
        Some(rest) => rest.find("?>").map_or(svg, |i| rest[i + 2..].trim_start()),
        None => svg,
    }
}

fn hhmm(t: Millis) -> String {
    let s = pipeline::time::format_rfc3339(t);
    s.get(11..16).unwrap_or(&s).to_owned()
}

fn mobility_caption(s: &Series) -> String {
    let Some(low) = s
        .mobility
        .iter()
        .min_by(|a, b| a.mobility_index.total_cmp(&b.mobility_index))
    else {
        return "No mobility-index window was written.".to_owned();
    };
    let bad = s
        .mobility
        .iter()
        .filter(|p| p.category == "poor" || p.category == "critical")
        .count();
    format!(
        "The city-wide index per 5-minute window (0-100; excellent > 80, good > 60, moderate > \
         40, poor > 20, else critical). At its lowest, {:.1} ({}) in {}-{}; {bad} of {} windows \
         poor or critical.",
        low.mobility_index,
        low.category,
        hhmm(low.window_start_ms),
        hhmm(low.window_end_ms),
        s.mobility.len()
    )
}

fn heatmap_caption(s: &Series) -> String {
    let z = &s.zone_speed;
    let mut slowest: Option<(f64, usize, usize)> = None;
    for (zi, row) in z.avg_speed_kmh.iter().enumerate() {
        for (ci, v) in row.iter().enumerate() {
            if let Some(v) = *v
                && slowest.is_none_or(|(m, _, _)| v < m)
            {
                slowest = Some((v, zi, ci));
            }
        }
    }
    let Some((kmh, zi, ci)) = slowest else {
        return "No traffic window was written.".to_owned();
    };
    let left_out = if z.zones_left_out > 0 {
        format!(
            " {} more zones with fewer readings are not drawn.",
            z.zones_left_out
        )
    } else {
        String::new()
    };
    format!(
        "Mean speed of each zone's traffic windows (weighted by readings), {} min per column; red \
         is standing traffic, green 60 km/h or more, grey no data. Slowest: {} at {kmh:.1} km/h \
         in windows starting {}-{}.{left_out}",
        z.column_ms / 60_000,
        z.zones.get(zi).map_or("?", String::as_str),
        hhmm(z.columns[ci]),
        hhmm(z.columns[ci] + z.column_ms)
    )
}

fn alerts_caption(s: &Series) -> String {
    let n = s.alerts.first().map_or(0, |a| a.counts.len());
    let busiest = (0..n)
        .map(|i| (s.alerts.iter().map(|a| a.counts[i]).sum::<u64>(), i))
        .max_by_key(|&(total, i)| (total, std::cmp::Reverse(i)));
    let totals: Vec<String> = s
        .alerts
        .iter()
        .map(|a| format!("{} {}", a.kind.label(), a.total))
        .collect();
    match busiest {
        Some((total, i)) if total > 0 => {
            let at = s.start_ms + i as Millis * ALERT_BUCKET_MS;
            let parts: Vec<String> = s
                .alerts
                .iter()
                .filter(|a| a.counts[i] > 0)
                .map(|a| format!("{} {}", a.kind.label(), a.counts[i]))
                .collect();
            format!(
                "Alert rows per 5 minutes of event time, by kind (in all: {}). Busiest: {}-{}, \
                 {total} alerts ({}).",
                totals.join(", "),
                hhmm(at),
                hhmm(at + ALERT_BUCKET_MS),
                parts.join(", ")
            )
        }
        _ => format!(
            "Alert rows per 5 minutes of event time, by kind: none of {} fired.",
            AlertKind::ALL.map(AlertKind::label).join(", ")
        ),
    }
}

fn throughput_caption(s: &Series) -> String {
    let peak = |f: fn(&crate::throughput::ThroughputSample) -> u64| {
        s.throughput
            .iter()
            .max_by_key(|t| (f(t), std::cmp::Reverse(t.start_ms)))
            .map(|t| (f(t), t.start_ms))
    };
    let (Some((offered, at)), Some((processed, pat))) =
        (peak(|t| t.offered), peak(|t| t.processed))
    else {
        return "No record was produced.".to_owned();
    };
    let total_offered: u64 = s.throughput.iter().map(|t| t.offered).sum();
    let total_processed: u64 = s.throughput.iter().map(|t| t.processed).sum();
    format!(
        "Records produced per simulated minute, and records whose output every sink acknowledged \
         (counted when the checkpoint covering them became durable). Peak offered {offered} \
         records/min at {}; peak processed {processed} records/min at {}; {total_processed} of \
         {total_offered} records processed.",
        hhmm(at),
        hhmm(pat)
    )
}

fn latency_caption(r: &Report) -> String {
    let l = &r.latency;
    let one = |name: &str, p: &pipeline::stats::Percentiles| {
        if p.count == 0 {
            format!("{name}: no samples")
        } else {
            format!(
                "{name}: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (n = {})",
                p.p50_ms, p.p99_ms, p.max_ms, p.count
            )
        }
    };
    format!(
        "Share of samples at or below each latency. {}; {}; {}.",
        one("alerts (produce to alert row durable)", &l.alert),
        one(
            "final windows (watermark past the end to row durable)",
            &l.window
        ),
        one("trigger writes", &l.trigger_processing)
    )
}

/// One line of the index.
#[derive(Debug)]
pub struct IndexEntry<'a> {
    /// The run's report.
    pub report: &'a Report,
    /// Its page, relative to the index.
    pub href: String,
}

/// `index.html` over the reports of a folder of scenarios.
pub fn render_index(entries: &[IndexEntry<'_>]) -> String {
    let passed = entries.iter().filter(|e| e.report.passed).count();
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Simulator reports" }
                link rel="icon" href="data:,";
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "Simulator reports" }
                p { (passed) " of " (entries.len()) " scenarios passed." }
                table id="index" {
                    tr { th { "scenario" } th { "" } th { "seed" } th { "backend" } th { "simulated" }
                         th { "expectations" } th { "digest" } }
                    @for e in entries {
                        @let r = e.report;
                        tr {
                            td { a href=(e.href) { (r.scenario) } br; small { (r.description) } }
                            td { @if r.passed { span.pass { "passed" } } @else { span.fail { "FAILED" } } }
                            td.num { (r.seed) }
                            td { (format!("{:?}", r.backend).to_lowercase()) }
                            td.num { (format!("{:.1} h", r.duration_ms as f64 / 3_600_000.0)) }
                            td.num {
                                (r.expectations.iter().filter(|v| v.pass).count()) " / " (r.expectations.len())
                            }
                            td { code { (r.digest.get(..12).unwrap_or(&r.digest)) } }
                        }
                    }
                }
            }
        }
    };
    page.into_string()
}
