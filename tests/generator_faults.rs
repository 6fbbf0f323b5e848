//! Every fault kind appears with its ground-truth label and does what its label says, and
//! enabling faults changes no clean record.

use std::collections::BTreeMap;

use generator::{FaultKind, FaultSpec, Generator, GeneratorConfig, Payload, Record};
use pipeline::model::{DataQuality, Message, Topic};

fn spec(kind: FaultKind, probability: f64) -> FaultSpec {
    FaultSpec {
        kind,
        topic: None,
        devices: Vec::new(),
        probability,
        from: None,
        to: None,
        delay_ms: None,
        skew_ms: None,
    }
}

fn value(r: &Record<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    r.write_value(&mut v);
    v
}

fn config(faults: Vec<FaultSpec>) -> GeneratorConfig {
    GeneratorConfig {
        duration_s: 1200,
        incident_probability: 1.0,
        fault: faults,
        ..GeneratorConfig::default()
    }
}

/// The clean run's records by (key, event time).
fn clean_index(seed: u64) -> BTreeMap<(String, i64), Vec<u8>> {
    let g = Generator::new(&config(Vec::new()), seed).unwrap();
    g.records()
        .map(|r| ((r.key.to_string(), r.event_time_ms), value(&r)))
        .collect()
}

// Proves each kind, enabled alone, labels some records, and each labelled record shows the fault:
// degraded quality, repeated values, impossible values, undecodable bytes, a missing field, an
// identical re-send, a delivery delay, a shifted timestamp.
#[test]
fn each_kind_is_labelled_and_visible() {
    let seed = 13;
    let clean = clean_index(seed);
    for kind in FaultKind::ALL {
        let mut f = spec(kind, 0.05);
        match kind {
            FaultKind::ClockSkew => f.skew_ms = Some(-300_000),
            FaultKind::Late => f.delay_ms = Some(180_000),
            _ => {}
        }
        let g = Generator::new(&config(vec![f]), seed).unwrap();
        let records: Vec<Record<'_>> = g.records().collect();
        let labelled: Vec<&Record<'_>> = records.iter().filter(|r| r.fault == Some(kind)).collect();
        assert!(
            labelled.len() > 50,
            "{kind}: only {} labelled records",
            labelled.len()
        );
        assert!(
            records
                .iter()
                .all(|r| r.fault.is_none() || r.fault == Some(kind))
        );
        // The previous record of each key, for `stuck` and `duplicate`.
        let mut previous: BTreeMap<&str, &Record<'_>> = BTreeMap::new();
        for r in &records {
            if r.fault == Some(kind) {
                check(kind, r, previous.get(r.key.as_ref()).copied(), &clean);
            }
            previous.insert(r.key.as_ref(), r);
        }
    }
}

fn check(
    kind: FaultKind,
    r: &Record<'_>,
    previous: Option<&Record<'_>>,
    clean: &BTreeMap<(String, i64), Vec<u8>>,
) {
    let bytes = value(r);
    let decoded = Message::decode(r.topic, &bytes);
    let clean_bytes = clean.get(&(r.key.to_string(), r.event_time_ms));
    match kind {
        FaultKind::Degraded => {
            assert_eq!(r.topic, Topic::Traffic);
            let Ok(Message::Traffic(m)) = decoded else {
                panic!("degraded must decode")
            };
            assert_eq!(m.data_quality, DataQuality::Degraded);
            assert!(
                m.speed_kmh >= 5.0 && m.occupancy_percent <= 95.0,
                "values stay plausible"
            );
        }
        FaultKind::Stuck => {
            assert_ne!(r.topic, Topic::Incidents);
            let prev = value(previous.expect("a stuck record has a predecessor"));
            // Every value repeats; the timestamp moves on, and a traffic reading's
            // data-quality flag is drawn anew (`degraded_fraction`).
            let strip = |b: &[u8]| {
                let mut v: serde_json::Value = serde_json::from_slice(b).unwrap();
                let fields = v.as_object_mut().unwrap();
                fields.remove("timestamp");
                fields.remove("data_quality");
                v
            };
            assert_eq!(strip(&bytes), strip(&prev));
        }
        FaultKind::OutOfRange => {
            let m = decoded.expect("out-of-range values are still valid JSON");
            let impossible = match &m {
                Message::Traffic(m) => {
                    m.speed_kmh < 0.0 || m.speed_kmh > 300.0 || m.occupancy_percent > 100.0
                }
                Message::Transport(m) => {
                    m.speed_kmh < 0.0 || m.passenger_count < 0 || m.occupancy_rate > 100.0
                }
                Message::Parking(m) => {
                    m.occupied_spaces < 0 || m.available_spaces < 0 || m.occupancy_rate > 100.0
                }
                Message::Incident(m) => m.affected_lanes < 0 || m.estimated_duration_min < 0,
            };
            assert!(impossible, "{m:?}");
        }
        FaultKind::MalformedJson => {
            assert!(matches!(r.payload, Payload::Raw(_)));
            assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_err());
        }
        FaultKind::MissingField => {
            assert!(matches!(r.payload, Payload::Raw(_)));
            let v: serde_json::Value = serde_json::from_slice(&bytes).expect("still JSON");
            let err = Message::decode(r.topic, &bytes).expect_err("a required field is gone");
            assert!(err.to_string().contains("missing field"), "{err}");
            let full: serde_json::Value = serde_json::from_slice(clean_bytes.unwrap()).unwrap();
            assert_eq!(
                v.as_object().unwrap().len() + 1,
                full.as_object().unwrap().len()
            );
        }
        FaultKind::Duplicate => {
            let original = previous.expect("the original precedes its copy");
            assert_eq!(
                value(original),
                bytes,
                "a duplicate re-sends identical bytes"
            );
            assert_eq!(original.fault, None);
            assert_eq!(r.produce_time_ms, original.produce_time_ms + 2_000);
        }
        FaultKind::Late => assert_eq!(r.produce_time_ms - r.event_time_ms, 180_000),
        FaultKind::OutOfOrder => assert_eq!(r.produce_time_ms - r.event_time_ms, 10_000),
        FaultKind::ClockSkew => {
            assert_eq!(r.produce_time_ms - r.event_time_ms, 300_000);
            let m = decoded.unwrap();
            assert_eq!(m.timestamp().utc_millis(), Some(r.event_time_ms));
        }
    }
    // Apart from the faults that change the value, the value is the clean one.
    if matches!(
        kind,
        FaultKind::Duplicate | FaultKind::Late | FaultKind::OutOfOrder
    ) {
        assert_eq!(clean_bytes, Some(&bytes), "{kind} changed the value");
    }
}

// Proves enabling every fault at once leaves each unlabelled record byte-identical to the clean
// run (faults draw from their own streams), and that every clean record is still delivered.
#[test]
fn faults_do_not_change_clean_records() {
    let seed = 17;
    let clean = clean_index(seed);
    let mut faults: Vec<FaultSpec> = FaultKind::ALL.iter().map(|&k| spec(k, 0.02)).collect();
    faults[8].skew_ms = Some(45_000);
    let g = Generator::new(&config(faults), seed).unwrap();
    let mut labelled = 0;
    let mut delivered = 0;
    for r in g.records() {
        match r.fault {
            None | Some(FaultKind::Late | FaultKind::OutOfOrder) => {
                let key = (r.key.to_string(), r.event_time_ms);
                assert_eq!(clean.get(&key), Some(&value(&r)), "{key:?} changed");
                delivered += 1;
            }
            Some(_) => labelled += 1,
        }
    }
    assert!(labelled > 500, "{labelled}");
    // Everything except the records whose value a fault changed (about 6 kinds × 2 %) arrives.
    assert!(
        delivered + labelled >= clean.len(),
        "{delivered} + {labelled} < {}",
        clean.len()
    );
}

// Proves `devices`, `topic` and `from`/`to` narrow a fault to exactly the records they name.
#[test]
fn fault_selection() {
    let mut f = spec(FaultKind::ClockSkew, 1.0);
    f.skew_ms = Some(-7_000);
    f.devices = vec!["TS-004".into(), "BUS-010".into()];
    f.from = Some("2026-11-24T00:05:00Z".into());
    f.to = Some("2026-11-24T00:10:00Z".into());
    let mut late = spec(FaultKind::Late, 1.0);
    late.topic = Some(Topic::Incidents);
    let g = Generator::new(&config(vec![f, late]), 3).unwrap();
    let from = g.start_ms() + 5 * 60_000;
    let mut skewed = 0;
    for r in g.records() {
        match r.fault {
            Some(FaultKind::ClockSkew) => {
                assert!(r.key == "TS-004" || r.key == "BUS-010");
                let clean_t = r.event_time_ms + 7_000;
                assert!((from..from + 5 * 60_000).contains(&clean_t));
                skewed += 1;
            }
            Some(FaultKind::Late) => assert_eq!(r.topic, Topic::Incidents),
            Some(other) => panic!("unexpected {other}"),
            None => assert!(r.topic != Topic::Incidents, "every incident is late"),
        }
    }
    assert_eq!(skewed, 2 * 12 * 5);
}
