//! `Message::write_json` (the pipeline's hand-written writer) against serde_json over every message
//! the generator makes: the default city, every scenario file's generator, and a city with every
//! fault, hostile kind and scenario knob at once. The writer's contract is serde_json's bytes; its
//! own module tests random messages, these the ones actually sent.

use std::path::{Path, PathBuf};

use generator::{Generator, GeneratorConfig};
use pipeline::model::Message;

/// serde_json's bytes for the message's own struct: the reference.
fn serde_bytes(m: &Message<'_>) -> Vec<u8> {
    let mut bytes = Vec::new();
    m.write_json_serde(&mut bytes)
        .expect("serde_json writes every message");
    bytes
}

/// Compares the two writers on every message record of `config` run with `seed`; returns how
/// many messages were compared. A difference names the scenario, the seed and the record.
fn compare(name: &str, config: &GeneratorConfig, seed: u64) -> usize {
    let g = Generator::new(config, seed)
        .unwrap_or_else(|e| panic!("{name} (seed {seed}): the generator refuses its config: {e}"));
    let mut compared = 0;
    let mut ours = Vec::with_capacity(1024);
    for (i, record) in g.records().enumerate() {
        let Some(m) = record.message() else { continue };
        ours.clear();
        m.write_json(&mut ours);
        let reference = serde_bytes(m);
        assert!(
            ours == reference,
            "{name} (seed {seed}), record {i} ({} {}): write_json differs from serde_json\n  ours:       {}\n  serde_json: {}",
            record.topic,
            record.key,
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&reference),
        );
        compared += 1;
    }
    compared
}

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

/// A scenario file's generator as the simulator builds it (its `[generator]` table, its `start`
/// and `seed`), for one simulated hour whatever the file's duration, to keep the test short.
fn scenario_config(path: &Path) -> (GeneratorConfig, u64) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read scenario {}: {e}", path.display()));
    let table: toml::Table = toml::from_str(&text)
        .unwrap_or_else(|e| panic!("scenario {} is not TOML: {e}", path.display()));
    let generator = table
        .get("generator")
        .cloned()
        .unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
    let mut config: GeneratorConfig = generator.try_into().unwrap_or_else(|e| {
        panic!(
            "scenario {}: [generator] does not parse: {e}",
            path.display()
        )
    });
    if let Some(start) = table.get("start").and_then(|s| s.as_str()) {
        config.start = start.to_owned();
    }
    config.duration_s = 3600;
    let seed = table
        .get("seed")
        .and_then(|s| s.as_integer())
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(7);
    (config, seed)
}

// Proves write_json writes serde_json's bytes for every message of a simulated hour of the
// default city, for two seeds.
#[test]
fn default_city_hour_matches_serde_json() {
    for seed in [7, 42] {
        let compared = compare("default city", &GeneratorConfig::default(), seed);
        // 792 device messages a minute for 60 minutes, plus the random incidents.
        assert!(
            compared >= 792 * 60,
            "seed {seed}: only {compared} messages"
        );
    }
}

// Proves write_json writes serde_json's bytes for every message of the first simulated hour of
// each scenario file's generator (hostile input, faults, congestion, bursts, load x10...).
#[test]
fn every_scenario_file_matches_serde_json() {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(scenarios_dir())
        .expect("the scenarios directory is readable")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 5, "scenario files found: {paths:?}");
    for path in paths {
        let (config, seed) = scenario_config(&path);
        let compared = compare(&path.display().to_string(), &config, seed);
        assert!(compared > 0, "{}: no messages compared", path.display());
    }
}

// Proves write_json writes serde_json's bytes for a city with every fault kind, every hostile
// kind that sends a message (key floods, oversize road names, i64::MAX flows), forced congestion
// and overcrowding, demand, and bursts of every incident type and severity.
#[test]
fn every_fault_hostile_kind_and_knob_matches_serde_json() {
    let config = GeneratorConfig::from_toml_str(
        r#"
        duration_s = 3600
        load_factor = 2
        degraded_fraction = 0.2

        [[demand]]
        zone = "zone-1"
        multiplier = 3.5

        [[congestion]]
        zone = "zone-2"
        from = "00:10"
        to = "00:40"
        speed_kmh = 3.3

        [[overcrowding]]
        line = "line-3"
        occupancy_rate_pct = 97.5

        [[incident_burst]]
        at = "00:05"
        duration_s = 600
        count = 60

        [[incident_burst]]
        at = "00:20"
        count = 4
        severity = "critical"
        kind = "power_outage"
        zone = "zone-4"

        [[fault]]
        kind = "degraded"
        probability = 0.02
        [[fault]]
        kind = "stuck"
        probability = 0.02
        [[fault]]
        kind = "out_of_range"
        probability = 0.05
        [[fault]]
        kind = "malformed_json"
        probability = 0.01
        [[fault]]
        kind = "missing_field"
        probability = 0.01
        [[fault]]
        kind = "duplicate"
        probability = 0.02
        [[fault]]
        kind = "late"
        probability = 0.01
        [[fault]]
        kind = "out_of_order"
        probability = 0.02
        [[fault]]
        kind = "clock_skew"
        probability = 0.02
        skew_ms = -2750

        [[hostile]]
        kind = "key_flood"
        at = "00:10"
        duration_s = 60
        count = 2000
        [[hostile]]
        kind = "oversize"
        at = "00:12"
        count = 3
        [[hostile]]
        kind = "oversize"
        at = "00:13"
        count = 5
        size = 2000
        [[hostile]]
        kind = "deep_nesting"
        at = "00:14"
        count = 5
        [[hostile]]
        kind = "invalid_utf8"
        at = "00:15"
        count = 5
        [[hostile]]
        kind = "huge_number"
        at = "00:16"
        duration_s = 60
        count = 40
        [[hostile]]
        kind = "random_bytes"
        at = "00:17"
        count = 5
        "#,
    )
    .expect("the test's config parses");
    let compared = compare("every fault, hostile kind and knob", &config, 11);
    assert!(compared >= 2 * 792 * 60, "only {compared} messages");
    // The comparison covered what it claims: the hostile messages and every fault label.
    let g = Generator::new(&config, 11).expect("the config is valid");
    let (mut hostile, mut oversize, mut huge) = (0, 0, 0);
    let mut faults = std::collections::BTreeSet::new();
    for record in g.records() {
        faults.extend(record.fault);
        if let Some(Message::Traffic(m)) = record.message()
            && m.sensor_id.starts_with("HX-")
        {
            hostile += 1;
            oversize += usize::from(m.road_name.len() > 1_000);
            huge += usize::from(m.vehicle_flow == i64::MAX);
        }
    }
    assert_eq!(
        (hostile, oversize, huge),
        (2_000 + 3 + 5 + 10, 3 + 5, 10),
        "hostile messages, oversize ones, i64::MAX flows"
    );
    assert_eq!(faults.len(), generator::FaultKind::ALL.len(), "{faults:?}");
}
