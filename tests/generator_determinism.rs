//! The generator is a pure function of (seed, config), and the thesis city offers exactly 792
//! messages in every whole minute.

use std::collections::BTreeMap;

use generator::rng::fnv1a64;
use generator::{FaultKind, FaultSpec, Generator, GeneratorConfig};
use pipeline::model::Topic;
use pipeline::time::MINUTE_MS;
use proptest::prelude::*;

fn jsonl(config: &GeneratorConfig, seed: u64) -> Vec<u8> {
    let g = Generator::new(config, seed).expect("valid config");
    let mut out = Vec::with_capacity(16 << 20);
    for record in g.records() {
        record.write_jsonl(&mut out);
    }
    out
}

fn faulty_config() -> GeneratorConfig {
    let fault = |kind, probability, delay_ms, skew_ms| FaultSpec {
        kind,
        topic: None,
        devices: Vec::new(),
        probability,
        from: None,
        to: None,
        delay_ms,
        skew_ms,
    };
    GeneratorConfig {
        duration_s: 1800,
        fault: vec![
            fault(FaultKind::Duplicate, 0.01, None, None),
            fault(FaultKind::Late, 0.01, Some(150_000), None),
            fault(FaultKind::OutOfOrder, 0.01, None, None),
            fault(FaultKind::MalformedJson, 0.01, None, None),
            fault(FaultKind::MissingField, 0.01, None, None),
            fault(FaultKind::Stuck, 0.01, None, None),
            fault(FaultKind::ClockSkew, 0.01, None, Some(-90_000)),
        ],
        ..GeneratorConfig::default()
    }
}

// Proves `generator --seed 7 --duration 1h --format jsonl` is byte-identical run to run (compared
// as digests and bytes), and that seed 8 gives other data.
#[test]
fn same_seed_same_bytes() {
    let config = GeneratorConfig::default();
    let a = jsonl(&config, 7);
    let b = jsonl(&config, 7);
    assert_eq!(fnv1a64(&a), fnv1a64(&b), "seed 7 twice: digests differ");
    assert_eq!(a, b);
    let c = jsonl(&config, 8);
    assert_ne!(
        fnv1a64(&a),
        fnv1a64(&c),
        "seeds 7 and 8 gave the same output"
    );
    assert!(a.iter().filter(|&&b| b == b'\n').count() >= 47_520);
}

// Proves determinism holds with every delivery fault active (the reorder heap's tie-breaks are
// deterministic too).
#[test]
fn same_seed_same_bytes_with_faults() {
    let config = faulty_config();
    let a = jsonl(&config, 11);
    let b = jsonl(&config, 11);
    assert_eq!(
        fnv1a64(&a),
        fnv1a64(&b),
        "seed 11 with faults twice: digests differ"
    );
    assert_eq!(a, b);
}

/// Counted-topic records per minute since `start`, by produce time and by event time.
fn per_minute(g: &Generator) -> (BTreeMap<i64, u32>, BTreeMap<i64, u32>) {
    let (mut by_produce, mut by_event) = (BTreeMap::new(), BTreeMap::new());
    for r in g.records() {
        if r.topic != Topic::Incidents {
            *by_produce
                .entry((r.produce_time_ms - g.start_ms()).div_euclid(MINUTE_MS))
                .or_insert(0) += 1;
            *by_event
                .entry((r.event_time_ms - g.start_ms()).div_euclid(MINUTE_MS))
                .or_insert(0) += 1;
        }
    }
    (by_produce, by_event)
}

// Proves the thesis load over one hour: every whole minute holds exactly 792 readings of the
// three counted topics (47,520 in the hour), by produce time and by event time.
#[test]
fn every_minute_holds_792() {
    let g = Generator::new(&GeneratorConfig::default(), 7).unwrap();
    assert_eq!(g.offered_messages_per_minute(), 792.0);
    let (by_produce, by_event) = per_minute(&g);
    assert_eq!(by_produce.len(), 60);
    assert!(by_produce.values().all(|&n| n == 792), "{by_produce:?}");
    assert_eq!(by_produce, by_event);
    let incidents = g.records().filter(|r| r.topic == Topic::Incidents).count();
    assert!(
        (15..=60).contains(&incidents),
        "{incidents} incidents in an hour (expect ~36)"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    // Proves 792 per whole minute for any seed and any minute-aligned start within two years.
    #[test]
    fn minutes_hold_792(seed in any::<u64>(), minute in 0i64..(2 * 525_600)) {
        let start = 1_767_225_600_000 + minute * MINUTE_MS; // 2026-01-01T00:00:00Z + minutes
        let config = GeneratorConfig {
            start: pipeline::time::format_rfc3339(start),
            duration_s: 180,
            ..GeneratorConfig::default()
        };
        let g = Generator::new(&config, seed).unwrap();
        let (by_produce, _) = per_minute(&g);
        prop_assert_eq!(by_produce.len(), 3, "seed {} start {}", seed, config.start);
        for (m, n) in by_produce {
            prop_assert_eq!(n, 792, "seed {} start {} minute {}", seed, &config.start, m);
        }
    }
}
