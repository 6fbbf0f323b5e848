//! What the engine emits: result rows of the queries, dead-letter rows, late rows and raw-archive
//! copies. Every result row carries a deterministic id = (query, key, window start or event time)
//! so sinks can upsert, and `final`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::Topic;
use crate::time::{self, Millis, rfc3339_millis};

/// The queries of SPEC §2, plus parking per zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Query {
    /// 1: traffic per (zone, road), 5 min sliding 1 min.
    TrafficAggregations,
    /// 2: per-reading traffic anomalies.
    TrafficAnomalies,
    /// 3: transport per line, 10 min sliding 5 min.
    TransportMetrics,
    /// 4: overcrowded vehicles.
    TransportAlerts,
    /// 5: incidents per (zone, severity), 15 min sliding 5 min.
    IncidentAggregations,
    /// 6: high and critical incidents.
    CriticalIncidents,
    /// 7: city mobility index, tumbling 5 min.
    MobilityIndex,
    /// Parking occupancy per zone, 5 min sliding 1 min.
    ParkingAggregations,
}

impl Query {
    /// All queries, in SPEC order.
    pub const ALL: [Query; 8] = [
        Query::TrafficAggregations,
        Query::TrafficAnomalies,
        Query::TransportMetrics,
        Query::TransportAlerts,
        Query::IncidentAggregations,
        Query::CriticalIncidents,
        Query::MobilityIndex,
        Query::ParkingAggregations,
    ];

    /// The name, also the MongoDB collection and PostgreSQL table.
    pub const fn name(self) -> &'static str {
        match self {
            Query::TrafficAggregations => "traffic_aggregations",
            Query::TrafficAnomalies => "traffic_anomalies",
            Query::TransportMetrics => "transport_metrics",
            Query::TransportAlerts => "transport_alerts",
            Query::IncidentAggregations => "incident_aggregations",
            Query::CriticalIncidents => "critical_incidents",
            Query::MobilityIndex => "mobility_index",
            Query::ParkingAggregations => "parking_aggregations",
        }
    }

    /// Whether the query emits one alert per record (no window).
    pub const fn is_alert(self) -> bool {
        matches!(
            self,
            Query::TrafficAnomalies | Query::TransportAlerts | Query::CriticalIncidents
        )
    }

    /// The topic the query reads.
    pub const fn topic(self) -> Topic {
        match self {
            Query::TrafficAggregations | Query::TrafficAnomalies | Query::MobilityIndex => {
                Topic::Traffic
            }
            Query::TransportMetrics | Query::TransportAlerts => Topic::Transport,
            Query::IncidentAggregations | Query::CriticalIncidents => Topic::Incidents,
            Query::ParkingAggregations => Topic::Parking,
        }
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Query {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Query::ALL
            .into_iter()
            .find(|q| q.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Query::ALL.iter().map(|q| q.name()).collect();
                format!("unknown query `{s}`; expected one of {}", names.join(", "))
            })
    }
}

/// A result row: the envelope every query shares plus the query's own fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Deterministic id: `query|key fields|window_start` (or `|event_time` for alerts).
    pub id: String,
    /// The query and its fields.
    #[serde(flatten)]
    pub body: RowBody,
    /// True once the window can no longer change (alerts are always final).
    #[serde(rename = "final")]
    pub is_final: bool,
}

impl Row {
    /// Which query produced the row.
    pub fn query(&self) -> Query {
        match &self.body {
            RowBody::TrafficAggregations(_) => Query::TrafficAggregations,
            RowBody::TrafficAnomalies(_) => Query::TrafficAnomalies,
            RowBody::TransportMetrics(_) => Query::TransportMetrics,
            RowBody::TransportAlerts(_) => Query::TransportAlerts,
            RowBody::IncidentAggregations(_) => Query::IncidentAggregations,
            RowBody::CriticalIncidents(_) => Query::CriticalIncidents,
            RowBody::MobilityIndex(_) => Query::MobilityIndex,
            RowBody::ParkingAggregations(_) => Query::ParkingAggregations,
        }
    }

    /// The window end of a windowed row, or the event time of an alert.
    pub fn time_ms(&self) -> Millis {
        match &self.body {
            RowBody::TrafficAggregations(r) => r.window_end,
            RowBody::TransportMetrics(r) => r.window_end,
            RowBody::IncidentAggregations(r) => r.window_end,
            RowBody::MobilityIndex(r) => r.window_end,
            RowBody::ParkingAggregations(r) => r.window_end,
            RowBody::TrafficAnomalies(r) => r.event_time,
            RowBody::TransportAlerts(r) => r.event_time,
            RowBody::CriticalIncidents(r) => r.event_time,
        }
    }

    /// The row as one canonical JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        // A Row is plain data with string keys and finite floats: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Builds a row id from its parts.
pub(crate) fn row_id(query: Query, keys: &[&str], at: Millis) -> String {
    let mut id = row_id_keys(query, keys);
    time::push_rfc3339(&mut id, at);
    id
}

/// [`row_id`] of a window row, its start already written as RFC 3339 text.
pub(crate) fn window_row_id(query: Query, keys: &[&str], start: &str) -> String {
    let mut id = row_id_keys(query, keys);
    id.push_str(start);
    id
}

/// A row id up to its time: the query and the keys, each followed by `|`.
fn row_id_keys(query: Query, keys: &[&str]) -> String {
    let mut id = String::with_capacity(64);
    id.push_str(query.name());
    for k in keys {
        id.push('|');
        id.push_str(k);
    }
    id.push('|');
    id
}

/// The fields of each query's rows, named as in SPEC §2.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum RowBody {
    /// Query 1.
    TrafficAggregations(TrafficAggregation),
    /// Query 2.
    TrafficAnomalies(TrafficAnomaly),
    /// Query 3.
    TransportMetrics(TransportMetric),
    /// Query 4.
    TransportAlerts(TransportAlert),
    /// Query 5.
    IncidentAggregations(IncidentAggregation),
    /// Query 6.
    CriticalIncidents(CriticalIncident),
    /// Query 7.
    MobilityIndex(MobilityIndex),
    /// Parking per zone.
    ParkingAggregations(ParkingAggregation),
}

/// Query 1 row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficAggregation {
    /// Zone.
    pub zone_id: String,
    /// Road.
    pub road_id: String,
    /// Window start, RFC 3339 UTC.
    #[serde(with = "rfc3339_millis")]
    pub window_start: Millis,
    /// Window end (exclusive).
    #[serde(with = "rfc3339_millis")]
    pub window_end: Millis,
    /// Mean speed, km/h.
    pub avg_speed: f64,
    /// Lowest speed, km/h.
    pub min_speed: f64,
    /// Highest speed, km/h.
    pub max_speed: f64,
    /// Sum of vehicle_flow.
    pub total_vehicles: i64,
    /// Mean occupancy, percent.
    pub avg_occupancy: f64,
    /// Readings in the window.
    pub sensor_readings: u64,
    /// 1.0 if avg_speed < 20, 0.7 if < 35, 0.4 if < 50, else 0.1.
    pub congestion_score: f64,
}

/// Kinds of traffic anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyType {
    /// speed_kmh below the severe-congestion threshold.
    SevereCongestion,
    /// occupancy_percent above the overcapacity threshold.
    Overcapacity,
    /// data_quality is not good, or a value is impossible.
    DataQualityIssue,
}

impl AnomalyType {
    /// The wire name.
    pub const fn name(self) -> &'static str {
        match self {
            AnomalyType::SevereCongestion => "severe_congestion",
            AnomalyType::Overcapacity => "overcapacity",
            AnomalyType::DataQualityIssue => "data_quality_issue",
        }
    }
}

/// Query 2 row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficAnomaly {
    /// Sensor.
    pub sensor_id: String,
    /// Zone.
    pub zone_id: String,
    /// Road.
    pub road_id: String,
    /// Event time of the reading.
    #[serde(with = "rfc3339_millis")]
    pub event_time: Millis,
    /// What is wrong.
    pub anomaly_type: AnomalyType,
    /// The reading's speed, km/h.
    pub speed_kmh: f64,
    /// The reading's occupancy, percent.
    pub occupancy_percent: f64,
    /// The reading's data quality (`good`/`degraded`).
    pub data_quality: String,
    /// Why, in words (names the impossible value when there is one).
    pub detail: String,
}

/// Query 3 row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransportMetric {
    /// Line.
    pub line_id: String,
    /// Window start.
    #[serde(with = "rfc3339_millis")]
    pub window_start: Millis,
    /// Window end (exclusive).
    #[serde(with = "rfc3339_millis")]
    pub window_end: Millis,
    /// Mean delay, minutes.
    pub avg_delay: f64,
    /// Mean occupancy rate, percent.
    pub avg_occupancy: f64,
    /// Distinct vehicles reporting.
    pub active_vehicles: u64,
    /// Reports in the window.
    pub reports: u64,
    /// Sum of passenger_count.
    pub total_passengers: i64,
    /// 1.0 if avg_delay < 2, 0.7 if < 5, else 0.3.
    pub punctuality_score: f64,
}

/// Query 4 row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransportAlert {
    /// Vehicle.
    pub vehicle_id: String,
    /// Line.
    pub line_id: String,
    /// Event time of the report.
    #[serde(with = "rfc3339_millis")]
    pub event_time: Millis,
    /// Always `overcrowded`.
    pub alert_type: String,
    /// Occupancy rate, percent.
    pub occupancy_rate: f64,
    /// Passengers on board.
    pub passenger_count: i64,
    /// Capacity.
    pub capacity: i64,
}

/// Query 5 row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentAggregation {
    /// Zone.
    pub zone_id: String,
    /// Severity.
    pub severity: String,
    /// Window start.
    #[serde(with = "rfc3339_millis")]
    pub window_start: Millis,
    /// Window end (exclusive).
    #[serde(with = "rfc3339_millis")]
    pub window_end: Millis,
    /// Incidents in the window.
    pub count: u64,
    /// red if critical and count > 0, orange if high and count > 2, else yellow.
    pub alert_level: String,
}

/// Query 6 row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CriticalIncident {
    /// Incident.
    pub incident_id: String,
    /// Zone.
    pub zone_id: String,
    /// Road.
    pub road_id: String,
    /// `high` or `critical`.
    pub severity: String,
    /// Kind of incident.
    pub incident_type: String,
    /// Free text.
    pub description: String,
    /// Event time.
    #[serde(with = "rfc3339_millis")]
    pub event_time: Millis,
    /// Expected duration, minutes.
    pub estimated_duration_min: i64,
    /// Lanes affected.
    pub affected_lanes: i64,
}

/// Query 7 row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MobilityIndex {
    /// Window start.
    #[serde(with = "rfc3339_millis")]
    pub window_start: Millis,
    /// Window end (exclusive).
    #[serde(with = "rfc3339_millis")]
    pub window_end: Millis,
    /// Mean speed over all readings, km/h.
    pub city_avg_speed: f64,
    /// Mean occupancy over all readings, percent.
    pub city_avg_occupancy: f64,
    /// Readings in the window.
    pub total_readings: u64,
    /// (speed/50*0.6 + (100-occupancy)/100*0.4)*100.
    pub mobility_index: f64,
    /// excellent > 80, good > 60, moderate > 40, poor > 20, else critical.
    pub category: String,
}

/// Parking-per-zone row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParkingAggregation {
    /// Zone.
    pub zone_id: String,
    /// Window start.
    #[serde(with = "rfc3339_millis")]
    pub window_start: Millis,
    /// Window end (exclusive).
    #[serde(with = "rfc3339_millis")]
    pub window_end: Millis,
    /// Mean occupancy rate, percent.
    pub avg_occupancy_rate: f64,
    /// Fewest available spaces reported by one car park.
    pub min_available_spaces: i64,
    /// Readings in the window.
    pub readings: u64,
}

/// Why a record was dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// Not JSON, or truncated.
    MalformedJson,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type or an unknown enum value.
    WrongType,
    /// A value outside what is physically possible.
    ImpossibleValue,
    /// The timestamp cannot be read or placed in the configured zone.
    InvalidTimestamp,
    /// The event time is too far ahead of the record's Kafka timestamp.
    FutureTimestamp,
    /// The same (device, timestamp) was already seen inside the watermark horizon.
    Duplicate,
    /// A bound on engine state (open windows, keys, interned strings, devices) was hit.
    StateLimit,
    /// The message is beyond what the pipeline takes: more bytes than `max_message_bytes`, a
    /// string longer than `max_string_bytes` or holding a NUL, nesting deeper than
    /// `max_nesting_depth`.
    InputLimit,
}

impl DeadLetterReason {
    /// All reasons, in a fixed order.
    pub const ALL: [DeadLetterReason; 9] = [
        DeadLetterReason::MalformedJson,
        DeadLetterReason::MissingField,
        DeadLetterReason::WrongType,
        DeadLetterReason::ImpossibleValue,
        DeadLetterReason::InvalidTimestamp,
        DeadLetterReason::FutureTimestamp,
        DeadLetterReason::Duplicate,
        DeadLetterReason::StateLimit,
        DeadLetterReason::InputLimit,
    ];

    /// The wire name.
    pub const fn name(self) -> &'static str {
        match self {
            DeadLetterReason::MalformedJson => "malformed_json",
            DeadLetterReason::MissingField => "missing_field",
            DeadLetterReason::WrongType => "wrong_type",
            DeadLetterReason::ImpossibleValue => "impossible_value",
            DeadLetterReason::InvalidTimestamp => "invalid_timestamp",
            DeadLetterReason::FutureTimestamp => "future_timestamp",
            DeadLetterReason::Duplicate => "duplicate",
            DeadLetterReason::StateLimit => "state_limit",
            DeadLetterReason::InputLimit => "input_limit",
        }
    }
}

/// Where a record came from: its Kafka partition and offset (or a line number in a file).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct SourcePosition {
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
}

/// A record the engine could not accept, with its original bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Topic it came from.
    pub topic: Topic,
    /// Its Kafka key, as text (lossy if not UTF-8).
    pub key: String,
    /// Partition and offset.
    #[serde(flatten)]
    pub position: SourcePosition,
    /// Its Kafka timestamp.
    #[serde(with = "rfc3339_millis")]
    pub kafka_timestamp: Millis,
    /// Why.
    pub reason: DeadLetterReason,
    /// The details, in words.
    pub detail: String,
    /// The original bytes when they are UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// The original bytes in hex when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_hex: Option<String>,
}

/// A valid record that arrived after windows it belongs to were final.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LateRecord {
    /// The windowed query it was late for.
    pub query: Query,
    /// Topic.
    pub topic: Topic,
    /// Entity id.
    pub key: String,
    /// Partition and offset.
    #[serde(flatten)]
    pub position: SourcePosition,
    /// Its event time.
    #[serde(with = "rfc3339_millis")]
    pub event_time: Millis,
    /// The end of the earliest window holding it.
    #[serde(with = "rfc3339_millis")]
    pub window_end: Millis,
    /// The topic's watermark at arrival.
    #[serde(with = "rfc3339_millis")]
    pub watermark: Millis,
    /// The reason, in words.
    pub reason: String,
}

/// An accepted record for the raw archive (PostgreSQL `traffic_data`, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveRecord {
    /// Topic.
    pub topic: Topic,
    /// Where the record was read (its idempotency key in the in-memory store).
    pub position: SourcePosition,
    /// Event time.
    pub event_time: Millis,
    /// The record's JSON bytes.
    pub value: Vec<u8>,
}

/// What one call into the engine produced. The caller drains it.
#[derive(Debug, Default)]
pub struct Output {
    /// Result rows: alerts at once, partial windows at triggers, final windows at the watermark.
    pub rows: Vec<Row>,
    /// Records that could not be accepted.
    pub dead_letters: Vec<DeadLetter>,
    /// Records late for a windowed query.
    pub late: Vec<LateRecord>,
    /// Accepted records for the raw archive (when `archive_raw` is on).
    pub archive: Vec<ArchiveRecord>,
    /// Set when a console refresh is due.
    pub console_due: bool,
}

impl Output {
    /// Whether nothing was produced.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
            && self.dead_letters.is_empty()
            && self.late.is_empty()
            && self.archive.is_empty()
    }

    /// Empties every list, keeping their allocations. Inline: a shell clears after every
    /// record, and the lists are nearly always empty.
    #[inline]
    pub fn clear(&mut self) {
        self.rows.clear();
        self.dead_letters.clear();
        self.late.clear();
        self.archive.clear();
        self.console_due = false;
    }
}
