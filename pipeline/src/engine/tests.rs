//! Engine tests: one per query with hand-computed rows, the edges of every threshold, dead
//! letters of every kind, lateness, triggers, checkpoints, and properties over random input.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::time::{MINUTE_MS, SECOND_MS, format_rfc3339, parse};

/// 2026-11-24T08:00:00Z.
const T0: Millis = 1_795_507_200_000;

fn at(offset_ms: Millis) -> String {
    format_rfc3339(T0 + offset_ms)
}

fn traffic(
    sensor: &str,
    zone: &str,
    road: &str,
    t: Millis,
    speed: f64,
    occ: f64,
    flow: i64,
) -> String {
    traffic_q(sensor, zone, road, t, speed, occ, flow, "good")
}

#[allow(clippy::too_many_arguments)] // Mirrors the message's fields.
fn traffic_q(
    sensor: &str,
    zone: &str,
    road: &str,
    t: Millis,
    speed: f64,
    occ: f64,
    flow: i64,
    quality: &str,
) -> String {
    format!(
        r#"{{"sensor_id":"{sensor}","timestamp":"{}","road_id":"{road}","road_name":"Road","zone_id":"{zone}","location":{{"lat":40.4,"lon":-3.7}},"speed_kmh":{speed:?},"vehicle_flow":{flow},"occupancy_percent":{occ:?},"congestion_level":"low","data_quality":"{quality}"}}"#,
        at(t)
    )
}

fn transport(
    vehicle: &str,
    line: &str,
    t: Millis,
    delay: f64,
    occ: f64,
    pax: i64,
    cap: i64,
) -> String {
    format!(
        r#"{{"vehicle_id":"{vehicle}","timestamp":"{}","line_id":"{line}","line_number":"1","current_stop":"A","next_stop":"B","direction":"outbound","location":{{"lat":40.4,"lon":-3.7}},"speed_kmh":20.0,"passenger_count":{pax},"capacity":{cap},"occupancy_rate":{occ:?},"delay_minutes":{delay:?},"status":"on_time"}}"#,
        at(t)
    )
}

fn parking(lot: &str, zone: &str, t: Millis, occ: f64, occupied: i64, total: i64) -> String {
    format!(
        r#"{{"parking_id":"{lot}","timestamp":"{}","name":"Lot","zone_id":"{zone}","type":"garage","location":{{"lat":40.4,"lon":-3.7}},"total_spaces":{total},"occupied_spaces":{occupied},"available_spaces":{},"occupancy_rate":{occ:?},"hourly_rate":2.5,"status":"open"}}"#,
        at(t),
        total - occupied
    )
}

fn incident(id: &str, zone: &str, t: Millis, severity: &str) -> String {
    format!(
        r#"{{"incident_id":"{id}","timestamp":"{}","type":"accident","severity":"{severity}","location":{{"road_id":"road-1","road_name":"Road","zone_id":"{zone}","lat":40.4,"lon":-3.7}},"description":"crash","estimated_duration_min":30,"affected_lanes":1,"status":"active"}}"#,
        at(t)
    )
}

/// Feeds `(topic, json)` records in order, with Kafka timestamps equal to their event time
/// offsets given alongside, then flushes. Returns the output and the engine.
struct Harness {
    engine: Engine,
    out: Output,
    offset: i64,
}

impl Harness {
    fn new() -> Self {
        Self::with(EngineConfig::default())
    }

    fn with(config: EngineConfig) -> Self {
        Harness {
            engine: Engine::new(config).unwrap(),
            out: Output::default(),
            offset: 0,
        }
    }

    fn feed(&mut self, topic: Topic, kafka_ts: Millis, json: &str) {
        let rec = RawRecord {
            topic,
            key: b"k",
            value: json.as_bytes(),
            kafka_timestamp_ms: T0 + kafka_ts,
            position: SourcePosition {
                partition: 0,
                offset: self.offset,
            },
        };
        self.offset += 1;
        self.engine.ingest(&rec, &mut self.out);
    }

    fn flush(&mut self) {
        self.engine.flush(&mut self.out);
    }

    fn finals(&self, query: Query) -> BTreeMap<String, Row> {
        self.out
            .rows
            .iter()
            .filter(|r| r.query() == query && r.is_final)
            .map(|r| (r.id.clone(), r.clone()))
            .collect()
    }

    fn reasons(&self) -> Vec<DeadLetterReason> {
        self.out.dead_letters.iter().map(|d| d.reason).collect()
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

// Proves query 1's fields and window membership, worked by hand:
// A = TS-1 zone-1/road-1 at 08:00:10, 10 km/h, 50 %, 5 vehicles
// B = TS-2 zone-1/road-1 at 08:01:10, 30 km/h, 30 %, 7 vehicles
// A is in the windows starting 07:56..08:00, B in 07:57..08:01 (5 min sliding 1 min).
// [07:57, 08:02) holds both: avg 20 (exactly at the edge, so 0.7), min 10, max 30, 12 vehicles,
// avg occupancy 40, 2 readings. [07:56, 08:01) holds A only: avg 10 -> 1.0.
// [08:01, 08:06) holds B only: avg 30 -> 0.7.
#[test]
fn traffic_aggregations_by_hand() {
    let mut h = Harness::new();
    h.feed(
        Topic::Traffic,
        10_000,
        &traffic("TS-1", "zone-1", "road-1", 10_000, 10.0, 50.0, 5),
    );
    h.feed(
        Topic::Traffic,
        70_000,
        &traffic("TS-2", "zone-1", "road-1", 70_000, 30.0, 30.0, 7),
    );
    h.flush();
    let rows = h.finals(Query::TrafficAggregations);
    assert_eq!(rows.len(), 6, "windows 07:56 .. 08:01");
    let both = &rows[&format!("traffic_aggregations|zone-1|road-1|{}", at(-3 * MINUTE_MS))];
    let RowBody::TrafficAggregations(r) = &both.body else {
        panic!("wrong body")
    };
    assert!(close(r.avg_speed, 20.0));
    assert_eq!(
        (
            r.min_speed,
            r.max_speed,
            r.total_vehicles,
            r.sensor_readings
        ),
        (10.0, 30.0, 12, 2)
    );
    assert!(close(r.avg_occupancy, 40.0));
    assert_eq!(r.congestion_score, 0.7);
    assert_eq!(r.window_end - r.window_start, 5 * MINUTE_MS);
    let only_a = &rows[&format!("traffic_aggregations|zone-1|road-1|{}", at(-4 * MINUTE_MS))];
    let RowBody::TrafficAggregations(a) = &only_a.body else {
        panic!("wrong body")
    };
    assert_eq!((a.sensor_readings, a.congestion_score), (1, 1.0));
    let only_b = &rows[&format!("traffic_aggregations|zone-1|road-1|{}", at(MINUTE_MS))];
    let RowBody::TrafficAggregations(b) = &only_b.body else {
        panic!("wrong body")
    };
    assert_eq!(
        (b.sensor_readings, b.congestion_score, b.avg_speed),
        (1, 0.7, 30.0)
    );
    // Row JSON carries the SPEC field names and RFC 3339 windows.
    let json = both.to_json();
    for field in [
        r#""query":"traffic_aggregations""#,
        r#""window_start":"2026-11-24T07:57:00Z""#,
        r#""window_end":"2026-11-24T08:02:00Z""#,
        r#""final":true"#,
        r#""congestion_score":0.7"#,
    ] {
        assert!(json.contains(field), "{json} lacks {field}");
    }
}

// Proves query 2 at each threshold's exact edge: < 5 km/h is severe (5.0 is not), > 95 % is
// overcapacity (95.0 is not), degraded quality is an issue, and an impossible value is both an
// anomaly and a dead letter, never aggregated.
#[test]
fn traffic_anomalies_edges() {
    let mut h = Harness::new();
    h.feed(
        Topic::Traffic,
        0,
        &traffic("TS-1", "z", "r", 0, 4.99, 10.0, 1),
    );
    h.feed(
        Topic::Traffic,
        0,
        &traffic("TS-2", "z", "r", 0, 5.0, 95.0, 1),
    );
    h.feed(
        Topic::Traffic,
        0,
        &traffic("TS-3", "z", "r", 0, 30.0, 95.01, 1),
    );
    h.feed(
        Topic::Traffic,
        0,
        &traffic_q("TS-4", "z", "r", 0, 30.0, 10.0, 1, "degraded"),
    );
    h.feed(
        Topic::Traffic,
        0,
        &traffic("TS-5", "z", "r", 0, -3.0, 10.0, 1),
    );
    let kinds: Vec<(String, AnomalyType)> = h
        .out
        .rows
        .iter()
        .filter_map(|r| match &r.body {
            RowBody::TrafficAnomalies(a) => Some((a.sensor_id.clone(), a.anomaly_type)),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("TS-1".into(), AnomalyType::SevereCongestion),
            ("TS-3".into(), AnomalyType::Overcapacity),
            ("TS-4".into(), AnomalyType::DataQualityIssue),
            ("TS-5".into(), AnomalyType::DataQualityIssue),
        ]
    );
    assert_eq!(h.reasons(), vec![DeadLetterReason::ImpossibleValue]);
    h.flush();
    let total: u64 = h
        .finals(Query::MobilityIndex)
        .values()
        .map(|r| match &r.body {
            RowBody::MobilityIndex(m) => m.total_readings,
            _ => 0,
        })
        .sum();
    assert_eq!(
        total, 4,
        "the impossible reading is not aggregated; the degraded one is"
    );
}

// Proves query 3 by hand, windows 10 min sliding 5 min:
// BUS-1 at 08:01 (delay 1, 50 %, 30 pax), BUS-1 at 08:03 (delay 3, 70 %, 42 pax),
// BUS-2 at 08:04 (delay 2, 60 %, 36 pax): all in [07:55, 08:05) and [08:00, 08:10).
// avg_delay (1+3+2)/3 = 2.0 -> punctuality 0.7 (edge), avg_occupancy 60, 2 distinct vehicles
// (the original would have said 3), 3 reports, 108 passengers.
#[test]
fn transport_metrics_by_hand() {
    let mut h = Harness::new();
    h.feed(
        Topic::Transport,
        MINUTE_MS,
        &transport("BUS-1", "line-1", MINUTE_MS, 1.0, 50.0, 30, 60),
    );
    h.feed(
        Topic::Transport,
        3 * MINUTE_MS,
        &transport("BUS-1", "line-1", 3 * MINUTE_MS, 3.0, 70.0, 42, 60),
    );
    h.feed(
        Topic::Transport,
        4 * MINUTE_MS,
        &transport("BUS-2", "line-1", 4 * MINUTE_MS, 2.0, 60.0, 36, 60),
    );
    h.flush();
    let rows = h.finals(Query::TransportMetrics);
    assert_eq!(rows.len(), 2);
    for row in rows.values() {
        let RowBody::TransportMetrics(m) = &row.body else {
            panic!("wrong body")
        };
        assert!(close(m.avg_delay, 2.0));
        assert_eq!(m.punctuality_score, 0.7);
        assert!(close(m.avg_occupancy, 60.0));
        assert_eq!(
            (m.active_vehicles, m.reports, m.total_passengers),
            (2, 3, 108)
        );
    }
    assert!(rows.contains_key(&format!("transport_metrics|line-1|{}", at(-5 * MINUTE_MS))));
    assert!(rows.contains_key(&format!("transport_metrics|line-1|{}", at(0))));
}

// Proves `max_vehicles_per_window` caps the vehicles a row counts and the rest are counted as
// over the limit, once per distinct vehicle and final window (not per report): BUS-1..3 of one
// line at 08:01 (BUS-1 and BUS-3 twice) are in two windows, each counting 2 of its 3 vehicles.
#[test]
fn transport_vehicles_over_the_window_bound_are_counted() {
    let mut h = Harness::with(EngineConfig {
        max_vehicles_per_window: 2,
        ..EngineConfig::default()
    });
    for (i, bus) in ["BUS-1", "BUS-2", "BUS-3", "BUS-1", "BUS-3"]
        .into_iter()
        .enumerate()
    {
        let t = MINUTE_MS + i as Millis * SECOND_MS;
        h.feed(
            Topic::Transport,
            t,
            &transport(bus, "line-1", t, 1.0, 50.0, 30, 60),
        );
    }
    h.flush();
    let rows = h.finals(Query::TransportMetrics);
    assert_eq!(rows.len(), 2);
    for row in rows.values() {
        let RowBody::TransportMetrics(m) = &row.body else {
            panic!("wrong body")
        };
        assert_eq!((m.active_vehicles, m.reports), (2, 5));
    }
    assert_eq!(h.engine.counters().distinct_vehicles_over_limit, 2);
}

// Proves query 4 fires strictly above 90 % and never at 90.0.
#[test]
fn transport_alerts_edge() {
    let mut h = Harness::new();
    h.feed(
        Topic::Transport,
        0,
        &transport("BUS-1", "line-1", 0, 0.0, 90.0, 54, 60),
    );
    h.feed(
        Topic::Transport,
        0,
        &transport("BUS-2", "line-1", 0, 0.0, 90.1, 90, 100),
    );
    let alerts: Vec<_> = h
        .out
        .rows
        .iter()
        .filter(|r| r.query() == Query::TransportAlerts)
        .collect();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].id, format!("transport_alerts|BUS-2|{}", at(0)));
    assert!(alerts[0].is_final);
}

// Proves queries 5 and 6: three high incidents in a zone make orange, two make yellow,
// one critical makes red; high and critical raise an immediate alert, medium does not.
#[test]
fn incidents_by_hand() {
    let mut h = Harness::new();
    for (i, t) in [0, MINUTE_MS, 2 * MINUTE_MS].into_iter().enumerate() {
        h.feed(
            Topic::Incidents,
            t,
            &incident(&format!("INC-{i}"), "zone-1", t, "high"),
        );
    }
    h.feed(
        Topic::Incidents,
        0,
        &incident("INC-10", "zone-2", 0, "high"),
    );
    h.feed(
        Topic::Incidents,
        0,
        &incident("INC-11", "zone-2", MINUTE_MS, "high"),
    );
    h.feed(
        Topic::Incidents,
        0,
        &incident("INC-20", "zone-3", 0, "critical"),
    );
    h.feed(
        Topic::Incidents,
        0,
        &incident("INC-30", "zone-3", 0, "medium"),
    );
    let alerts = h
        .out
        .rows
        .iter()
        .filter(|r| r.query() == Query::CriticalIncidents)
        .count();
    assert_eq!(alerts, 6, "5 high + 1 critical, not the medium one");
    h.flush();
    let rows = h.finals(Query::IncidentAggregations);
    // The window [08:00, 08:15) holds every incident above.
    let level = |zone: &str, sev: &str| {
        let RowBody::IncidentAggregations(r) =
            &rows[&format!("incident_aggregations|{zone}|{sev}|{}", at(0))].body
        else {
            panic!("wrong body")
        };
        (r.count, r.alert_level.clone())
    };
    assert_eq!(level("zone-1", "high"), (3, "orange".into()));
    assert_eq!(level("zone-2", "high"), (2, "yellow".into()));
    assert_eq!(level("zone-3", "critical"), (1, "red".into()));
    assert_eq!(level("zone-3", "medium"), (1, "yellow".into()));
}

// Proves query 7 by hand and that empty windows emit nothing: readings at 08:00:00 (40 km/h,
// 20 %) and 08:04:59.999 (20 km/h, 40 %) make [08:00, 08:05): speed 30, occupancy 30,
// index (30/50*0.6 + 70/100*0.4)*100 = 64 -> good. A reading at exactly 08:05:00 starts the next
// window; nothing between 08:10 and 08:15 means no row for it.
#[test]
fn mobility_index_by_hand() {
    let mut h = Harness::new();
    h.feed(
        Topic::Traffic,
        0,
        &traffic("TS-1", "z", "r", 0, 40.0, 20.0, 1),
    );
    h.feed(
        Topic::Traffic,
        0,
        &traffic("TS-2", "z", "r", 5 * MINUTE_MS - 1, 20.0, 40.0, 1),
    );
    h.feed(
        Topic::Traffic,
        5 * MINUTE_MS,
        &traffic("TS-3", "z", "r", 5 * MINUTE_MS, 50.0, 0.0, 1),
    );
    h.feed(
        Topic::Traffic,
        15 * MINUTE_MS,
        &traffic("TS-4", "z", "r", 15 * MINUTE_MS, 50.0, 0.0, 1),
    );
    h.flush();
    let rows = h.finals(Query::MobilityIndex);
    let ids: Vec<_> = rows.keys().cloned().collect();
    assert_eq!(
        ids,
        vec![
            format!("mobility_index|city|{}", at(0)),
            format!("mobility_index|city|{}", at(5 * MINUTE_MS)),
            format!("mobility_index|city|{}", at(15 * MINUTE_MS)),
        ]
    );
    let RowBody::MobilityIndex(m) = &rows[&ids[0]].body else {
        panic!("wrong body")
    };
    assert!(close(m.city_avg_speed, 30.0) && close(m.city_avg_occupancy, 30.0));
    assert!(close(m.mobility_index, 64.0));
    assert_eq!((m.total_readings, m.category.as_str()), (2, "good"));
    let RowBody::MobilityIndex(m) = &rows[&ids[1]].body else {
        panic!("wrong body")
    };
    assert_eq!(
        (m.mobility_index, m.category.as_str()),
        (100.0, "excellent")
    );
}

// Proves parking per zone: 50 % / 10 free and 70 % / 3 free -> avg 60 %, min 3 free, 2 readings.
#[test]
fn parking_by_hand() {
    let mut h = Harness::new();
    h.feed(
        Topic::Parking,
        30_000,
        &parking("PK-1", "zone-1", 30_000, 50.0, 10, 20),
    );
    h.feed(
        Topic::Parking,
        30_000,
        &parking("PK-2", "zone-1", 30_000, 70.0, 7, 10),
    );
    h.flush();
    let rows = h.finals(Query::ParkingAggregations);
    assert_eq!(rows.len(), 5);
    let RowBody::ParkingAggregations(p) =
        &rows[&format!("parking_aggregations|zone-1|{}", at(0))].body
    else {
        panic!("wrong body")
    };
    assert!(close(p.avg_occupancy_rate, 60.0));
    assert_eq!((p.min_available_spaces, p.readings), (3, 2));
}

// Proves every kind of bad input becomes a dead letter with the right reason, carrying the
// original bytes, and nothing panics.
#[test]
fn bad_input_is_dead_lettered() {
    let good = traffic("TS-1", "z", "r", 0, 30.0, 10.0, 1);
    let cases: Vec<(Topic, Vec<u8>, DeadLetterReason)> = vec![
        (
            Topic::Traffic,
            b"{\"sensor_id\":\"TS-1\",".to_vec(),
            DeadLetterReason::MalformedJson,
        ),
        (
            Topic::Traffic,
            b"not json".to_vec(),
            DeadLetterReason::MalformedJson,
        ),
        (
            Topic::Traffic,
            b"".to_vec(),
            DeadLetterReason::MalformedJson,
        ),
        (
            Topic::Traffic,
            vec![0xff, 0xfe, 0x00],
            DeadLetterReason::MalformedJson,
        ),
        (
            Topic::Traffic,
            good.replace(r#""road_id":"r","#, "").into_bytes(),
            DeadLetterReason::MissingField,
        ),
        (
            Topic::Traffic,
            good.replace("\"speed_kmh\":30.0", "\"speed_kmh\":\"fast\"")
                .into_bytes(),
            DeadLetterReason::WrongType,
        ),
        (
            Topic::Traffic,
            good.replace("\"low\"", "\"gridlock\"").into_bytes(),
            DeadLetterReason::WrongType,
        ),
        (
            Topic::Traffic,
            good.replace("\"occupancy_percent\":10.0", "\"occupancy_percent\":101.0")
                .into_bytes(),
            DeadLetterReason::ImpossibleValue,
        ),
        (
            Topic::Traffic,
            good.replace("\"speed_kmh\":30.0", "\"speed_kmh\":400.0")
                .into_bytes(),
            DeadLetterReason::ImpossibleValue,
        ),
        (
            Topic::Traffic,
            good.replace(&at(0), "yesterday").into_bytes(),
            DeadLetterReason::InvalidTimestamp,
        ),
        (
            Topic::Traffic,
            good.replace(&at(0), &at(10 * MINUTE_MS)).into_bytes(),
            DeadLetterReason::FutureTimestamp,
        ),
        (
            Topic::Transport,
            transport("B", "l", 0, 1.0, 0.0, 0, 0).into_bytes(),
            DeadLetterReason::ImpossibleValue,
        ),
        (
            Topic::Transport,
            transport("B", "l", 0, 1.0, 120.0, 10, 60).into_bytes(),
            DeadLetterReason::ImpossibleValue,
        ),
        (
            Topic::Parking,
            parking("P", "z", 0, 50.0, 30, 20).into_bytes(),
            DeadLetterReason::ImpossibleValue,
        ),
        (
            Topic::Incidents,
            incident("I", "z", 0, "apocalyptic").into_bytes(),
            DeadLetterReason::WrongType,
        ),
        (
            Topic::Incidents,
            b"[1,2,3]".to_vec(),
            DeadLetterReason::WrongType,
        ),
    ];
    for (topic, bytes, expected) in cases {
        let mut h = Harness::new();
        let rec = RawRecord {
            topic,
            key: b"k",
            value: &bytes,
            kafka_timestamp_ms: T0,
            position: SourcePosition {
                partition: 3,
                offset: 42,
            },
        };
        h.engine.ingest(&rec, &mut h.out);
        assert_eq!(
            h.reasons(),
            vec![expected],
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        let dl = &h.out.dead_letters[0];
        assert_eq!(
            (dl.position.partition, dl.position.offset, dl.topic),
            (3, 42, topic)
        );
        match (&dl.raw, &dl.raw_hex) {
            (Some(raw), None) => assert_eq!(raw.as_bytes(), &bytes[..]),
            (None, Some(hex)) => assert_eq!(hex::decode(hex).unwrap(), bytes),
            other => panic!("dead letter lost its bytes: {other:?}"),
        }
        h.engine.counters().check_conservation().unwrap();
    }
}

/// Duplicate detection as it was before its stale times were left for the sweep: a device's
/// times below the floor popped before every answer. The reference `Engine::seen` must agree
/// with, answer for answer, live time for live time, eviction for eviction.
#[derive(Default)]
struct DedupModel {
    rings: BTreeMap<String, VecDeque<Millis>>,
    evictions: u64,
}

impl DedupModel {
    fn seen(&mut self, device: &str, t: Millis, floor: Millis) -> bool {
        let ring = self.rings.entry(device.to_owned()).or_default();
        while ring.front().is_some_and(|&f| f < floor) {
            ring.pop_front();
        }
        let duplicate = if ring.back().is_none_or(|&last| t > last) {
            if t >= floor {
                ring.push_back(t);
            }
            false
        } else {
            match ring.binary_search(&t) {
                Ok(_) => true,
                Err(at) => {
                    if t >= floor {
                        ring.insert(at, t);
                    }
                    false
                }
            }
        };
        if ring.len() > MAX_DEDUP_PER_DEVICE {
            ring.pop_front();
            self.evictions += 1;
        }
        duplicate
    }
}

/// The engine's duplicate-detection times of `device` on the traffic topic at or above `floor`.
fn live_times(engine: &Engine, device: &str, floor: Millis) -> Vec<Millis> {
    engine.topics[topic_index(Topic::Traffic)]
        .dedup
        .get(&device_hash(device))
        .map_or(Vec::new(), |r| {
            r.times.iter().copied().filter(|&t| t >= floor).collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    // Proves duplicate detection with stale times left for the sweep answers as popping them
    // first did: the same duplicates, the same live times, whether or when sweeps run, for
    // times in order, out of order, repeated and below the floor.
    #[test]
    fn duplicate_detection_matches_popping_stale_times_first(
        ops in proptest::collection::vec((0u8..3, 0u8..4, 0i64..50, 0i64..3, any::<bool>()), 1..400),
    ) {
        let mut engine = Engine::new(EngineConfig::default()).unwrap();
        let mut model = DedupModel::default();
        let horizon = engine.horizon(Topic::Traffic);
        let step = 10 * SECOND_MS;
        let mut max = T0;
        for (device, advance, back, ahead, sweep) in ops {
            max += i64::from(advance) * step;
            engine.topics[topic_index(Topic::Traffic)].max_event_time = Some(max);
            if sweep {
                engine.sweep_dedup(Topic::Traffic);
            }
            let floor = max - horizon;
            let name = format!("TS-{device}");
            let t = max - back * step + ahead * step;
            let duplicate = engine.seen(Topic::Traffic, &name, t) == Seen::Duplicate;
            prop_assert_eq!(duplicate, model.seen(&name, t, floor), "{} at {}", name, t);
            for (d, ring) in &model.rings {
                let live: Vec<_> = ring.iter().copied().filter(|&x| x >= floor).collect();
                prop_assert_eq!(live_times(&engine, d, floor), live);
            }
        }
        prop_assert_eq!(engine.counters.dedup_evictions, model.evictions);
    }
}

// Proves the per-device bound counts live times only: stale times left for the sweep are
// dropped before a device over the bound loses its oldest live time, so evictions are counted
// as when stale times were popped first.
#[test]
fn the_dedup_bound_counts_live_times_only() {
    let mut engine = Engine::new(EngineConfig::default()).unwrap();
    let mut model = DedupModel::default();
    let horizon = engine.horizon(Topic::Traffic);
    let mut max = T0;
    let mut feed = |engine: &mut Engine, max: Millis, t: Millis| {
        engine.topics[topic_index(Topic::Traffic)].max_event_time = Some(max);
        let duplicate = engine.seen(Topic::Traffic, "TS-1", t) == Seen::Duplicate;
        assert_eq!(duplicate, model.seen("TS-1", t, max - horizon));
        assert_eq!(engine.counters.dedup_evictions, model.evictions, "at {t}");
    };
    // The bound filled with live times, one millisecond apart.
    for i in 0..MAX_DEDUP_PER_DEVICE as i64 {
        feed(&mut engine, max, max - 1_000 + i);
    }
    // The floor passes the first 100 (no sweep): one more time evicts nothing.
    max += horizon - 1_000 + 100;
    feed(&mut engine, max, max);
    assert_eq!(engine.counters.dedup_evictions, 0);
    // All live again and over the bound: every new time evicts the oldest, counted.
    for i in 1..=149 {
        feed(&mut engine, max, max + i);
    }
    assert_eq!(engine.counters.dedup_evictions, 50);
    assert_eq!(
        live_times(&engine, "TS-1", max - horizon).len(),
        MAX_DEDUP_PER_DEVICE
    );
}

// Proves a device's duplicate-detection times keep the checkpoint form they always had (the
// times alone), that loading one restores the newest time beside them, and that times out of
// order are refused rather than loaded.
#[test]
fn dedup_rings_keep_their_checkpoint_form() {
    let times: VecDeque<Millis> = [5, 7, 9].into();
    let ring = Ring {
        newest: 9,
        times: times.clone(),
    };
    let json = serde_json::to_string(&ring).unwrap();
    assert_eq!(json, serde_json::to_string(&times).unwrap());
    let back: Ring = serde_json::from_str(&json).unwrap();
    assert_eq!((back.newest, back.times), (9, times));
    let empty: Ring = serde_json::from_str("[]").unwrap();
    assert_eq!(empty.newest, Millis::MIN);
    assert!(serde_json::from_str::<Ring>("[9,5]").is_err());
}

// Proves a repeated (device, timestamp) is a duplicate dead letter and is not double-counted.
#[test]
fn duplicates_are_dead_lettered() {
    let mut h = Harness::new();
    let r = traffic("TS-1", "z", "r", 0, 30.0, 10.0, 1);
    h.feed(Topic::Traffic, 0, &r);
    h.feed(Topic::Traffic, 1_000, &r);
    h.feed(
        Topic::Traffic,
        2_000,
        &traffic("TS-1", "z", "r", 1, 30.0, 10.0, 1),
    );
    assert_eq!(h.reasons(), vec![DeadLetterReason::Duplicate]);
    h.flush();
    let c = h.engine.counters();
    assert_eq!(c.topics[&Topic::Traffic].accepted, 2);
    c.check_conservation().unwrap();
}

// Proves lateness: after a reading at 08:10 the watermark is 08:09, so a reading at 08:02
// (earliest traffic window [07:58, 08:03), mobility window [08:00, 08:05), both final) is late
// for both windowed queries, written to the late output and counted; one at exactly the
// watermark, 08:09 (earliest window [08:05, 08:10)), is not.
#[test]
fn late_records_are_reported() {
    let mut h = Harness::new();
    h.feed(
        Topic::Traffic,
        0,
        &traffic("TS-1", "z", "r", 0, 30.0, 10.0, 1),
    );
    h.feed(
        Topic::Traffic,
        10 * MINUTE_MS,
        &traffic("TS-1", "z", "r", 10 * MINUTE_MS, 30.0, 10.0, 1),
    );
    let t = 2 * MINUTE_MS;
    h.feed(
        Topic::Traffic,
        10 * MINUTE_MS,
        &traffic("TS-2", "z", "r", t, 30.0, 10.0, 1),
    );
    let t = 9 * MINUTE_MS;
    h.feed(
        Topic::Traffic,
        10 * MINUTE_MS,
        &traffic("TS-2", "z", "r", t, 30.0, 10.0, 1),
    );
    let late: Vec<_> = h.out.late.iter().map(|l| (l.query, l.window_end)).collect();
    assert_eq!(
        late,
        vec![
            (Query::TrafficAggregations, T0 + 3 * MINUTE_MS),
            (Query::MobilityIndex, T0 + 5 * MINUTE_MS),
        ]
    );
    assert_eq!(h.out.late[0].watermark, T0 + 9 * MINUTE_MS);
    let c = h.engine.counters();
    assert_eq!(c.queries[&Query::TrafficAggregations].late, 1);
    assert_eq!(c.queries[&Query::TrafficAggregations].aggregated, 3);
    c.check_conservation().unwrap();
}

// Proves finals are emitted as soon as the watermark passes the window end (not at flush), and
// partial rows only at triggers and only for windows that changed.
#[test]
fn emission_finals_at_watermark_partials_at_trigger() {
    let mut h = Harness::new();
    h.engine.tick(T0, &mut h.out); // arms the trigger for 08:01
    h.feed(
        Topic::Traffic,
        0,
        &traffic("TS-1", "z", "r", 10 * SECOND_MS, 30.0, 10.0, 1),
    );
    assert!(h.out.rows.is_empty());
    h.engine.tick(T0 + 30 * SECOND_MS, &mut h.out);
    assert!(h.out.rows.is_empty(), "no trigger before 08:01");
    assert!(h.out.console_due, "the console refreshes every 30 s");
    h.engine.tick(T0 + MINUTE_MS, &mut h.out);
    let partial = h.out.rows.iter().filter(|r| !r.is_final).count();
    assert_eq!(
        partial,
        5 + 1,
        "5 traffic windows and 1 mobility window changed"
    );
    h.out.clear();
    h.engine.tick(T0 + 2 * MINUTE_MS, &mut h.out);
    assert!(
        h.out.rows.is_empty(),
        "nothing changed since the last trigger"
    );
    // A reading at 08:06:10 moves the watermark to 08:05:10: windows ending by then are final.
    let t = 6 * MINUTE_MS + 10 * SECOND_MS;
    h.feed(
        Topic::Traffic,
        t,
        &traffic("TS-1", "z", "r", t, 30.0, 10.0, 1),
    );
    let finals: Vec<_> = h
        .out
        .rows
        .iter()
        .filter(|r| r.is_final)
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(
        finals,
        vec![
            format!("traffic_aggregations|z|r|{}", at(-4 * MINUTE_MS)),
            format!("traffic_aggregations|z|r|{}", at(-3 * MINUTE_MS)),
            format!("traffic_aggregations|z|r|{}", at(-2 * MINUTE_MS)),
            format!("traffic_aggregations|z|r|{}", at(-MINUTE_MS)),
            format!("traffic_aggregations|z|r|{}", at(0)),
            format!("mobility_index|city|{}", at(0)),
        ]
    );
}

// Proves naive timestamps are read in the configured zone.
#[test]
fn naive_timestamps_use_the_configured_zone() {
    let config = EngineConfig {
        timezone: "Europe/Madrid".into(),
        ..EngineConfig::default()
    };
    let mut h = Harness::with(config);
    let json = traffic("TS-1", "z", "r", 0, 30.0, 10.0, 1).replace(&at(0), "2026-11-24T09:00:00");
    h.feed(Topic::Traffic, 0, &json);
    h.flush();
    assert!(
        h.finals(Query::MobilityIndex)
            .contains_key(&format!("mobility_index|city|{}", at(0)))
    );
    assert!(
        Engine::new(EngineConfig {
            timezone: "Mars/Olympus".into(),
            ..Default::default()
        })
        .is_err()
    );
}

// Proves bounds: over max_keys_per_window a record is refused by the query, dead-lettered as
// state_limit and counted, and conservation still holds.
#[test]
fn state_bounds_are_counted() {
    let config = EngineConfig {
        max_keys_per_window: 1,
        ..EngineConfig::default()
    };
    let mut h = Harness::with(config);
    h.feed(
        Topic::Traffic,
        0,
        &traffic("TS-1", "z", "r", 0, 30.0, 10.0, 1),
    );
    h.feed(
        Topic::Traffic,
        0,
        &traffic("TS-1", "z", "r", 30 * SECOND_MS, 30.0, 10.0, 1),
    );
    assert_eq!(
        h.engine.counters().queries[&Query::TrafficAggregations].over_limit,
        0
    );
    h.feed(
        Topic::Traffic,
        0,
        &traffic("TS-2", "z", "r2", 40 * SECOND_MS, 30.0, 10.0, 1),
    );
    assert_eq!(
        h.engine.counters().queries[&Query::TrafficAggregations].over_limit,
        1
    );
    assert_eq!(h.reasons(), vec![DeadLetterReason::StateLimit]);
    h.engine.counters().check_conservation().unwrap();
}

/// A random but valid stream: sorted by event time, four topics.
fn stream(seed_events: &[(u8, u16, u8, u8)]) -> Vec<(Topic, Millis, String)> {
    let mut recs: Vec<(Topic, Millis, String)> = seed_events
        .iter()
        .enumerate()
        .map(|(i, &(kind, t_s, a, b))| {
            let t = i64::from(t_s) * SECOND_MS + i as i64; // distinct per device
            let dev = format!("D-{i}");
            let zone = format!("zone-{}", a % 3);
            match kind % 4 {
                0 => (
                    Topic::Traffic,
                    t,
                    traffic(
                        &dev,
                        &zone,
                        &format!("road-{}", b % 2),
                        t,
                        f64::from(a) / 3.0 + 5.0,
                        f64::from(b % 100),
                        i64::from(b),
                    ),
                ),
                1 => (
                    Topic::Transport,
                    t,
                    transport(
                        &format!("BUS-{}", b % 5),
                        &format!("line-{}", a % 2),
                        t,
                        f64::from(a) / 10.0,
                        f64::from(b % 100),
                        i64::from(b),
                        100,
                    ),
                ),
                2 => (
                    Topic::Parking,
                    t,
                    parking(&dev, &zone, t, f64::from(b % 100), i64::from(b % 50), 50),
                ),
                _ => (
                    Topic::Incidents,
                    t,
                    incident(
                        &dev,
                        &zone,
                        t,
                        ["low", "medium", "high", "critical"][usize::from(b % 4)],
                    ),
                ),
            }
        })
        .collect();
    recs.sort_by_key(|r| r.1);
    recs
}

fn run(recs: &[(Topic, Millis, String)]) -> (Output, Counters) {
    let mut h = Harness::new();
    for (topic, t, json) in recs {
        h.engine.tick(T0 + t, &mut h.out);
        h.feed(*topic, *t, json);
    }
    h.flush();
    let counters = h.engine.counters().clone();
    (h.out, counters)
}

fn final_rows(out: &Output) -> BTreeMap<String, String> {
    out.rows
        .iter()
        .filter(|r| r.is_final)
        .map(|r| (r.id.clone(), r.to_json()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    // Proves that shuffling records inside blocks shorter than the watermark delay (so no record
    // is ever more than the delay behind the newest) leaves the final rows identical.
    #[test]
    fn shuffle_within_watermark_delay_keeps_final_rows(
        events in proptest::collection::vec((0u8..4, 0u16..3600, any::<u8>(), any::<u8>()), 1..300),
        perm_seed in any::<u64>(),
    ) {
        let sorted = stream(&events);
        let mut shuffled = sorted.clone();
        // Blocks of 30 s (half the 60 s delay), each shuffled by a seeded Fisher-Yates.
        let mut state = perm_seed | 1;
        let mut i = 0;
        while i < shuffled.len() {
            let block = shuffled[i].1 / (30 * SECOND_MS);
            let mut j = i;
            while j < shuffled.len() && shuffled[j].1 / (30 * SECOND_MS) == block { j += 1; }
            for k in (i + 1..j).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                let r = i + (state % (k - i + 1) as u64) as usize;
                shuffled.swap(k, r);
            }
            i = j;
        }
        let (a, ca) = run(&sorted);
        let (b, cb) = run(&shuffled);
        prop_assert!(a.late.is_empty() && b.late.is_empty());
        prop_assert_eq!(final_rows(&a), final_rows(&b));
        prop_assert_eq!(ca.topics, cb.topics);
    }

    // Proves every accepted record lands in exactly size/slide windows of each windowed query,
    // and that conservation holds with late records and garbage mixed in.
    #[test]
    fn records_land_in_size_over_slide_windows_and_conserve(
        events in proptest::collection::vec((0u8..4, 0u16..3600, any::<u8>(), any::<u8>()), 1..300),
        garbage in proptest::collection::vec(any::<Vec<u8>>(), 0..20),
        late_back_s in 0u16..3600,
    ) {
        let mut recs = stream(&events);
        let last = recs.last().map_or(0, |r| r.1);
        // A straggler that may be late, re-using a fresh device id.
        let t = (last - i64::from(late_back_s) * SECOND_MS).max(0);
        recs.push((Topic::Traffic, t, traffic("LATE", "zone-0", "road-0", t, 20.0, 20.0, 1)));
        let (mut out, counters) = run(&recs);
        let mut h = Harness::new();
        for g in &garbage {
            let rec = RawRecord { topic: Topic::Parking, key: b"", value: g, kafka_timestamp_ms: T0, position: SourcePosition::default() };
            h.engine.ingest(&rec, &mut h.out);
        }
        prop_assert_eq!(h.engine.counters().topics.get(&Topic::Parking).map_or(0, |c| c.dead_lettered), garbage.len() as u64);
        counters.check_conservation().map_err(TestCaseError::fail)?;
        let sum = |q: Query| -> u64 {
            out.rows.iter().filter(|r| r.is_final && r.query() == q).map(|r| match &r.body {
                RowBody::TrafficAggregations(x) => x.sensor_readings,
                RowBody::MobilityIndex(x) => x.total_readings,
                RowBody::TransportMetrics(x) => x.reports,
                RowBody::IncidentAggregations(x) => x.count,
                RowBody::ParkingAggregations(x) => x.readings,
                _ => 0,
            }).sum()
        };
        let c = EngineConfig::default();
        for (q, w) in [
            (Query::TrafficAggregations, c.traffic_window),
            (Query::MobilityIndex, c.mobility_window),
            (Query::TransportMetrics, c.transport_window),
            (Query::IncidentAggregations, c.incident_window),
            (Query::ParkingAggregations, c.parking_window),
        ] {
            let aggregated = counters.queries.get(&q).map_or(0, |x| x.aggregated);
            prop_assert_eq!(sum(q), aggregated * w.windows_per_record() as u64, "{}", q);
        }
        out.clear();
    }
}

// Proves a checkpoint taken mid-stream and restored gives the same rows as an uninterrupted run.
#[test]
fn checkpoint_restore_is_seamless() {
    let events: Vec<_> = (0..400u16)
        .map(|i| ((i % 4) as u8, i * 9, (i * 7) as u8, (i * 13) as u8))
        .collect();
    let recs = stream(&events);
    let (whole, _) = run(&recs);
    let mut h = Harness::new();
    let (first, second) = recs.split_at(recs.len() / 2);
    for (topic, t, json) in first {
        h.engine.tick(T0 + t, &mut h.out);
        h.feed(*topic, *t, json);
    }
    let bytes = h.engine.checkpoint();
    h.engine = Engine::restore(&bytes).unwrap();
    for (topic, t, json) in second {
        h.engine.tick(T0 + t, &mut h.out);
        h.feed(*topic, *t, json);
    }
    h.flush();
    assert_eq!(final_rows(&h.out), final_rows(&whole));
    let all = |o: &Output| o.rows.iter().map(Row::to_json).collect::<Vec<_>>();
    assert_eq!(all(&h.out), all(&whole));
    assert!(parse(&at(0)).is_ok());
}

// Proves a checkpoint written before windows were kept as panes (one slot per window and key)
// is refused as unreadable rather than restored into wrong windows. (A checkpoint file of that
// time is refused before this, by its `v2` header.)
#[test]
fn checkpoint_of_hopping_windows_is_refused() {
    let mut h = Harness::new();
    h.feed(
        Topic::Traffic,
        10_000,
        &traffic("TS-1", "zone-1", "road-1", 10_000, 40.0, 30.0, 5),
    );
    let mut state: serde_json::Value =
        serde_json::from_slice(&h.engine.checkpoint()).expect("a checkpoint is JSON");
    // The old shape: `windows` maps each window start to its keys' slots; no panes.
    let traffic = &mut state["traffic"];
    let slots = traffic["panes"]
        .as_object()
        .and_then(|panes| panes.values().next().cloned())
        .expect("the reading's pane");
    let old: serde_json::Map<_, _> = traffic["windows"]
        .as_object()
        .expect("the open windows")
        .keys()
        .map(|start| (start.clone(), slots.clone()))
        .collect();
    traffic["windows"] = serde_json::Value::Object(old);
    let traffic = traffic.as_object_mut().expect("an object");
    traffic.remove("panes");
    traffic.remove("pane_ms");
    let bytes = serde_json::to_vec(&state).expect("JSON");
    match Engine::restore(&bytes) {
        Err(RestoreError::Format(_)) => {}
        other => panic!("an old checkpoint must be refused as unreadable: {other:?}"),
    }
}

mod limits;

// Proves the per-query state gauges the job exports: open windows per query add up to
// `open_windows()`, keys count distinct keys (two sensors on one road and zone are one key), and
// both fall to zero once every window was flushed final.
#[test]
fn open_windows_and_keys_by_query() {
    let mut h = Harness::new();
    for (i, sensor) in ["TS-1", "TS-2"].into_iter().enumerate() {
        let t = 10_000 + i as Millis * 1_000;
        h.feed(
            Topic::Traffic,
            t,
            &traffic(sensor, "zone-1", "road-1", t, 40.0, 30.0, 5),
        );
    }
    h.feed(
        Topic::Parking,
        12_000,
        &parking("P-1", "zone-2", 12_000, 50.0, 50, 100),
    );
    let windows = h.engine.open_windows_by_query();
    let total: usize = windows.iter().map(|(_, n)| n).sum();
    assert_eq!(total, h.engine.open_windows());
    let of = |list: &[(Query, usize)], q: Query| list.iter().find(|(x, _)| *x == q).map(|x| x.1);
    assert_eq!(
        of(&windows[..], Query::TrafficAggregations),
        Some(5),
        "5 min sliding 1 min"
    );
    assert!(of(&windows[..], Query::ParkingAggregations).unwrap_or(0) > 0);
    assert_eq!(of(&windows[..], Query::TransportMetrics), Some(0));
    let keys = h.engine.keys_by_query();
    assert_eq!(of(&keys[..], Query::TrafficAggregations), Some(1));
    assert_eq!(of(&keys[..], Query::ParkingAggregations), Some(1));
    assert_eq!(of(&keys[..], Query::IncidentAggregations), Some(0));
    h.flush();
    assert_eq!(h.engine.open_windows(), 0);
    assert!(h.engine.keys_by_query().iter().all(|(_, n)| *n == 0));
}
