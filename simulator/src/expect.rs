//! Checking a run against its scenario's expectations, plus the built-in invariants every run
//! must satisfy (conservation, window membership, both stores agreeing).

use pipeline::engine::{Query, Row, RowBody};
use pipeline::model::Topic;
use serde::Serialize;
use serde_json::Value;

use crate::run::RunResult;
use crate::scenario::{
    Aggregation, Backend, CleanRunExpectation, Comparison, CountExpectation, CountMetric,
    FaultExpectation, FaultOutcome, PerformanceExpectation, PerformanceMetric, RowExpectation,
    Scenario, Stat, instant,
};

/// The outcome of one expectation.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// What was checked, in words.
    pub check: String,
    /// Whether it held.
    pub pass: bool,
    /// What was expected.
    pub expected: String,
    /// What was found.
    pub actual: String,
}

/// The output digests of a run's two stores, computed once for every check that needs them (a
/// simulated day's stores hold millions of rows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    /// The document store's: the run's output digest.
    pub documents: String,
    /// The table store's.
    pub tables: String,
}

impl Digests {
    /// The digests of a run's stores, the two computed side by side.
    pub fn of(run: &RunResult) -> Self {
        std::thread::scope(|s| {
            let tables = s.spawn(|| run.tables.digest_hex());
            let documents = run.documents.digest_hex();
            Digests {
                documents,
                tables: tables.join().expect("the table store's digest"),
            }
        })
    }
}

/// Figures derived from a run that expectations and reports share.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Throughput {
    /// Counted topics (traffic, transport, parking), messages per simulated minute.
    pub offered_msg_per_min: f64,
    /// All topics, records per simulated minute.
    pub offered_records_per_min: f64,
    /// Records processed per wall-clock minute of pipeline work.
    pub sustainable_records_per_min: f64,
    /// Memory backend: sustainable >= offered. Real backends: the job had consumed and written
    /// everything at most [`KEEP_UP_SLACK_S`] after the last record was due.
    pub keeps_up: bool,
    /// Real backends: seconds between the last record's due time and the end of the job's
    /// final write (how far behind the paced input it finished).
    pub finished_behind_s: Option<f64>,
}

/// Real backends: how long after the last record was due the job may finish and still count
/// as keeping up (its final flush and checkpoint included).
pub const KEEP_UP_SLACK_S: f64 = 5.0;

/// Computes the throughput figures of a run.
pub fn throughput(r: &RunResult) -> Throughput {
    let minutes = r.duration_ms as f64 / 60_000.0;
    let counted: u64 = [Topic::Traffic, Topic::Transport, Topic::Parking]
        .iter()
        .map(|t| r.offered.get(t).copied().unwrap_or(0))
        .sum();
    let all: u64 = r.offered.values().sum();
    let wall_min = r.pipeline_wall.as_secs_f64() / 60.0;
    let sustainable = if wall_min > 0.0 {
        all as f64 / wall_min
    } else {
        f64::INFINITY
    };
    let offered_all = all as f64 / minutes;
    let finished_behind_s = r
        .replay_speed
        .map(|speed| r.pipeline_wall.as_secs_f64() - r.duration_ms as f64 / 1000.0 / speed);
    Throughput {
        offered_msg_per_min: counted as f64 / minutes,
        offered_records_per_min: offered_all,
        sustainable_records_per_min: sustainable,
        keeps_up: finished_behind_s.map_or(sustainable >= offered_all, |s| s <= KEEP_UP_SLACK_S),
        finished_behind_s,
    }
}

fn describe(c: &Comparison) -> String {
    let v = |x: &toml::Value| match x {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if let Some(x) = &c.eq {
        return format!("= {}", v(x));
    }
    if let Some(x) = c.lt {
        return format!("< {x}");
    }
    if let Some(x) = c.le {
        return format!("<= {x}");
    }
    if let Some(x) = c.gt {
        return format!("> {x}");
    }
    if let Some(x) = c.ge {
        return format!(">= {x}");
    }
    if let Some(xs) = &c.one_of {
        return format!("in [{}]", xs.iter().map(v).collect::<Vec<_>>().join(", "));
    }
    if let Some([a, b]) = c.between {
        return format!("between {a} and {b}");
    }
    "?".into()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOLERANCE * b.abs().max(1.0)
}

fn equal(value: &Value, want: &toml::Value) -> bool {
    match (value, want) {
        (Value::String(a), toml::Value::String(b)) => a == b,
        (Value::Bool(a), toml::Value::Boolean(b)) => a == b,
        (Value::Number(a), toml::Value::Integer(b)) => {
            a.as_f64().is_some_and(|a| close(a, *b as f64))
        }
        (Value::Number(a), toml::Value::Float(b)) => a.as_f64().is_some_and(|a| close(a, *b)),
        _ => false,
    }
}

/// Relative tolerance of `eq`, `le` and `ge` on numbers.
const TOLERANCE: f64 = 1e-9;

/// Whether `value` satisfies the comparison.
pub fn satisfies(value: &Value, c: &Comparison) -> bool {
    if let Some(want) = &c.eq {
        return equal(value, want);
    }
    if let Some(xs) = &c.one_of {
        return xs.iter().any(|x| equal(value, x));
    }
    let Some(x) = value.as_f64() else {
        return false;
    };
    match (c.lt, c.le, c.gt, c.ge, c.between) {
        (Some(b), ..) => x < b,
        // `le`/`ge` forgive float rounding (a mean of 0.7s is 0.7000000000000001).
        (_, Some(b), ..) => x <= b + TOLERANCE * b.abs().max(1.0),
        (_, _, Some(b), ..) => x > b,
        (_, _, _, Some(b), _) => x >= b - TOLERANCE * b.abs().max(1.0),
        (_, _, _, _, Some([lo, hi])) => lo <= x && x <= hi,
        _ => false,
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{}", f as i64)
            } else {
                format!("{f:.4}")
            }
        }
        other => other.to_string(),
    }
}

fn row_time(row: &Value) -> Option<i64> {
    let text = row
        .get("window_start")
        .or_else(|| row.get("event_time"))?
        .as_str()?;
    pipeline::time::parse(text).ok()?.utc_millis()
}

fn check_rows(e: &RowExpectation, scenario: &Scenario, run: &RunResult) -> Verdict {
    let mut what = format!("rows {}", e.query);
    for (k, v) in &e.filter {
        what.push_str(&format!(
            " {k}={}",
            v.as_str().map_or_else(|| v.to_string(), str::to_owned)
        ));
    }
    if let Some(f) = &e.from {
        what.push_str(&format!(" from {f}"));
    }
    if let Some(t) = &e.to {
        what.push_str(&format!(" to {t}"));
    }
    let query: Query = match e.query.parse() {
        Ok(q) => q,
        Err(err) => {
            return Verdict {
                check: what,
                pass: false,
                expected: String::new(),
                actual: err,
            };
        }
    };
    let from = e
        .from
        .as_deref()
        .and_then(|f| instant(f, scenario.start_ms()));
    let to =
        e.to.as_deref()
            .and_then(|t| instant(t, scenario.start_ms()));
    let rows: Vec<Value> = run
        .documents
        .collection(query)
        .filter(|r| r.is_final)
        .filter_map(|r| serde_json::to_value(r).ok())
        .filter(|v| {
            e.filter
                .iter()
                .all(|(k, want)| v.get(k).is_some_and(|got| equal(got, want)))
                && row_time(v)
                    .is_some_and(|t| from.is_none_or(|f| t >= f) && to.is_none_or(|x| t < x))
        })
        .collect();
    let field = e.field.clone().unwrap_or_default();
    let agg = format!("{:?}", e.agg).to_lowercase();
    let check = format!("{what}: {agg} {field} {}", describe(&e.cmp));
    let expected = format!(
        "{agg} {field} {} (at least {} rows)",
        describe(&e.cmp),
        e.min_rows
    );
    if rows.len() < e.min_rows {
        return Verdict {
            check,
            pass: false,
            expected,
            actual: format!("{} rows selected", rows.len()),
        };
    }
    let values: Vec<Value> = rows
        .iter()
        .map(|r| r.get(&field).cloned().unwrap_or(Value::Null))
        .collect();
    let numeric = |f: fn(&[f64]) -> f64| -> Value {
        let xs: Vec<f64> = values.iter().filter_map(Value::as_f64).collect();
        serde_json::Number::from_f64(f(&xs)).map_or(Value::Null, Value::Number)
    };
    let (pass, actual) = match e.agg {
        Aggregation::All | Aggregation::Any | Aggregation::None => {
            let ok: Vec<bool> = values.iter().map(|v| satisfies(v, &e.cmp)).collect();
            let passing = ok.iter().filter(|b| **b).count();
            let pass = match e.agg {
                Aggregation::All => passing == ok.len(),
                Aggregation::Any => passing > 0,
                _ => passing == 0,
            };
            let example = |want: bool| {
                ok.iter().position(|b| *b == want).map(|i| {
                    format!(
                        "; e.g. {} = {}",
                        rows[i].get("id").map_or(String::new(), short),
                        short(&values[i])
                    )
                })
            };
            let detail = if e.agg == Aggregation::All {
                example(false)
            } else {
                example(true)
            };
            (
                pass,
                format!(
                    "{passing} of {} rows satisfy{}",
                    ok.len(),
                    detail.unwrap_or_default()
                ),
            )
        }
        Aggregation::Mean => {
            let v = numeric(|xs| xs.iter().sum::<f64>() / xs.len().max(1) as f64);
            (
                satisfies(&v, &e.cmp),
                format!("mean {} over {} rows", short(&v), rows.len()),
            )
        }
        Aggregation::Min => {
            let v = numeric(|xs| xs.iter().copied().fold(f64::INFINITY, f64::min));
            (
                satisfies(&v, &e.cmp),
                format!("min {} over {} rows", short(&v), rows.len()),
            )
        }
        Aggregation::Max => {
            let v = numeric(|xs| xs.iter().copied().fold(f64::NEG_INFINITY, f64::max));
            (
                satisfies(&v, &e.cmp),
                format!("max {} over {} rows", short(&v), rows.len()),
            )
        }
        Aggregation::Sum => {
            let v = numeric(|xs| xs.iter().sum());
            (
                satisfies(&v, &e.cmp),
                format!("sum {} over {} rows", short(&v), rows.len()),
            )
        }
        Aggregation::Count => {
            let v = Value::from(rows.len());
            (satisfies(&v, &e.cmp), format!("{} rows", rows.len()))
        }
    };
    Verdict {
        check,
        pass,
        expected,
        actual,
    }
}

fn row_kind_matches(row: &Row, kind: &str) -> bool {
    // The row's kind field, whichever its query has: `anomaly_type`, `severity`,
    // `alert_level`, `category` or `alert_type` (read straight from the row: a JSON tree per
    // row cost a simulated day a twentieth of its time).
    let field = match &row.body {
        RowBody::TrafficAnomalies(a) => a.anomaly_type.name(),
        RowBody::TransportAlerts(a) => &a.alert_type,
        RowBody::IncidentAggregations(a) => {
            return a.severity == kind || a.alert_level == kind;
        }
        RowBody::CriticalIncidents(a) => &a.severity,
        RowBody::MobilityIndex(a) => &a.category,
        RowBody::TrafficAggregations(_)
        | RowBody::TransportMetrics(_)
        | RowBody::ParkingAggregations(_) => return false,
    };
    field == kind
}

fn check_count(e: &CountExpectation, run: &RunResult) -> Verdict {
    let query: Option<Query> = e.query.as_deref().and_then(|q| q.parse().ok());
    let topic: Option<Topic> = e.topic.as_deref().and_then(|t| t.parse().ok());
    let kind_ok = |r: &Row| e.kind.as_deref().is_none_or(|k| row_kind_matches(r, k));
    let n: u64 = match e.metric {
        CountMetric::Alerts => run
            .documents
            .rows_any_order()
            .filter(|r| r.query().is_alert() && query.is_none_or(|q| r.query() == q) && kind_ok(r))
            .count() as u64,
        CountMetric::FinalRows => run
            .documents
            .rows_any_order()
            .filter(|r| {
                r.is_final
                    && !r.query().is_alert()
                    && query.is_none_or(|q| r.query() == q)
                    && kind_ok(r)
            })
            .count() as u64,
        CountMetric::DeadLetters => run
            .documents
            .dead_letters()
            .iter()
            .filter(|d| e.reason.as_deref().is_none_or(|x| d.reason.name() == x))
            .filter(|d| topic.is_none_or(|t| d.topic == t))
            .count() as u64,
        CountMetric::Late => run
            .documents
            .late()
            .iter()
            .filter(|l| query.is_none_or(|q| l.query == q) && topic.is_none_or(|t| l.topic == t))
            .count() as u64,
        CountMetric::RecordsIn => run
            .counters
            .topics
            .iter()
            .filter(|(t, _)| topic.is_none_or(|x| **t == x))
            .map(|(_, c)| c.records_in)
            .sum(),
        CountMetric::Accepted => run
            .counters
            .topics
            .iter()
            .filter(|(t, _)| topic.is_none_or(|x| **t == x))
            .map(|(_, c)| c.accepted)
            .sum(),
        CountMetric::PeakKeys => peak_of(&run.counters.peaks.keys_per_query, query),
        CountMetric::PeakOpenWindows => peak_of(&run.counters.peaks.open_windows, query),
        CountMetric::PeakInternedStrings => run.counters.peaks.interned_strings,
        CountMetric::PeakDevices => peak_of(&run.counters.peaks.devices_per_topic, topic),
    };
    let metric = serde_json::to_value(e.metric)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut what = format!("count {metric}");
    for (label, v) in [
        ("query", &e.query),
        ("reason", &e.reason),
        ("topic", &e.topic),
        ("kind", &e.kind),
    ] {
        if let Some(v) = v {
            what.push_str(&format!(" {label}={v}"));
        }
    }
    let value = Value::from(n);
    Verdict {
        check: format!("{what} {}", describe(&e.cmp)),
        pass: satisfies(&value, &e.cmp),
        expected: describe(&e.cmp),
        actual: n.to_string(),
    }
}

/// The peak of `only`, or the largest of all.
fn peak_of<K: Ord>(peaks: &std::collections::BTreeMap<K, u64>, only: Option<K>) -> u64 {
    match only {
        Some(k) => peaks.get(&k).copied().unwrap_or(0),
        None => peaks.values().copied().max().unwrap_or(0),
    }
}

/// Every final row of the compared queries that the clean run wrote is in `run`, equal.
fn check_clean(e: &CleanRunExpectation, run: &RunResult, clean: &RunResult) -> Verdict {
    let queries: Vec<Query> = match e.queries.is_empty() {
        true => Query::ALL.to_vec(),
        false => e.queries.iter().filter_map(|q| q.parse().ok()).collect(),
    };
    let finals = |r: &RunResult, q: Query| -> std::collections::BTreeMap<String, Value> {
        r.documents
            .collection(q)
            .filter(|row| row.is_final)
            .filter_map(|row| Some((row.id.clone(), serde_json::to_value(row).ok()?)))
            .collect()
    };
    let (mut equal, mut differ, mut missing, mut extra) = (0, Vec::new(), Vec::new(), 0);
    // The first row that differs, with the fields it differs in.
    let mut first_apart = None;
    for q in &queries {
        let here = finals(run, *q);
        let there = finals(clean, *q);
        for (id, row) in &there {
            match here.get(id) {
                Some(h) if h == row => equal += 1,
                Some(h) => {
                    first_apart.get_or_insert_with(|| format!("{id} ({})", fields_apart(h, row)));
                    differ.push(id.clone());
                }
                None => missing.push(id.clone()),
            }
        }
        extra += here.keys().filter(|id| !there.contains_key(*id)).count();
    }
    let names: Vec<&str> = queries.iter().map(|q| q.name()).collect();
    let example = first_apart
        .map(|apart| format!("; differs: {apart}"))
        .or_else(|| missing.first().map(|id| format!("; missing: {id}")))
        .unwrap_or_default();
    // What a difference comes from: records late or refused here that the clean run took.
    let why = match differ.is_empty() && missing.is_empty() {
        true => String::new(),
        false => format!("; {}", refused_here(run, clean, &queries)),
    };
    Verdict {
        check: format!(
            "final rows of {} equal those of the run without hostile input",
            names.join(", ")
        ),
        pass: differ.is_empty() && missing.is_empty() && equal > 0,
        expected: format!(
            "all {} rows of the clean run, equal",
            equal + differ.len() + missing.len()
        ),
        actual: format!(
            "{equal} equal, {} differ, {} missing{example}; {extra} more rows of other keys{why}",
            differ.len(),
            missing.len()
        ),
    }
}

/// The fields in which a row differs from the clean run's, `field here/clean`.
fn fields_apart(here: &Value, there: &Value) -> String {
    let (Value::Object(here), Value::Object(there)) = (here, there) else {
        return "not comparable".into();
    };
    let apart: Vec<String> = there
        .iter()
        .filter(|(k, v)| here.get(*k) != Some(*v))
        .map(|(k, v)| {
            let h = here.get(k).map_or("absent".into(), Value::to_string);
            format!("{k} {h}/{v}")
        })
        .collect();
    apart.join(", ")
}

/// Records of the compared queries late or over a state bound in `run` and in the clean run,
/// and the late ones' partitions: a city row can differ only through such records.
fn refused_here(run: &RunResult, clean: &RunResult, queries: &[Query]) -> String {
    let tally = |r: &RunResult| {
        queries.iter().fold((0, 0), |(late, over), q| {
            let c = r.counters.queries.get(q).cloned().unwrap_or_default();
            (late + c.late, over + c.over_limit)
        })
    };
    let ((late, over), (clean_late, clean_over)) = (tally(run), tally(clean));
    let mut partitions: std::collections::BTreeMap<String, u64> = Default::default();
    let mut earliest: Option<&pipeline::engine::LateRecord> = None;
    for l in run
        .documents
        .late()
        .iter()
        .filter(|l| queries.contains(&l.query))
    {
        *partitions
            .entry(format!("{}/{}", l.topic, l.position.partition))
            .or_default() += 1;
        if earliest.is_none_or(|e| l.event_time < e.event_time) {
            earliest = Some(l);
        }
    }
    let first = earliest
        .map(|l| {
            format!(
                "; earliest late: {} {}/{}@{} at {} behind watermark {}",
                l.query,
                l.topic,
                l.position.partition,
                l.position.offset,
                pipeline::time::format_rfc3339(l.event_time),
                pipeline::time::format_rfc3339(l.watermark),
            )
        })
        .unwrap_or_default();
    // On a real backend: whether Kafka itself took the records in late.
    let produce = run
        .produced
        .as_ref()
        .map(|p| {
            format!(
                "; Kafka took the records in up to {} ms out of order{}",
                p.disorder_ms,
                p.disorder_at
                    .map(|(t, part, o)| format!(" ({t}/{part}@{o})"))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_default();
    format!(
        "late {late} (clean run {clean_late}) by partition {partitions:?}, over a bound {over} \
         (clean run {clean_over}){first}; the merge handed records over up to {} ms out of \
         order{produce}",
        run.driver.disorder_max_ms
    )
}

/// Every high-water mark of the engine's state against its configured bound.
fn within_bounds(run: &RunResult, config: &pipeline::engine::EngineConfig) -> Verdict {
    let p = &run.counters.peaks;
    let mut bad = Vec::new();
    let mut check = |what: String, peak: u64, max: usize| {
        if peak > max as u64 {
            bad.push(format!("{what} {peak} > {max}"));
        }
    };
    check(
        "interned strings".into(),
        p.interned_strings,
        config.max_interned_strings,
    );
    check(
        "transport vehicles".into(),
        p.vehicles,
        config.max_devices_per_topic,
    );
    for (q, &n) in &p.keys_per_query {
        check(format!("{q} keys"), n, config.max_keys_per_query);
    }
    for (q, &n) in &p.open_windows {
        check(format!("{q} open windows"), n, config.max_open_windows);
    }
    for (t, &n) in &p.devices_per_topic {
        check(format!("{t} devices"), n, config.max_devices_per_topic);
    }
    let most_keys = p.keys_per_query.values().max().copied().unwrap_or(0);
    Verdict {
        check: "engine state stayed within its bounds".into(),
        pass: bad.is_empty(),
        expected: "every peak <= its max_* bound".into(),
        actual: match bad.is_empty() {
            true => format!(
                "holds (peaks: {} names, {most_keys} keys in a query)",
                p.interned_strings
            ),
            false => bad.join("; "),
        },
    }
}

fn check_performance(e: &PerformanceExpectation, run: &RunResult, tp: &Throughput) -> Verdict {
    let latency = match e.metric {
        PerformanceMetric::AlertLatencyMs => Some(&run.alert_latency),
        PerformanceMetric::WindowLatencyMs => Some(&run.window_latency),
        PerformanceMetric::TriggerProcessingMs => Some(&run.trigger_processing),
        PerformanceMetric::AlertLatencyRecoveryMs => Some(&run.alert_latency_recovery),
        _ => None,
    };
    if latency.is_some_and(|h| h.count() == 0) {
        // A bound on a latency nothing was measured for would hold vacuously: say so instead.
        return Verdict {
            check: format!("{:?} {:?} {}", e.metric, e.stat, describe(&e.cmp)).to_lowercase(),
            pass: false,
            expected: format!("{} over at least one sample", describe(&e.cmp)),
            actual: "no samples: nothing in this run produced such a latency".into(),
        };
    }
    let stat = |h: &pipeline::stats::Histogram| {
        let p = h.percentiles();
        match e.stat {
            Stat::P50 => p.p50_ms,
            Stat::P95 => p.p95_ms,
            Stat::P99 => p.p99_ms,
            Stat::Max => p.max_ms,
        }
    };
    let (name, value) = match e.metric {
        PerformanceMetric::OfferedMsgPerMin => (
            "offered msg/min".to_owned(),
            Value::from(tp.offered_msg_per_min),
        ),
        PerformanceMetric::OfferedRecordsPerMin => (
            "offered records/min".to_owned(),
            Value::from(tp.offered_records_per_min),
        ),
        PerformanceMetric::SustainableRecordsPerMin => (
            "sustainable records/min".to_owned(),
            Value::from(tp.sustainable_records_per_min),
        ),
        PerformanceMetric::KeepsUp => ("keeps up".to_owned(), Value::from(tp.keeps_up)),
        PerformanceMetric::AlertLatencyMs => (
            format!("alert latency {:?} ms", e.stat).to_lowercase(),
            Value::from(stat(&run.alert_latency)),
        ),
        PerformanceMetric::WindowLatencyMs => (
            format!("window latency {:?} ms", e.stat).to_lowercase(),
            Value::from(stat(&run.window_latency)),
        ),
        PerformanceMetric::TriggerProcessingMs => (
            format!("trigger processing {:?} ms", e.stat).to_lowercase(),
            Value::from(stat(&run.trigger_processing)),
        ),
        PerformanceMetric::AlertLatencyRecoveryMs => (
            format!("alert latency during recovery {:?} ms", e.stat).to_lowercase(),
            Value::from(stat(&run.alert_latency_recovery)),
        ),
        PerformanceMetric::PendingItemsMax => (
            "pending output items, most".to_owned(),
            Value::from(run.pending_items_max as u64),
        ),
    };
    Verdict {
        check: format!("{name} {}", describe(&e.cmp)),
        pass: satisfies(&value, &e.cmp),
        expected: describe(&e.cmp),
        actual: short(&value),
    }
}

fn check_fault(e: &FaultExpectation, run: &RunResult) -> Verdict {
    let traces: Vec<_> = run.faults.iter().filter(|t| t.fault == e.fault).collect();
    let ok = |t: &crate::run::FaultTrace| match e.outcome {
        FaultOutcome::DeadLetter => t
            .dead_letter
            .is_some_and(|r| e.reason.as_deref().is_none_or(|want| r.name() == want)),
        FaultOutcome::Late => t.dead_letter.is_none() && !t.late_for.is_empty(),
        FaultOutcome::Accepted => t.dead_letter.is_none() && t.late_for.is_empty(),
    };
    let good = traces.iter().filter(|t| ok(t)).count();
    let outcome = format!("{:?}", e.outcome).to_lowercase();
    let expected = format!(
        "all (at least {}) {} records -> {outcome}{}",
        e.min_records,
        e.fault,
        e.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    let bad = traces.iter().find(|t| !ok(t));
    let actual = format!(
        "{good} of {} records{}",
        traces.len(),
        bad.map(|t| format!(
            "; e.g. one went to {:?} / late for {:?}",
            t.dead_letter.map(|r| r.name()),
            t.late_for
        ))
        .unwrap_or_default()
    );
    Verdict {
        check: format!("fault {} -> {outcome}", e.fault),
        pass: traces.len() >= e.min_records && good == traces.len(),
        expected,
        actual,
    }
}

/// Records a final row aggregates, for windowed queries.
fn records_in_row(row: &Row) -> Option<u64> {
    use pipeline::engine::RowBody;
    match &row.body {
        RowBody::TrafficAggregations(r) => Some(r.sensor_readings),
        RowBody::TransportMetrics(r) => Some(r.reports),
        RowBody::IncidentAggregations(r) => Some(r.count),
        RowBody::MobilityIndex(r) => Some(r.total_readings),
        RowBody::ParkingAggregations(r) => Some(r.readings),
        _ => None,
    }
}

/// The invariants every run must satisfy, whatever its scenario says; `digests` are the run's.
pub fn builtin(
    run: &RunResult,
    config: &pipeline::engine::EngineConfig,
    digests: &Digests,
) -> Vec<Verdict> {
    let mut v = Vec::new();
    // Aggregates hold exactly the aggregated records, each in size/slide windows: nothing that
    // was dead-lettered or late slipped into a window, and nothing aggregated went missing.
    let mut bad = Vec::new();
    for (query, window) in [
        (Query::TrafficAggregations, config.traffic_window),
        (Query::TransportMetrics, config.transport_window),
        (Query::IncidentAggregations, config.incident_window),
        (Query::MobilityIndex, config.mobility_window),
        (Query::ParkingAggregations, config.parking_window),
    ] {
        let in_rows: u64 = run
            .documents
            .collection_any_order(query)
            .filter_map(records_in_row)
            .sum();
        let aggregated = run.counters.queries.get(&query).map_or(0, |c| c.aggregated);
        let want = aggregated * window.windows_per_record() as u64;
        if in_rows != want {
            bad.push(format!(
                "{query}: rows hold {in_rows}, expected {aggregated} x {}",
                window.windows_per_record()
            ));
        }
    }
    v.push(Verdict {
        check: "aggregates hold exactly the aggregated records, each in size/slide windows".into(),
        pass: bad.is_empty(),
        expected: "sum of per-window record counts = aggregated x size/slide, per query".into(),
        actual: if bad.is_empty() {
            "holds".into()
        } else {
            bad.join("; ")
        },
    });
    let conservation = run.counters.check_conservation();
    v.push(Verdict {
        check: "conservation: in = aggregated + dead-lettered + late (+ over limit)".into(),
        pass: conservation.is_ok(),
        expected: "holds for every topic and windowed query".into(),
        actual: conservation.err().unwrap_or_else(|| "holds".into()),
    });
    v.push(Verdict {
        check: "the document store and the table store hold the same final rows".into(),
        pass: digests.documents == digests.tables,
        expected: digests.documents.clone(),
        actual: digests.tables.clone(),
    });
    v.push(within_bounds(run, config));
    let offered: u64 = run.offered.values().sum();
    let read: u64 = run.counters.topics.values().map(|c| c.records_in).sum();
    v.push(Verdict {
        check: "every offered record reached the engine".into(),
        pass: offered == read,
        expected: offered.to_string(),
        actual: read.to_string(),
    });
    v
}

/// The checks of the job's driver on the simulated clock, for plain and swarm runs alike: its
/// pending output within its bound, commits that follow checkpoints, checkpoints that keep up.
pub fn driver_checks(scenario: &Scenario, run: &RunResult) -> Vec<Verdict> {
    let mut v = vec![pending_bound(scenario, run)];
    v.extend(commits_follow_checkpoints(scenario, run));
    v.extend(checkpoints_keep_up(scenario, run));
    v.extend(merge_in_order(run));
    v
}

/// The driver handed each topic's records to the engine in Kafka-timestamp order (memory
/// backend): the canonical merge waits for every partition that may still deliver an earlier
/// record, so only partition lag, a record becoming readable after later ones of other
/// partitions were handed over, can put one behind, and by less than the lag. Without lag the
/// order is exact, and with it the watermark, the late records and every final row, whatever
/// the partition count, the read interleaving, the crashes and the outages.
pub fn merge_in_order(run: &RunResult) -> Option<Verdict> {
    let lag = run.partition_lag_ms?;
    let disorder = run.driver.disorder_max_ms;
    Some(Verdict {
        check: "the merge handed records over in timestamp order".into(),
        pass: match lag {
            0 => disorder == 0,
            _ => disorder < lag,
        },
        expected: match lag {
            0 => "0 ms out of order".into(),
            _ => format!("< {lag} ms out of order (the partition lag)"),
        },
        actual: format!("{disorder} ms at most"),
    })
}

/// The group's committed offsets followed the durable checkpoints (memory backend): a commit is
/// sent once its checkpoint is durable and, if it fails, sent again after at most
/// `retry_max_ms`, so while the job runs and Kafka is up the offsets trail the latest durable
/// checkpoint for no longer than that plus a few round trips. Lag tools and the other
/// instances of a consumer group read these offsets, not the checkpoint.
pub fn commits_follow_checkpoints(scenario: &Scenario, run: &RunResult) -> Option<Verdict> {
    let behind = run.commit_behind_max_ms?;
    let d = &scenario.driver;
    let round_trip = scenario.network.commit_delay_ms();
    let bound = d.retry_max_ms as i64 + 4 * round_trip + 1_000;
    Some(Verdict {
        check: "committed offsets followed the durable checkpoints".into(),
        pass: behind <= bound,
        expected: format!(
            "trailing <= {bound} ms at a time while the job ran and Kafka was up \
             (retry_max_ms + round trips)"
        ),
        actual: format!("{behind} ms at most"),
    })
}

/// Every record handed to the engine was covered by a durable checkpoint in time (memory
/// backend, in runs whose faults leave writes and checkpoint stores alone): a checkpoint is
/// taken at the first cut after `checkpoint_interval_ms` and is durable once the writes up to
/// that cut are acknowledged and it is stored, so a record waits at most the interval, a flush,
/// the pending output's writes and a store. A checkpoint that stalls changes no output (rows
/// are idempotent): without this check only a crash, re-reading too much, would show it.
pub fn checkpoints_keep_up(scenario: &Scenario, run: &RunResult) -> Option<Verdict> {
    if run.writes_unhindered != Some(true) {
        return None;
    }
    let d = &scenario.driver;
    let n = &scenario.network;
    let write = n.sink_write_ms.max(0) + 1;
    let store = n.store_delay_ms();
    // Each lane writes one batch at a time; the lanes write side by side, counted one after
    // another here.
    let writes = run.pending_items_max.div_ceil(d.write_max_items.max(1)) as i64 + 1;
    let flush = d.flush_interval_ms.max(d.linger_ms) as i64;
    let bound = d.checkpoint_interval_ms as i64 + flush + 3 * writes * write + store + 1_000;
    let waited = run.driver.checkpoint_wait_max_ms;
    Some(Verdict {
        check: "every record handed to the engine was checkpointed in time".into(),
        pass: waited <= bound,
        expected: format!(
            "<= {bound} ms (checkpoint interval + a flush + the pending output's writes + a \
             store)"
        ),
        actual: format!("{waited} ms at most"),
    })
}

/// The driver's bound on pending output held: it pauses every partition at
/// `max_pending_items`, so it can overshoot only by what one poll's records and one trigger
/// produce before it looks again (a poll's records make at most a handful of items each; a
/// trigger at most one partial row per open window and key).
pub fn pending_bound(scenario: &Scenario, run: &RunResult) -> Verdict {
    let d = &scenario.driver;
    let max = run.driver_max_pending.unwrap_or(d.max_pending_items);
    let poll = 2_000 * 8;
    let trigger = scenario.pipeline.max_open_windows.min(64) * 64;
    let bound = max + poll + trigger;
    Verdict {
        check: "pending output stayed within the driver's bound".into(),
        pass: run.pending_items_max <= bound,
        expected: format!("<= {bound} items ({max} + one poll's and one trigger's output)"),
        actual: run.pending_items_max.to_string(),
    }
}

/// Checks a run against its scenario; built-in invariants first. `digests` are the run's (the
/// documents' is its output digest); `fault_free_digest` is the digest of the same scenario and
/// seed without faults, when the scenario asks for it; `clean` the run of the scenario without
/// its hostile entries, when it has a `clean_run` expectation.
pub fn evaluate(
    scenario: &Scenario,
    run: &RunResult,
    digests: &Digests,
    fault_free_digest: Option<&str>,
    clean: Option<&RunResult>,
    backend: Backend,
) -> Vec<Verdict> {
    let tp = throughput(run);
    let digest = digests.documents.as_str();
    let mut verdicts = builtin(run, &scenario.pipeline, digests);
    verdicts.extend(
        scenario
            .expect
            .rows
            .iter()
            .map(|e| check_rows(e, scenario, run)),
    );
    verdicts.extend(scenario.expect.counts.iter().map(|e| check_count(e, run)));
    verdicts.extend(
        scenario
            .expect
            .performance
            .iter()
            .map(|e| check_performance(e, run, &tp)),
    );
    verdicts.extend(scenario.expect.faults.iter().map(|e| check_fault(e, run)));
    verdicts.extend(clean_run_check(scenario, run, clean));
    // On a real backend the records arrive live: the pinned digest holds there unless the
    // scenario says its output depends on the exact interleaving of partitions.
    let live = backend != Backend::Memory;
    let pinned = scenario.expect.digest.as_ref();
    if let Some(want) =
        pinned.filter(|_| !live || scenario.expect.digest_on_live_streams != Some(false))
    {
        verdicts.push(Verdict {
            check: "output digest is the pinned one".into(),
            pass: want == digest,
            expected: want.clone(),
            actual: digest.to_owned(),
        });
    }
    if let Some(want) = fault_free_digest {
        verdicts.push(digest_equals(digest, want));
    }
    verdicts
}

/// Whether a run's final rows may legitimately differ from the fault-free run's: the plan lags
/// partitions (records reach the job out of produce order across partitions, as on a live
/// stream, and the driver's merge cannot wait for records it has not seen), and the scenario says
/// its rows depend on that interleaving (`digest_on_live_streams = false`: a key flood past
/// `max_keys_per_query` admits the same number of new keys, but which ones depends on the order
/// they arrive in; ARCHITECTURE.md, "Order on a live stream").
pub fn order_dependent(scenario: &Scenario, plan: &crate::faults::FaultPlan) -> bool {
    plan.partition_lag_ms > 0 && scenario.expect.digest_on_live_streams == Some(false)
}

/// What a scenario whose rows depend on the interleaving of partitions still promises under a
/// lag, instead of an equal digest: the same number of final rows per query, dead letters per
/// topic and reason, and late records per query as the fault-free run. Its `expect.clean_run`
/// ([`clean_run_check`]) holds the city's own rows to the run without hostile input.
pub fn order_independent_outcome(run: &RunResult, fault_free: &RunResult) -> Verdict {
    let tally = |r: &RunResult| {
        let mut t = std::collections::BTreeMap::<String, u64>::new();
        for row in r.documents.rows_any_order().filter(|row| row.is_final) {
            *t.entry(format!("final rows of {}", row.query().name()))
                .or_default() += 1;
        }
        for d in r.documents.dead_letters() {
            *t.entry(format!(
                "dead letters {} {}",
                d.topic.name(),
                d.reason.name()
            ))
            .or_default() += 1;
        }
        for l in r.documents.late() {
            *t.entry(format!("late records of {}", l.query.name()))
                .or_default() += 1;
        }
        t
    };
    let (here, there) = (tally(run), tally(fault_free));
    let differ: Vec<String> = there
        .keys()
        .chain(here.keys().filter(|k| !there.contains_key(*k)))
        .filter(|k| here.get(*k) != there.get(*k))
        .map(|k| {
            let n = |t: &std::collections::BTreeMap<String, u64>| t.get(k).copied().unwrap_or(0);
            format!("{k}: {} (fault-free {})", n(&here), n(&there))
        })
        .collect();
    Verdict {
        check: "rows, dead letters and late records number as in the fault-free run \
                (partition lag: which flood keys are admitted depends on arrival order)"
            .into(),
        pass: differ.is_empty() && !there.is_empty(),
        expected: format!("{} equal tallies", there.len()),
        actual: if differ.is_empty() {
            format!("{} equal tallies", here.len())
        } else {
            differ.join("; ")
        },
    }
}

/// The scenario's `expect.clean_run`, when it has one: its listed queries' final rows equal
/// those of `clean`, the run without hostile input.
pub fn clean_run_check(
    scenario: &Scenario,
    run: &RunResult,
    clean: Option<&RunResult>,
) -> Option<Verdict> {
    let e = scenario.expect.clean_run.as_ref()?;
    Some(match clean {
        Some(clean) => check_clean(e, run, clean),
        None => Verdict {
            check: "final rows equal those of the run without hostile input".into(),
            pass: false,
            expected: "a clean run to compare with".into(),
            actual: "none was run".into(),
        },
    })
}

/// The run's digest equals the fault-free run's.
pub fn digest_equals(digest: &str, fault_free: &str) -> Verdict {
    Verdict {
        check: "output digest equals the fault-free run's".into(),
        pass: fault_free == digest,
        expected: fault_free.to_owned(),
        actual: digest.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::FaultPlan;
    use crate::scenario::Scenario;
    use std::path::Path;

    /// What `row_kind_matches` answered when it read the row's JSON: the reference it must equal.
    fn kind_in_json(row: &Row, kind: &str) -> bool {
        let v = serde_json::to_value(row).unwrap();
        [
            "anomaly_type",
            "severity",
            "alert_level",
            "category",
            "alert_type",
        ]
        .iter()
        .any(|f| v.get(f).and_then(Value::as_str) == Some(kind))
    }

    // Proves reading a row's kind straight from the row answers as reading its JSON did, for
    // rows of every query and every kind a scenario can name (and one no row has).
    #[test]
    fn a_rows_kind_is_read_as_its_json_has_it() {
        // Incidents of every severity in the storm, overcrowded buses in the rush hour.
        let runs: Vec<_> = ["incident_storm", "rush_hour"]
            .iter()
            .map(|name| {
                let path =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../scenarios/{name}.toml"));
                let scenario = Scenario::load(&path).unwrap();
                crate::run::run_memory_with(
                    &scenario,
                    scenario.seed,
                    &FaultPlan::default(),
                    &mut |_, _| {},
                )
                .unwrap()
            })
            .collect();
        let kinds = [
            "severe_congestion",
            "overcapacity",
            "data_quality_issue",
            "overcrowded",
            "low",
            "medium",
            "high",
            "critical",
            "yellow",
            "orange",
            "red",
            "excellent",
            "good",
            "moderate",
            "poor",
            "none-of-these",
        ];
        let mut seen = std::collections::BTreeSet::new();
        let mut matched = 0;
        for row in runs.iter().flat_map(|run| run.documents.rows()) {
            seen.insert(row.query());
            for kind in kinds {
                let want = kind_in_json(row, kind);
                assert_eq!(row_kind_matches(row, kind), want, "{} for {kind}", row.id);
                matched += usize::from(want);
            }
        }
        assert_eq!(seen.len(), 8, "rows of every query: {seen:?}");
        assert!(matched > 100, "{matched} kinds matched");
    }

    // Proves a city row that differs from the clean run's is reported with what makes it
    // differ: the fields apart, the records late in the run by partition, and the earliest of
    // them (a CI failure of the live hostile run showed only the row's id).
    #[test]
    fn a_differing_city_row_is_reported_with_the_records_late_for_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/hostile_input.toml");
        let mut scenario = Scenario::load(&path).unwrap();
        scenario.duration = "10m".into();
        scenario.generator.hostile.clear();
        let e = scenario.expect.clean_run.clone().unwrap();
        let run = |plan: &FaultPlan| {
            crate::run::run_memory_with(&scenario, scenario.seed, plan, &mut |_, _| {}).unwrap()
        };
        let clean = run(&FaultPlan::default());
        assert!(check_clean(&e, &clean, &clean).pass);
        // Partitions lagging up to three minutes, past the one-minute watermark delay.
        let lagging = run(&FaultPlan {
            partition_lag_ms: 180_000,
            ..FaultPlan::default()
        });
        let v = check_clean(&e, &lagging, &clean);
        assert!(!v.pass, "{v:?}");
        let late: u64 = [Query::TrafficAggregations, Query::TransportMetrics]
            .iter()
            .filter_map(|q| lagging.counters.queries.get(q))
            .map(|c| c.late)
            .sum();
        assert!(late > 0);
        assert!(v.actual.contains("differs: "), "{}", v.actual);
        assert!(
            v.actual.contains("sensor_readings ") || v.actual.contains("reports "),
            "{}",
            v.actual
        );
        assert!(
            v.actual.contains(" (clean run 0) by partition {\""),
            "{}",
            v.actual
        );
        assert!(v.actual.contains("earliest late: "), "{}", v.actual);
    }
}
