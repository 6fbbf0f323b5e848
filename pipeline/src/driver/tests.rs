//! Driver tests: the canonical merge under any interleaving, partition count and crash; gating
//! by caught-up and idle partitions; the write -> checkpoint -> commit order; lanes that do not
//! wait for each other; retries with backoff; backpressure; bounded writes; stopping.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::engine::SourcePosition;
use crate::sink::memory::{Flavour, MemoryStore};
use crate::source::memory::partition_for;
use crate::time::format_rfc3339;

/// 2026-11-24T08:00:00Z.
const T0: Millis = 1_795_507_200_000;

/// One record as a producer wrote it.
#[derive(Clone, Debug)]
struct Rec {
    key: String,
    value: String,
    ts: Millis,
}

fn traffic(sensor: usize, t: Millis, speed: f64) -> String {
    format!(
        r#"{{"sensor_id":"S{sensor}","timestamp":"{}","road_id":"R{}","road_name":"Road","zone_id":"Z{}","location":{{"lat":40.4,"lon":-3.7}},"speed_kmh":{speed:?},"vehicle_flow":10,"occupancy_percent":30.0,"congestion_level":"low","data_quality":"good"}}"#,
        format_rfc3339(t),
        sensor % 3,
        sensor % 2
    )
}

/// `sensors` traffic sensors reading every 5 s for `minutes`, in produce order; every
/// `late_every`-th reading is produced three minutes after its event time, and every
/// `alert_every`-th one reports a speed below 5 km/h (an alert).
fn stream(sensors: usize, minutes: i64, late_every: usize, alert_every: usize) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut n = 0;
    for tick in 0..minutes * 12 {
        for s in 0..sensors {
            n += 1;
            let t = T0 + tick * 5_000 + s as Millis * 7;
            let speed = if alert_every > 0 && n % alert_every == 0 {
                3.0
            } else {
                30.0 + (n % 17) as f64
            };
            let late = late_every > 0 && tick > 0 && n % late_every == 0;
            out.push(Rec {
                key: format!("S{s}"),
                value: traffic(s, t, speed),
                ts: if late { t + 180_000 } else { t },
            });
        }
    }
    out.sort_by_key(|r| r.ts);
    out
}

/// The stream split over `parts` partitions of the traffic topic by key.
fn partitioned(records: &[Rec], parts: i32) -> Vec<Vec<Rec>> {
    let mut logs = vec![Vec::new(); parts as usize];
    for r in records {
        logs[partition_for(r.key.as_bytes(), parts) as usize].push(r.clone());
    }
    logs
}

fn config() -> DriverConfig {
    DriverConfig {
        jitter_seed: 7,
        ..DriverConfig::default()
    }
}

/// Carries out the driver's actions at once: every write succeeds unless a sink is told to
/// fail, checkpoints are kept in memory.
struct Harness {
    driver: Driver,
    logs: Vec<Vec<Rec>>,
    next: Vec<usize>,
    paused: BTreeSet<i32>,
    store: MemoryStore,
    checkpoints: Vec<Vec<u8>>,
    committed: Vec<(PartitionId, i64)>,
    now: Millis,
    /// Sinks whose writes fail.
    failing: BTreeSet<usize>,
    /// Whether writes are answered at once (else they wait in `held`).
    answer_writes: bool,
    /// How many of the next commits fail.
    failing_commits: u32,
    held: Vec<Write>,
    trace: Vec<String>,
    stopped: Option<StopReason>,
}

impl Harness {
    fn new(logs: Vec<Vec<Rec>>, config: DriverConfig, sinks: usize) -> Self {
        let specs = (0..sinks)
            .map(|i| SinkSpec::all(["first", "second", "third"][i]))
            .collect();
        let driver = Driver::new(config, EngineConfig::default(), specs, T0).expect("valid config");
        Self::with_driver(driver, logs)
    }

    fn with_driver(mut driver: Driver, logs: Vec<Vec<Rec>>) -> Self {
        let ids: Vec<PartitionId> = (0..logs.len() as i32)
            .map(|p| (Topic::Traffic, p))
            .collect();
        let starts = driver.handle_assigned(T0, &ids);
        let next: Vec<usize> = starts
            .iter()
            .map(|(_, s)| match s {
                StartAt::After(o) => (*o + 1) as usize,
                StartAt::Beginning | StartAt::Committed => 0,
            })
            .collect();
        // Every partition's end is known from the start, as Kafka reports it with the first
        // fetch of a backlog.
        for (p, log) in logs.iter().enumerate() {
            let from: &usize = &next[p];
            driver.handle_progress(
                T0,
                (Topic::Traffic, p as i32),
                Some(*from as i64),
                Some(log.len() as i64),
            );
        }
        Harness {
            driver,
            logs,
            next,
            paused: BTreeSet::new(),
            store: MemoryStore::new(Flavour::Documents),
            checkpoints: Vec::new(),
            failing_commits: 0,
            committed: Vec::new(),
            now: T0,
            failing: BTreeSet::new(),
            answer_writes: true,
            held: Vec::new(),
            trace: Vec::new(),
            stopped: None,
        }
    }

    fn run_actions(&mut self) {
        while let Some(action) = self.driver.poll_action() {
            match action {
                Action::Write(w) => {
                    self.trace.push(format!("write {} {:?}", w.id, w.lane));
                    if self.answer_writes {
                        self.answer(w);
                    } else {
                        self.held.push(w);
                    }
                }
                Action::StoreCheckpoint(c) => {
                    self.trace.push(format!("store {}", c.id));
                    self.checkpoints.push(c.encode());
                    self.driver.handle_checkpoint_result(self.now, c.id, Ok(()));
                }
                Action::Commit { id, positions } => {
                    self.trace.push(format!("commit {id}"));
                    let result = if self.failing_commits > 0 {
                        self.failing_commits -= 1;
                        Err("coordinator loading".to_owned())
                    } else {
                        self.committed = positions;
                        Ok(())
                    };
                    self.driver.handle_commit_result(self.now, id, result);
                }
                Action::Pause(ps) => self.paused.extend(ps.iter().map(|p| p.1)),
                Action::Resume(ps) => {
                    for p in ps {
                        self.paused.remove(&p.1);
                    }
                }
                Action::Stop(reason) => self.stopped = Some(reason),
                Action::Acknowledged(_) | Action::ShowConsole | Action::Notice(_) => {}
            }
        }
    }

    fn answer(&mut self, w: Write) {
        for s in w.sinks.iter() {
            if self.failing.contains(&s) {
                self.driver
                    .handle_write_result(self.now, w.id, w.attempt, s, Err("down".into()));
            } else {
                if s == 0 {
                    self.store.apply(&w.output);
                }
                self.driver
                    .handle_write_result(self.now, w.id, w.attempt, s, Ok(()));
            }
        }
    }

    fn answer_held(&mut self) {
        for w in std::mem::take(&mut self.held) {
            self.answer(w);
        }
        self.run_actions();
    }

    /// Reads up to `n` records of partition `p` (unless it is paused) and reports its end.
    fn feed(&mut self, p: usize, n: usize) {
        if self.paused.contains(&(p as i32)) {
            return;
        }
        let from = self.next[p];
        let to = (from + n).min(self.logs[p].len());
        let recs: Vec<RawRecord<'_>> = self.logs[p][from..to]
            .iter()
            .enumerate()
            .map(|(i, r)| RawRecord {
                topic: Topic::Traffic,
                key: r.key.as_bytes(),
                value: r.value.as_bytes(),
                kafka_timestamp_ms: r.ts,
                position: SourcePosition {
                    partition: p as i32,
                    offset: (from + i) as i64,
                },
            })
            .collect();
        if let Some(last) = recs.last() {
            self.now = self.now.max(last.kafka_timestamp_ms);
        }
        self.driver.handle_records(self.now, &recs);
        self.next[p] = to;
        let end = self.logs[p].len() as i64;
        self.driver.handle_progress(
            self.now,
            (Topic::Traffic, p as i32),
            Some(to as i64),
            Some(end),
        );
        self.run_actions();
    }

    fn tick(&mut self, now: Millis) {
        self.now = self.now.max(now);
        self.driver.handle_tick(self.now);
        self.run_actions();
    }

    fn finish(&mut self) {
        self.driver
            .handle_end_of_input(self.now, StopReason::EndOfInput);
        self.run_actions();
    }

    fn done(&self) -> bool {
        self.next.iter().zip(&self.logs).all(|(n, l)| *n == l.len())
    }

    /// Order of (key, timestamp) of the records the engine was handed.
    fn released(&self) -> Vec<(String, Millis)> {
        self.driver
            .released_log
            .iter()
            .map(|((_, p), o)| {
                let r = &self.logs[*p as usize][*o as usize];
                (r.key.clone(), r.ts)
            })
            .collect()
    }
}

/// Reads every partition to its end in one pass each, partition after partition: the read
/// order a backlog gets from a consumer that fetches one partition at a time.
fn one_partition_at_a_time(h: &mut Harness) {
    for p in 0..h.logs.len() {
        while h.next[p] < h.logs[p].len() {
            h.feed(p, 1000);
            if h.paused.contains(&(p as i32)) {
                break;
            }
        }
    }
}

/// Where two release orders part, if they do.
fn first_difference(a: &[(String, Millis)], b: &[(String, Millis)]) -> Option<String> {
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        return Some(format!("at {i}: {:?} vs {:?}", a[i], b[i]));
    }
    (a.len() != b.len()).then(|| format!("lengths {} vs {}", a.len(), b.len()))
}

fn reference(records: &[Rec]) -> (String, Vec<(String, Millis)>, u64) {
    let mut h = Harness::new(partitioned(records, 1), config(), 1);
    while !h.done() {
        h.feed(0, 1);
    }
    h.finish();
    let late = h
        .driver
        .engine()
        .counters()
        .queries
        .values()
        .map(|q| q.late)
        .sum();
    (h.store.digest().hex(), h.released(), late)
}

// Proves a backlog read one partition after another (the read order that made records late)
// hands the engine exactly the single-stream order: same final rows, same late records.
#[test]
fn backlog_read_partition_by_partition_equals_single_stream() {
    let records = stream(9, 20, 23, 31);
    let (digest, order, late) = reference(&records);
    assert!(
        late > 0,
        "the stream must hold late records to prove anything"
    );
    let mut h = Harness::new(partitioned(&records, 4), config(), 1);
    for _ in 0..50 {
        one_partition_at_a_time(&mut h);
        if h.done() {
            break;
        }
    }
    assert!(h.done());
    h.finish();
    assert_eq!(first_difference(&h.released(), &order), None);
    assert_eq!(h.store.digest().hex(), digest);
    let late_now: u64 = h
        .driver
        .engine()
        .counters()
        .queries
        .values()
        .map(|q| q.late)
        .sum();
    assert_eq!(late_now, late);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    // Proves the engine sees one order whatever the partition count and however reads of the
    // partitions interleave, so final rows and late records never depend on them.
    #[test]
    fn any_interleaving_and_partition_count_gives_the_same_order(
        parts in 1i32..6,
        chunks in proptest::collection::vec((0usize..6, 1usize..40), 1..400),
    ) {
        let records = stream(7, 12, 19, 29);
        let (digest, order, late) = reference(&records);
        let mut h = Harness::new(partitioned(&records, parts), config(), 1);
        let mut i = 0;
        while !h.done() {
            let (p, n) = chunks[i % chunks.len()];
            i += 1;
            // After the drawn interleaving has had its say, every partition is read to its end
            // (a drawn pattern may never visit some partition).
            let p = if i > 5_000 { i % parts as usize } else { p % parts as usize };
            h.feed(p, n);
            prop_assert!(i < 200_000, "the partitions were never read to their ends");
        }
        h.finish();
        prop_assert_eq!(first_difference(&h.released(), &order), None);
        prop_assert_eq!(h.store.digest().hex(), digest);
        let late_now: u64 = h.driver.engine().counters().queries.values().map(|q| q.late).sum();
        prop_assert_eq!(late_now, late);
    }

    // Proves a crash at any point, followed by a restore from the last stored checkpoint and a
    // rewind to its positions, gives the final rows of the run without the crash.
    #[test]
    fn a_crash_anywhere_gives_the_same_final_rows(
        parts in 1i32..5,
        crash_after in 1usize..3000,
        chunk in 1usize..50,
    ) {
        let records = stream(7, 12, 19, 29);
        let (digest, _, _) = reference(&records);
        let config = DriverConfig { checkpoint_interval_ms: 20_000, ..config() };
        let mut h = Harness::new(partitioned(&records, parts), config.clone(), 1);
        let mut fed = 0;
        let mut p = 0;
        while !h.done() && fed < crash_after {
            h.feed(p % parts as usize, chunk);
            p += 1;
            fed += chunk;
        }
        // The crash: the driver and everything not yet stored are gone; the store keeps what
        // was written (idempotent upserts make re-writing harmless).
        let store = std::mem::replace(&mut h.store, MemoryStore::new(Flavour::Documents));
        let logs = h.logs.clone();
        let checkpoint = h.checkpoints.last().cloned();
        let driver = match checkpoint {
            Some(bytes) => {
                let data = CheckpointData::decode(&bytes).expect("a stored checkpoint decodes");
                Driver::from_checkpoint(config, data, vec![SinkSpec::all("first")], h.now)
                    .expect("restores")
            }
            None => Driver::new(config, EngineConfig::default(), vec![SinkSpec::all("first")], h.now)
                .expect("valid"),
        };
        let mut h = Harness::with_driver(driver, logs);
        h.store = store;
        let mut p = 0;
        while !h.done() {
            h.feed(p % parts as usize, chunk);
            p += 1;
        }
        h.finish();
        prop_assert_eq!(h.store.digest().hex(), digest);
    }
}

// Proves an end the source says it no longer knows is forgotten, not kept: kept, an end the
// partition was read up to makes it look caught up whatever landed in it since (the Kafka
// shell's watermark query failing while fetches go on), and the merge would release the other
// partitions' later records ahead of its own; forgotten, the partition holds the merge back as
// one never told an end, until it has been silent for `idle_partition_ms`.
#[test]
fn an_end_told_unknown_is_forgotten() {
    let records = stream(4, 2, 0, 0);
    let config = DriverConfig {
        idle_partition_ms: 60_000,
        ..config()
    };
    let released_with = |ends: &[Option<i64>]| {
        let mut h = Harness::new(partitioned(&records, 2), config.clone(), 1);
        for &end in ends {
            h.driver
                .handle_progress(T0, (Topic::Traffic, 1), Some(0), end);
        }
        h.feed(0, 5);
        h.driver.stats().records_released
    };
    assert_eq!(
        released_with(&[Some(0)]),
        5,
        "partition 1, read up to its end, is caught up"
    );
    assert_eq!(
        released_with(&[Some(0), None]),
        0,
        "partition 1's end is unknown now: it may still deliver earlier records"
    );
}

// Proves a partition whose end is unknown holds the merge back only until it has been silent
// for `idle_partition_ms`, and one whose end is known and ahead holds it back until it delivers.
#[test]
fn silent_partitions_hold_back_until_idle_known_ends_until_read() {
    let records = stream(4, 2, 0, 0);
    let logs = partitioned(&records, 2);
    assert!(!logs[0].is_empty() && !logs[1].is_empty());
    let config = DriverConfig {
        idle_partition_ms: 60_000,
        ..config()
    };
    let mut h = Harness::new(logs, config.clone(), 1);
    // Forget the ends the harness reported: partition 1's end is unknown.
    h.driver.parts[1].end_offset = None;
    h.feed(0, 5);
    assert_eq!(
        h.driver.stats().records_released,
        0,
        "partition 1 may still deliver earlier records"
    );
    let idle = h.driver.config().idle_partition_ms as Millis;
    h.tick(T0 + idle + 1);
    assert_eq!(
        h.driver.stats().records_released,
        5,
        "partition 1 was idle; its end unknown"
    );
    assert_eq!(h.driver.stats().disorder_max_ms, 0);
    // Its records come after partition 0's later ones: the engine got them out of order, and
    // the driver says by how much.
    let first_of_1 = h.logs[1][0].ts;
    let fifth_of_0 = h.logs[0][4].ts;
    assert!(first_of_1 < fifth_of_0);
    h.feed(1, 1);
    h.feed(0, 1);
    assert_eq!(h.driver.stats().disorder_max_ms, fifth_of_0 - first_of_1);

    let mut h = Harness::new(partitioned(&records, 2), config, 1);
    h.feed(0, 5);
    h.tick(T0 + idle * 10);
    assert_eq!(
        h.driver.stats().records_released,
        0,
        "partition 1 has records to read"
    );
    h.feed(1, 1);
    assert!(h.driver.stats().records_released > 0);
    while !h.done() {
        h.feed(0, 3);
        h.feed(1, 3);
    }
    h.finish();
    assert_eq!(
        h.driver.stats().disorder_max_ms,
        0,
        "a backlog is merged in order"
    );
}

// Proves nothing is checkpointed before every sink acknowledged the writes it covers, and
// nothing committed before the checkpoint is stored; commits never run ahead of the engine.
#[test]
fn write_then_checkpoint_then_commit() {
    let records = stream(4, 3, 0, 7);
    let config = DriverConfig {
        checkpoint_interval_ms: 0,
        ..config()
    };
    let mut h = Harness::new(partitioned(&records, 1), config, 2);
    h.answer_writes = false;
    h.feed(0, 40);
    h.tick(h.now + 1_000);
    assert!(!h.held.is_empty(), "output was cut into writes");
    assert!(
        h.checkpoints.is_empty(),
        "no checkpoint before the writes are acknowledged"
    );
    assert!(h.committed.is_empty());
    h.answer_writes = true;
    h.answer_held();
    h.tick(h.now + 1_000);
    assert!(
        !h.checkpoints.is_empty(),
        "acknowledged writes let the checkpoint through"
    );
    let stores: Vec<usize> = (0..h.trace.len())
        .filter(|i| h.trace[*i].starts_with("store"))
        .collect();
    let commits: Vec<usize> = (0..h.trace.len())
        .filter(|i| h.trace[*i].starts_with("commit"))
        .collect();
    assert!(!commits.is_empty() && commits[0] > stores[0]);
    let released = h.driver.positions()[0].1.expect("records were released");
    assert!(h.committed.iter().all(|(_, o)| *o <= released));
}

// Proves an alert is written while a trigger's window rows are still unacknowledged.
#[test]
fn alerts_do_not_wait_behind_window_rows() {
    let records = stream(4, 4, 0, 0);
    let mut h = Harness::new(partitioned(&records, 1), config(), 1);
    h.answer_writes = false;
    // Two minutes of readings, then a trigger: partial window rows go out and stay unanswered.
    let two_minutes = h.logs[0].iter().take_while(|r| r.ts < T0 + 120_000).count();
    h.feed(0, two_minutes);
    h.tick(T0 + 180_000);
    let windows_in_flight = h.held.iter().any(|w| w.lane == Lane::Windows);
    assert!(windows_in_flight, "the trigger's rows are in flight");
    let held = h.held.len();
    // A reading below 5 km/h makes an alert.
    let alert = Rec {
        key: "S0".into(),
        value: traffic(0, T0 + 180_500, 2.0),
        ts: T0 + 180_500,
    };
    h.logs[0].insert(h.next[0], alert);
    h.feed(0, 1);
    assert!(
        h.held[held..].iter().any(|w| w.lane == Lane::Alerts),
        "the alert was written at once"
    );
}

// Proves a failing sink is retried after a growing, jittered delay, only that sink, reproducibly,
// and warned about at most once per period; the write completes once it recovers.
#[test]
fn a_failing_sink_is_retried_with_backoff() {
    let run = || {
        let records = stream(3, 1, 0, 5);
        let mut h = Harness::new(partitioned(&records, 1), config(), 2);
        h.failing.insert(1);
        h.feed(0, 12);
        let mut retries = Vec::new();
        for step in 1..200 {
            let now = T0 + 60_000 + step * 50;
            h.tick(now);
            for line in &h.trace {
                if line.starts_with("write") {
                    retries.push((now, line.clone()));
                }
            }
            h.trace.clear();
        }
        (retries, h)
    };
    let (a, mut h) = run();
    let (b, _) = run();
    assert_eq!(a, b, "retry instants depend on the seed only");
    assert!(a.len() >= 3, "retries happened: {a:?}");
    let gaps: Vec<Millis> = a.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps.last() > gaps.first(), "delays grow: {gaps:?}");
    assert!(h.driver.stats().write_failures[1] >= 3);
    assert_eq!(
        h.driver.stats().write_failures[0],
        0,
        "the healthy sink was not retried"
    );
    h.failing.clear();
    h.tick(h.now + 60_000);
    assert!(
        h.driver.lanes.is_idle(),
        "the write completed once the sink recovered"
    );
}

// Proves unacknowledged output past the bound pauses every partition, and acknowledgements
// resume them; nothing is dropped.
#[test]
fn backpressure_pauses_and_resumes() {
    let records = stream(6, 10, 0, 0);
    let config = DriverConfig {
        max_pending_items: 300,
        write_max_items: 100,
        ..config()
    };
    let mut h = Harness::new(partitioned(&records, 1), config, 1);
    h.answer_writes = false;
    for _ in 0..20 {
        h.feed(0, 50);
        h.tick(h.now + 500);
    }
    assert!(h.paused.contains(&0), "paused past the bound");
    assert!(h.driver.stats().pending_items_max >= 300);
    let stuck_at = h.next[0];
    h.feed(0, 50);
    assert_eq!(h.next[0], stuck_at, "a paused partition is not read");
    while !h.held.is_empty() {
        h.answer_writes = true;
        h.answer_held();
        h.tick(h.now + 500);
    }
    assert!(!h.paused.contains(&0), "resumed once acknowledged");
    while !h.done() {
        h.feed(0, 50);
        h.tick(h.now + 500);
    }
    h.finish();
    let archived: u64 = h.store.archived().values().sum();
    assert_eq!(archived, records.len() as u64, "every record archived once");
}

// Proves the read-ahead byte bound pauses the partitions holding records, never the one the
// merge waits for, and resumes a paused partition once the merge has emptied it (the source
// must be told: nothing else would ever fetch it again), so a backlog is still read to its
// end with the single-stream result.
#[test]
fn the_read_ahead_byte_bound_pauses_full_partitions_and_resumes_emptied_ones() {
    let records = stream(9, 20, 0, 0);
    let (digest, _, _) = reference(&records);
    let logs = partitioned(&records, 2);
    let bound = 40 * logs[0][0].value.len();
    let config = DriverConfig {
        max_buffered_bytes: bound,
        ..config()
    };
    let mut h = Harness::new(logs, config, 1);
    // Partition 1 has not delivered yet: partition 0's records wait for it.
    h.feed(0, 100);
    assert_eq!(h.paused, BTreeSet::from([0]), "the full partition, only it");
    let at = h.next[0];
    h.feed(0, 100);
    assert_eq!(h.next[0], at, "a paused partition is not read");
    let mut resumed = false;
    let mut rounds = 0;
    while !h.done() {
        h.feed(1, 10);
        h.feed(0, 10);
        resumed |= !h.paused.contains(&0);
        assert!(!h.paused.contains(&1) || h.driver.buffered() > 0);
        rounds += 1;
        assert!(rounds < 10_000, "stuck: paused {:?}", h.paused);
    }
    assert!(resumed, "partition 0 was resumed once emptied");
    assert!(h.driver.stats().read_ahead_full_episodes >= 1);
    h.finish();
    assert_eq!(h.store.digest().hex(), digest);
}

// Proves the end-of-input timer does not run while the driver itself keeps partitions paused:
// silence it asked for is not the end of the input.
#[test]
fn idle_exit_waits_while_partitions_are_paused() {
    let records = stream(6, 10, 0, 0);
    let config = DriverConfig {
        max_pending_items: 300,
        write_max_items: 100,
        idle_exit_ms: Some(5_000),
        ..config()
    };
    let mut h = Harness::new(partitioned(&records, 1), config, 1);
    h.answer_writes = false;
    while !h.paused.contains(&0) {
        h.feed(0, 50);
    }
    // Writes are slow for a minute: backpressure keeps the partition paused.
    for _ in 0..60 {
        h.tick(h.now + 1_000);
    }
    assert_eq!(h.stopped, None, "stopped while paused by backpressure");
    h.answer_writes = true;
    h.answer_held();
    while !h.done() {
        assert_eq!(h.stopped, None, "stopped with records unread");
        h.feed(0, 50);
        h.tick(h.now + 100);
    }
    h.tick(h.now + 10_000);
    assert_eq!(h.stopped, Some(StopReason::Idle), "idle once really idle");
    let archived: u64 = h.store.archived().values().sum();
    assert_eq!(archived, records.len() as u64, "every record archived once");
}

// Proves no write holds more than `write_max_items`, whatever piles up.
#[test]
fn writes_are_bounded() {
    let records = stream(8, 6, 0, 3);
    let config = DriverConfig {
        write_max_items: 37,
        ..config()
    };
    let mut h = Harness::new(partitioned(&records, 2), config, 1);
    h.answer_writes = false;
    while !h.done() {
        h.feed(0, 200);
        h.feed(1, 200);
        h.tick(h.now + 300);
        for w in &h.held {
            assert!(items(&w.output) <= 37, "a write of {}", items(&w.output));
        }
        h.answer_writes = true;
        h.answer_held();
        h.answer_writes = false;
    }
    h.answer_writes = true;
    h.finish();
    let archived: u64 = h.store.archived().values().sum();
    assert_eq!(archived, records.len() as u64);
}

// Proves a shutdown writes what is pending, stores a checkpoint with the positions handed to
// the engine, commits it, and only then stops; records arriving after are not taken.
#[test]
fn shutdown_checkpoints_commits_then_stops() {
    let records = stream(3, 2, 0, 0);
    let mut h = Harness::new(partitioned(&records, 1), config(), 1);
    h.feed(0, 10);
    h.driver.handle_shutdown(h.now, StopReason::Shutdown);
    h.run_actions();
    assert_eq!(h.stopped, Some(StopReason::Shutdown));
    let last =
        CheckpointData::decode(h.checkpoints.last().expect("a final checkpoint")).expect("decodes");
    assert_eq!(last.positions.get(&(Topic::Traffic, 0)), Some(&9));
    assert_eq!(h.committed, vec![((Topic::Traffic, 0), 9)]);
    assert!(
        last.engine.open_windows() > 0,
        "windows stay open on a shutdown"
    );
    let before = h.driver.stats().records_received;
    h.driver.handle_records(h.now, &[]);
    assert_eq!(h.driver.stats().records_received, before);
}

// Proves a record delivered twice (a redelivery after a reconnect) is handed to the engine once.
#[test]
fn redeliveries_are_dropped() {
    let records = stream(3, 1, 0, 0);
    let mut h = Harness::new(partitioned(&records, 1), config(), 1);
    h.feed(0, 6);
    h.next[0] = 2;
    h.feed(0, 6);
    assert_eq!(h.driver.stats().redelivered, 4);
    assert_eq!(h.driver.stats().records_released, 8);
}

// Proves a stop before any record was read commits nothing (there is no position to commit; a
// commit of nothing is an error in librdkafka) and still stops.
#[test]
fn a_stop_with_nothing_read_commits_nothing() {
    let records = stream(3, 1, 0, 0);
    let mut h = Harness::new(partitioned(&records, 2), config(), 1);
    h.driver.handle_shutdown(h.now, StopReason::Shutdown);
    h.run_actions();
    assert_eq!(h.stopped, Some(StopReason::Shutdown));
    assert!(
        !h.trace.iter().any(|t| t.starts_with("commit")),
        "no commit: {:?}",
        h.trace
    );
}

// Proves a commit that fails as the input goes quiet (Kafka back from an outage, its group
// coordinator still loading) is retried after a backoff delay with no new records, until the
// group holds every position read: the group's offsets do not stay behind while the job idles.
#[test]
fn a_failed_commit_is_retried_while_the_input_is_quiet() {
    let records = stream(3, 5, 0, 0);
    let mut h = Harness::new(partitioned(&records, 2), config(), 1);
    h.failing_commits = 3;
    let n0 = h.logs[0].len();
    let n1 = h.logs[1].len();
    h.feed(0, n0);
    h.feed(1, n1);
    let mut delays = Vec::new();
    for _ in 0..1000 {
        if h.driver.stats().commits > 0 {
            break;
        }
        let Some(next) = h.driver.poll_timeout() else {
            break;
        };
        assert!(next > h.now, "the driver never asks for a tick now");
        let failures = h.driver.stats().commit_failures;
        h.tick(next);
        if h.driver.stats().commit_failures > failures || h.driver.stats().commits > 0 {
            delays.push(next);
        }
    }
    assert_eq!(h.driver.stats().commit_failures, 3, "{:?}", h.trace);
    assert_eq!(h.driver.stats().commits, 1, "retried until it went through");
    let mut want: Vec<(PartitionId, i64)> = vec![
        ((Topic::Traffic, 0), n0 as i64 - 1),
        ((Topic::Traffic, 1), n1 as i64 - 1),
    ];
    want.sort();
    let mut got = h.committed.clone();
    got.sort();
    assert_eq!(got, want, "the group holds every position read");
    // Each retry waited longer than the one before (the backoff doubles up to its cap).
    let gaps: Vec<Millis> = delays.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.windows(2).all(|g| g[1] >= g[0]) && gaps.iter().all(|g| *g > 0),
        "{gaps:?}"
    );
}

// Proves a failed final commit during a stop is retried after a backoff delay, not at once in a
// loop, and the stop completes when it goes through.
#[test]
fn a_failed_final_commit_is_retried_after_a_delay() {
    let records = stream(3, 1, 0, 0);
    let mut h = Harness::new(partitioned(&records, 1), config(), 1);
    h.feed(0, 10);
    h.driver.handle_shutdown(h.now, StopReason::Shutdown);
    let mut commits = 0;
    let mut failed_once = false;
    for _ in 0..100 {
        while let Some(action) = h.driver.poll_action() {
            match action {
                Action::Write(w) => h.answer(w),
                Action::StoreCheckpoint(c) => {
                    h.driver.handle_checkpoint_result(h.now, c.id, Ok(()));
                }
                Action::Commit { id, .. } => {
                    commits += 1;
                    let result = if failed_once {
                        Ok(())
                    } else {
                        failed_once = true;
                        Err("coordinator moved".to_owned())
                    };
                    h.driver.handle_commit_result(h.now, id, result);
                }
                Action::Stop(r) => h.stopped = Some(r),
                _ => {}
            }
        }
        if h.stopped.is_some() {
            break;
        }
        let next = h.driver.poll_timeout().expect("a retry is scheduled");
        assert!(next > h.now, "the retry waits");
        h.tick(next);
    }
    assert_eq!(h.stopped, Some(StopReason::Shutdown));
    // The first attempt failed here; the retry, issued by a later tick, went through.
    assert_eq!(commits, 1);
    assert_eq!(h.driver.stats().commit_failures, 1);
    assert_eq!(h.driver.stats().commits, 1);
    assert!(
        h.trace.iter().any(|t| t.starts_with("commit")),
        "retried by a tick"
    );
}

// Proves what the job's health and metrics read of the driver: a failing sink is reported from
// its first failure until it answers again, the source from its first error until it delivers,
// and each partition's lag is its end less the next offset the engine has not yet seen.
#[test]
fn failures_and_partition_status_follow_the_driver() {
    let records = stream(3, 1, 0, 5);
    let mut h = Harness::new(partitioned(&records, 1), config(), 2);
    assert!(h.driver.failures().is_empty());
    let end = h.logs[0].len() as i64;
    let status = h.driver.partition_status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].lag(), Some(end), "nothing read yet");

    h.failing.insert(1);
    h.feed(0, 12);
    let failed_at = h.now;
    h.tick(h.now + 60_000);
    let failures = h.driver.failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].what, "second");
    assert!(failures[0].since_ms >= failed_at && failures[0].since_ms <= h.now);
    assert!(failures[0].attempts >= 2, "{failures:?}");
    let status = h.driver.partition_status()[0];
    assert_eq!(status.records_in, 12);
    assert_eq!(status.released, Some(11));
    assert_eq!(status.lag(), Some(end - 12));
    assert!(status.max_timestamp_ms.is_some());

    h.failing.clear();
    h.tick(h.now + 60_000);
    assert!(h.driver.failures().is_empty(), "the sink answers again");

    h.driver.handle_source_error(h.now, "broker down");
    let failures = h.driver.failures();
    assert_eq!(failures.len(), 1);
    assert_eq!((failures[0].what, failures[0].attempts), ("source", 1));
    h.feed(0, 1);
    assert!(h.driver.failures().is_empty(), "the source delivers again");
}

// Proves a sink set yields each member once, in ascending order, at both ends of its range.
#[test]
fn sink_set_iterates_its_members_in_order() {
    assert_eq!(SinkSet::default().iter().count(), 0);
    let set = SinkSet(SinkSet::one(0).0 | SinkSet::one(5).0 | SinkSet::one(31).0);
    assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 5, 31]);
    assert_eq!(
        SinkSet::all(32).iter().collect::<Vec<_>>(),
        (0..32).collect::<Vec<_>>()
    );
    assert_eq!(
        SinkSet::all(3).without(1).iter().collect::<Vec<_>>(),
        vec![0, 2]
    );
}

/// Ticks the harness at each instant the driver asks for, up to `until`.
fn tick_until(h: &mut Harness, until: Millis) {
    while let Some(next) = h.driver.poll_timeout() {
        if next > until {
            break;
        }
        h.tick(next);
    }
    h.now = h.now.max(until);
}

// Proves records whose output was written in a cut without a checkpoint (one was not due yet)
// are checkpointed and committed once one is due, though nothing follows them: duplicates read
// after a trigger change no window, so no later trigger or record would cut again. Found by the
// outages test: the group's offsets stayed short of the end for minutes after the input went
// quiet.
#[test]
fn the_last_records_are_checkpointed_while_the_input_is_quiet() {
    let records = stream(3, 2, 0, 0);
    let mut logs = partitioned(&records, 1);
    let n = logs[0].len();
    let again: Vec<Rec> = logs[0][n - 3..].to_vec();
    logs[0].extend(again);
    let mut h = Harness::new(logs, config(), 1);
    h.feed(0, n);
    // The first cut took a checkpoint (committed); the trigger at the next minute, 5 s later,
    // wrote its rows without one (not due yet).
    let until = h.now + 6_000;
    tick_until(&mut h, until);
    assert_eq!(
        h.committed,
        [((Topic::Traffic, 0), n as i64 - 1)],
        "{:?}",
        h.trace
    );
    h.feed(0, 3);
    assert_eq!(
        h.driver.engine().counters().topics[&Topic::Traffic].dead_lettered,
        3
    );
    let until = h.now + 300_000;
    tick_until(&mut h, until);
    assert_eq!(
        h.committed,
        [((Topic::Traffic, 0), n as i64 + 2)],
        "the duplicates' positions are committed: {:?}",
        h.trace
    );
}

// Proves the end-of-input timer does not run while a partition's end is past what was handed
// over: scaled out, a killed instance's partitions deliver nothing until the group hands them on
// (a session timeout can be longer than `idle_exit_ms`), and flushing every window then would
// finalise windows their records have yet to reach.
#[test]
fn idle_exit_waits_for_partitions_that_hold_records() {
    let records = stream(6, 10, 0, 0);
    let config = DriverConfig {
        idle_exit_ms: Some(5_000),
        ..config()
    };
    let mut h = Harness::new(partitioned(&records, 2), config, 1);
    while h.next[0] < h.logs[0].len() {
        h.feed(0, 50);
        h.tick(h.now + 10);
    }
    // Partition 1 is stalled for a minute: nothing arrives, but its end is known.
    for _ in 0..60 {
        h.tick(h.now + 1_000);
    }
    assert_eq!(h.stopped, None, "stopped with partition 1's records unread");
    while !h.done() {
        h.feed(1, 50);
        h.tick(h.now + 10);
    }
    h.tick(h.now + 10_000);
    assert_eq!(h.stopped, Some(StopReason::Idle), "idle once really idle");
    let archived: u64 = h.store.archived().values().sum();
    assert_eq!(archived, records.len() as u64, "every record archived once");
}

// Proves the end-of-input timer does not run while a partition's end is unknown: the source
// could not ask (a failing query, a source just back from an outage), so the input's end cannot
// be concluded, however long nothing arrives; once the end is told and reached, it runs.
#[test]
fn idle_exit_waits_while_an_end_is_unknown() {
    let records = stream(6, 10, 0, 0);
    let config = DriverConfig {
        idle_exit_ms: Some(5_000),
        ..config()
    };
    let mut h = Harness::new(partitioned(&records, 2), config, 1);
    while !h.done() {
        h.feed(0, 50);
        h.feed(1, 50);
        h.tick(h.now + 10);
    }
    let read = h.next[1] as i64;
    h.driver
        .handle_progress(h.now, (Topic::Traffic, 1), Some(read), None);
    for _ in 0..60 {
        h.tick(h.now + 1_000);
    }
    assert_eq!(h.stopped, None, "stopped with partition 1's end unknown");
    h.driver
        .handle_progress(h.now, (Topic::Traffic, 1), Some(read), Some(read));
    h.tick(h.now + 10_000);
    assert_eq!(
        h.stopped,
        Some(StopReason::Idle),
        "idle once the end is known"
    );
    let archived: u64 = h.store.archived().values().sum();
    assert_eq!(archived, records.len() as u64, "every record archived once");
}

// Proves the driver measures how long a record handed to the engine waits until a durable
// checkpoint covers it: at most the checkpoint interval plus a flush while writes succeed, and
// at least the outage while a sink fails (a checkpoint waits for its cut's writes).
#[test]
fn a_handed_over_record_waits_for_a_durable_checkpoint_an_interval_unless_writes_fail() {
    let records = stream(3, 6, 0, 0);
    let mut h = Harness::new(partitioned(&records, 1), config(), 2);
    let c = config();
    let bound = (c.checkpoint_interval_ms + c.flush_interval_ms + c.linger_ms) as Millis;
    let feed_until = |h: &mut Harness, until: Millis| {
        while h.next[0] < h.logs[0].len() && h.logs[0][h.next[0]].ts <= until {
            let t = h.logs[0][h.next[0]].ts;
            tick_until(h, t);
            h.feed(0, 1);
        }
        tick_until(h, until);
    };
    feed_until(&mut h, T0 + 180_000);
    let calm = h.driver.stats().checkpoint_wait_max_ms;
    assert!(
        calm > 0 && calm <= bound,
        "waited {calm} ms, bound {bound} ms: {:?}",
        h.trace
    );
    // The second sink is down for the next minute of input.
    h.failing.insert(1);
    feed_until(&mut h, T0 + 240_000);
    h.failing.clear();
    feed_until(&mut h, T0 + 420_000);
    assert!(h.done());
    let stormy = h.driver.stats().checkpoint_wait_max_ms;
    assert!(
        stormy >= 60_000,
        "the outage held the checkpoints back: waited {stormy} ms"
    );
}
