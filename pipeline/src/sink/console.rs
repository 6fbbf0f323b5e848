//! The console: a readable table of the latest results — the mobility index, the worst traffic
//! windows, transport metrics per line, recent alerts — refreshed when the engine says a
//! console refresh is due (every 30 s by default).
//!
//! [`ConsoleView`] keeps the latest rows (bounded) and [`ConsoleView::render`] is a pure
//! function of them; [`ConsoleSink`] is the shell that prints.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::future::{Future, ready};
use std::io::Write;

use crate::engine::{Output, Row, RowBody};
use crate::time::{Millis, format_rfc3339};

use super::{Sink, SinkError};

/// Alerts remembered for the "recent alerts" section.
pub const RECENT_ALERTS: usize = 10;
/// Traffic windows listed as the worst.
pub const WORST_TRAFFIC: usize = 5;

/// The latest results, bounded: one latest window per traffic key and per line, the latest
/// mobility index, and the last [`RECENT_ALERTS`] alerts.
#[derive(Debug, Default, Clone)]
pub struct ConsoleView {
    mobility: Option<Row>,
    /// Latest window per (zone, road).
    traffic: BTreeMap<(String, String), Row>,
    /// Latest window per line.
    transport: BTreeMap<String, Row>,
    alerts: VecDeque<Row>,
}

fn start_of(row: &Row) -> Millis {
    match &row.body {
        RowBody::TrafficAggregations(r) => r.window_start,
        RowBody::TransportMetrics(r) => r.window_start,
        RowBody::MobilityIndex(r) => r.window_start,
        RowBody::IncidentAggregations(r) => r.window_start,
        RowBody::ParkingAggregations(r) => r.window_start,
        _ => row.time_ms(),
    }
}

fn newer(slot: Option<&Row>, row: &Row) -> bool {
    slot.is_none_or(|old| start_of(row) >= start_of(old))
}

/// `08:05` from an instant (UTC).
fn hhmm(ms: Millis) -> String {
    format_rfc3339(ms).get(11..16).unwrap_or("?").to_owned()
}

impl ConsoleView {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the rows of one batch into account.
    pub fn update(&mut self, rows: &[Row]) {
        for row in rows {
            match &row.body {
                RowBody::MobilityIndex(_) => {
                    if newer(self.mobility.as_ref(), row) {
                        self.mobility = Some(row.clone());
                    }
                }
                RowBody::TrafficAggregations(r) => {
                    let key = (r.zone_id.clone(), r.road_id.clone());
                    if newer(self.traffic.get(&key), row) {
                        self.traffic.insert(key, row.clone());
                    }
                }
                RowBody::TransportMetrics(r) => {
                    if newer(self.transport.get(&r.line_id), row) {
                        self.transport.insert(r.line_id.clone(), row.clone());
                    }
                }
                RowBody::TrafficAnomalies(_)
                | RowBody::TransportAlerts(_)
                | RowBody::CriticalIncidents(_) => {
                    if self.alerts.len() == RECENT_ALERTS {
                        self.alerts.pop_front();
                    }
                    self.alerts.push_back(row.clone());
                }
                RowBody::IncidentAggregations(_) | RowBody::ParkingAggregations(_) => {}
            }
        }
    }

    /// The table, as text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let latest = self
            .traffic
            .values()
            .chain(self.mobility.iter())
            .map(Row::time_ms)
            .max();
        let _ = writeln!(
            s,
            "=== Smart city: latest results (event time up to {}) ===",
            latest.map_or("-".to_owned(), format_rfc3339)
        );
        match self.mobility.as_ref().map(|r| (&r.body, r.is_final)) {
            Some((RowBody::MobilityIndex(m), fin)) => {
                let _ = writeln!(
                    s,
                    "Mobility index {:>5.1} ({}){}  window {}-{}  speed {:.1} km/h  occupancy {:.1} %  readings {}",
                    m.mobility_index,
                    m.category,
                    if fin { "" } else { " partial" },
                    hhmm(m.window_start),
                    hhmm(m.window_end),
                    m.city_avg_speed,
                    m.city_avg_occupancy,
                    m.total_readings
                );
            }
            _ => s.push_str("Mobility index: no window yet\n"),
        }
        s.push_str("Worst traffic windows (lowest average speed):\n");
        let mut traffic: Vec<_> = self
            .traffic
            .values()
            .filter_map(|r| match &r.body {
                RowBody::TrafficAggregations(t) => Some(t),
                _ => None,
            })
            .collect();
        traffic.sort_by(|a, b| {
            a.avg_speed
                .total_cmp(&b.avg_speed)
                .then_with(|| a.road_id.cmp(&b.road_id))
        });
        if traffic.is_empty() {
            s.push_str("  (none yet)\n");
        } else {
            let _ = writeln!(
                s,
                "  {:<8} {:<8} {:<11} {:>8} {:>8} {:>6} {:>10}",
                "zone", "road", "window", "avg km/h", "vehicles", "occ %", "congestion"
            );
        }
        for t in traffic.into_iter().take(WORST_TRAFFIC) {
            let _ = writeln!(
                s,
                "  {:<8} {:<8} {:<11} {:>8.1} {:>8} {:>6.1} {:>10.1}",
                t.zone_id,
                t.road_id,
                format!("{}-{}", hhmm(t.window_start), hhmm(t.window_end)),
                t.avg_speed,
                t.total_vehicles,
                t.avg_occupancy,
                t.congestion_score
            );
        }
        s.push_str("Transport metrics (latest window per line):\n");
        if self.transport.is_empty() {
            s.push_str("  (none yet)\n");
        } else {
            let _ = writeln!(
                s,
                "  {:<8} {:<11} {:>9} {:>7} {:>8} {:>10} {:>11}",
                "line", "window", "delay min", "occ %", "vehicles", "passengers", "punctuality"
            );
        }
        for r in self.transport.values() {
            if let RowBody::TransportMetrics(t) = &r.body {
                let _ = writeln!(
                    s,
                    "  {:<8} {:<11} {:>9.1} {:>7.1} {:>8} {:>10} {:>11.1}",
                    t.line_id,
                    format!("{}-{}", hhmm(t.window_start), hhmm(t.window_end)),
                    t.avg_delay,
                    t.avg_occupancy,
                    t.active_vehicles,
                    t.total_passengers,
                    t.punctuality_score
                );
            }
        }
        s.push_str("Recent alerts:\n");
        if self.alerts.is_empty() {
            s.push_str("  (none)\n");
        }
        for r in self.alerts.iter().rev() {
            let what = match &r.body {
                RowBody::TrafficAnomalies(a) => format!(
                    "{} {} on {} ({}): speed {:.1} km/h, occupancy {:.1} %",
                    a.anomaly_type.name(),
                    a.sensor_id,
                    a.road_id,
                    a.zone_id,
                    a.speed_kmh,
                    a.occupancy_percent
                ),
                RowBody::TransportAlerts(a) => format!(
                    "overcrowded {} on line {}: {:.0} % ({}/{})",
                    a.vehicle_id, a.line_id, a.occupancy_rate, a.passenger_count, a.capacity
                ),
                RowBody::CriticalIncidents(a) => format!(
                    "{} {} {} in {} on {}: {}",
                    a.severity, a.incident_type, a.incident_id, a.zone_id, a.road_id, a.description
                ),
                _ => continue,
            };
            let _ = writeln!(s, "  {}  {what}", format_rfc3339(r.time_ms()));
        }
        s
    }
}

/// The console shell: keeps a [`ConsoleView`] and prints it when a refresh is due.
pub struct ConsoleSink {
    view: ConsoleView,
    out: Box<dyn Write + Send>,
}

impl std::fmt::Debug for ConsoleSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSink")
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

impl ConsoleSink {
    /// A console printing to `out` (standard output in production).
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        ConsoleSink {
            view: ConsoleView::new(),
            out,
        }
    }

    /// The view printed.
    pub fn view(&self) -> &ConsoleView {
        &self.view
    }
}

impl Sink for ConsoleSink {
    fn name(&self) -> &'static str {
        "console"
    }

    fn write(&mut self, batch: &Output) -> impl Future<Output = Result<(), SinkError>> {
        self.view.update(&batch.rows);
        let result = if batch.console_due {
            let text = self.view.render();
            self.out
                .write_all(text.as_bytes())
                .and_then(|()| self.out.flush())
                .map_err(|e| SinkError::Backend {
                    sink: "console",
                    detail: format!("cannot print: {e}"),
                })
        } else {
            Ok(())
        };
        ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{MobilityIndex, TrafficAggregation, TransportAlert};
    use crate::sink::now_or_never;

    const T0: Millis = 1_795_507_200_000;

    fn traffic(road: &str, start: Millis, speed: f64) -> Row {
        Row {
            id: format!("traffic_aggregations|Z1|{road}|{start}"),
            body: RowBody::TrafficAggregations(TrafficAggregation {
                zone_id: "Z1".into(),
                road_id: road.into(),
                window_start: start,
                window_end: start + 300_000,
                avg_speed: speed,
                min_speed: speed - 1.0,
                max_speed: speed + 1.0,
                total_vehicles: 10,
                avg_occupancy: 20.0,
                sensor_readings: 3,
                congestion_score: 0.4,
            }),
            is_final: false,
        }
    }

    // Proves the table shows the latest mobility window, traffic ordered worst first with only
    // each road's latest window, and alerts newest first; and that it is a pure function.
    #[test]
    fn renders_latest_results() {
        let mut view = ConsoleView::new();
        view.update(&[
            traffic("R1", T0, 45.0),
            traffic("R1", T0 + 60_000, 12.5),
            traffic("R2", T0 + 60_000, 30.0),
            Row {
                id: "m".into(),
                body: RowBody::MobilityIndex(MobilityIndex {
                    window_start: T0,
                    window_end: T0 + 300_000,
                    city_avg_speed: 30.0,
                    city_avg_occupancy: 33.0,
                    total_readings: 252,
                    mobility_index: 62.8,
                    category: "good".into(),
                }),
                is_final: true,
            },
            Row {
                id: "a".into(),
                body: RowBody::TransportAlerts(TransportAlert {
                    vehicle_id: "BUS-7".into(),
                    line_id: "L2".into(),
                    event_time: T0 + 5_000,
                    alert_type: "overcrowded".into(),
                    occupancy_rate: 96.0,
                    passenger_count: 77,
                    capacity: 80,
                }),
                is_final: true,
            },
        ]);
        let text = view.render();
        assert!(
            text.contains("Mobility index  62.8 (good)  window 08:00-08:05"),
            "{text}"
        );
        let r1 = text.find("R1").unwrap();
        let r2 = text.find("R2").unwrap();
        assert!(r1 < r2, "worst (slowest) first:\n{text}");
        assert!(text.contains("12.5"), "{text}");
        assert!(
            !text.contains("45.0"),
            "an older window of R1 is not shown:\n{text}"
        );
        assert!(
            text.contains("2026-11-24T08:00:05Z  overcrowded BUS-7 on line L2: 96 % (77/80)"),
            "{text}"
        );
        assert_eq!(text, view.clone().render());
    }

    // Proves the sink prints only when a refresh is due, and keeps at most RECENT_ALERTS alerts.
    #[test]
    fn prints_when_due() {
        #[derive(Clone, Default)]
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Shared::default();
        let mut sink = ConsoleSink::new(Box::new(buf.clone()));
        let mut batch = Output::default();
        batch.rows.push(traffic("R9", T0, 20.0));
        now_or_never(sink.write(&batch)).unwrap().unwrap();
        assert!(buf.0.lock().unwrap().is_empty());
        batch.console_due = true;
        now_or_never(sink.write(&batch)).unwrap().unwrap();
        let printed = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(printed.contains("R9"), "{printed}");
        let alerts: Vec<Row> = (0..25)
            .map(|i| Row {
                id: format!("a{i}"),
                body: RowBody::TransportAlerts(TransportAlert {
                    vehicle_id: format!("BUS-{i}"),
                    line_id: "L1".into(),
                    event_time: T0 + i,
                    alert_type: "overcrowded".into(),
                    occupancy_rate: 95.0,
                    passenger_count: 76,
                    capacity: 80,
                }),
                is_final: true,
            })
            .collect();
        let mut view = ConsoleView::new();
        view.update(&alerts);
        assert_eq!(view.alerts.len(), RECENT_ALERTS);
        assert!(view.render().contains("BUS-24") && !view.render().contains("BUS-14 "));
    }
}
