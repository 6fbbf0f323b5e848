//! Scenario files: what to generate, how to run the pipeline, and what must hold afterwards.
//!
//! A scenario is TOML, documented key by key in `scenarios/README.md`. Every table denies unknown
//! keys, so a typo is an error naming the key and the line.

use std::path::{Path, PathBuf};

use generator::GeneratorConfig;
use pipeline::driver::DriverConfig;
use pipeline::engine::EngineConfig;
use serde::{Deserialize, Serialize};

/// A whole scenario file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (defaults to the file stem).
    #[serde(default)]
    pub name: String,
    /// What the scenario shows, in a sentence or two.
    #[serde(default)]
    pub description: String,
    /// The seed of every random choice of the generator.
    pub seed: u64,
    /// First simulated instant, RFC 3339.
    pub start: String,
    /// Simulated span: `90s`, `30m`, `4h`, `1d`, or combinations such as `1h30m`.
    pub duration: String,
    /// Which backends carry the records and rows.
    #[serde(default)]
    pub backend: Backend,
    /// Generator knobs (all but `start` and `duration_s`, which come from the top level).
    #[serde(default)]
    pub generator: GeneratorConfig,
    /// Engine knobs: windows, watermark, triggers, thresholds, bounds.
    #[serde(default)]
    pub pipeline: EngineConfig,
    /// Driver knobs: batching, checkpoints, retries, bounds (the production job's defaults).
    #[serde(default)]
    pub driver: DriverConfig,
    /// Modelled delays of the simulated network and sinks.
    #[serde(default)]
    pub network: NetworkModel,
    /// Faults of the job's environment (memory backend): crashes, outages, interleaving, lag.
    #[serde(default)]
    pub faults: crate::faults::FaultsConfig,
    /// What must hold after the run.
    #[serde(default)]
    pub expect: Expectations,
}

/// The backends a run uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// In-memory log and stores, simulated clock: no services needed.
    #[default]
    Memory,
    /// Real Kafka, MongoDB and PostgreSQL at the addresses in the environment.
    Services,
    /// Real Kafka, MongoDB and PostgreSQL in containers (needs a Docker engine).
    Containers,
}

/// Modelled network and sink delays, added to measured costs in the memory backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkModel {
    /// Time from a record's produce time until the consumer can read it, milliseconds.
    pub produce_to_consume_ms: i64,
    /// Time a sink takes to make a batch durable, milliseconds.
    pub sink_write_ms: i64,
    /// Partitions per topic of the in-memory log (default 4, as `generator produce` creates).
    pub partitions: Option<i32>,
    /// Time to store a checkpoint durably, milliseconds (default 5).
    pub checkpoint_store_ms: Option<i64>,
    /// Time for Kafka to acknowledge a commit, milliseconds (default 2).
    pub commit_ms: Option<i64>,
}

impl NetworkModel {
    /// [`Self::checkpoint_store_ms`] with its default, never negative.
    pub fn store_delay_ms(&self) -> i64 {
        self.checkpoint_store_ms.unwrap_or(5).max(0)
    }

    /// [`Self::commit_ms`] with its default, never negative.
    pub fn commit_delay_ms(&self) -> i64 {
        self.commit_ms.unwrap_or(2).max(0)
    }
}

/// Everything a scenario asserts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Expectations {
    /// Assertions on output rows.
    pub rows: Vec<RowExpectation>,
    /// Assertions on counts (alerts, dead letters, late rows, final windows...).
    pub counts: Vec<CountExpectation>,
    /// Assertions on throughput and latency.
    pub performance: Vec<PerformanceExpectation>,
    /// Assertions that injected faults (by ground-truth label) landed where they should.
    pub faults: Vec<FaultExpectation>,
    /// The output digest must equal this (pinned determinism).
    pub digest: Option<String>,
    /// Whether `digest` is also checked when the records arrive live (`services`,
    /// `containers`); default true. False where the output depends on the exact interleaving
    /// of partitions: a key flood past `max_keys_per_query`, where which new keys take the last
    /// places depends on which partition's records the job reads first. The memory backend (and
    /// any backlog) hands the engine the canonical order; a live stream does so only up to the
    /// freshness of the partitions' known ends (ARCHITECTURE.md, "Order on a live stream").
    pub digest_on_live_streams: Option<bool>,
    /// The run's digest must equal that of the same scenario and seed without its `[faults]`.
    pub digest_equals_fault_free: bool,
    /// The final rows the run shares with the same scenario without `[[generator.hostile]]`.
    pub clean_run: Option<CleanRunExpectation>,
}

/// The scenario is run again without its `[[generator.hostile]]` entries, on the memory backend
/// with the same seed; every final row of `queries` that the clean run wrote must be in this
/// run too, equal field by field. Rows this run has beyond them (the hostile keys' own) are
/// reported, not failed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanRunExpectation {
    /// The queries compared (all eight when empty).
    #[serde(default)]
    pub queries: Vec<String>,
}

/// A comparison. Exactly one operator must be given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    /// Equal (numbers within 1e-9, strings, booleans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eq: Option<toml::Value>,
    /// Less than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    /// Less than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub le: Option<f64>,
    /// Greater than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// Greater than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ge: Option<f64>,
    /// One of these values.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<toml::Value>>,
    /// Within `[low, high]`, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub between: Option<[f64; 2]>,
}

/// How the selected rows' field values are combined before comparing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Every selected row must satisfy the comparison.
    #[default]
    All,
    /// At least one selected row must.
    Any,
    /// No selected row may.
    None,
    /// The mean of the values.
    Mean,
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
    /// The sum of the values.
    Sum,
    /// The number of selected rows.
    Count,
}

/// An assertion on output rows of one query.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowExpectation {
    /// Query name (`traffic_aggregations`, `mobility_index`, ...).
    pub query: String,
    /// Key fields the rows must have, e.g. `{ zone_id = "zone-3" }`.
    #[serde(default, rename = "where")]
    pub filter: toml::Table,
    /// Only rows whose window starts (or event time is) at or after this instant (RFC 3339 or
    /// `HH:MM` on the scenario's first day).
    #[serde(default)]
    pub from: Option<String>,
    /// Only rows whose window starts (or event time is) before this instant.
    #[serde(default)]
    pub to: Option<String>,
    /// Field to compare (not needed for `agg = "count"`).
    #[serde(default)]
    pub field: Option<String>,
    /// How values combine (default: all rows must satisfy).
    #[serde(default)]
    pub agg: Aggregation,
    /// Fewest rows the selection must hold (default 1: an empty selection fails).
    #[serde(default = "one")]
    pub min_rows: usize,
    /// The comparison.
    #[serde(flatten)]
    pub cmp: Comparison,
}

fn one() -> usize {
    1
}

/// What a count expectation counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountMetric {
    /// Alert rows of a per-record query (or all alert queries).
    Alerts,
    /// Dead-letter rows (optionally of a reason and topic).
    DeadLetters,
    /// Late rows (optionally of a query).
    Late,
    /// Final windowed rows (optionally of a query).
    FinalRows,
    /// Records offered (optionally of a topic).
    RecordsIn,
    /// Records accepted by the engine (optionally of a topic).
    Accepted,
    /// Most distinct keys a windowed query held at once (optionally of a query; else the
    /// largest over the queries).
    PeakKeys,
    /// Most windows a query held open at once (optionally of a query; else the largest).
    PeakOpenWindows,
    /// Most strings the engine held interned at once.
    PeakInternedStrings,
    /// Most devices a topic tracked at once (optionally of a topic; else the largest).
    PeakDevices,
}

/// An assertion on a count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountExpectation {
    /// What to count.
    pub metric: CountMetric,
    /// Only this query.
    #[serde(default)]
    pub query: Option<String>,
    /// Only this dead-letter reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// Only this topic.
    #[serde(default)]
    pub topic: Option<String>,
    /// Only rows whose `anomaly_type`, `severity`, `alert_level`, `category` or `alert_type`
    /// is this.
    #[serde(default)]
    pub kind: Option<String>,
    /// The comparison.
    #[serde(flatten)]
    pub cmp: Comparison,
}

/// A performance figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PerformanceMetric {
    /// Offered rate of the three counted topics, messages per simulated minute.
    OfferedMsgPerMin,
    /// Offered rate of all four topics, records per simulated minute.
    OfferedRecordsPerMin,
    /// Records the pipeline processed per wall-clock minute of its own work.
    SustainableRecordsPerMin,
    /// Whether sustainable >= offered: a boolean, compared with `eq = true`.
    KeepsUp,
    /// Produce time of the triggering record -> alert row durable, ms.
    AlertLatencyMs,
    /// Watermark passes a window's end -> its final row durable, ms.
    WindowLatencyMs,
    /// One trigger's work, from its start to the last sink write, ms.
    TriggerProcessingMs,
    /// Alert latency of records produced while the job was recovering from a fault (from the
    /// fault's start until it had caught up again), ms.
    AlertLatencyRecoveryMs,
    /// Most output items ever unacknowledged by the sinks (the driver's pending output).
    PendingItemsMax,
}

/// Which statistic of a latency distribution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stat {
    /// Median.
    P50,
    /// 95th percentile.
    P95,
    /// 99th percentile.
    P99,
    /// Largest.
    #[default]
    Max,
}

/// An assertion on a performance figure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerformanceExpectation {
    /// Which figure.
    pub metric: PerformanceMetric,
    /// Which statistic, for latencies (default max).
    #[serde(default)]
    pub stat: Stat,
    /// The comparison.
    #[serde(flatten)]
    pub cmp: Comparison,
}

/// Where records with an injected fault must end up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultOutcome {
    /// Dead-lettered (with `reason`).
    DeadLetter,
    /// Late for at least one windowed query.
    Late,
    /// Accepted and aggregated (neither dead-lettered nor late).
    Accepted,
}

/// An assertion that every record carrying a fault label had a given outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultExpectation {
    /// The ground-truth label (`malformed_json`, `duplicate`, `late`, ...).
    pub fault: generator::FaultKind,
    /// The required outcome.
    pub outcome: FaultOutcome,
    /// For `dead_letter`: the required reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// Fewest labelled records the run must contain (default 1).
    #[serde(default = "one")]
    pub min_records: usize,
}

/// A scenario that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file cannot be read.
    #[error("cannot read scenario {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is invalid or has unknown keys (the message names the key and line).
    #[error("scenario {path}: {source}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        source: toml::de::Error,
    },
    /// The values are inconsistent.
    #[error("scenario {path}: {detail}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        detail: String,
    },
}

/// Parses a span such as `90s`, `30m`, `4h`, `1d` or `1h30m` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let mut total: i64 = 0;
    let mut digits = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86_400_000,
            'h' => 3_600_000,
            'm' => 60_000,
            's' => 1_000,
            _ => {
                return Err(format!(
                    "`{text}`: unexpected `{c}`; use e.g. 90s, 30m, 4h, 1d, 1h30m"
                ));
            }
        };
        let n: i64 = digits
            .parse()
            .map_err(|_| format!("`{text}`: a number must precede `{c}`"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        digits.clear();
        any = true;
    }
    if !digits.is_empty() || !any {
        return Err(format!(
            "`{text}`: every number needs a unit (s, m, h, d), e.g. 90s, 4h"
        ));
    }
    Ok(total)
}

impl Scenario {
    /// Parses scenario text; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ScenarioError> {
        let mut s: Scenario = toml::from_str(text).map_err(|source| ScenarioError::Toml {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |detail: String| ScenarioError::Invalid {
            path: path.to_owned(),
            detail,
        };
        if s.name.is_empty() {
            s.name = path
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        let defaults = GeneratorConfig::default();
        if s.generator.start != defaults.start || s.generator.duration_s != defaults.duration_s {
            return Err(invalid(
                "set `start` and `duration` at the top of the scenario, not in [generator]".into(),
            ));
        }
        let duration_ms =
            parse_duration_ms(&s.duration).map_err(|e| invalid(format!("duration: {e}")))?;
        if duration_ms <= 0 || duration_ms % 1000 != 0 {
            return Err(invalid(
                "duration must be a positive whole number of seconds".into(),
            ));
        }
        pipeline::time::parse(&s.start)
            .ok()
            .and_then(|t| t.utc_millis())
            .ok_or_else(|| {
                invalid(format!(
                    "start `{}` is not an RFC 3339 instant with a zone",
                    s.start
                ))
            })?;
        s.generator.start = s.start.clone();
        s.generator.duration_s = (duration_ms / 1000) as u64;
        s.pipeline
            .validate()
            .map_err(|e| invalid(format!("[pipeline]: {e}")))?;
        s.driver
            .validate()
            .map_err(|e| invalid(format!("[driver]: {e}")))?;
        let start_ms = s.start_ms();
        s.faults
            .plan(s.seed, start_ms, start_ms + duration_ms)
            .map_err(|e| invalid(e.to_string()))?;
        for (i, r) in s.expect.rows.iter().enumerate() {
            r.query
                .parse::<pipeline::engine::Query>()
                .map_err(|e| invalid(format!("expect.rows[{i}]: {e}")))?;
            if r.field.is_none() && r.agg != Aggregation::Count {
                return Err(invalid(format!(
                    "expect.rows[{i}]: `field` is required unless agg = \"count\""
                )));
            }
            check_comparison(&r.cmp).map_err(|e| invalid(format!("expect.rows[{i}]: {e}")))?;
            for (key, value) in [("from", &r.from), ("to", &r.to)] {
                if let Some(v) = value
                    && instant(v, s.start_ms()).is_none()
                {
                    return Err(invalid(format!(
                        "expect.rows[{i}].{key} = `{v}`: use HH:MM (on the scenario's first day) \
                         or an RFC 3339 instant"
                    )));
                }
            }
        }
        for (i, c) in s.expect.counts.iter().enumerate() {
            if let Some(q) = &c.query {
                q.parse::<pipeline::engine::Query>()
                    .map_err(|e| invalid(format!("expect.counts[{i}]: {e}")))?;
            }
            check_comparison(&c.cmp).map_err(|e| invalid(format!("expect.counts[{i}]: {e}")))?;
            if let Some(t) = &c.topic {
                t.parse::<pipeline::model::Topic>()
                    .map_err(|e| invalid(format!("expect.counts[{i}]: {e}")))?;
            }
            let reasons = pipeline::engine::DeadLetterReason::ALL;
            if let Some(r) = &c.reason
                && !reasons.iter().any(|x| x.name() == r)
            {
                let names: Vec<_> = reasons.iter().map(|x| x.name()).collect();
                return Err(invalid(format!(
                    "expect.counts[{i}]: unknown reason `{r}`; expected one of {}",
                    names.join(", ")
                )));
            }
        }
        if let Some(c) = &s.expect.clean_run {
            for q in &c.queries {
                q.parse::<pipeline::engine::Query>()
                    .map_err(|e| invalid(format!("expect.clean_run: {e}")))?;
            }
            if s.generator.hostile.is_empty() {
                return Err(invalid(
                    "expect.clean_run compares with the scenario without [[generator.hostile]], \
                     but it has none"
                        .into(),
                ));
            }
        }
        for (i, p) in s.expect.performance.iter().enumerate() {
            check_comparison(&p.cmp)
                .map_err(|e| invalid(format!("expect.performance[{i}]: {e}")))?;
        }
        Ok(s)
    }

    /// Reads and parses a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// The simulated span in milliseconds.
    pub fn duration_ms(&self) -> i64 {
        self.generator.duration_s as i64 * 1000
    }

    /// The first simulated instant.
    pub fn start_ms(&self) -> i64 {
        pipeline::time::parse(&self.start)
            .ok()
            .and_then(|t| t.utc_millis())
            .unwrap_or(0)
    }
}

/// Reads `HH:MM` on the first day of a run starting at `start_ms`, or an RFC 3339 instant.
pub fn instant(text: &str, start_ms: i64) -> Option<i64> {
    if let Ok(t) = pipeline::time::parse(text) {
        return t.utc_millis();
    }
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    if !(0..=24).contains(&h) || !(0..60).contains(&m) {
        return None;
    }
    let day = start_ms.div_euclid(86_400_000) * 86_400_000;
    Some(day + h * 3_600_000 + m * 60_000)
}

fn check_comparison(c: &Comparison) -> Result<(), String> {
    let n = [
        c.eq.is_some(),
        c.lt.is_some(),
        c.le.is_some(),
        c.gt.is_some(),
        c.ge.is_some(),
        c.one_of.is_some(),
        c.between.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if n != 1 {
        return Err(format!(
            "give exactly one of eq, lt, le, gt, ge, in, between (found {n})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves spans parse in every unit and combination, and bad ones are refused with a hint.
    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("90s").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration_ms("1d").unwrap(), 86_400_000);
        assert!(parse_duration_ms("10").unwrap_err().contains("unit"));
        assert!(parse_duration_ms("5y").is_err());
    }

    // Proves an unknown key is an error that names the key and the line.
    #[test]
    fn unknown_key_names_key_and_line() {
        let text = "seed = 1\nstart = \"2026-11-24T00:00:00Z\"\nduration = \"1h\"\n\n[generator]\nload_factr = 2\n";
        let err = Scenario::parse(text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("load_factr"), "{err}");
        assert!(err.contains("line 6"), "{err}");
        let text = "seed = 1\nstart = \"2026-11-24T00:00:00Z\"\nduration = \"1h\"\n[[expect.rows]]\nquery = \"mobility_index\"\nfield = \"category\"\nin = [\"poor\"]\nfrm = \"08:00\"\n";
        let err = Scenario::parse(text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("frm") && err.contains("line"), "{err}");
    }

    // Proves misspelt values that would silently select nothing are refused at load time.
    #[test]
    fn misspelt_values_are_refused() {
        let head = "seed = 1\nstart = \"2026-11-24T00:00:00Z\"\nduration = \"1h\"\n";
        for (tail, needle) in [
            (
                "[[expect.rows]]\nquery = \"mobility_index\"\nfield = \"category\"\neq = \"good\"\nfrom = \"8:00:00\"\n",
                "from",
            ),
            (
                "[[expect.counts]]\nmetric = \"records_in\"\ntopic = \"trafic\"\neq = 1\n",
                "trafic",
            ),
            (
                "[[expect.counts]]\nmetric = \"dead_letters\"\nreason = \"dupe\"\neq = 1\n",
                "dupe",
            ),
            (
                "[[expect.counts]]\nmetric = \"alerts\"\nquery = \"alerts\"\neq = 1\n",
                "alerts",
            ),
        ] {
            let err = Scenario::parse(&format!("{head}{tail}"), Path::new("x.toml")).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
    }
}
