//! The engine: a synchronous, deterministic state machine with no clock, no I/O and no async.
//!
//! It is fed raw records ([`Engine::ingest`]: topic, key, bytes, Kafka timestamp, source
//! position) and processing-time ticks ([`Engine::tick`]), and appends what they produce to an
//! [`Output`]: alerts at once, partial window rows at each trigger, final window rows as soon as
//! the topic's watermark passes a window's end, dead-letter rows, late rows and raw-archive copies.
//! The Kafka/MongoDB/PostgreSQL shells, `pipeline replay` and the simulator all drive this one
//! engine. Its whole state is serde-serialisable, for checkpoints.
//!
//! Conservation, checked by [`Counters::check_conservation`]: for every windowed query `q` over
//! topic `T`, `records_in(T) = dead_lettered(T) + aggregated(q) + late(q) + over_limit(q)`.

mod census;
mod config;
mod decode;
pub mod forward;
mod intern;
mod queries;
mod rows;
mod window;

use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};

use rustc_hash::{FxHashMap, FxHasher};
use serde::{Deserialize, Serialize};

pub use config::{ConfigError, EngineConfig, WindowSpec};
pub use queries::{
    alert_level, congestion_score, mobility_category, mobility_index, punctuality_score,
};
pub use rows::{
    AnomalyType, ArchiveRecord, CriticalIncident, DeadLetter, DeadLetterReason,
    IncidentAggregation, LateRecord, MobilityIndex, Output, ParkingAggregation, Query, Row,
    RowBody, SourcePosition, TrafficAggregation, TrafficAnomaly, TransportAlert, TransportMetric,
};

use crate::model::{
    DataQuality, Incident, Message, ParkingReading, Severity, Topic, TrafficReading,
    TransportReading,
};
use crate::time::{Millis, format_rfc3339, push_rfc3339};
use census::{Census, NO_NAME};
use intern::{Interner, pack, unpack};
use queries::{
    IncidentAgg, MobilityAgg, ParkingAgg, ParkingInput, TrafficAgg, TrafficInput, TransportAgg,
    TransportInput, mean,
};
use rows::{row_id, window_row_id};
use window::{AddOutcome, Limits, Windowed};

/// One record as it comes off Kafka (or a file, or the simulator's log).
#[derive(Clone, Copy, Debug)]
pub struct RawRecord<'a> {
    /// The topic it was read from.
    pub topic: Topic,
    /// The Kafka key (the entity id).
    pub key: &'a [u8],
    /// The JSON value.
    pub value: &'a [u8],
    /// The Kafka timestamp (produce time), milliseconds since the epoch.
    pub kafka_timestamp_ms: Millis,
    /// Partition and offset.
    pub position: SourcePosition,
}

/// What [`Engine::check`] found of a record, before any state is consulted; stage 1 forwards
/// it in [`forward`]'s form.
#[derive(Clone, Debug, PartialEq)]
pub enum Checked<'a> {
    /// Decoded and valid: the message and its event time.
    Valid(Message<'a>, Millis),
    /// Decoded, with an impossible value: dead-lettered (and, for a traffic reading, reported
    /// as a data-quality anomaly too).
    Impossible(Message<'a>, Millis, DeadLetterReason, String),
    /// Refused before it could be read: over an input limit, not the topic's JSON, or with an
    /// event time that cannot be placed.
    Invalid(DeadLetterReason, String),
}

/// Counts per topic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicCounters {
    /// Records offered.
    pub records_in: u64,
    /// Records accepted (decoded, valid, not duplicates).
    pub accepted: u64,
    /// Records dead-lettered as a whole.
    pub dead_lettered: u64,
    /// Dead-lettered records by reason.
    pub dead_letter_reasons: BTreeMap<DeadLetterReason, u64>,
}

/// Counts per query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryCounters {
    /// Records added to the query's windows.
    pub aggregated: u64,
    /// Records late for the query.
    pub late: u64,
    /// Records refused because a bound on the query's state was hit.
    pub over_limit: u64,
    /// Partial rows emitted.
    pub partial_rows: u64,
    /// Final rows emitted (windowed queries).
    pub final_rows: u64,
    /// Alert rows emitted (per-record queries).
    pub alerts: u64,
}

/// Everything the engine counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Per topic.
    pub topics: BTreeMap<Topic, TopicCounters>,
    /// Per query.
    pub queries: BTreeMap<Query, QueryCounters>,
    /// Distinct vehicles not counted in a transport window because its bound was reached.
    pub distinct_vehicles_over_limit: u64,
    /// Dedup entries evicted because a device's bound was reached.
    pub dedup_evictions: u64,
    /// Forwarded records stage 1 checked with another engine configuration than the one that
    /// applied them, checked again there (scale-out with instances configured differently).
    #[serde(default)]
    pub rechecked: u64,
    /// The most state the engine held at once, to compare with its bounds.
    #[serde(default)]
    pub peaks: StatePeaks,
}

/// High-water marks of the engine's bounded state, each against the bound named beside it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatePeaks {
    /// Interned strings held at once (`max_interned_strings`).
    pub interned_strings: u64,
    /// Distinct keys held at once per windowed query (`max_keys_per_query`).
    pub keys_per_query: BTreeMap<Query, u64>,
    /// Windows open at once per windowed query (`max_open_windows`).
    pub open_windows: BTreeMap<Query, u64>,
    /// Devices tracked at once per topic (`max_devices_per_topic`).
    pub devices_per_topic: BTreeMap<Topic, u64>,
    /// Distinct vehicles held at once by the transport windows (`max_devices_per_topic`).
    pub vehicles: u64,
}

impl Counters {
    /// Checks `records_in = dead_lettered + aggregated + late + over_limit` for every windowed
    /// query, and `records_in = accepted + dead_lettered` for every topic.
    pub fn check_conservation(&self) -> Result<(), String> {
        let zero = TopicCounters::default();
        for (topic, c) in &self.topics {
            if c.records_in != c.accepted + c.dead_lettered {
                return Err(format!(
                    "{topic}: {} in != {} accepted + {} dead-lettered",
                    c.records_in, c.accepted, c.dead_lettered
                ));
            }
            let by_reason: u64 = c.dead_letter_reasons.values().sum();
            if by_reason != c.dead_lettered {
                return Err(format!("{topic}: dead-letter reasons sum to {by_reason}"));
            }
        }
        for q in Query::ALL.into_iter().filter(|q| !q.is_alert()) {
            let t = self.topics.get(&q.topic()).unwrap_or(&zero);
            let qc = self.queries.get(&q).cloned().unwrap_or_default();
            let accounted = t.dead_lettered + qc.aggregated + qc.late + qc.over_limit;
            if t.records_in != accounted {
                return Err(format!(
                    "{q}: {} records in != {} dead-lettered + {} aggregated + {} late + {} over limit",
                    t.records_in, t.dead_lettered, qc.aggregated, qc.late, qc.over_limit
                ));
            }
        }
        Ok(())
    }
}

/// The engine's counters as arrays indexed by topic, query and reason: bumping one on the hot
/// path is an index, not a map lookup. [`Engine::counters`] turns them into [`Counters`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Tally {
    records_in: [u64; 4],
    accepted: [u64; 4],
    dead: [[u64; DeadLetterReason::ALL.len()]; 4],
    queries: [QueryCounters; Query::ALL.len()],
    distinct_vehicles_over_limit: u64,
    dedup_evictions: u64,
    #[serde(default)]
    rechecked: u64,
    #[serde(default)]
    peak_names: u64,
    #[serde(default)]
    peak_keys: [u64; Query::ALL.len()],
    #[serde(default)]
    peak_windows: [u64; Query::ALL.len()],
    #[serde(default)]
    peak_devices: [u64; 4],
    #[serde(default)]
    peak_vehicles: u64,
}

fn query_index(q: Query) -> usize {
    q as usize
}

fn reason_index(r: DeadLetterReason) -> usize {
    r as usize
}

impl Tally {
    fn query(&mut self, q: Query) -> &mut QueryCounters {
        &mut self.queries[query_index(q)]
    }

    fn peaks(&self) -> StatePeaks {
        let by_query = |a: &[u64; Query::ALL.len()]| {
            Query::ALL
                .into_iter()
                .filter(|q| a[query_index(*q)] > 0)
                .map(|q| (q, a[query_index(q)]))
                .collect()
        };
        StatePeaks {
            interned_strings: self.peak_names,
            keys_per_query: by_query(&self.peak_keys),
            open_windows: by_query(&self.peak_windows),
            devices_per_topic: Topic::ALL
                .into_iter()
                .filter(|t| self.peak_devices[topic_index(*t)] > 0)
                .map(|t| (t, self.peak_devices[topic_index(t)]))
                .collect(),
            vehicles: self.peak_vehicles,
        }
    }

    fn counters(&self) -> Counters {
        let mut c = Counters {
            distinct_vehicles_over_limit: self.distinct_vehicles_over_limit,
            dedup_evictions: self.dedup_evictions,
            rechecked: self.rechecked,
            peaks: self.peaks(),
            ..Counters::default()
        };
        for topic in Topic::ALL {
            let i = topic_index(topic);
            if self.records_in[i] == 0 {
                continue;
            }
            let reasons: BTreeMap<DeadLetterReason, u64> = DeadLetterReason::ALL
                .into_iter()
                .map(|r| (r, self.dead[i][reason_index(r)]))
                .filter(|(_, n)| *n > 0)
                .collect();
            c.topics.insert(
                topic,
                TopicCounters {
                    records_in: self.records_in[i],
                    accepted: self.accepted[i],
                    dead_lettered: reasons.values().sum(),
                    dead_letter_reasons: reasons,
                },
            );
        }
        for q in Query::ALL {
            let qc = &self.queries[query_index(q)];
            if *qc != QueryCounters::default() {
                c.queries.insert(q, qc.clone());
            }
        }
        c
    }
}

/// Per-topic watermark and duplicate detection.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct TopicState {
    /// Highest event time accepted on the topic.
    max_event_time: Option<Millis>,
    /// Recent event times per device (hash of the entity id), sorted, for duplicate detection.
    dedup: FxHashMap<u64, Ring>,
}

/// A device's recent event times, sorted, for duplicate detection; its newest is kept beside
/// them in the map's slot, so an in-order reading (nearly all of them) compares against the
/// slot it looked up and only writes the times (the buffer's line is cold by the device's next
/// reading, and a read of it would wait for memory where a write does not). Serialized as the
/// times alone, the form checkpoints have always had.
#[derive(Clone, Debug)]
struct Ring {
    /// The newest of `times`, or `Millis::MIN` when there is none.
    newest: Millis,
    times: VecDeque<Millis>,
}

impl Default for Ring {
    fn default() -> Self {
        Ring {
            newest: Millis::MIN,
            times: VecDeque::new(),
        }
    }
}

impl Ring {
    /// Drops the times below `floor`.
    fn expire(&mut self, floor: Millis) {
        while self.times.front().is_some_and(|&f| f < floor) {
            self.times.pop_front();
        }
        if self.times.is_empty() {
            self.newest = Millis::MIN;
        }
    }
}

impl Serialize for Ring {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.times.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Ring {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let times = VecDeque::<Millis>::deserialize(d)?;
        if !times.iter().is_sorted() {
            return Err(serde::de::Error::custom(
                "duplicate-detection times out of order",
            ));
        }
        let newest = times.back().copied().unwrap_or(Millis::MIN);
        Ok(Ring { newest, times })
    }
}

fn topic_index(t: Topic) -> usize {
    match t {
        Topic::Traffic => 0,
        Topic::Transport => 1,
        Topic::Parking => 2,
        Topic::Incidents => 3,
    }
}

/// The slot of a keyed windowed query in [`Engine`]'s key censuses (mobility has one key).
fn census_index(q: Query) -> usize {
    match q {
        Query::TransportMetrics => 1,
        Query::IncidentAggregations => 2,
        Query::ParkingAggregations => 3,
        _ => 0,
    }
}

/// How often (in event time) a topic's duplicate-detection entries past their horizon are
/// swept. Driven by the watermark, so what is held at each record is the same in every run.
const DEDUP_SWEEP_MS: Millis = crate::time::MINUTE_MS;

/// What duplicate detection says about a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// Not seen before; remembered.
    New,
    /// The same device and event time were seen inside the horizon.
    Duplicate,
    /// A device not tracked yet, and `max_devices_per_topic` devices are.
    OverLimit,
}

fn device_hash(id: &str) -> u64 {
    let mut h = FxHasher::default();
    id.hash(&mut h);
    h.finish()
}

/// Most remembered event times per device; older ones are evicted (and counted).
const MAX_DEDUP_PER_DEVICE: usize = 4096;

/// The streaming engine. See the module docs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Engine {
    config: EngineConfig,
    #[serde(skip, default = "utc")]
    zone: chrono_tz::Tz,
    /// [`config_id`] of `config`: what stage 1 stamps on the records it checks.
    #[serde(skip)]
    config_id: u64,
    names: Interner,
    topics: [TopicState; 4],
    traffic: Windowed<TrafficAgg>,
    mobility: Windowed<MobilityAgg>,
    transport: Windowed<TransportAgg>,
    incidents: Windowed<IncidentAgg>,
    parking: Windowed<ParkingAgg>,
    /// Live keys of the windowed queries that have keys, by [`census_index`].
    #[serde(default)]
    keys: [Census; 4],
    /// Live vehicles of the transport windows (their names are in the windows' vehicle sets).
    #[serde(default)]
    vehicles: Census,
    counters: Tally,
    next_trigger_ms: Option<Millis>,
    next_console_ms: Option<Millis>,
}

fn utc() -> chrono_tz::Tz {
    chrono_tz::UTC
}

/// A fingerprint of an engine configuration: the first eight bytes of the SHA-256 of its JSON.
/// Instances of a scale-out deployment with equal configurations have equal ones.
fn config_id(config: &EngineConfig) -> u64 {
    use sha2::Digest;
    // Plain data: serialising cannot fail.
    let json = serde_json::to_vec(config).unwrap_or_default();
    let hash = sha2::Sha256::digest(&json);
    u64::from_le_bytes(hash[..8].try_into().expect("a SHA-256 has 32 bytes"))
}

/// A checkpoint that cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Not a checkpoint of this engine version.
    #[error("checkpoint is not readable: {0}")]
    Format(#[from] serde_json::Error),
    /// The checkpoint's configuration is invalid.
    #[error("checkpoint configuration is invalid: {0}")]
    Config(#[from] ConfigError),
}

/// The interned names a row needs, and where rows go.
struct Emit<'a> {
    names: &'a Interner,
    /// Most distinct vehicles a transport row counts (`max_vehicles_per_window`).
    max_vehicles: usize,
    rows: &'a mut Vec<Row>,
    counters: &'a mut Tally,
    /// The window start of the last row, as its row id writes it.
    start: StartText,
}

/// A window start as RFC 3339 text, kept for the next row: a window's rows are emitted one after
/// another and share it, so it is written once a window rather than once a row.
#[derive(Default)]
struct StartText {
    ms: Option<Millis>,
    text: String,
}

impl StartText {
    fn of(&mut self, ms: Millis) -> &str {
        if self.ms != Some(ms) {
            self.text.clear();
            push_rfc3339(&mut self.text, ms);
            self.ms = Some(ms);
        }
        &self.text
    }
}

impl Emit<'_> {
    fn push(&mut self, query: Query, row: Row) {
        let c = self.counters.query(query);
        if row.is_final {
            c.final_rows += 1;
        } else {
            c.partial_rows += 1;
        }
        self.rows.push(row);
    }

    fn traffic(&mut self, s: Millis, e: Millis, key: u64, a: &TrafficAgg, is_final: bool) {
        let (zone, road) = unpack(key);
        let (zone, road) = (self.names.name(zone), self.names.name(road));
        let avg_speed = mean(a.speed_sum, a.count);
        let row = Row {
            id: window_row_id(Query::TrafficAggregations, &[zone, road], self.start.of(s)),
            body: RowBody::TrafficAggregations(TrafficAggregation {
                zone_id: zone.to_owned(),
                road_id: road.to_owned(),
                window_start: s,
                window_end: e,
                avg_speed,
                min_speed: a.min_speed,
                max_speed: a.max_speed,
                total_vehicles: a.vehicles,
                avg_occupancy: mean(a.occupancy_sum, a.count),
                sensor_readings: a.count,
                congestion_score: congestion_score(avg_speed),
            }),
            is_final,
        };
        self.push(Query::TrafficAggregations, row);
    }

    fn mobility(&mut self, s: Millis, e: Millis, a: &MobilityAgg, is_final: bool) {
        let speed = mean(a.speed_sum, a.count);
        let occupancy = mean(a.occupancy_sum, a.count);
        let index = mobility_index(speed, occupancy);
        let row = Row {
            id: window_row_id(Query::MobilityIndex, &["city"], self.start.of(s)),
            body: RowBody::MobilityIndex(MobilityIndex {
                window_start: s,
                window_end: e,
                city_avg_speed: speed,
                city_avg_occupancy: occupancy,
                total_readings: a.count,
                mobility_index: index,
                category: mobility_category(index).to_owned(),
            }),
            is_final,
        };
        self.push(Query::MobilityIndex, row);
    }

    fn transport(&mut self, s: Millis, e: Millis, key: u64, a: &TransportAgg, is_final: bool) {
        let line = self.names.name(unpack(key).1);
        let vehicles = a.vehicles.len();
        let counted = vehicles.min(self.max_vehicles);
        if is_final {
            self.counters.distinct_vehicles_over_limit += (vehicles - counted) as u64;
        }
        let avg_delay = mean(a.delay_sum, a.count);
        let row = Row {
            id: window_row_id(Query::TransportMetrics, &[line], self.start.of(s)),
            body: RowBody::TransportMetrics(TransportMetric {
                line_id: line.to_owned(),
                window_start: s,
                window_end: e,
                avg_delay,
                avg_occupancy: mean(a.occupancy_sum, a.count),
                active_vehicles: counted as u64,
                reports: a.count,
                total_passengers: a.passengers,
                punctuality_score: punctuality_score(avg_delay),
            }),
            is_final,
        };
        self.push(Query::TransportMetrics, row);
    }

    fn incidents(&mut self, s: Millis, e: Millis, key: u64, a: &IncidentAgg, is_final: bool) {
        let (zone, sev) = unpack(key);
        let zone = self.names.name(zone);
        let severity = Severity::ALL[sev as usize % Severity::ALL.len()];
        let row = Row {
            id: window_row_id(
                Query::IncidentAggregations,
                &[zone, severity.name()],
                self.start.of(s),
            ),
            body: RowBody::IncidentAggregations(IncidentAggregation {
                zone_id: zone.to_owned(),
                severity: severity.name().to_owned(),
                window_start: s,
                window_end: e,
                count: a.count,
                alert_level: alert_level(severity, a.count).to_owned(),
            }),
            is_final,
        };
        self.push(Query::IncidentAggregations, row);
    }

    fn parking(&mut self, s: Millis, e: Millis, key: u64, a: &ParkingAgg, is_final: bool) {
        let zone = self.names.name(unpack(key).1);
        let row = Row {
            id: window_row_id(Query::ParkingAggregations, &[zone], self.start.of(s)),
            body: RowBody::ParkingAggregations(ParkingAggregation {
                zone_id: zone.to_owned(),
                window_start: s,
                window_end: e,
                avg_occupancy_rate: mean(a.occupancy_sum, a.count),
                min_available_spaces: a.min_available,
                readings: a.count,
            }),
            is_final,
        };
        self.push(Query::ParkingAggregations, row);
    }
}

impl Engine {
    /// An engine with no state.
    pub fn new(config: EngineConfig) -> Result<Self, ConfigError> {
        let zone = config.validate()?;
        Ok(Engine {
            traffic: Windowed::new(config.traffic_window),
            mobility: Windowed::new(config.mobility_window),
            transport: Windowed::new(config.transport_window),
            incidents: Windowed::new(config.incident_window),
            parking: Windowed::new(config.parking_window),
            keys: Default::default(),
            vehicles: Census::default(),
            config_id: config_id(&config),
            config,
            zone,
            names: Interner::default(),
            topics: Default::default(),
            counters: Tally::default(),
            next_trigger_ms: None,
            next_console_ms: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Everything counted so far.
    pub fn counters(&self) -> Counters {
        self.counters.counters()
    }

    /// The watermark of a topic, once it has seen a record.
    pub fn watermark(&self, topic: Topic) -> Option<Millis> {
        self.topics[topic_index(topic)]
            .max_event_time
            .map(|m| m.saturating_sub(self.config.watermark_delay_ms))
    }

    /// Open windows over all queries.
    pub fn open_windows(&self) -> usize {
        self.traffic.open_windows()
            + self.mobility.open_windows()
            + self.transport.open_windows()
            + self.incidents.open_windows()
            + self.parking.open_windows()
    }

    /// Open windows per windowed query, in [`Query::ALL`] order.
    pub fn open_windows_by_query(&self) -> [(Query, usize); 5] {
        [
            (Query::TrafficAggregations, self.traffic.open_windows()),
            (Query::TransportMetrics, self.transport.open_windows()),
            (Query::IncidentAggregations, self.incidents.open_windows()),
            (Query::MobilityIndex, self.mobility.open_windows()),
            (Query::ParkingAggregations, self.parking.open_windows()),
        ]
    }

    /// Distinct keys held now per keyed windowed query (the census `max_keys_per_query`
    /// bounds), in [`Query::ALL`] order.
    pub fn keys_by_query(&self) -> [(Query, usize); 4] {
        [
            Query::TrafficAggregations,
            Query::TransportMetrics,
            Query::IncidentAggregations,
            Query::ParkingAggregations,
        ]
        .map(|q| (q, self.keys[census_index(q)].len()))
    }

    /// The whole state, for a checkpoint.
    pub fn checkpoint(&self) -> Vec<u8> {
        // Plain data with string or integer map keys: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// An engine restored from [`Engine::checkpoint`] bytes.
    pub fn restore(bytes: &[u8]) -> Result<Self, RestoreError> {
        let mut engine: Engine = serde_json::from_slice(bytes)?;
        engine.zone = engine.config.validate()?;
        engine.config_id = config_id(&engine.config);
        Ok(engine)
    }

    fn limits(&self) -> Limits {
        Limits {
            max_open_windows: self.config.max_open_windows,
            max_keys_per_window: self.config.max_keys_per_window,
        }
    }

    /// Feeds one record. Alerts, dead letters, late rows, archive copies and any windows the
    /// record's watermark made final are appended to `out`.
    pub fn ingest(&mut self, rec: &RawRecord<'_>, out: &mut Output) {
        // `check` then `apply`, fused and written out: the message is matched where it was
        // decoded instead of moved into a `Checked`, and validated where it is used. Callgrind,
        // engine bench: `check` then `apply` here cost 190 instructions a record (3.6 %) over
        // the engine before the split, this about 50 (1 %): LLVM no longer inlines the decoding
        // helpers `check` calls too as it did when `ingest` was their only caller.
        self.counters.records_in[topic_index(rec.topic)] += 1;
        if let Err((reason, detail)) = decode::check_size(rec.value, &self.config) {
            return self.dead_letter(rec, reason, detail, out);
        }
        // Matched where it was decoded: taking the message out of the result copied it (about
        // 30 instructions a record, callgrind).
        let decoded =
            crate::json::decode_in_place(rec.topic, rec.value, self.config.max_nesting_depth);
        let msg = match &decoded {
            Ok(m) => m,
            Err(e) => {
                let (reason, detail) = decode::classify(e);
                return self.dead_letter(rec, reason, detail, out);
            }
        };
        if let Err((reason, detail)) = decode::check_strings(msg, &self.config) {
            return self.dead_letter(rec, reason, detail, out);
        }
        let t = match decode::event_time(msg, self.zone, rec.kafka_timestamp_ms, &self.config) {
            Ok(t) => t,
            Err((reason, detail)) => return self.dead_letter(rec, reason, detail, out),
        };
        match msg {
            Message::Traffic(m) => self.ingest_traffic(rec, m, t, out),
            Message::Transport(m) => self.ingest_transport(rec, m, t, out),
            Message::Parking(m) => self.ingest_parking(rec, m, t, out),
            Message::Incident(m) => self.ingest_incident(rec, m, t, out),
        }
    }

    /// The stateless half of [`Self::ingest`]: the input limits, decoding, the event time and
    /// validation. It reads only the configuration, so it gives the same answer wherever and
    /// in whatever order records are checked: what a stage-1 instance forwards (see
    /// docs/scale-out.md).
    pub fn check<'a>(&self, rec: &RawRecord<'a>) -> Checked<'a> {
        let c = &self.config;
        match self.read(rec) {
            Err((reason, detail)) => Checked::Invalid(reason, detail),
            Ok((msg, t)) => {
                let valid = match &msg {
                    Message::Traffic(m) => decode::validate_traffic(m, c),
                    Message::Transport(m) => decode::validate_transport(m, c),
                    Message::Parking(m) => decode::validate_parking(m, c),
                    Message::Incident(m) => decode::validate_incident(m, c),
                };
                match valid {
                    Ok(()) => Checked::Valid(msg, t),
                    Err((reason, detail)) => Checked::Impossible(msg, t, reason, detail),
                }
            }
        }
    }

    /// The stateful half of [`Self::ingest`]: what [`Self::check`] found of `rec`, applied to
    /// the engine's state (duplicate detection, bounds, windows, watermarks) in arrival order.
    /// `check` then `apply` gives what `ingest` gives.
    pub fn apply(&mut self, rec: &RawRecord<'_>, checked: &Checked<'_>, out: &mut Output) {
        self.counters.records_in[topic_index(rec.topic)] += 1;
        match checked {
            // An impossible value is found again where the message is used (validation is
            // pure, and it keeps `ingest`'s path as it was).
            Checked::Valid(msg, t) | Checked::Impossible(msg, t, ..) => {
                self.apply_read(rec, msg, *t, out)
            }
            Checked::Invalid(reason, detail) => self.dead_letter(rec, *reason, detail.clone(), out),
        }
    }

    /// Stage 1's part: what [`Self::check`] finds of `rec`, as the checked record stage 2
    /// reads with [`Self::ingest_checked`], stamped with this configuration's fingerprint,
    /// appended to `buf`.
    pub fn forward(&self, rec: &RawRecord<'_>, buf: &mut Vec<u8>) {
        forward::encode(rec.value, &self.check(rec), self.config_id, buf);
    }

    /// [`Self::apply`] for a record whose value is a checked record stage 1 forwarded
    /// ([`Self::forward`]): the original value and what `check` found of it, read without
    /// decoding JSON again. A value that is not one (never written by stage 1) is dead-lettered
    /// with what could not be read.
    ///
    /// A record stage 1 checked with another configuration than this engine's (an instance
    /// configured differently) is checked again here, from the original value it carries: what
    /// the job computes then follows the configuration of the instance that applies, whichever
    /// instance checked. Such records are counted ([`Counters::rechecked`]).
    pub fn ingest_checked(&mut self, rec: &RawRecord<'_>, out: &mut Output) {
        match forward::decode(rec.value) {
            Ok((id, value, _)) if id != self.config_id => {
                self.recheck(&RawRecord { value, ..*rec }, out)
            }
            Ok((_, value, checked)) => self.apply(&RawRecord { value, ..*rec }, &checked, out),
            Err(e) => {
                self.counters.records_in[topic_index(rec.topic)] += 1;
                let detail = format!("not a checked record of stage 1: {e}");
                self.dead_letter(rec, DeadLetterReason::MalformedJson, detail, out);
            }
        }
    }

    /// [`Self::ingest`] of a record stage 1 checked with another configuration: the path of a
    /// deployment configured unevenly, kept out of stage 2's.
    #[cold]
    #[inline(never)]
    fn recheck(&mut self, rec: &RawRecord<'_>, out: &mut Output) {
        self.counters.rechecked += 1;
        self.ingest(rec, out);
    }

    /// A record's message and event time, within the input limits: [`Self::ingest`]'s first
    /// steps, for [`Self::check`].
    fn read<'a>(&self, rec: &RawRecord<'a>) -> Result<(Message<'a>, Millis), decode::Rejection> {
        let c = &self.config;
        decode::check_size(rec.value, c)?;
        let msg = crate::json::decode_limited(rec.topic, rec.value, c.max_nesting_depth)
            .map_err(|e| decode::classify(&e))?;
        decode::check_strings(&msg, c)?;
        let t = decode::event_time(&msg, self.zone, rec.kafka_timestamp_ms, c)?;
        Ok((msg, t))
    }

    /// A decoded message with its event time, validated and applied: `apply`'s path (`ingest`
    /// matches the message in place; inlining this into both cost more, callgrind).
    #[inline(never)]
    fn apply_read(&mut self, rec: &RawRecord<'_>, msg: &Message<'_>, t: Millis, out: &mut Output) {
        match msg {
            Message::Traffic(m) => self.ingest_traffic(rec, m, t, out),
            Message::Transport(m) => self.ingest_transport(rec, m, t, out),
            Message::Parking(m) => self.ingest_parking(rec, m, t, out),
            Message::Incident(m) => self.ingest_incident(rec, m, t, out),
        }
    }

    fn dead_letter(
        &mut self,
        rec: &RawRecord<'_>,
        reason: DeadLetterReason,
        detail: String,
        out: &mut Output,
    ) {
        self.counters.dead[topic_index(rec.topic)][reason_index(reason)] += 1;
        let keep = self.config.max_message_bytes;
        out.dead_letters
            .push(dead_letter_row(rec, reason, detail, keep));
    }

    /// The id of `name`, interned if new; dead-letters the record when the interner is full.
    /// A name interned for a record that is then refused is freed by [`Self::unused`].
    /// Always inlined: `#[inline]` left a call at each of its call sites (callgrind: 46
    /// instructions a record).
    #[inline(always)]
    fn intern(&mut self, rec: &RawRecord<'_>, name: &str, out: &mut Output) -> Option<u32> {
        // A city's names are nearly all held already: one lookup.
        match self.names.get(name) {
            Some(id) => Some(id),
            None => self.intern_new(rec, name, out),
        }
    }

    /// [`Self::intern`] of a name not held: interned, counted, or the record dead-lettered.
    fn intern_new(&mut self, rec: &RawRecord<'_>, name: &str, out: &mut Output) -> Option<u32> {
        let id = self.names.intern(name, self.config.max_interned_strings);
        match id {
            Some(_) => {
                let held = self.names.len() as u64;
                self.counters.peak_names = self.counters.peak_names.max(held);
            }
            None => {
                let detail = format!(
                    "cannot remember `{name}`: max_interned_strings = {} reached",
                    self.config.max_interned_strings
                );
                self.dead_letter(rec, DeadLetterReason::StateLimit, detail, out);
            }
        }
        id
    }

    /// Frees the names a record interned if no key or vehicle held by a window uses them.
    #[inline]
    fn unused(&mut self, ids: &[u32]) {
        for &id in ids {
            self.names.free_if_unused(id);
        }
    }

    /// Whether a record of `key` may enter query `q`: its key is held already or there is room
    /// for one more. Dead-letters the record (as a whole, before it is accepted) if not.
    #[inline]
    fn admit_key(&mut self, q: Query, key: u64, rec: &RawRecord<'_>, out: &mut Output) -> bool {
        let cap = self.config.max_keys_per_query;
        if self.keys[census_index(q)].admits(key, cap) {
            return true;
        }
        self.refuse_key(q, rec, out);
        false
    }

    /// Dead-letters a record whose key [`Self::admit_key`] refused.
    #[cold]
    #[inline(never)]
    fn refuse_key(&mut self, q: Query, rec: &RawRecord<'_>, out: &mut Output) {
        let cap = self.config.max_keys_per_query;
        let detail = format!(
            "{q}: max_keys_per_query = {cap} reached; a new key is taken once older keys \
             leave the query's windows"
        );
        self.dead_letter(rec, DeadLetterReason::StateLimit, detail, out);
    }

    /// Records that query `q`'s windows hold `key` (with `names`) for a record at `t`, and the
    /// high-water marks of its keys and windows.
    /// Always inlined: each call site names its query, so the matches on it fold away
    /// (callgrind: 32 instructions a record).
    #[inline(always)]
    fn hold_key(&mut self, q: Query, key: u64, t: Millis, names: [u32; 2]) {
        let (spec, open) = match q {
            Query::TransportMetrics => {
                (self.config.transport_window, self.transport.open_windows())
            }
            Query::IncidentAggregations => {
                (self.config.incident_window, self.incidents.open_windows())
            }
            Query::ParkingAggregations => (self.config.parking_window, self.parking.open_windows()),
            _ => (self.config.traffic_window, self.traffic.open_windows()),
        };
        let until = spec.last_start(t) + spec.size_ms;
        let census = &mut self.keys[census_index(q)];
        if let Some(new) = census.record(key, until, names) {
            for id in new.into_iter().filter(|&n| n != NO_NAME) {
                self.names.retain(id);
            }
        }
        let held = self.keys[census_index(q)].len() as u64;
        let i = query_index(q);
        self.counters.peak_keys[i] = self.counters.peak_keys[i].max(held);
        self.counters.peak_windows[i] = self.counters.peak_windows[i].max(open as u64);
    }

    /// Whether (device, t) was already seen inside the topic's horizon; remembers it if not.
    fn seen(&mut self, topic: Topic, device: &str, t: Millis) -> Seen {
        let horizon = self.horizon(topic);
        let cap = self.config.max_devices_per_topic;
        let state = &mut self.topics[topic_index(topic)];
        let floor = state
            .max_event_time
            .map_or(Millis::MIN, |m| m.saturating_sub(horizon));
        let hash = device_hash(device);
        if state.dedup.len() >= cap && !state.dedup.contains_key(&hash) {
            return Seen::OverLimit;
        }
        let ring = state.dedup.entry(hash).or_default();
        // Entries below the floor are left for `sweep_dedup` (once a minute of event time)
        // rather than popped here: the ring's front is then not read at every record, a cache
        // miss of its own, as each device's ring is cold by its next reading. They cannot
        // change the answer: an event time below the floor is new without a search (as it was
        // when they were popped first), and one at or above it only matches its equal.
        let seen = if t < floor {
            Seen::New
        } else if t > ring.newest {
            // Readings of one device nearly always arrive in order: append without searching.
            ring.newest = t;
            ring.times.push_back(t);
            Seen::New
        } else {
            match ring.times.binary_search(&t) {
                Ok(_) => Seen::Duplicate,
                Err(at) => {
                    ring.times.insert(at, t);
                    Seen::New
                }
            }
        };
        if ring.times.len() > MAX_DEDUP_PER_DEVICE {
            // The bound counts live entries only, as when stale ones were popped first.
            ring.expire(floor);
            if ring.times.len() > MAX_DEDUP_PER_DEVICE {
                ring.times.pop_front();
                self.counters.dedup_evictions += 1;
            }
        }
        let i = topic_index(topic);
        let tracked = state.dedup.len() as u64;
        self.counters.peak_devices[i] = self.counters.peak_devices[i].max(tracked);
        seen
    }

    /// Duplicate detection for a record of `device`; dead-letters it (and says so) when it is a
    /// duplicate or a new device over `max_devices_per_topic`. Always inlined, as the topic
    /// is known where it is called (callgrind: 20 instructions a record).
    #[inline(always)]
    fn is_new(
        &mut self,
        topic: Topic,
        device: &str,
        t: Millis,
        rec: &RawRecord<'_>,
        out: &mut Output,
    ) -> bool {
        match self.seen(topic, device, t) {
            Seen::New => true,
            seen => {
                self.not_new(seen, topic, device, t, rec, out);
                false
            }
        }
    }

    /// Dead-letters a record [`Self::is_new`] found a duplicate or over the device bound.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)] // The record and what was found, as is_new has them.
    fn not_new(
        &mut self,
        seen: Seen,
        topic: Topic,
        device: &str,
        t: Millis,
        rec: &RawRecord<'_>,
        out: &mut Output,
    ) {
        let (reason, detail) = match seen {
            Seen::New => return,
            Seen::Duplicate => (
                DeadLetterReason::Duplicate,
                format!("{device} at {} was already received", format_rfc3339(t)),
            ),
            Seen::OverLimit => (
                DeadLetterReason::StateLimit,
                format!(
                    "{topic}: max_devices_per_topic = {} reached; a new device is tracked once \
                     older ones fall out of the duplicate-detection horizon",
                    self.config.max_devices_per_topic
                ),
            ),
        };
        self.dead_letter(rec, reason, detail, out);
    }

    /// How far behind the highest event time a duplicate is still detected: the watermark delay
    /// plus the longest window on the topic (anything older is late for every query anyway).
    fn horizon(&self, topic: Topic) -> Millis {
        let c = &self.config;
        let longest = match topic {
            Topic::Traffic => c.traffic_window.size_ms.max(c.mobility_window.size_ms),
            Topic::Transport => c.transport_window.size_ms,
            Topic::Parking => c.parking_window.size_ms,
            Topic::Incidents => c.incident_window.size_ms,
        };
        c.watermark_delay_ms + longest
    }

    #[inline]
    fn accept(&mut self, topic: Topic, t: Millis, rec: &RawRecord<'_>, out: &mut Output) {
        self.counters.accepted[topic_index(topic)] += 1;
        if self.config.archive_raw {
            out.archive.push(ArchiveRecord {
                topic,
                position: rec.position,
                event_time: t,
                value: rec.value.to_vec(),
            });
        }
    }

    /// Records what happened to a record offered to a windowed query.
    #[inline]
    #[allow(clippy::too_many_arguments)] // One call site per query; a struct would only rename them.
    fn outcome(
        &mut self,
        query: Query,
        outcome: AddOutcome,
        rec: &RawRecord<'_>,
        key: &str,
        t: Millis,
        out: &mut Output,
    ) {
        match outcome {
            AddOutcome::Aggregated => self.counters.query(query).aggregated += 1,
            AddOutcome::Late { window_end } => self.late(query, window_end, rec, key, t, out),
            AddOutcome::OverLimit(bound) => self.over_limit(query, bound, rec, out),
        }
    }

    /// A record late for `query` (its window ending `window_end` already final): counted and
    /// written to the late output, out of line.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)] // The record and the window, as outcome has them.
    fn late(
        &mut self,
        query: Query,
        window_end: Millis,
        rec: &RawRecord<'_>,
        key: &str,
        t: Millis,
        out: &mut Output,
    ) {
        self.counters.query(query).late += 1;
        let watermark = self.watermark(rec.topic).unwrap_or(Millis::MIN);
        out.late.push(LateRecord {
            query,
            topic: rec.topic,
            key: key.to_owned(),
            position: rec.position,
            event_time: t,
            window_end,
            watermark,
            reason: format!(
                "event time {} is behind the watermark {}: the window ending {} is already final",
                format_rfc3339(t),
                format_rfc3339(watermark),
                format_rfc3339(window_end)
            ),
        });
    }

    /// A record over one of `query`'s bounds: counted and dead-lettered, out of line.
    #[cold]
    #[inline(never)]
    fn over_limit(&mut self, query: Query, bound: &str, rec: &RawRecord<'_>, out: &mut Output) {
        self.counters.query(query).over_limit += 1;
        out.dead_letters.push(dead_letter_row(
            rec,
            DeadLetterReason::StateLimit,
            format!("{query}: {bound} reached; the record was not aggregated"),
            self.config.max_message_bytes,
        ));
    }

    /// Advances a topic's watermark to the highest event time minus the delay, emitting the
    /// windows that became final.
    fn advance_watermark(&mut self, topic: Topic, t: Millis, out: &mut Output) {
        let state = &mut self.topics[topic_index(topic)];
        let before = state.max_event_time;
        if before.is_some_and(|m| m >= t) {
            return;
        }
        state.max_event_time = Some(t);
        self.close_windows(topic, t, out);
        let w = t.saturating_sub(self.config.watermark_delay_ms);
        self.expire_keys(topic, w);
        let epoch = |m: Millis| m.div_euclid(DEDUP_SWEEP_MS);
        if before.is_none_or(|b| epoch(b) != epoch(t)) {
            self.sweep_dedup(topic);
        }
    }

    /// Emits and frees the windows of `topic`'s queries that the watermark of a highest event
    /// time `t` made final.
    #[inline]
    fn close_windows(&mut self, topic: Topic, t: Millis, out: &mut Output) {
        let w = t.saturating_sub(self.config.watermark_delay_ms);
        // Every query of the topic sees the watermark move; most records' watermarks reach no
        // window's end, and then no row is set up.
        let due = match topic {
            Topic::Traffic => [
                self.traffic.move_watermark(w),
                self.mobility.move_watermark(w),
            ],
            Topic::Transport => [self.transport.move_watermark(w), false],
            Topic::Parking => [self.parking.move_watermark(w), false],
            Topic::Incidents => [self.incidents.move_watermark(w), false],
        };
        if due == [false, false] {
            return;
        }
        let mut emit = Emit {
            names: &self.names,
            max_vehicles: self.config.max_vehicles_per_window,
            rows: &mut out.rows,
            counters: &mut self.counters,
            start: StartText::default(),
        };
        match topic {
            Topic::Traffic => {
                if due[0] {
                    self.traffic
                        .close(w, |s, e, k, a| emit.traffic(s, e, k, a, true));
                }
                if due[1] {
                    self.mobility
                        .close(w, |s, e, _, a| emit.mobility(s, e, a, true));
                }
            }
            Topic::Transport => self
                .transport
                .close(w, |s, e, k, a| emit.transport(s, e, k, a, true)),
            Topic::Parking => self
                .parking
                .close(w, |s, e, k, a| emit.parking(s, e, k, a, true)),
            Topic::Incidents => self
                .incidents
                .close(w, |s, e, k, a| emit.incidents(s, e, k, a, true)),
        }
    }

    /// Forgets the keys (and vehicles) of `topic`'s queries whose last window the watermark
    /// `w` closed, releasing their names.
    fn expire_keys(&mut self, topic: Topic, w: Millis) {
        let names = &mut self.names;
        let mut release = |id| names.release(id);
        match topic {
            Topic::Traffic => {
                self.keys[census_index(Query::TrafficAggregations)].expire(w, &mut release)
            }
            Topic::Transport => {
                self.keys[census_index(Query::TransportMetrics)].expire(w, &mut release);
                self.vehicles.expire(w, &mut release);
            }
            Topic::Parking => {
                self.keys[census_index(Query::ParkingAggregations)].expire(w, &mut release)
            }
            Topic::Incidents => {
                self.keys[census_index(Query::IncidentAggregations)].expire(w, &mut release)
            }
        }
    }

    /// Records that the transport windows hold `vehicle` for a report at `t`.
    fn hold_vehicle(&mut self, vehicle: u32, t: Millis) {
        let spec = self.config.transport_window;
        let until = spec.last_start(t) + spec.size_ms;
        if self
            .vehicles
            .record(u64::from(vehicle), until, [vehicle, NO_NAME])
            .is_some()
        {
            self.names.retain(vehicle);
        }
        let held = self.vehicles.len() as u64;
        self.counters.peak_vehicles = self.counters.peak_vehicles.max(held);
    }

    fn alert(&mut self, query: Query, row: Row, out: &mut Output) {
        self.counters.query(query).alerts += 1;
        out.rows.push(row);
    }

    fn anomaly(
        &mut self,
        m: &TrafficReading<'_>,
        t: Millis,
        kind: AnomalyType,
        detail: String,
        out: &mut Output,
    ) {
        let row = Row {
            id: row_id(Query::TrafficAnomalies, &[&m.sensor_id, kind.name()], t),
            body: RowBody::TrafficAnomalies(TrafficAnomaly {
                sensor_id: m.sensor_id.to_string(),
                zone_id: m.zone_id.to_string(),
                road_id: m.road_id.to_string(),
                event_time: t,
                anomaly_type: kind,
                speed_kmh: m.speed_kmh,
                occupancy_percent: m.occupancy_percent,
                data_quality: decode::quality_name(m.data_quality).to_owned(),
                detail,
            }),
            is_final: true,
        };
        self.alert(Query::TrafficAnomalies, row, out);
    }

    fn ingest_traffic(
        &mut self,
        rec: &RawRecord<'_>,
        m: &TrafficReading<'_>,
        t: Millis,
        out: &mut Output,
    ) {
        if let Err((reason, detail)) = decode::validate_traffic(m, &self.config) {
            // SPEC §2: an impossible reading is reported as a data-quality anomaly too.
            self.anomaly(m, t, AnomalyType::DataQualityIssue, detail.clone(), out);
            return self.dead_letter(rec, reason, detail, out);
        }
        let Some(zone) = self.intern(rec, &m.zone_id, out) else {
            return;
        };
        let Some(road) = self.intern(rec, &m.road_id, out) else {
            return self.unused(&[zone]);
        };
        self.traffic_reading(rec, m, t, [zone, road], out);
        self.unused(&[zone, road]);
    }

    /// A valid traffic reading whose zone and road are interned.
    fn traffic_reading(
        &mut self,
        rec: &RawRecord<'_>,
        m: &TrafficReading<'_>,
        t: Millis,
        [zone, road]: [u32; 2],
        out: &mut Output,
    ) {
        let key = pack(zone, road);
        if !self.admit_key(Query::TrafficAggregations, key, rec, out)
            || !self.is_new(Topic::Traffic, &m.sensor_id, t, rec, out)
        {
            return;
        }
        self.accept(Topic::Traffic, t, rec, out);
        let c = &self.config;
        if m.speed_kmh < c.severe_congestion_speed_kmh
            || m.occupancy_percent > c.overcapacity_occupancy_pct
            || m.data_quality != DataQuality::Good
        {
            self.traffic_anomalies(m, t, out);
        }
        let input = TrafficInput {
            speed: m.speed_kmh,
            occupancy: m.occupancy_percent,
            vehicles: m.vehicle_flow,
        };
        let limits = self.limits();
        let o = self.traffic.add(t, key, &input, limits);
        if o == AddOutcome::Aggregated {
            self.hold_key(Query::TrafficAggregations, key, t, [zone, road]);
        }
        self.outcome(Query::TrafficAggregations, o, rec, &m.sensor_id, t, out);
        let o = self.mobility.add(t, 0, &input, limits);
        self.outcome(Query::MobilityIndex, o, rec, &m.sensor_id, t, out);
        self.advance_watermark(Topic::Traffic, t, out);
    }

    /// The anomalies a valid traffic reading shows (SPEC §2, query 2), out of line: the rows are
    /// built for a few readings in a hundred, and their code kept beside the common path only
    /// pushed that path's instructions out of the cache (callgrind's cache model).
    #[cold]
    #[inline(never)]
    fn traffic_anomalies(&mut self, m: &TrafficReading<'_>, t: Millis, out: &mut Output) {
        let c = &self.config;
        if m.speed_kmh < c.severe_congestion_speed_kmh {
            let detail = format!(
                "speed {} km/h < {}",
                m.speed_kmh, c.severe_congestion_speed_kmh
            );
            self.anomaly(m, t, AnomalyType::SevereCongestion, detail, out);
        }
        let c = &self.config;
        if m.occupancy_percent > c.overcapacity_occupancy_pct {
            let detail = format!(
                "occupancy {} % > {}",
                m.occupancy_percent, c.overcapacity_occupancy_pct
            );
            self.anomaly(m, t, AnomalyType::Overcapacity, detail, out);
        }
        if m.data_quality != DataQuality::Good {
            let detail = "the sensor reports degraded data quality".to_owned();
            self.anomaly(m, t, AnomalyType::DataQualityIssue, detail, out);
        }
    }

    fn ingest_transport(
        &mut self,
        rec: &RawRecord<'_>,
        m: &TransportReading<'_>,
        t: Millis,
        out: &mut Output,
    ) {
        if let Err((reason, detail)) = decode::validate_transport(m, &self.config) {
            return self.dead_letter(rec, reason, detail, out);
        }
        let Some(line) = self.intern(rec, &m.line_id, out) else {
            return;
        };
        let Some(vehicle) = self.intern(rec, &m.vehicle_id, out) else {
            return self.unused(&[line]);
        };
        self.transport_report(rec, m, t, [line, vehicle], out);
        self.unused(&[line, vehicle]);
    }

    /// A valid transport report whose line and vehicle are interned.
    fn transport_report(
        &mut self,
        rec: &RawRecord<'_>,
        m: &TransportReading<'_>,
        t: Millis,
        [line, vehicle]: [u32; 2],
        out: &mut Output,
    ) {
        let key = pack(0, line);
        if !self.admit_key(Query::TransportMetrics, key, rec, out) {
            return;
        }
        let cap = self.config.max_devices_per_topic;
        if !self.vehicles.admits(u64::from(vehicle), cap) {
            let detail = format!(
                "{}: max_devices_per_topic = {cap} vehicles held by its windows",
                Query::TransportMetrics
            );
            return self.dead_letter(rec, DeadLetterReason::StateLimit, detail, out);
        }
        if !self.is_new(Topic::Transport, &m.vehicle_id, t, rec, out) {
            return;
        }
        self.accept(Topic::Transport, t, rec, out);
        if m.occupancy_rate > self.config.overcrowded_occupancy_rate_pct {
            self.overcrowded(m, t, out);
        }
        let input = TransportInput {
            vehicle,
            delay: m.delay_minutes,
            occupancy: m.occupancy_rate,
            passengers: m.passenger_count,
        };
        let limits = self.limits();
        let o = self.transport.add(t, key, &input, limits);
        if o == AddOutcome::Aggregated {
            self.hold_key(Query::TransportMetrics, key, t, [line, NO_NAME]);
            self.hold_vehicle(vehicle, t);
        }
        self.outcome(Query::TransportMetrics, o, rec, &m.vehicle_id, t, out);
        self.advance_watermark(Topic::Transport, t, out);
    }

    /// Query 4's alert for an overcrowded vehicle, out of line (a few reports in a hundred; see
    /// [`Self::traffic_anomalies`]).
    #[cold]
    #[inline(never)]
    fn overcrowded(&mut self, m: &TransportReading<'_>, t: Millis, out: &mut Output) {
        let row = Row {
            id: row_id(Query::TransportAlerts, &[&m.vehicle_id], t),
            body: RowBody::TransportAlerts(TransportAlert {
                vehicle_id: m.vehicle_id.to_string(),
                line_id: m.line_id.to_string(),
                event_time: t,
                alert_type: "overcrowded".to_owned(),
                occupancy_rate: m.occupancy_rate,
                passenger_count: m.passenger_count,
                capacity: m.capacity,
            }),
            is_final: true,
        };
        self.alert(Query::TransportAlerts, row, out);
    }

    fn ingest_parking(
        &mut self,
        rec: &RawRecord<'_>,
        m: &ParkingReading<'_>,
        t: Millis,
        out: &mut Output,
    ) {
        if let Err((reason, detail)) = decode::validate_parking(m, &self.config) {
            return self.dead_letter(rec, reason, detail, out);
        }
        let Some(zone) = self.intern(rec, &m.zone_id, out) else {
            return;
        };
        self.parking_reading(rec, m, t, zone, out);
        self.unused(&[zone]);
    }

    /// A valid parking reading whose zone is interned.
    fn parking_reading(
        &mut self,
        rec: &RawRecord<'_>,
        m: &ParkingReading<'_>,
        t: Millis,
        zone: u32,
        out: &mut Output,
    ) {
        let key = pack(0, zone);
        if !self.admit_key(Query::ParkingAggregations, key, rec, out)
            || !self.is_new(Topic::Parking, &m.parking_id, t, rec, out)
        {
            return;
        }
        self.accept(Topic::Parking, t, rec, out);
        let input = ParkingInput {
            occupancy: m.occupancy_rate,
            available: m.available_spaces,
        };
        let limits = self.limits();
        let o = self.parking.add(t, key, &input, limits);
        if o == AddOutcome::Aggregated {
            self.hold_key(Query::ParkingAggregations, key, t, [zone, NO_NAME]);
        }
        self.outcome(Query::ParkingAggregations, o, rec, &m.parking_id, t, out);
        self.advance_watermark(Topic::Parking, t, out);
    }

    fn ingest_incident(
        &mut self,
        rec: &RawRecord<'_>,
        m: &Incident<'_>,
        t: Millis,
        out: &mut Output,
    ) {
        if let Err((reason, detail)) = decode::validate_incident(m, &self.config) {
            return self.dead_letter(rec, reason, detail, out);
        }
        let Some(zone) = self.intern(rec, &m.location.zone_id, out) else {
            return;
        };
        self.incident_report(rec, m, t, zone, out);
        self.unused(&[zone]);
    }

    /// A valid incident whose zone is interned.
    fn incident_report(
        &mut self,
        rec: &RawRecord<'_>,
        m: &Incident<'_>,
        t: Millis,
        zone: u32,
        out: &mut Output,
    ) {
        let sev = Severity::ALL
            .iter()
            .position(|s| *s == m.severity)
            .unwrap_or(0) as u32;
        let key = pack(zone, sev);
        if !self.admit_key(Query::IncidentAggregations, key, rec, out)
            || !self.is_new(Topic::Incidents, &m.incident_id, t, rec, out)
        {
            return;
        }
        self.accept(Topic::Incidents, t, rec, out);
        if matches!(m.severity, Severity::High | Severity::Critical) {
            let kind = serde_json::to_value(m.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let row = Row {
                id: row_id(Query::CriticalIncidents, &[&m.incident_id], t),
                body: RowBody::CriticalIncidents(CriticalIncident {
                    incident_id: m.incident_id.to_string(),
                    zone_id: m.location.zone_id.to_string(),
                    road_id: m.location.road_id.to_string(),
                    severity: m.severity.name().to_owned(),
                    incident_type: kind,
                    description: m.description.to_string(),
                    event_time: t,
                    estimated_duration_min: m.estimated_duration_min,
                    affected_lanes: m.affected_lanes,
                }),
                is_final: true,
            };
            self.alert(Query::CriticalIncidents, row, out);
        }
        let limits = self.limits();
        let o = self.incidents.add(t, key, &(), limits);
        if o == AddOutcome::Aggregated {
            self.hold_key(Query::IncidentAggregations, key, t, [zone, NO_NAME]);
        }
        self.outcome(Query::IncidentAggregations, o, rec, &m.incident_id, t, out);
        self.advance_watermark(Topic::Incidents, t, out);
    }

    /// Processing time moved to `now_ms`: runs the update-mode trigger when it is due (every
    /// `trigger_interval_ms`, on multiples of it) and flags a console refresh when that is due.
    #[inline]
    pub fn tick(&mut self, now_ms: Millis, out: &mut Output) {
        // Called with every record: when nothing is due, two comparisons.
        let before = |due: Option<Millis>| due.is_some_and(|due| now_ms < due);
        if before(self.next_trigger_ms) && before(self.next_console_ms) {
            return;
        }
        self.tick_due(now_ms, out);
    }

    /// [`Self::tick`] when the trigger or the console refresh is due (or not yet scheduled).
    fn tick_due(&mut self, now_ms: Millis, out: &mut Output) {
        // Saturating: a shell that derives processing time from record timestamps (the replay
        // does) may hand over any value.
        let next = |now: Millis, every: Millis| {
            (now.div_euclid(every).saturating_add(1)).saturating_mul(every)
        };
        match self.next_trigger_ms {
            Some(due) if now_ms >= due => {
                self.trigger(out);
                self.next_trigger_ms = Some(next(now_ms, self.config.trigger_interval_ms));
            }
            Some(_) => {}
            None => self.next_trigger_ms = Some(next(now_ms, self.config.trigger_interval_ms)),
        }
        match self.next_console_ms {
            Some(due) if now_ms >= due => {
                out.console_due = true;
                self.next_console_ms = Some(next(now_ms, self.config.console_interval_ms));
            }
            Some(_) => {}
            None => self.next_console_ms = Some(next(now_ms, self.config.console_interval_ms)),
        }
    }

    /// The next processing time at which [`Engine::tick`] has work, if it has been ticked once.
    pub fn next_tick_ms(&self) -> Option<Millis> {
        match (self.next_trigger_ms, self.next_console_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Emits every window changed since the last trigger as a partial row.
    pub fn trigger(&mut self, out: &mut Output) {
        let mut emit = Emit {
            names: &self.names,
            max_vehicles: self.config.max_vehicles_per_window,
            rows: &mut out.rows,
            counters: &mut self.counters,
            start: StartText::default(),
        };
        self.traffic
            .drain_dirty(|s, e, k, a| emit.traffic(s, e, k, a, false));
        self.transport
            .drain_dirty(|s, e, k, a| emit.transport(s, e, k, a, false));
        self.incidents
            .drain_dirty(|s, e, k, a| emit.incidents(s, e, k, a, false));
        self.mobility
            .drain_dirty(|s, e, _, a| emit.mobility(s, e, a, false));
        self.parking
            .drain_dirty(|s, e, k, a| emit.parking(s, e, k, a, false));
    }

    /// Forgets a topic's duplicate-detection entries that fell out of their horizon, and the
    /// devices left with none.
    fn sweep_dedup(&mut self, topic: Topic) {
        let horizon = self.horizon(topic);
        let state = &mut self.topics[topic_index(topic)];
        let Some(max) = state.max_event_time else {
            return;
        };
        let floor = max.saturating_sub(horizon);
        state.dedup.retain(|_, ring| {
            ring.expire(floor);
            !ring.times.is_empty()
        });
    }

    /// End of input: every open window becomes final and is emitted.
    pub fn flush(&mut self, out: &mut Output) {
        let mut emit = Emit {
            names: &self.names,
            max_vehicles: self.config.max_vehicles_per_window,
            rows: &mut out.rows,
            counters: &mut self.counters,
            start: StartText::default(),
        };
        self.traffic
            .flush(|s, e, k, a| emit.traffic(s, e, k, a, true));
        self.transport
            .flush(|s, e, k, a| emit.transport(s, e, k, a, true));
        self.incidents
            .flush(|s, e, k, a| emit.incidents(s, e, k, a, true));
        self.mobility
            .flush(|s, e, _, a| emit.mobility(s, e, a, true));
        self.parking
            .flush(|s, e, k, a| emit.parking(s, e, k, a, true));
        let names = &mut self.names;
        for census in self.keys.iter_mut().chain([&mut self.vehicles]) {
            census.clear(|id| names.release(id));
        }
    }

    /// The current (partial) rows of every open window, changing nothing: the console's view.
    pub fn open_rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        let mut scratch = Tally::default();
        let mut emit = Emit {
            names: &self.names,
            max_vehicles: self.config.max_vehicles_per_window,
            rows: &mut rows,
            counters: &mut scratch,
            start: StartText::default(),
        };
        self.traffic
            .for_each_open(|s, e, k, a| emit.traffic(s, e, k, a, false));
        self.transport
            .for_each_open(|s, e, k, a| emit.transport(s, e, k, a, false));
        self.incidents
            .for_each_open(|s, e, k, a| emit.incidents(s, e, k, a, false));
        self.mobility
            .for_each_open(|s, e, _, a| emit.mobility(s, e, a, false));
        self.parking
            .for_each_open(|s, e, k, a| emit.parking(s, e, k, a, false));
        rows
    }
}

/// Longest key and detail a dead letter carries, bytes: both may hold input of any length.
const MAX_DEAD_LETTER_TEXT: usize = 1024;

/// `text` cut to at most `max` bytes (on a character boundary) with every NUL replaced: the
/// databases store dead letters as text, and PostgreSQL refuses a NUL in text.
fn storable(text: &str, max: usize) -> String {
    let text = match text.contains('\0') {
        true => std::borrow::Cow::Owned(text.replace('\0', "\u{fffd}")),
        false => std::borrow::Cow::Borrowed(text),
    };
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A dead letter of `rec` keeping at most `keep` bytes of its value: as text when they are
/// UTF-8 without a NUL, else as hex.
fn dead_letter_row(
    rec: &RawRecord<'_>,
    reason: DeadLetterReason,
    detail: String,
    keep: usize,
) -> DeadLetter {
    let value = &rec.value[..rec.value.len().min(keep)];
    let (raw, raw_hex) = match std::str::from_utf8(value) {
        Ok(s) if !s.contains('\0') => (Some(s.to_owned()), None),
        // A cut inside a character: the text up to it.
        Err(e) if e.error_len().is_none() && value.len() < rec.value.len() => {
            let text = std::str::from_utf8(&value[..e.valid_up_to()]).unwrap_or_default();
            match text.contains('\0') {
                false => (Some(text.to_owned()), None),
                true => (None, Some(hex::encode(value))),
            }
        }
        _ => (None, Some(hex::encode(value))),
    };
    let detail = match detail.len() > MAX_DEAD_LETTER_TEXT || detail.contains('\0') {
        true => storable(&detail, MAX_DEAD_LETTER_TEXT),
        false => detail,
    };
    DeadLetter {
        topic: rec.topic,
        key: storable(&String::from_utf8_lossy(rec.key), MAX_DEAD_LETTER_TEXT),
        position: rec.position,
        kafka_timestamp: rec.kafka_timestamp_ms,
        reason,
        detail,
        raw,
        raw_hex,
    }
}

#[cfg(test)]
mod tests;
