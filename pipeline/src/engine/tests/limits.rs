//! Tests of the engine's bounds on hostile input: message size, string length and NUL, nesting
//! depth, counts, distinct keys per query, devices per topic, and names freed with their keys.
//! Several are regressions the fuzz target (`pipeline/tests/fuzz.rs`) found.

use super::*;

fn names_held(h: &Harness) -> usize {
    h.engine.names.len()
}

fn reasons_of(h: &Harness) -> Vec<(DeadLetterReason, String)> {
    h.out
        .dead_letters
        .iter()
        .map(|d| (d.reason, d.detail.clone()))
        .collect()
}

// Proves a message above max_message_bytes is dead-lettered `input_limit` before it is parsed,
// keeping only the first max_message_bytes of it, and one at the bound is still taken.
#[test]
fn oversize_messages_are_cut_and_dead_lettered() {
    let good = traffic("TS-1", "z", "r", 0, 30.0, 10.0, 1);
    let mut h = Harness::with(EngineConfig {
        max_message_bytes: good.len(),
        ..EngineConfig::default()
    });
    h.feed(Topic::Traffic, 0, &good);
    let big = good.replace("\"Road\"", &format!("\"{}\"", "x".repeat(900_000)));
    h.feed(Topic::Traffic, 0, &big);
    let dead = &h.out.dead_letters;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, DeadLetterReason::InputLimit);
    assert_eq!(dead[0].raw.as_deref(), Some(&big[..good.len()]));
    assert!(dead[0].detail.contains("900"), "{}", dead[0].detail);
    assert_eq!(h.engine.counters().topics[&Topic::Traffic].accepted, 1);
    h.engine.counters().check_conservation().unwrap();
}

// Proves a string longer than max_string_bytes, or holding an escaped NUL, is dead-lettered
// `input_limit` without an anomaly row (whose ids the databases could not store), and that the
// limit counts bytes after unescaping.
#[test]
fn long_strings_and_nul_are_refused() {
    let mut h = Harness::with(EngineConfig {
        max_string_bytes: 8,
        ..EngineConfig::default()
    });
    h.feed(
        Topic::Traffic,
        0,
        &traffic("TS-1", "z", "r", 0, 30.0, 10.0, 1),
    );
    h.feed(
        Topic::Traffic,
        0,
        &traffic("TS-123456789", "z", "r", 0, -5.0, 10.0, 1),
    );
    h.feed(
        Topic::Traffic,
        0,
        &traffic(r"TS-\u0000", "z", "r", 5_000, -5.0, 10.0, 1),
    );
    // Eight escaped characters, eight bytes: within the limit.
    h.feed(
        Topic::Traffic,
        0,
        &traffic(
            r"\u0041\u0042\u0043\u0044\u0045\u0046\u0047\u0048",
            "z",
            "r",
            0,
            30.0,
            10.0,
            1,
        ),
    );
    let got = reasons_of(&h);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|(r, _)| *r == DeadLetterReason::InputLimit));
    assert!(got[0].1.contains("sensor_id") && got[0].1.contains("12 bytes"));
    assert!(got[1].1.contains("NUL"), "{}", got[1].1);
    assert!(h.out.rows.is_empty(), "no anomaly row for refused strings");
    assert_eq!(h.engine.counters().topics[&Topic::Traffic].accepted, 2);
}

// Proves nesting deeper than max_nesting_depth in an unknown field is dead-lettered
// `input_limit`, while the normal depth (the message and its location, 2) is read.
#[test]
fn deep_nesting_is_refused() {
    let mut h = Harness::with(EngineConfig {
        max_nesting_depth: 3,
        max_message_bytes: 1 << 20,
        ..EngineConfig::default()
    });
    let good = traffic("TS-1", "z", "r", 0, 30.0, 10.0, 1);
    let with = |depth: usize| {
        format!(
            "{},\"extra\":{}1{}}}",
            &good[..good.len() - 1],
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    h.feed(Topic::Traffic, 0, &with(2));
    h.feed(Topic::Traffic, 0, &with(3));
    h.feed(Topic::Traffic, 0, &with(100_000));
    let got = reasons_of(&h);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter()
            .all(|(r, d)| *r == DeadLetterReason::InputLimit && d.contains("max_nesting_depth"))
    );
}

// Regression (found by reasoning, then by the fuzz target): counts had no upper bound, so two
// readings with vehicle_flow near i64::MAX overflowed the window sum (a panic in debug builds,
// a wrong total in release). Counts above count_limit are impossible values now.
#[test]
fn huge_counts_are_impossible_values() {
    let mut h = Harness::new();
    for i in 0..2 {
        h.feed(
            Topic::Traffic,
            0,
            &traffic(&format!("TS-{i}"), "z", "r", 0, 30.0, 10.0, i64::MAX),
        );
        h.feed(
            Topic::Transport,
            0,
            &transport(&format!("BUS-{i}"), "line-1", 0, 1.0, 50.0, i64::MAX, 80),
        );
    }
    h.feed(
        Topic::Parking,
        0,
        &parking("PK-1", "z", 0, 10.0, 5, i64::MAX),
    );
    h.flush();
    let got = reasons_of(&h);
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(
        got.iter()
            .all(|(r, d)| *r == DeadLetterReason::ImpossibleValue && d.contains("count_limit"))
    );
    h.engine.counters().check_conservation().unwrap();
}

// Proves the key flood of issue 11 is bounded: with room for 3 keys, two established keys keep
// being taken while only one of ten new keys gets in; the refused records are dead-lettered as
// a whole (no mobility or anomaly share), the names of refused keys are not kept, and once the
// watermark closes the flood key's windows its names are freed and a new key is taken.
#[test]
fn key_flood_keeps_established_keys() {
    let mut h = Harness::with(EngineConfig {
        max_keys_per_query: 3,
        ..EngineConfig::default()
    });
    let normal = |h: &mut Harness, t: Millis| {
        h.feed(
            Topic::Traffic,
            t,
            &traffic("TS-1", "zone-1", "road-1", t, 30.0, 10.0, 1),
        );
        h.feed(
            Topic::Traffic,
            t,
            &traffic("TS-2", "zone-1", "road-2", t, 30.0, 10.0, 1),
        );
    };
    normal(&mut h, 0);
    let held = names_held(&h);
    for i in 0..10 {
        let t = 1_000 + i;
        let zone = format!("flood-zone-{i}");
        let road = format!("flood-road-{i}");
        h.feed(
            Topic::Traffic,
            t,
            &traffic(&format!("HX-{i}"), &zone, &road, t, 2.0, 10.0, 1),
        );
        normal(&mut h, t);
    }
    let c = h.engine.counters();
    let dead = &c.topics[&Topic::Traffic].dead_letter_reasons;
    assert_eq!(dead.get(&DeadLetterReason::StateLimit), Some(&9));
    assert_eq!(c.topics[&Topic::Traffic].accepted, 2 + 1 + 20);
    assert_eq!(c.queries[&Query::MobilityIndex].aggregated, 23);
    assert_eq!(c.peaks.keys_per_query[&Query::TrafficAggregations], 3);
    // One flood key's zone and road are held; the refused ones left nothing behind.
    assert_eq!(names_held(&h), held + 2);
    let anomalies = h
        .out
        .rows
        .iter()
        .filter(|r| r.query() == Query::TrafficAnomalies)
        .count();
    assert_eq!(
        anomalies, 1,
        "only the admitted flood reading's severe congestion"
    );
    // The flood key's last window ends at 08:05; at 08:06:00 the watermark has passed it.
    normal(&mut h, 6 * MINUTE_MS);
    assert_eq!(names_held(&h), held, "the flood key's names were freed");
    h.feed(
        Topic::Traffic,
        6 * MINUTE_MS,
        &traffic(
            "HX-new",
            "late-zone",
            "late-road",
            6 * MINUTE_MS,
            30.0,
            10.0,
            1,
        ),
    );
    let c = h.engine.counters();
    assert_eq!(
        c.topics[&Topic::Traffic].dead_letter_reasons[&DeadLetterReason::StateLimit],
        9,
        "room again"
    );
    h.flush();
    h.engine.counters().check_conservation().unwrap();
    assert_eq!(
        names_held(&h),
        0,
        "every name is freed with the last window"
    );
}

// Proves max_devices_per_topic: a third sensor is refused while two are tracked, and taken
// once the first two fall out of the duplicate-detection horizon.
#[test]
fn devices_per_topic_are_bounded() {
    let mut h = Harness::with(EngineConfig {
        max_devices_per_topic: 2,
        ..EngineConfig::default()
    });
    h.feed(
        Topic::Traffic,
        0,
        &traffic("TS-1", "z", "r", 0, 30.0, 10.0, 1),
    );
    h.feed(
        Topic::Traffic,
        0,
        &traffic("TS-2", "z", "r", 0, 30.0, 10.0, 1),
    );
    h.feed(
        Topic::Traffic,
        0,
        &traffic("TS-3", "z", "r", 1, 30.0, 10.0, 1),
    );
    assert_eq!(
        reasons_of(&h)[0].0,
        DeadLetterReason::StateLimit,
        "{:?}",
        reasons_of(&h)
    );
    // The horizon is the watermark delay plus the longest traffic window: 6 minutes.
    h.feed(
        Topic::Traffic,
        7 * MINUTE_MS,
        &traffic("TS-1", "z", "r", 7 * MINUTE_MS, 30.0, 10.0, 1),
    );
    h.feed(
        Topic::Traffic,
        7 * MINUTE_MS,
        &traffic("TS-3", "z", "r", 7 * MINUTE_MS, 30.0, 10.0, 1),
    );
    assert_eq!(h.out.dead_letters.len(), 1);
    assert_eq!(
        h.engine.counters().peaks.devices_per_topic[&Topic::Traffic],
        2
    );
}

// Proves a dead letter stays storable whatever the input: a NUL in the key or in a valid UTF-8
// value is not written as text (PostgreSQL refuses it), and a long key or detail is cut.
#[test]
fn dead_letters_are_storable() {
    let mut h = Harness::new();
    let key = "k\0".repeat(1000);
    let rec = RawRecord {
        topic: Topic::Traffic,
        key: key.as_bytes(),
        value: b"{\"sensor_id\":\0}",
        kafka_timestamp_ms: T0,
        position: SourcePosition::default(),
    };
    h.engine.ingest(&rec, &mut h.out);
    let d = &h.out.dead_letters[0];
    assert_eq!(d.reason, DeadLetterReason::MalformedJson);
    assert!(d.raw.is_none() && d.raw_hex.is_some());
    assert!(!d.key.contains('\0') && d.key.len() <= 1024);
}

// Proves the defaults are valid, and a max_open_windows below what the windows and watermark
// keep open in normal operation is refused with the number needed.
#[test]
fn open_window_bound_must_cover_normal_operation() {
    assert!(EngineConfig::default().validate().is_ok());
    let err = EngineConfig {
        watermark_delay_ms: 60 * MINUTE_MS,
        ..EngineConfig::default()
    }
    .validate()
    .unwrap_err();
    assert!(
        matches!(err, ConfigError::OpenWindows { needed: 72, .. }),
        "{err}"
    );
}

// Regression (found by the fuzz target): a Kafka timestamp far in the past (a producer may set
// any, i64::MIN included) overflowed the "ms ahead" of the future_timestamp detail.
#[test]
fn extreme_kafka_timestamps_are_dead_lettered() {
    let mut h = Harness::new();
    let value = traffic("TS-1", "z", "r", 0, 30.0, 10.0, 1);
    for ts in [i64::MIN, i64::MIN / 2, -1] {
        let rec = RawRecord {
            topic: Topic::Traffic,
            key: b"k",
            value: value.as_bytes(),
            kafka_timestamp_ms: ts,
            position: SourcePosition::default(),
        };
        h.engine.ingest(&rec, &mut h.out);
    }
    assert_eq!(h.reasons(), vec![DeadLetterReason::FutureTimestamp; 3]);
}

// Regression (found by the fuzz target): the next trigger after a processing time near
// i64::MAX overflowed; a shell deriving processing time from record timestamps may pass any.
#[test]
fn extreme_processing_times_do_not_overflow() {
    let mut h = Harness::new();
    h.engine.tick(i64::MAX - 1, &mut h.out);
    h.engine.tick(i64::MAX, &mut h.out);
    h.engine.tick(i64::MIN, &mut h.out);
    assert_eq!(h.engine.next_tick_ms(), Some(i64::MAX));
}
