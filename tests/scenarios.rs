//! The shipped scenarios, end to end on the memory backend: each passes every expectation, and
//! each run twice gives the same output digest (determinism is tested, not assumed).

use std::path::{Path, PathBuf};

use smart_city::simulator::{self, Report, Scenario};

fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"))
}

/// Runs a shipped scenario twice; panics with the report (and the seed) unless both runs pass
/// with the same digest.
fn passes_twice(name: &str) -> Report {
    let path = scenario_path(name);
    let first = simulator::run_file(&path, &simulator::RunOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        first.passed,
        "{name} failed:\n{}\n{}",
        first.failures(),
        first.summary()
    );
    let second = simulator::run_file(&path, &simulator::RunOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        first.digest, second.digest,
        "{name} is not deterministic: seed {} gave two digests",
        first.seed
    );
    assert_eq!(
        first.counters, second.counters,
        "{name}: counters differ between runs"
    );
    first
}

// Proves the thesis figures: 792 msg/min offered and kept up, every latency below 2 s.
#[test]
fn thesis_baseline() {
    let r = passes_twice("thesis_baseline");
    assert_eq!(r.throughput.offered_msg_per_min, 792.0);
}

// Proves the morning peak: the index falls and recovers, punctuality drops, lines overflow.
#[test]
fn rush_hour() {
    passes_twice("rush_hour");
}

// Proves severe congestion fires for the forced zone only.
#[test]
fn severe_congestion() {
    passes_twice("severe_congestion");
}

// Proves ten times the load is kept up with.
#[test]
fn load_10x() {
    let r = passes_twice("load_10x");
    assert_eq!(r.throughput.offered_msg_per_min, 7920.0);
}

// Proves high and critical incidents raise orange/red levels and immediate alerts.
#[test]
fn incident_storm() {
    passes_twice("incident_storm");
}

// Proves every injected fault lands where it must and conservation holds.
#[test]
fn sensor_faults() {
    passes_twice("sensor_faults");
}

// Proves the key flood and the malformed, oversize, deep and huge messages of issue 11 leave the
// engine within its bounds, are each dead-lettered with their reason, and leave the city's own
// rows exactly those of the run without them.
#[test]
fn hostile_input() {
    let r = passes_twice("hostile_input");
    let clean = r
        .expectations
        .iter()
        .find(|v| v.check.contains("without hostile input"))
        .expect("the clean-run comparison ran");
    assert!(clean.pass, "{clean:?}");
}

// Proves crashes with writes in flight, sink outages, a slow database, Kafka away, lagging and
// redelivering partitions lose and duplicate nothing: the digest equals the fault-free run's.
#[test]
fn job_faults() {
    let r = passes_twice("job_faults");
    let same = r
        .expectations
        .iter()
        .find(|v| v.check.contains("fault-free"))
        .expect("the fault-free comparison ran");
    assert!(same.pass, "{same:?}");
}

// Proves three instances in one group, with a kill (by seed, of the lease holder too), a kill of
// the lease holder, a join and a leave (each kill noticed after a session timeout longer than the
// watermark delay), give the one-instance run's final rows: stage 2 restarted on another
// instance, records forwarded twice were dropped, and the instances' own outcome is the same on
// every run; and that two or five instances over one or eight partitions a topic give them too.
#[test]
fn scale_out() {
    let r = passes_twice("scale_out");
    let same = r
        .expectations
        .iter()
        .find(|v| v.check.contains("fault-free"))
        .expect("the one-instance comparison ran");
    assert!(same.pass, "{same:?}");
    let i = r.instances.clone().expect("the run had several instances");
    assert_eq!((i.count, i.rebalances, i.lease_moves), (3, 4, 2), "{i:?}");
    assert!(
        i.forwarded_twice > 0,
        "a kill left records forwarded twice: {i:?}"
    );
    assert!(
        i.rechecked > 0,
        "the odd instances checked with another configuration: {i:?}"
    );
    let again = simulator::run_file(&scenario_path("scale_out"), &Default::default()).unwrap();
    assert_eq!(again.instances, r.instances);
    // The same final rows on one partition a topic and two instances, or eight and five.
    let path = scenario_path("scale_out");
    let text = std::fs::read_to_string(&path).unwrap();
    for (partitions, instances) in [(1, 2), (8, 5)] {
        let text = text
            .replace("instances = 3", &format!("instances = {instances}"))
            .replace(
                "sink_write_ms = 20",
                &format!("sink_write_ms = 20\npartitions = {partitions}"),
            );
        let scenario = Scenario::parse(&text, &path).unwrap();
        let other =
            simulator::run_scenario(&scenario, &path, &Default::default(), &mut |_, _| {}).unwrap();
        assert_eq!(
            (other.digest.as_str(), other.instances.map(|i| i.count)),
            (r.digest.as_str(), Some(instances)),
            "{partitions} partitions, {instances} instances"
        );
    }
}

// Proves every scenario in the folder is covered by a test above.
#[test]
fn every_shipped_scenario_is_tested() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "hostile_input",
            "incident_storm",
            "job_faults",
            "load_10x",
            "rush_hour",
            "scale_out",
            "sensor_faults",
            "severe_congestion",
            "thesis_baseline"
        ]
    );
}

// Proves a deliberately wrong expectation fails, with expected vs actual and the seed that
// reproduces it.
#[test]
fn wrong_expectation_fails_with_a_clear_diff() {
    let path = scenario_path("thesis_baseline");
    let text = std::fs::read_to_string(&path).unwrap()
        + "\n[[expect.performance]]\nmetric = \"offered_msg_per_min\"\neq = 800\n";
    let scenario = Scenario::parse(&text, &path).unwrap();
    let report = simulator::run_scenario(
        &scenario,
        &path,
        &simulator::RunOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    assert!(!report.passed);
    let failures = report.failures();
    assert!(
        failures.contains("FAILED offered msg/min = 800"),
        "{failures}"
    );
    assert!(failures.contains("expected: = 800"), "{failures}");
    assert!(failures.contains("actual:   792"), "{failures}");
    assert!(failures.contains("--seed 42"), "{failures}");
    // Everything else in the file still holds, the pinned digest included.
    assert_eq!(report.expectations.iter().filter(|v| !v.pass).count(), 1);
}

// Proves a different seed gives different data (the digest is not a constant).
#[test]
fn another_seed_changes_the_digest() {
    let path = scenario_path("incident_storm");
    let a = simulator::run_file(
        &path,
        &simulator::RunOptions {
            seed: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    let b = simulator::run_file(
        &path,
        &simulator::RunOptions {
            seed: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    assert_ne!(a.digest, b.digest);
}

// Proves the built-in check that checkpoints keep up measures something and can fail: the
// thesis hour's records wait about the checkpoint interval for a durable checkpoint, which
// passes; the same run with a minute more fails; and a sink outage holds every checkpoint back
// for at least its length, in a run where the check does not apply.
#[test]
fn checkpoints_keep_up_is_measured_and_can_fail() {
    let load = |name: &str| {
        let path = scenario_path(name);
        Scenario::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap()
    };
    let calm = load("thesis_baseline");
    let mut run = simulator::run::run_memory(&calm, calm.seed, &mut |_, _| {}).unwrap();
    let interval = calm.driver.checkpoint_interval_ms as i64;
    let waited = run.driver.checkpoint_wait_max_ms;
    assert!(
        (interval..interval + 1_000).contains(&waited),
        "waited {waited} ms"
    );
    let verdict = simulator::expect::checkpoints_keep_up(&calm, &run).expect("no sink fault");
    assert!(verdict.pass, "{verdict:?}");
    run.driver.checkpoint_wait_max_ms += 60_000;
    let verdict = simulator::expect::checkpoints_keep_up(&calm, &run).expect("no sink fault");
    assert!(!verdict.pass, "{verdict:?}");

    // job_faults: the document store is away for 45 s.
    let faults = load("job_faults");
    let run = simulator::run::run_memory(&faults, faults.seed, &mut |_, _| {}).unwrap();
    assert!(simulator::expect::checkpoints_keep_up(&faults, &run).is_none());
    let waited = run.driver.checkpoint_wait_max_ms;
    assert!(waited >= 45_000, "waited {waited} ms");
}

// Proves the built-in check that the merge hands records over in timestamp order measures
// something and can fail: job_faults' crashes and Kafka outage leave backlogs, merged in exact
// order once its partition lag is taken away; with the lag, records come out of order by less
// than it; and that disorder fails the check of a run without lag.
#[test]
fn merge_in_order_is_measured_and_can_fail() {
    let path = scenario_path("job_faults");
    let text = std::fs::read_to_string(&path).unwrap();
    let lagging = Scenario::parse(&text, &path).unwrap();
    let lag = lagging.faults.partition_lag_ms;
    assert!(lag > 0);
    let mut run = simulator::run::run_memory(&lagging, lagging.seed, &mut |_, _| {}).unwrap();
    let disorder = run.driver.disorder_max_ms;
    assert!(disorder > 0 && disorder < lag, "{disorder} ms out of order");
    let verdict = simulator::expect::merge_in_order(&run).expect("a memory run");
    assert!(verdict.pass, "{verdict:?}");
    run.partition_lag_ms = Some(0);
    let verdict = simulator::expect::merge_in_order(&run).expect("a memory run");
    assert!(!verdict.pass, "{verdict:?}");

    let calm = Scenario::parse(
        &text.replace("partition_lag_ms = 2000", "partition_lag_ms = 0"),
        &path,
    )
    .unwrap();
    assert_eq!(calm.faults.partition_lag_ms, 0);
    let run = simulator::run::run_memory(&calm, calm.seed, &mut |_, _| {}).unwrap();
    assert!(run.crashes > 0);
    assert_eq!(run.driver.disorder_max_ms, 0);
    assert!(simulator::expect::merge_in_order(&run).unwrap().pass);
}
