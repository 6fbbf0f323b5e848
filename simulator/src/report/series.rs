//! The time series a report draws, taken from what the run stored — the in-memory MongoDB
//! stand-in, or what was read back from MongoDB on a real backend — and from what it measured
//! (the throughput series and the latency histograms). Each is small and bounded by the run's
//! span: a few hundred points per chart whatever the load.

use std::collections::BTreeMap;

use pipeline::engine::{AnomalyType, Query, RowBody};
use pipeline::stats::Histogram;
use pipeline::time::Millis;
use serde::Serialize;

use crate::run::RunResult;
use crate::throughput::ThroughputSample;

/// At most this many columns in the zone-speed heatmap: columns widen on long runs.
const HEATMAP_COLUMNS_MAX: i64 = 144;
/// At most this many zones in the heatmap: those with the most readings (a flood of made-up
/// zone ids must not make the page megabytes).
pub const HEATMAP_ZONES_MAX: usize = 12;
/// Alerts are counted per this much simulated time.
pub const ALERT_BUCKET_MS: Millis = 5 * 60_000;

/// Everything the report's charts draw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Series {
    /// First simulated instant.
    pub start_ms: Millis,
    /// Last simulated instant.
    pub end_ms: Millis,
    /// The city mobility index per 5-minute window.
    pub mobility: Vec<MobilityPoint>,
    /// Mean traffic speed per zone over time.
    pub zone_speed: ZoneSpeed,
    /// Alerts per kind and per [`ALERT_BUCKET_MS`].
    pub alerts: Vec<AlertCounts>,
    /// Records offered and processed per simulated minute.
    pub throughput: Vec<ThroughputSample>,
    /// Latency distributions.
    pub latency_cdf: LatencyCdfs,
}

/// One mobility-index window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MobilityPoint {
    /// Window start.
    pub window_start_ms: Millis,
    /// Window end (exclusive).
    pub window_end_ms: Millis,
    /// The index, 0-100.
    pub mobility_index: f64,
    /// Its category (excellent ... critical).
    pub category: String,
}

/// Mean speed per zone and column of time: the traffic windows of a zone's roads whose start
/// falls in a column, weighted by their readings.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ZoneSpeed {
    /// Zones, sorted.
    pub zones: Vec<String>,
    /// Width of a column, ms.
    pub column_ms: Millis,
    /// Start of each column.
    pub columns: Vec<Millis>,
    /// Per zone, per column: mean speed in km/h, `None` where no window started.
    pub avg_speed_kmh: Vec<Vec<Option<f64>>>,
    /// Zones left out beyond [`HEATMAP_ZONES_MAX`] (those with the fewest readings).
    pub zones_left_out: usize,
}

/// The kinds of alert the report draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A traffic reading below the severe-congestion speed.
    SevereCongestion,
    /// A traffic reading above the overcapacity occupancy.
    Overcapacity,
    /// An overcrowded bus.
    Overcrowding,
    /// A high or critical incident.
    CriticalIncident,
}

impl AlertKind {
    /// All kinds, in drawing order.
    pub const ALL: [AlertKind; 4] = [
        AlertKind::SevereCongestion,
        AlertKind::Overcapacity,
        AlertKind::Overcrowding,
        AlertKind::CriticalIncident,
    ];

    /// In words.
    pub const fn label(self) -> &'static str {
        match self {
            AlertKind::SevereCongestion => "severe congestion",
            AlertKind::Overcapacity => "overcapacity",
            AlertKind::Overcrowding => "overcrowding",
            AlertKind::CriticalIncident => "critical incidents",
        }
    }

    /// The kind of an alert row, if it is one the report draws.
    fn of(body: &RowBody) -> Option<(AlertKind, Millis)> {
        match body {
            RowBody::TrafficAnomalies(a) => match a.anomaly_type {
                AnomalyType::SevereCongestion => Some((AlertKind::SevereCongestion, a.event_time)),
                AnomalyType::Overcapacity => Some((AlertKind::Overcapacity, a.event_time)),
                AnomalyType::DataQualityIssue => None,
            },
            RowBody::TransportAlerts(a) => Some((AlertKind::Overcrowding, a.event_time)),
            RowBody::CriticalIncidents(a) => Some((AlertKind::CriticalIncident, a.event_time)),
            _ => None,
        }
    }
}

/// Alerts of one kind per bucket, buckets from the run's start.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertCounts {
    /// The kind.
    pub kind: AlertKind,
    /// Alerts per bucket of [`ALERT_BUCKET_MS`].
    pub counts: Vec<u64>,
    /// Alerts in all.
    pub total: u64,
}

/// One point of a cumulative distribution.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CdfPoint {
    /// Latency, ms.
    pub latency_ms: f64,
    /// Share of samples at or below it, 0-1.
    pub fraction: f64,
}

/// The latency distributions, as CDF points.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencyCdfs {
    /// Produce time of the triggering record -> alert row durable.
    pub alert: Vec<CdfPoint>,
    /// Watermark passes the window's end -> final row durable.
    pub window: Vec<CdfPoint>,
    /// One trigger's work to its last sink write.
    pub trigger_write: Vec<CdfPoint>,
}

impl Series {
    /// Takes the series of a finished run.
    pub fn of(run: &RunResult, start_ms: Millis) -> Self {
        let end_ms = start_ms + run.duration_ms;
        Series {
            start_ms,
            end_ms,
            mobility: mobility(run),
            zone_speed: zone_speed(run, start_ms, end_ms),
            alerts: alerts(run, start_ms, end_ms),
            throughput: run.throughput.samples().to_vec(),
            latency_cdf: LatencyCdfs {
                alert: cdf(&run.alert_latency),
                window: cdf(&run.window_latency),
                trigger_write: cdf(&run.trigger_processing),
            },
        }
    }
}

fn mobility(run: &RunResult) -> Vec<MobilityPoint> {
    let mut points: Vec<MobilityPoint> = run
        .documents
        .collection(Query::MobilityIndex)
        .filter_map(|r| match &r.body {
            RowBody::MobilityIndex(m) => Some(MobilityPoint {
                window_start_ms: m.window_start,
                window_end_ms: m.window_end,
                mobility_index: m.mobility_index,
                category: m.category.clone(),
            }),
            _ => None,
        })
        .collect();
    points.sort_by_key(|p| p.window_start_ms);
    points
}

fn zone_speed(run: &RunResult, start_ms: Millis, end_ms: Millis) -> ZoneSpeed {
    let span = (end_ms - start_ms).max(1);
    let minutes = ceil_div(ceil_div(span, HEATMAP_COLUMNS_MAX), 60_000).max(1);
    let column_ms = minutes * 60_000;
    let n = ceil_div(span, column_ms) as usize;
    // zone -> column -> (sum of speed x readings, readings)
    let mut sums: BTreeMap<&str, Vec<(f64, u64)>> = BTreeMap::new();
    for row in run.documents.collection(Query::TrafficAggregations) {
        let RowBody::TrafficAggregations(t) = &row.body else {
            continue;
        };
        if t.window_start < start_ms || t.window_start >= end_ms {
            continue;
        }
        let c = ((t.window_start - start_ms) / column_ms) as usize;
        let cells = sums
            .entry(t.zone_id.as_str())
            .or_insert_with(|| vec![(0.0, 0); n]);
        if let Some(cell) = cells.get_mut(c) {
            cell.0 += t.avg_speed * t.sensor_readings as f64;
            cell.1 += t.sensor_readings;
        }
    }
    let zones_left_out = sums.len().saturating_sub(HEATMAP_ZONES_MAX);
    if zones_left_out > 0 {
        let mut by_readings: Vec<(u64, &str)> = sums
            .iter()
            .map(|(z, cells)| (cells.iter().map(|c| c.1).sum(), *z))
            .collect();
        // Most readings first, ties by name: the same zones in every run.
        by_readings.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        let keep: std::collections::BTreeSet<&str> = by_readings
            .iter()
            .take(HEATMAP_ZONES_MAX)
            .map(|(_, z)| *z)
            .collect();
        sums.retain(|z, _| keep.contains(z));
    }
    ZoneSpeed {
        zones: sums.keys().map(|z| (*z).to_owned()).collect(),
        column_ms,
        columns: (0..n as i64).map(|i| start_ms + i * column_ms).collect(),
        zones_left_out,
        avg_speed_kmh: sums
            .values()
            .map(|cells| {
                cells
                    .iter()
                    .map(|&(sum, n)| (n > 0).then(|| sum / n as f64))
                    .collect()
            })
            .collect(),
    }
}

/// `a / b` rounded up, for `a >= 0` and `b > 0`.
fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

fn alerts(run: &RunResult, start_ms: Millis, end_ms: Millis) -> Vec<AlertCounts> {
    let n = ceil_div((end_ms - start_ms).max(1), ALERT_BUCKET_MS) as usize;
    let mut out: Vec<AlertCounts> = AlertKind::ALL
        .iter()
        .map(|&kind| AlertCounts {
            kind,
            counts: vec![0; n],
            total: 0,
        })
        .collect();
    for q in [
        Query::TrafficAnomalies,
        Query::TransportAlerts,
        Query::CriticalIncidents,
    ] {
        for row in run.documents.collection(q) {
            let Some((kind, at)) = AlertKind::of(&row.body) else {
                continue;
            };
            let i = ((at - start_ms).max(0) / ALERT_BUCKET_MS) as usize;
            let k = AlertKind::ALL.iter().position(|x| *x == kind).unwrap_or(0);
            if let Some(c) = out[k].counts.get_mut(i.min(n - 1)) {
                *c += 1;
                out[k].total += 1;
            }
        }
    }
    out
}

/// The CDF of a latency histogram: the latency at 200 evenly spaced quantiles and finer steps
/// in the tail (p99 to p99.9), each within the histogram's 3 % bucket precision; empty when it
/// holds no samples.
pub fn cdf(h: &Histogram) -> Vec<CdfPoint> {
    if h.count() == 0 {
        return Vec::new();
    }
    let quantiles = (1..=198)
        .map(|i| f64::from(i) / 200.0)
        .chain((0..=9).map(|i| 0.99 + f64::from(i) / 1000.0))
        .chain([1.0]);
    let mut points: Vec<CdfPoint> = Vec::new();
    for q in quantiles {
        let latency_ms = h.quantile_us(q) as f64 / 1000.0;
        match points.last_mut() {
            // Quantiles in the same bucket: keep the highest share at that latency.
            Some(last) if last.latency_ms == latency_ms => last.fraction = q,
            _ => points.push(CdfPoint {
                latency_ms,
                fraction: q,
            }),
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the CDF rises from the smallest sample to 1 at the largest, never falling.
    #[test]
    fn cdf_is_monotone_and_ends_at_one() {
        let mut h = Histogram::default();
        for ms in 1..=1000 {
            h.record_ms(ms);
        }
        let c = cdf(&h);
        assert!(c.len() > 100, "{} points", c.len());
        assert!(
            c.windows(2)
                .all(|w| w[0].latency_ms < w[1].latency_ms && w[0].fraction < w[1].fraction)
        );
        let last = c.last().copied().unwrap_or(CdfPoint {
            latency_ms: 0.0,
            fraction: 0.0,
        });
        assert_eq!(last.fraction, 1.0);
        assert!((last.latency_ms - 1000.0).abs() < 1.0, "{last:?}");
        let median = c.iter().find(|p| p.fraction >= 0.5).map(|p| p.latency_ms);
        assert!(
            median.is_some_and(|m| (m - 500.0).abs() < 20.0),
            "{median:?}"
        );
        assert!(cdf(&Histogram::default()).is_empty());
    }
}
