//! The generator's knobs: [`GeneratorConfig`], embedded by scenario files as a `[generator]` table.
//!
//! `Default` is the thesis city: 66 devices reporting every 5 s from 2026-11-24T00:00:00Z for an
//! hour, incidents checked every 30 s with probability 0.3, the original's daily profile, and no
//! scenario knobs. Times (`from`, `to`, `at`) are either `"HH:MM"` times of day in UTC, applying
//! every day (a range may wrap midnight), or RFC 3339 instants. Validation happens in
//! [`crate::Generator::new`], which names the offending field.

use pipeline::model::{IncidentType, Severity, Topic};
use serde::{Deserialize, Serialize};

/// The whole generator configuration. Every field has a default (the thesis city).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    /// First instant generated, RFC 3339 (default `2026-11-24T00:00:00Z`, a Tuesday).
    pub start: String,
    /// Length of the generated span, seconds; records cover `[start, start + duration_s)`.
    pub duration_s: u64,
    /// Every device reports once per tick, milliseconds (default 5000, `GENERATION_INTERVAL=5`).
    pub tick_interval_ms: u64,
    /// Multiplies the devices of every kind (10 → 210 sensors, 330 buses, 120 lots).
    pub load_factor: u32,
    /// An incident may start at `start` and at each multiple of this interval after it, ms.
    pub incident_check_interval_ms: u64,
    /// Probability that a check starts an incident (0-1).
    pub incident_probability: f64,
    /// Relative weights of the severities of random incidents.
    pub incident_severity_weights: SeverityWeights,
    /// Fraction of traffic readings marked `data_quality: degraded` at random, values still
    /// plausible (0-1, default 0.05, as the original: `'good' if random.random() > 0.05 else
    /// 'degraded'`). The city's data-quality profile, not a fault: no ground-truth label.
    pub degraded_fraction: f64,
    /// Traffic demand by time of day; the first entry that covers a time wins, 1.0 elsewhere.
    pub daily_profile: Vec<ProfileEntry>,
    /// Extra demand multipliers, by zone and time, applied on top of the daily profile.
    pub demand: Vec<DemandEntry>,
    /// Forced congestion: every traffic reading of a zone in a time range at about a speed.
    pub congestion: Vec<CongestionEntry>,
    /// Bursts of incidents on top of the random ones.
    pub incident_burst: Vec<IncidentBurst>,
    /// Forced bus occupancy on a line in a time range.
    pub overcrowding: Vec<OvercrowdingEntry>,
    /// Injected faults, with their ground-truth labels on the records.
    pub fault: Vec<FaultSpec>,
    /// Hostile records sent on top of the city's (key floods, oversize and deeply nested
    /// messages, invalid UTF-8, huge numbers, random bytes). They draw from streams of their own,
    /// so the city's records are the same with or without them.
    pub hostile: Vec<HostileSpec>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            start: "2026-11-24T00:00:00Z".to_owned(),
            duration_s: 3600,
            tick_interval_ms: 5000,
            load_factor: 1,
            incident_check_interval_ms: 30_000,
            incident_probability: 0.3,
            incident_severity_weights: SeverityWeights::default(),
            degraded_fraction: 0.05,
            daily_profile: ProfileEntry::thesis(),
            demand: Vec::new(),
            congestion: Vec::new(),
            incident_burst: Vec::new(),
            overcrowding: Vec::new(),
            fault: Vec::new(),
            hostile: Vec::new(),
        }
    }
}

impl GeneratorConfig {
    /// Reads a configuration from TOML text: either the bare table, or a scenario file whose
    /// `[generator]` table holds it (other tables of a scenario file are then ignored).
    pub fn from_toml_str(text: &str) -> Result<Self, crate::ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(crate::ConfigError::Toml)?;
        let inner = match table.get("generator") {
            Some(toml::Value::Table(t)) => toml::Value::Table(t.clone()),
            _ => toml::Value::Table(table),
        };
        inner.try_into().map_err(crate::ConfigError::Toml)
    }
}

/// Relative weights of incident severities (they need not sum to 1).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeverityWeights {
    /// Weight of `low` (default 0.45).
    pub low: f64,
    /// Weight of `medium` (default 0.33).
    pub medium: f64,
    /// Weight of `high` (default 0.17).
    pub high: f64,
    /// Weight of `critical` (default 0.05: the original never produced it).
    pub critical: f64,
}

impl Default for SeverityWeights {
    fn default() -> Self {
        Self {
            low: 0.45,
            medium: 0.33,
            high: 0.17,
            critical: 0.05,
        }
    }
}

/// One step of the daily demand profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileEntry {
    /// Start, `"HH:MM"` (UTC).
    pub from: String,
    /// End (exclusive), `"HH:MM"`; before `from` to wrap midnight.
    pub to: String,
    /// Demand multiplier (1.0 = an ordinary hour).
    pub multiplier: f64,
}

impl ProfileEntry {
    /// The original's profile: 0.3 at 00-05 h, 1.8 at 07-09 h, 1.3 at 12-13 h, 2.0 at 17-19 h.
    pub fn thesis() -> Vec<ProfileEntry> {
        [
            ("00:00", "05:00", 0.3),
            ("07:00", "09:00", 1.8),
            ("12:00", "13:00", 1.3),
            ("17:00", "19:00", 2.0),
        ]
        .into_iter()
        .map(|(from, to, multiplier)| ProfileEntry {
            from: from.into(),
            to: to.into(),
            multiplier,
        })
        .collect()
    }
}

/// An extra demand multiplier (an event, a holiday, a closure elsewhere).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemandEntry {
    /// Zone id (`zone-3`); all zones when absent.
    #[serde(default)]
    pub zone: Option<String>,
    /// Start (HH:MM or RFC 3339); always when both `from` and `to` are absent.
    #[serde(default)]
    pub from: Option<String>,
    /// End, exclusive.
    #[serde(default)]
    pub to: Option<String>,
    /// Multiplies the demand (and so density, and bus load) in the zone.
    pub multiplier: f64,
}

/// Forced congestion: traffic readings of `zone` between `from` and `to` at about `speed_kmh`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CongestionEntry {
    /// Zone id.
    pub zone: String,
    /// Start (HH:MM or RFC 3339); always when both are absent.
    #[serde(default)]
    pub from: Option<String>,
    /// End, exclusive.
    #[serde(default)]
    pub to: Option<String>,
    /// Target speed, km/h. Readings lie in `[0.7, 1.0] × speed_kmh`, never above it, so a target
    /// below 5 gives readings strictly below 5 (severe congestion).
    pub speed_kmh: f64,
}

/// A burst of incidents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentBurst {
    /// When it starts: `"HH:MM"` (every day) or an RFC 3339 instant.
    pub at: String,
    /// The incidents are spread evenly over this many seconds from `at` (0: all at `at`).
    #[serde(default)]
    pub duration_s: u64,
    /// Incidents in the burst.
    #[serde(default = "one")]
    pub count: u32,
    /// Severity of every incident; drawn from the weights when absent.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// Zone of every incident; any zone when absent.
    #[serde(default)]
    pub zone: Option<String>,
    /// Type of every incident (`accident`, `flooding`, ...); drawn when absent.
    #[serde(default)]
    pub kind: Option<IncidentType>,
}

fn one() -> u32 {
    1
}

/// Forced bus occupancy: every bus of `line` between `from` and `to` at `occupancy_rate_pct`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OvercrowdingEntry {
    /// Line id (`line-3`).
    pub line: String,
    /// Start (HH:MM or RFC 3339); always when both are absent.
    #[serde(default)]
    pub from: Option<String>,
    /// End, exclusive.
    #[serde(default)]
    pub to: Option<String>,
    /// Occupancy, percent of capacity (0-100]; above 90 fires transport alerts.
    pub occupancy_rate_pct: f64,
}

/// What a hostile entry sends, on `traffic-sensors`: each record a traffic reading of a sensor
/// of its own (`HX-<entry>-<n>`), timestamped when it is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostileKind {
    /// A valid reading naming a new zone and road (`hostile-zone-<entry>-<n>`,
    /// `hostile-road-<entry>-<n>`) each time: the key flood of issue 11.
    KeyFlood,
    /// A valid reading whose `road_name` pads the message to `size` bytes (default 900,000).
    Oversize,
    /// A valid reading with an extra member nested `size` arrays deep (default 1,000).
    DeepNesting,
    /// A reading whose `road_name` holds bytes that are not UTF-8.
    InvalidUtf8,
    /// A reading with a number out of every range, in turn: `vehicle_flow` = 2^63 - 1, `speed_kmh`
    /// = 1e400, `occupancy_percent` = 1e308, `vehicle_flow` = 10^20.
    HugeNumber,
    /// `size` random bytes (default 256).
    RandomBytes,
}

impl HostileKind {
    /// The name as written in config.
    pub const fn name(self) -> &'static str {
        match self {
            HostileKind::KeyFlood => "key_flood",
            HostileKind::Oversize => "oversize",
            HostileKind::DeepNesting => "deep_nesting",
            HostileKind::InvalidUtf8 => "invalid_utf8",
            HostileKind::HugeNumber => "huge_number",
            HostileKind::RandomBytes => "random_bytes",
        }
    }
}

/// Hostile records: `count` of one kind, spread evenly over `duration_s` from `at`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostileSpec {
    /// What is sent.
    pub kind: HostileKind,
    /// When it starts: `"HH:MM"` (every day) or an RFC 3339 instant.
    pub at: String,
    /// The records are spread evenly over this many seconds from `at` (0: all at `at`).
    #[serde(default)]
    pub duration_s: u64,
    /// Records sent (each day, for an `"HH:MM"` start).
    #[serde(default = "one")]
    pub count: u32,
    /// Message size in bytes (`oversize`, `random_bytes`) or nesting depth (`deep_nesting`);
    /// the kind's default when absent.
    #[serde(default)]
    pub size: Option<u64>,
}

/// The kinds of injected fault; also the ground-truth label on a faulty record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// `data_quality = degraded`, values still plausible (traffic only).
    Degraded,
    /// The device repeats its previous values (device topics only).
    Stuck,
    /// An impossible value in valid JSON: negative speed, occupancy above 100, speed above 300...
    OutOfRange,
    /// Bytes that are not JSON (a truncated message).
    MalformedJson,
    /// Valid JSON lacking one required field.
    MissingField,
    /// The same bytes sent again `delay_ms` later; the copy carries the label.
    Duplicate,
    /// Delivered `delay_ms` after its event time (beyond the watermark, typically).
    Late,
    /// Delivered `delay_ms` after its event time, within the watermark.
    OutOfOrder,
    /// Event timestamp shifted by `skew_ms`; delivered on time.
    ClockSkew,
}

impl FaultKind {
    /// All kinds, in a fixed order.
    pub const ALL: [FaultKind; 9] = [
        FaultKind::Degraded,
        FaultKind::Stuck,
        FaultKind::OutOfRange,
        FaultKind::MalformedJson,
        FaultKind::MissingField,
        FaultKind::Duplicate,
        FaultKind::Late,
        FaultKind::OutOfOrder,
        FaultKind::ClockSkew,
    ];

    /// The label as written in JSONL and config.
    pub const fn name(self) -> &'static str {
        match self {
            FaultKind::Degraded => "degraded",
            FaultKind::Stuck => "stuck",
            FaultKind::OutOfRange => "out_of_range",
            FaultKind::MalformedJson => "malformed_json",
            FaultKind::MissingField => "missing_field",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Late => "late",
            FaultKind::OutOfOrder => "out_of_order",
            FaultKind::ClockSkew => "clock_skew",
        }
    }

    /// The delay used when `delay_ms` is absent, for the kinds that delay a record.
    pub const fn default_delay_ms(self) -> Option<u64> {
        match self {
            FaultKind::Duplicate => Some(2_000),
            // Two minutes: beyond the engine's default one-minute watermark.
            FaultKind::Late => Some(120_000),
            // Ten seconds: later records overtake it, yet it is within the watermark.
            FaultKind::OutOfOrder => Some(10_000),
            _ => None,
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One injected fault. A record gets at most one fault: the first entry, in file order, that
/// matches it and fires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// What goes wrong.
    pub kind: FaultKind,
    /// Only this topic; when absent every topic the kind applies to (`degraded`: traffic only;
    /// `stuck`: the three device topics; the others: all four).
    #[serde(default)]
    pub topic: Option<Topic>,
    /// Only these device ids (Kafka keys); all devices when empty.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Probability that a matching record is hit (0-1, default 1: every matching record).
    #[serde(default = "always")]
    pub probability: f64,
    /// Start (HH:MM or RFC 3339) of the event times hit; always when both are absent.
    #[serde(default)]
    pub from: Option<String>,
    /// End, exclusive.
    #[serde(default)]
    pub to: Option<String>,
    /// Delivery delay for `duplicate` (default 2000), `late` (120000) and `out_of_order` (10000).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Shift of the event timestamp for `clock_skew` (required there; negative = clock behind).
    /// Avoid whole multiples of the tick: the shifted reading would then carry the event time of
    /// another reading of the same device and look like a duplicate.
    #[serde(default)]
    pub skew_ms: Option<i64>,
}

fn always() -> f64 {
    1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the default round-trips through TOML and that a scenario's [generator] table is read.
    #[test]
    fn toml_round_trip() {
        let c = GeneratorConfig::default();
        let text = toml::to_string(&c).unwrap();
        assert_eq!(GeneratorConfig::from_toml_str(&text).unwrap(), c);
        let scenario = r#"
            name = "peak"
            [generator]
            duration_s = 60
            [[generator.congestion]]
            zone = "zone-2"
            from = "08:00"
            to = "08:30"
            speed_kmh = 3
            [[generator.fault]]
            kind = "late"
            probability = 0.01
        "#;
        let c = GeneratorConfig::from_toml_str(scenario).unwrap();
        assert_eq!(c.duration_s, 60);
        assert_eq!(c.congestion[0].speed_kmh, 3.0);
        assert_eq!(c.fault[0].kind, FaultKind::Late);
        assert_eq!(c.fault[0].probability, 0.01);
        assert_eq!(c.tick_interval_ms, 5000);
    }

    // Proves unknown keys are refused with their name, so typos cannot silently do nothing.
    #[test]
    fn unknown_keys_are_errors() {
        let err = GeneratorConfig::from_toml_str("tick_interval = 5")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tick_interval"), "{err}");
        let err = GeneratorConfig::from_toml_str("[[fault]]\nkind = \"slow\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("slow"), "{err}");
    }
}
