//! The run report: a readable summary table and `report.html` ([`html`]: charts drawn by
//! [`charts`] from the [`series`] of the run) for people, `report.json` for machines.

pub mod charts;
pub mod html;
pub mod series;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use pipeline::engine::{Counters, Query};
use pipeline::model::Topic;
use serde::Serialize;

use crate::expect::{Throughput, Verdict, throughput};
use crate::run::RunResult;
use crate::scenario::{Backend, Scenario};
use pipeline::stats::Percentiles;
pub use series::Series;

/// Latency distributions.
#[derive(Clone, Debug, Serialize)]
pub struct Latencies {
    /// Produce time of the triggering record -> alert row durable.
    pub alert: Percentiles,
    /// Watermark passes the window's end -> final row durable.
    pub window: Percentiles,
    /// One trigger's work, from its start to the last sink write.
    pub trigger_processing: Percentiles,
}

/// Wall-clock figures.
#[derive(Clone, Debug, Serialize)]
pub struct Wall {
    /// The pipeline's own work (log, engine, sinks), seconds.
    pub pipeline_s: f64,
    /// The whole run, generation included, seconds.
    pub total_s: f64,
    /// Simulated time / total wall time.
    pub speedup: f64,
}

/// Everything about one run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Scenario file.
    pub file: String,
    /// What the scenario shows.
    pub description: String,
    /// Seed used (reproduce with `--seed`).
    pub seed: u64,
    /// Backend used.
    pub backend: Backend,
    /// Real backends: simulated seconds replayed per wall second.
    pub replay_speed: Option<f64>,
    /// First simulated instant.
    pub start: String,
    /// Simulated span, ms.
    pub duration_ms: i64,
    /// Records offered per topic.
    pub offered: BTreeMap<Topic, u64>,
    /// Final rows stored per query (windows, or alerts for per-record queries).
    pub rows: BTreeMap<Query, u64>,
    /// Dead-letter rows by reason.
    pub dead_letters: BTreeMap<String, u64>,
    /// Late rows by query.
    pub late: BTreeMap<Query, u64>,
    /// The engine's counters.
    pub counters: Counters,
    /// Offered and sustainable rates.
    pub throughput: Throughput,
    /// Latency percentiles.
    pub latency: Latencies,
    /// Wall-clock cost.
    pub wall: Wall,
    /// SHA-256 of the canonical, ordered final rows.
    pub digest: String,
    /// Every expectation, built-in ones first.
    pub expectations: Vec<Verdict>,
    /// Whether every expectation held.
    pub passed: bool,
    /// Several instances in one group: what their group went through.
    pub instances: Option<crate::run::InstancesOutcome>,
    /// Real backends: how Kafka took in the replayed records.
    pub produced: Option<crate::run::ProduceOrder>,
    /// Most the driver's merge handed a record over behind one of its topic handed over
    /// before it, by Kafka timestamp (ms).
    pub merge_disorder_ms: i64,
    /// The simulator's version.
    pub version: String,
    /// What the report's charts draw.
    pub series: Series,
}

impl Report {
    /// Assembles the report of a finished run.
    pub fn new(
        scenario: &Scenario,
        file: &str,
        backend: Backend,
        run: &RunResult,
        digest: String,
        expectations: Vec<Verdict>,
    ) -> Self {
        let mut rows = BTreeMap::new();
        for row in run.documents.rows_any_order() {
            *rows.entry(row.query()).or_insert(0) += 1;
        }
        let mut dead_letters = BTreeMap::new();
        for d in run.documents.dead_letters() {
            *dead_letters.entry(d.reason.name().to_owned()).or_insert(0) += 1;
        }
        let mut late = BTreeMap::new();
        for l in run.documents.late() {
            *late.entry(l.query).or_insert(0) += 1;
        }
        let total_s = run.total_wall.as_secs_f64();
        Report {
            scenario: scenario.name.clone(),
            file: file.to_owned(),
            description: scenario.description.clone(),
            seed: run.seed,
            backend,
            replay_speed: run.replay_speed,
            start: scenario.start.clone(),
            duration_ms: run.duration_ms,
            offered: run.offered.clone(),
            rows,
            dead_letters,
            late,
            counters: run.counters.clone(),
            throughput: throughput(run),
            latency: Latencies {
                alert: run.alert_latency.percentiles(),
                window: run.window_latency.percentiles(),
                trigger_processing: run.trigger_processing.percentiles(),
            },
            wall: Wall {
                pipeline_s: run.pipeline_wall.as_secs_f64(),
                total_s,
                speedup: if total_s > 0.0 {
                    run.duration_ms as f64 / 1000.0 / total_s
                } else {
                    0.0
                },
            },
            passed: expectations.iter().all(|v| v.pass),
            expectations,
            digest,
            instances: run.instances.clone(),
            produced: run.produced.clone(),
            merge_disorder_ms: run.driver.disorder_max_ms,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            series: Series::of(run, scenario.start_ms()),
        }
    }

    /// The readable summary table.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let hours = self.duration_ms as f64 / 3_600_000.0;
        let _ = writeln!(
            s,
            "scenario {} ({}), seed {}, backend {:?}",
            self.scenario, self.file, self.seed, self.backend
        );
        let _ = writeln!(
            s,
            "simulated {hours:.2} h from {} in {:.3} s wall ({:.0}x real time)",
            self.start, self.wall.total_s, self.wall.speedup
        );
        let total: u64 = self.offered.values().sum();
        let per_topic: Vec<String> = self
            .offered
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        let _ = writeln!(s, "records   {total} ({})", per_topic.join(", "));
        if let Some(i) = &self.instances {
            let _ = writeln!(
                s,
                "instances {} at the start: {} rebalances, {} records forwarded twice (dropped), \
                 stage 2 moved {} times, {} records checked again (another configuration)",
                i.count, i.rebalances, i.forwarded_twice, i.lease_moves, i.rechecked
            );
        }
        let _ = writeln!(s, "{:<24}{:>12}{:>10}", "query", "final rows", "late");
        for q in Query::ALL {
            let _ = writeln!(
                s,
                "  {:<22}{:>12}{:>10}{}",
                q.name(),
                self.rows.get(&q).copied().unwrap_or(0),
                self.late.get(&q).copied().unwrap_or(0),
                if q.is_alert() { "  (alerts)" } else { "" }
            );
        }
        let dl: Vec<String> = self
            .dead_letters
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        let _ = writeln!(
            s,
            "dead letters {}",
            if dl.is_empty() {
                "0".to_owned()
            } else {
                dl.join(", ")
            }
        );
        let t = &self.throughput;
        let _ = writeln!(
            s,
            "throughput offered {:.0} msg/min ({:.0} records/min with incidents), sustainable {:.0} records/min: {}",
            t.offered_msg_per_min,
            t.offered_records_per_min,
            t.sustainable_records_per_min,
            if t.keeps_up {
                "keeps up"
            } else {
                "FALLS BEHIND"
            }
        );
        if let (Some(behind), Some(speed)) = (t.finished_behind_s, self.replay_speed) {
            let _ = writeln!(
                s,
                "replayed at {speed}x: {:.0} records/s offered, everything written {behind:.1} s after the last record was due",
                t.offered_records_per_min * speed / 60.0
            );
        }
        if let Some(p) = &self.produced {
            let _ = writeln!(
                s,
                "produced: slowest acknowledgement {} ms after its record was due; records \
                 readable up to {} ms (simulated) out of order, handed to the engine up to {} ms",
                p.slowest_ack_wall_ms, p.disorder_ms, self.merge_disorder_ms
            );
        }
        let _ = writeln!(
            s,
            "{:<22}{:>8}{:>10}{:>10}{:>10}{:>10}",
            "latency (ms)", "n", "p50", "p95", "p99", "max"
        );
        for (name, p) in [
            ("alert", &self.latency.alert),
            ("window", &self.latency.window),
            ("trigger processing", &self.latency.trigger_processing),
        ] {
            let _ = writeln!(
                s,
                "  {:<20}{:>8}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
                name, p.count, p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms
            );
        }
        let _ = writeln!(s, "expectations");
        for v in &self.expectations {
            let _ = writeln!(
                s,
                "  [{}] {}  (actual: {})",
                if v.pass { "pass" } else { "FAIL" },
                v.check,
                v.actual
            );
        }
        let _ = writeln!(s, "output digest: {}", self.digest);
        s
    }

    /// The failures, with expected vs actual and how to reproduce them.
    pub fn failures(&self) -> String {
        let mut s = String::new();
        for v in self.expectations.iter().filter(|v| !v.pass) {
            let _ = writeln!(
                s,
                "FAILED {}\n  expected: {}\n  actual:   {}",
                v.check, v.expected, v.actual
            );
        }
        if !s.is_empty() {
            let _ = writeln!(
                s,
                "reproduce with: simulator run {} --seed {}",
                self.file, self.seed
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::{Backend, RunOptions, run_file};

    fn scenario(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../scenarios")
            .join(name)
    }

    // Proves a report's series account for every record (each offered one processed once) and
    // its page holds every chart, fetches nothing and runs no script.
    #[test]
    fn report_series_and_page() {
        let r = run_file(&scenario("thesis_baseline.toml"), &RunOptions::default())
            .expect("thesis_baseline runs");
        let offered: u64 = r.offered.values().sum();
        let t = &r.series.throughput;
        assert_eq!(t.iter().map(|s| s.offered).sum::<u64>(), offered);
        assert_eq!(t.iter().map(|s| s.processed).sum::<u64>(), offered);
        assert_eq!(r.series.mobility.len(), 12, "an hour of 5-minute windows");
        assert_eq!(r.series.zone_speed.zones.len(), 5);
        assert!(!r.series.latency_cdf.window.is_empty());
        let page = super::html::render(&r).expect("the page renders");
        for id in ["mobility", "zone-speed", "alerts", "throughput", "latency"] {
            assert!(
                page.contains(&format!("data-chart=\"{id}\"")),
                "chart {id} missing"
            );
        }
        assert_eq!(page.matches("<svg").count(), 5);
        assert!(!page.contains("<script") && !page.contains("https://"));
        assert!(page.contains(&r.digest) && page.contains("--seed 42"));
    }

    // Proves that under crashes, outages and redelivery every record still counts as
    // processed exactly once: a restart from an older checkpoint counts nothing twice.
    #[test]
    fn processed_counts_each_record_once_under_faults() {
        for seed in [3, 8] {
            let options = RunOptions {
                seed: Some(seed),
                backend: Some(Backend::Memory),
                swarm: true,
                ..RunOptions::default()
            };
            let r = run_file(&scenario("thesis_baseline.toml"), &options).expect("it runs");
            let offered: u64 = r.offered.values().sum();
            let processed: u64 = r.series.throughput.iter().map(|s| s.processed).sum();
            assert_eq!(processed, offered, "seed {seed}");
        }
    }
}
