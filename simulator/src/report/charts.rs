//! The report's charts, drawn by plotters into SVG strings that the page inlines: no script, no
//! font or image to fetch, so a report opens anywhere, offline.

use plotters::coord::Shift;
use plotters::drawing::DrawingAreaErrorKind;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use pipeline::time::Millis;

use super::series::{ALERT_BUCKET_MS, CdfPoint, Series};

/// Size of a chart, pixels.
const WIDTH: u32 = 960;
const HEIGHT: u32 = 320;
const FONT: &str = "sans-serif";

/// A chart that could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the {chart} chart: {reason}")]
pub struct ChartError {
    chart: &'static str,
    reason: String,
}

fn failed<E: std::error::Error + Send + Sync>(
    chart: &'static str,
) -> impl Fn(DrawingAreaErrorKind<E>) -> ChartError {
    move |e| ChartError {
        chart,
        reason: e.to_string(),
    }
}

/// Draws with `draw` on a fresh white SVG canvas and returns the SVG text.
fn svg<F>(chart: &'static str, draw: F) -> Result<String, ChartError>
where
    F: FnOnce(
        &DrawingArea<SVGBackend<'_>, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<std::io::Error>>,
{
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(failed(chart))?;
        draw(&root).map_err(failed(chart))?;
        root.present().map_err(failed(chart))?;
    }
    Ok(out)
}

/// `HH:MM` of a simulated instant (with the day when the run spans more than a day).
fn clock(t: Millis, long: bool) -> String {
    let s = pipeline::time::format_rfc3339(t);
    let from = if long { 5 } else { 11 };
    s.get(from..16).unwrap_or(&s).replace('T', " ")
}

/// Round instants to label a time axis from `start` to `end`: every 5, 10, 15, 30 minutes ...
/// so that there are at most ten.
fn time_ticks(start: Millis, end: Millis) -> Vec<Millis> {
    const MINUTES: [i64; 11] = [1, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440];
    let span = (end - start).max(1);
    let step = MINUTES
        .iter()
        .map(|m| m * 60_000)
        .find(|step| span / step <= 10)
        .unwrap_or_else(|| (span / 10 / 86_400_000 + 1) * 86_400_000);
    let first = start.div_euclid(step) * step;
    let first = if first < start { first + step } else { first };
    (0..)
        .map(|i| first + i * step)
        .take_while(|t| *t <= end)
        .collect()
}

/// Round latencies to label a logarithmic axis from `lo` to `hi`: 1-2-5 steps, or finer when
/// the range is narrow.
fn latency_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let within = |mantissas: &[f64]| -> Vec<f64> {
        (-3..7)
            .flat_map(|e| mantissas.iter().map(move |m| m * 10f64.powi(e)))
            .filter(|v| *v >= lo && *v <= hi)
            .collect()
    };
    let coarse = within(&[1.0, 2.0, 5.0]);
    if coarse.len() >= 4 {
        return coarse;
    }
    within(&[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
}

/// The x range of a run: its span, never empty.
fn span(s: &Series) -> (std::ops::Range<Millis>, bool) {
    let end = s.end_ms.max(s.start_ms + 1);
    (s.start_ms..end, end - s.start_ms > 86_400_000)
}

/// The mobility-index categories: bounds, name, band colour.
const BANDS: [(f64, f64, &str, RGBColor); 5] = [
    (80.0, 100.0, "excellent", RGBColor(26, 152, 80)),
    (60.0, 80.0, "good", RGBColor(145, 207, 96)),
    (40.0, 60.0, "moderate", RGBColor(254, 224, 139)),
    (20.0, 40.0, "poor", RGBColor(252, 141, 89)),
    (0.0, 20.0, "critical", RGBColor(215, 48, 39)),
];

/// The mobility index over time, over its category bands.
pub fn mobility(s: &Series) -> Result<String, ChartError> {
    svg("mobility index", |root| {
        let (x, long) = span(s);
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(48)
            .build_cartesian_2d(
                x.clone().with_key_points(time_ticks(x.start, x.end)),
                0f64..100f64,
            )?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(12)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .x_label_formatter(&|t| clock(*t, long))
            .y_desc("mobility index")
            .draw()?;
        for (lo, hi, name, colour) in BANDS {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x.start, lo), (x.end, hi)],
                colour.mix(0.3).filled(),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                name,
                (x.start, hi - 2.0),
                (FONT, 12).into_font().color(&BLACK.mix(0.6)),
            )))?;
        }
        let mid = |p: &super::series::MobilityPoint| {
            (
                p.window_start_ms + (p.window_end_ms - p.window_start_ms) / 2,
                p.mobility_index,
            )
        };
        chart.draw_series(LineSeries::new(
            s.mobility.iter().map(mid),
            BLUE.stroke_width(2),
        ))?;
        chart.draw_series(
            s.mobility
                .iter()
                .map(|p| Circle::new(mid(p), 3, BLUE.filled())),
        )?;
        Ok(())
    })
}

/// Speed 0 is red, `max` and above green, through yellow.
fn speed_colour(kmh: f64, max: f64) -> HSLColor {
    let f = (kmh / max).clamp(0.0, 1.0);
    HSLColor(f * 120.0 / 360.0, 0.75, 0.5)
}

/// The speed at which the heatmap is fully green.
const SPEED_SCALE_KMH: f64 = 60.0;

/// Mean speed per zone over time, as a heatmap with its colour scale.
pub fn heatmap(s: &Series) -> Result<String, ChartError> {
    svg("zone speed heatmap", |root| {
        let z = &s.zone_speed;
        let (main, scale) = root.split_horizontally(WIDTH - 90);
        let (x, long) = span(s);
        let zones = z.zones.len().max(1) as i32;
        // Zone `i` is the row from 2i to 2i + 2, labelled at its middle, 2i + 1.
        let middles: Vec<i32> = (0..zones).map(|i| 2 * i + 1).collect();
        let mut chart = ChartBuilder::on(&main)
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(72)
            .build_cartesian_2d(
                x.clone().with_key_points(time_ticks(x.start, x.end)),
                (0..2 * zones).with_key_points(middles),
            )?;
        let names = z.zones.clone();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(12)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .x_label_formatter(&|t| clock(*t, long))
            .y_labels(zones as usize)
            .y_label_formatter(&|v| names.get(*v as usize / 2).cloned().unwrap_or_default())
            .draw()?;
        for (zi, row) in z.avg_speed_kmh.iter().enumerate() {
            let zi = 2 * zi as i32;
            chart.draw_series(row.iter().zip(&z.columns).map(|(v, &c)| {
                let style = match v {
                    Some(kmh) => speed_colour(*kmh, SPEED_SCALE_KMH).filled(),
                    None => RGBColor(230, 230, 230).filled(),
                };
                Rectangle::new([(c, zi), (c + z.column_ms, zi + 2)], style)
            }))?;
        }
        let mut bar = ChartBuilder::on(&scale)
            .margin_top(12)
            .margin_bottom(44)
            .margin_right(8)
            .y_label_area_size(44)
            .build_cartesian_2d(0f64..1f64, 0f64..SPEED_SCALE_KMH)?;
        bar.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .y_desc("km/h")
            .y_labels(7)
            .draw()?;
        bar.draw_series((0..60).map(|i| {
            let lo = f64::from(i);
            Rectangle::new(
                [(0.0, lo), (1.0, lo + 1.0)],
                speed_colour(lo + 0.5, SPEED_SCALE_KMH).filled(),
            )
        }))?;
        Ok(())
    })
}

/// Colours of the alert kinds, in [`AlertKind::ALL`]'s order.
const ALERT_COLOURS: [RGBColor; 4] = [
    RGBColor(215, 48, 39),
    RGBColor(244, 109, 67),
    RGBColor(69, 117, 180),
    RGBColor(118, 42, 131),
];

/// Alerts per 5 minutes, by kind.
pub fn alerts(s: &Series) -> Result<String, ChartError> {
    svg("alerts timeline", |root| {
        let (x, long) = span(s);
        let top = s
            .alerts
            .iter()
            .flat_map(|a| a.counts.iter().copied())
            .max()
            .unwrap_or(0)
            .max(4);
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(48)
            .build_cartesian_2d(
                x.clone().with_key_points(time_ticks(x.start, x.end)),
                0u64..top + top / 8 + 1,
            )?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(12)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .x_label_formatter(&|t| clock(*t, long))
            .y_desc("alerts per 5 min")
            .draw()?;
        for (a, colour) in s.alerts.iter().zip(ALERT_COLOURS) {
            let label = format!("{} ({})", a.kind.label(), a.total);
            let at = |i: usize| s.start_ms + i as Millis * ALERT_BUCKET_MS + ALERT_BUCKET_MS / 2;
            chart
                .draw_series(LineSeries::new(
                    a.counts.iter().enumerate().map(|(i, &n)| (at(i), n)),
                    colour.stroke_width(2),
                ))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 12))
            .draw()?;
        Ok(())
    })
}

/// A line of the throughput chart: name, colour, width, and the value it draws.
type ThroughputLine = (
    &'static str,
    RGBColor,
    u32,
    fn(&crate::throughput::ThroughputSample) -> u64,
);

/// Records offered and processed per simulated minute.
pub fn throughput(s: &Series) -> Result<String, ChartError> {
    svg("throughput", |root| {
        let (x, long) = span(s);
        let x = x.start
            ..x.end
                .max(s.throughput.last().map_or(0, |t| t.start_ms + 60_000));
        let top = s
            .throughput
            .iter()
            .map(|t| t.offered.max(t.processed))
            .max()
            .unwrap_or(0)
            .max(10);
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(64)
            .build_cartesian_2d(
                x.clone().with_key_points(time_ticks(x.start, x.end)),
                0u64..top + top / 8,
            )?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(12)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .x_label_formatter(&|t| clock(*t, long))
            .y_desc("records per simulated minute")
            .draw()?;
        let lines: [ThroughputLine; 2] = [
            ("offered (produced)", RGBColor(150, 150, 150), 5, |t| {
                t.offered
            }),
            (
                "processed (output acknowledged by every sink)",
                RGBColor(33, 102, 172),
                2,
                |t| t.processed,
            ),
        ];
        for (name, colour, width, value) in lines {
            chart
                .draw_series(LineSeries::new(
                    s.throughput.iter().map(|t| (t.start_ms + 30_000, value(t))),
                    colour.stroke_width(width),
                ))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(width))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 12))
            .draw()?;
        Ok(())
    })
}

/// A CDF drawn as the step function it is: from 0 up to each point's share at its latency.
fn steps(points: &[CdfPoint]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    let mut below = 0.0;
    for p in points {
        let x = p.latency_ms.max(0.01);
        out.push((x, below));
        out.push((x, p.fraction));
        below = p.fraction;
    }
    out
}

/// Latency CDFs of alerts, final windows and trigger writes, on a logarithmic latency axis.
pub fn latency(s: &Series) -> Result<String, ChartError> {
    svg("latency distributions", |root| {
        let c = &s.latency_cdf;
        let all = || {
            c.alert
                .iter()
                .chain(&c.window)
                .chain(&c.trigger_write)
                .map(|p| p.latency_ms.max(0.01))
        };
        let lo = all().fold(f64::INFINITY, f64::min);
        let hi = all().fold(0.0, f64::max);
        let (lo, hi) = if lo.is_finite() && hi > lo {
            (lo * 0.8, hi * 1.25)
        } else {
            (0.1, 10_000.0)
        };
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(48)
            .build_cartesian_2d(
                (lo..hi).log_scale().with_key_points(latency_ticks(lo, hi)),
                0f64..1.02f64,
            )?;
        chart
            .configure_mesh()
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .x_desc("latency (ms, logarithmic)")
            .y_desc("share of samples at or below")
            .x_label_formatter(&|v| {
                if *v >= 10.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            })
            .draw()?;
        let lines: [(&str, &[CdfPoint], RGBColor); 3] = [
            ("alerts", &c.alert, RGBColor(215, 48, 39)),
            ("final windows", &c.window, RGBColor(33, 102, 172)),
            ("trigger writes", &c.trigger_write, RGBColor(77, 146, 33)),
        ];
        for (name, points, colour) in lines {
            let label = if points.is_empty() {
                format!("{name} (no samples)")
            } else {
                name.to_owned()
            };
            chart
                .draw_series(LineSeries::new(steps(points), colour.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 12))
            .draw()?;
        if c.alert.is_empty() && c.window.is_empty() && c.trigger_write.is_empty() {
            root.draw(&Text::new(
                "no latency samples",
                ((WIDTH / 2) as i32, (HEIGHT / 2) as i32),
                (FONT, 16)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Center)),
            ))?;
        }
        Ok(())
    })
}
