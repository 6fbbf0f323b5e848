//! The memory backend: the production job's driver ([`pipeline::driver`]) carried out on an
//! in-memory partitioned log and two in-memory stores, on a simulated clock, with faults.
//!
//! This is a shell, like the tokio one of `pipeline streaming`: it hands the driver what
//! happened (records becoming readable, write and checkpoint acknowledgements, ticks) and carries
//! out the actions it answers with (writes, checkpoints, commits, pauses), modelling how long
//! each takes. Everything between source and sinks — the merge of partitions, batching, the
//! write -> checkpoint -> commit order, retries, backpressure — is the driver's, so the simulation
//! exercises the very code the job runs. Faults ([`crate::faults`]) are replayed by seed: crashes
//! (the driver and everything in flight dropped, restart from the last stored checkpoint, the log
//! rewound to its positions), sinks down or slow, Kafka away, seeded read interleaving and
//! per-partition lag, duplicate delivery.
//!
//! The wall-clock cost of the driver's work and of the stores' writes is measured and added to
//! the simulated times only to compute latencies; it never reaches the driver, so outputs depend
//! on the seed alone. A poll is measured as one round (the consumer handing records over and the
//! driver taking them), not call by call: reading the clock around every call cost more than
//! many of the calls.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use generator::{FaultKind, Generator};
use pipeline::driver::mirror::Mirror;
use pipeline::driver::{
    Action, CheckpointData, Driver, DriverStats, InputFormat, PartitionId, SinkSpec, StartAt,
    StopReason, Write, WriteMeta,
};
use pipeline::engine::{DeadLetterReason, Engine, EngineConfig, Output, Query, RawRecord};
use pipeline::model::Topic;
use pipeline::sink::memory::{Flavour, MemoryStore};
use pipeline::source::memory::{MemoryLog, partition_for};
use pipeline::stats::Histogram;
use pipeline::time::Millis;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::faults::{FaultPlan, FaultsError};
use crate::scenario::Scenario;
use crate::stages::Stages;
use crate::throughput::{Covered, ThroughputSeries};
use crate::wallclock::Stopwatch;

/// What happened to one record that carried a fault label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultTrace {
    /// The label.
    pub fault: FaultKind,
    /// Dead-letter reason, if it was dead-lettered.
    pub dead_letter: Option<DeadLetterReason>,
    /// Windowed queries it was late for.
    pub late_for: Vec<Query>,
}

/// Everything a run produced and measured.
#[derive(Debug)]
pub struct RunResult {
    /// Scenario name.
    pub scenario: String,
    /// Seed used.
    pub seed: u64,
    /// Simulated span, ms.
    pub duration_ms: Millis,
    /// Records offered per topic.
    pub offered: BTreeMap<Topic, u64>,
    /// The engine's counters at the end.
    pub counters: pipeline::engine::Counters,
    /// The MongoDB stand-in.
    pub documents: MemoryStore,
    /// The PostgreSQL stand-in.
    pub tables: MemoryStore,
    /// Produce time -> alert row durable.
    pub alert_latency: Histogram,
    /// The same, for records produced while the job was recovering from a fault.
    pub alert_latency_recovery: Histogram,
    /// Watermark passes window end -> final row durable.
    pub window_latency: Histogram,
    /// One trigger's work to its last sink write.
    pub trigger_processing: Histogram,
    /// Wall time of the pipeline's own work (the driver, the engine, the stores' writes); on a
    /// real backend the streaming job's whole run, waits for paced input included.
    pub pipeline_wall: Duration,
    /// Real backends: simulated seconds replayed per wall second; `None` on the memory backend.
    pub replay_speed: Option<f64>,
    /// Wall time of the whole run, generation included.
    pub total_wall: Duration,
    /// Outcomes of the records that carried a fault label.
    pub faults: Vec<FaultTrace>,
    /// The faults injected, one line each.
    pub injected: Vec<String>,
    /// Crashes of the job.
    pub crashes: u32,
    /// The driver's counters, summed over its lives (one per crash plus one).
    pub driver: DriverStats,
    /// Most output items ever unacknowledged.
    pub pending_items_max: usize,
    /// The bound on pending output the faults imposed instead of the scenario's, if any.
    pub driver_max_pending: Option<usize>,
    /// Memory backend: the longest stretch (simulated ms, counted while the job ran and Kafka
    /// was up) during which the group's committed offsets trailed the latest durable
    /// checkpoint's positions.
    pub commit_behind_max_ms: Option<Millis>,
    /// Memory backend: whether the run's faults left the job's writes and checkpoint stores
    /// alone (no sink fault), so that `driver.checkpoint_wait_max_ms` has a bound.
    pub writes_unhindered: Option<bool>,
    /// Memory backend: the partition lag the run's faults allowed (0: none), the most a
    /// record may become readable after records its partition-mates produced later.
    pub partition_lag_ms: Option<Millis>,
    /// Several instances in one group (docs/scale-out.md): what their group went through.
    pub instances: Option<InstancesOutcome>,
    /// Records offered and processed per simulated minute.
    pub throughput: ThroughputSeries,
    /// Real backends: how the producer's records were taken in by Kafka.
    pub produced: Option<ProduceOrder>,
}

/// On a real backend, how Kafka took in the replayed stream: a live stream is out of order by
/// at least what it shows, whatever the job does, and past the watermark delay that makes
/// records late. Read from the producer's acknowledgements.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProduceOrder {
    /// Most wall-clock ms from a record's due instant to its acknowledgement.
    pub slowest_ack_wall_ms: Millis,
    /// Most a record acknowledged trailed, by timestamp (simulated ms), a record of its topic
    /// acknowledged before it: how far out of order the records became readable.
    pub disorder_ms: Millis,
    /// The record that trailed most: topic, partition, offset.
    pub disorder_at: Option<(Topic, i32, i64)>,
}

/// What the instances of a run with several went through.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct InstancesOutcome {
    /// Instances at the start.
    pub count: u32,
    /// Rebalances of the group.
    pub rebalances: u32,
    /// Records stage 1 forwarded a second time (after a kill or a rebalance), which stage 2
    /// dropped by their source offset.
    pub forwarded_twice: u64,
    /// Times the lease holder was killed and stage 2 restarted on the next one.
    pub lease_moves: u32,
    /// Records stage 1 checked with another configuration than stage 2's, which stage 2
    /// checked again (`uneven_config`).
    pub rechecked: u64,
}

/// A run that could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The generator refused its configuration.
    #[error("generator: {0}")]
    Generator(#[from] generator::ConfigError),
    /// The driver or engine refused its configuration.
    #[error("pipeline: {0}")]
    Driver(#[from] pipeline::driver::DriverError),
    /// The faults cannot be planned.
    #[error(transparent)]
    Faults(#[from] FaultsError),
    /// The engine refused the scenario's `[pipeline]` table.
    #[error("pipeline: {0}")]
    Engine(#[from] pipeline::engine::ConfigError),
    /// A stored checkpoint could not be read back.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] pipeline::driver::CheckpointFormatError),
    /// The run did not finish.
    #[error("the run did not finish: {0}")]
    Stuck(String),
}

/// Progress callback: simulated milliseconds done out of the total.
pub type Progress<'a> = &'a mut dyn FnMut(Millis, Millis);

/// One generated record, serialised, as the producer thread hands it over: its key and value
/// are ranges of the batch's buffer.
#[derive(Clone, Debug)]
struct Produced {
    topic: Topic,
    key: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
    produce_time_ms: Millis,
    fault: Option<FaultKind>,
}

/// A run of consecutive records and their bytes.
#[derive(Debug, Default)]
struct Batch {
    bytes: Vec<u8>,
    records: Vec<Produced>,
}

/// Records per batch handed from the producer thread to the pipeline.
const BATCH_RECORDS: usize = 4096;
/// Batches in flight between the threads (the channel is bounded).
const BATCHES_IN_FLIGHT: usize = 4;

/// Generates and serialises every record on the calling thread, in produce-time order, and
/// sends them in batches; empty batches come back through `recycle` to be refilled.
fn produce(
    generator: Generator,
    tx: std::sync::mpsc::SyncSender<Batch>,
    recycle: std::sync::mpsc::Receiver<Batch>,
) {
    let mut batch = Batch::default();
    for record in generator.records() {
        let key_start = batch.bytes.len();
        batch.bytes.extend_from_slice(record.key.as_bytes());
        let value_start = batch.bytes.len();
        record.write_value(&mut batch.bytes);
        batch.records.push(Produced {
            topic: record.topic,
            key: key_start..value_start,
            value: value_start..batch.bytes.len(),
            produce_time_ms: record.produce_time_ms,
            fault: record.fault,
        });
        if batch.records.len() == BATCH_RECORDS {
            let mut next = recycle.try_recv().unwrap_or_default();
            next.bytes.clear();
            next.records.clear();
            if tx.send(std::mem::replace(&mut batch, next)).is_err() {
                return; // The pipeline stopped (an error); nothing left to do.
            }
        }
    }
    if !batch.records.is_empty() {
        let _ = tx.send(batch);
    }
}

/// The pipeline's side of the hand-over: a peekable stream of records.
struct Incoming {
    rx: std::sync::mpsc::Receiver<Batch>,
    recycle: std::sync::mpsc::SyncSender<Batch>,
    batch: Batch,
    next: usize,
}

impl Incoming {
    fn peek(&mut self) -> Option<&Produced> {
        if self.next >= self.batch.records.len() {
            let fresh = self.rx.recv().ok()?;
            let used = std::mem::replace(&mut self.batch, fresh);
            let _ = self.recycle.try_send(used);
            self.next = 0;
        }
        self.batch.records.get(self.next)
    }
}

/// Runs a scenario on the memory backend with the given seed and its `[faults]`.
pub fn run_memory(
    scenario: &Scenario,
    seed: u64,
    progress: Progress<'_>,
) -> Result<RunResult, RunError> {
    let start = scenario.start_ms();
    let plan = scenario
        .faults
        .plan(seed, start, start + scenario.duration_ms())?;
    run_memory_with(scenario, seed, &plan, progress)
}

/// Runs a scenario on the memory backend with the given seed and faults.
///
/// The generator runs on a second thread and hands serialised records over in order through a
/// bounded channel, so generation overlaps the pipeline's work on a two-core machine; the order
/// of records, and so every output, is exactly that of a single-threaded run.
pub fn run_memory_with(
    scenario: &Scenario,
    seed: u64,
    plan: &FaultPlan,
    progress: Progress<'_>,
) -> Result<RunResult, RunError> {
    let total = Stopwatch::start();
    let generator = Generator::new(&scenario.generator, seed)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(BATCHES_IN_FLIGHT);
    let (recycle_tx, recycle_rx) = std::sync::mpsc::sync_channel(BATCHES_IN_FLIGHT + 2);
    let start = generator.start_ms();
    let end = generator.end_ms();
    std::thread::scope(|scope| {
        scope.spawn(move || produce(generator, tx, recycle_rx));
        let incoming = Incoming {
            rx,
            recycle: recycle_tx,
            batch: Batch::default(),
            next: 0,
        };
        let mut sim = Sim::new(scenario, seed, plan, start, end)?;
        sim.run(incoming, progress)?;
        Ok(sim.finish(total))
    })
}

/// The two stand-in sinks, by index: what the driver's writes name.
const SINKS: [SinkSpec; 2] = [SinkSpec::all("documents"), SinkSpec::all("tables")];

/// Something scheduled for a simulated instant.
#[derive(Debug)]
enum EventKind {
    /// A sink's answer to a write; `land` is applied to the store first.
    WriteDone {
        epoch: u64,
        id: u64,
        attempt: u32,
        sink: usize,
        result: Result<(), String>,
        land: Option<Arc<Output>>,
    },
    /// A write that timed out reaching its store after all.
    Land { sink: usize, output: Arc<Output> },
    /// A checkpoint became durable (or failed).
    StoreDone {
        epoch: u64,
        data: Arc<CheckpointData>,
    },
    /// Kafka answered a commit.
    CommitDone {
        epoch: u64,
        id: u64,
        result: Result<(), String>,
        positions: Vec<(PartitionId, i64)>,
        /// With two stages: the checked offsets that hold those positions.
        checked: Vec<(PartitionId, i64)>,
    },
}

#[derive(Debug)]
struct Scheduled {
    at: Millis,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Latency accounting of a write in flight: the wall-clock work that produced it.
#[derive(Debug, Default)]
struct WriteCost {
    work_us: u64,
}

/// The simulation: log, stores, driver, clock, faults.
struct Sim<'a> {
    scenario: &'a Scenario,
    plan: &'a FaultPlan,
    seed: u64,
    start: Millis,
    end: Millis,
    now: Millis,
    net: Millis,
    sink_ms: Millis,
    store_ms: Millis,
    commit_ms: Millis,
    log: MemoryLog,
    ppt: i32,
    /// Per partition (topic-major): when each appended, not yet readable record becomes
    /// readable.
    invisible: Vec<VecDeque<Millis>>,
    /// The earliest of those instants: when the next record becomes readable, if one waits.
    next_reveal: Option<Millis>,
    /// Per partition: the offset below which the consumer can read.
    visible_end: Vec<i64>,
    last_visible: Vec<Millis>,
    /// What the driver was last told of each partition: (next offset, end).
    reported: Vec<(i64, i64)>,
    /// Per partition: whether the driver still holds the end it was last told (a source error
    /// makes it forget every partition's end until it is told again).
    end_held: Vec<bool>,
    /// Whether the consumer could learn the partitions' ends when it last polled (a fault makes
    /// them unknown for a span).
    ends_known: bool,
    /// Something a poll could act on changed since the last one: records became visible, a
    /// partition resumed, the job (re)started. Without it a poll would find nothing to do.
    poll_due: bool,
    /// Partitions (indices) whose position or visible end changed since the driver was told.
    progress_changed: Vec<usize>,
    labels: Vec<(Topic, i32, i64, FaultKind)>,
    offered: BTreeMap<Topic, u64>,
    input_done: bool,
    driver: Option<Driver>,
    epoch: u64,
    ended: bool,
    finished: bool,
    events: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    stores: [MemoryStore; 2],
    /// The latest durable checkpoint.
    checkpoint: Option<Arc<CheckpointData>>,
    last_commit: BTreeMap<PartitionId, i64>,
    /// Whether the group's committed offsets trail the latest durable checkpoint's positions.
    commit_behind: bool,
    /// How long they have trailed it so far, counted only while the job runs and Kafka is up;
    /// and the longest such stretch of the run.
    commit_behind_ms: Millis,
    commit_behind_max_ms: Millis,
    /// Per partition: whether the driver asked for it to be paused.
    paused: Vec<bool>,
    rng: ChaCha8Rng,
    crashes: VecDeque<Millis>,
    restart_at: Option<Millis>,
    crash_count: u32,
    last_source_error: Option<Millis>,
    costs: BTreeMap<u64, WriteCost>,
    work_us: u64,
    pipeline_wall: Duration,
    alert_latency: Histogram,
    alert_latency_recovery: Histogram,
    window_latency: Histogram,
    trigger_processing: Histogram,
    /// Spans during which the job was recovering from a fault: (from, until).
    recovery: Vec<(Millis, Option<Millis>)>,
    stats: DriverStats,
    pending_items_max: usize,
    steps: u64,
    throughput: ThroughputSeries,
    /// Records covered by a durable checkpoint, per partition: the processed ones.
    covered: Covered<PartitionId>,
    /// Several instances in one group: the two stages beside the driver, which is the lease
    /// holder's stage 2 (docs/scale-out.md).
    two: Option<TwoStages>,
    lease_moves: u32,
}

/// What runs beside the driver when several instances share the input.
struct TwoStages {
    /// The instances and their stage 1.
    stages: Stages,
    /// Stage 1's stateless checks: an engine that never holds state.
    checker: Engine,
    /// With `uneven_config`: the odd-numbered instances' checker, configured otherwise.
    uneven: Option<Engine>,
    /// The checked partitions: input partition p's checked records in checked partition p, each
    /// value its source offset (8 bytes, little-endian), then the checked record.
    log: MemoryLog,
    /// What the lease holder's stage 2 reads them through.
    mirror: Mirror,
    /// Per partition: the next checked offset the group committed for stage 2.
    committed: Vec<i64>,
    /// The buffer a checked record is encoded into.
    buf: Vec<u8>,
}

impl<'a> Sim<'a> {
    fn new(
        scenario: &'a Scenario,
        seed: u64,
        plan: &'a FaultPlan,
        start: Millis,
        end: Millis,
    ) -> Result<Self, RunError> {
        let ppt = scenario.network.partitions.unwrap_or(4).max(1);
        let n = ppt as usize * Topic::ALL.len();
        let mut sim = Sim {
            scenario,
            plan,
            seed,
            start,
            end,
            now: start,
            net: scenario.network.produce_to_consume_ms.max(0),
            sink_ms: scenario.network.sink_write_ms.max(0),
            store_ms: scenario.network.store_delay_ms(),
            commit_ms: scenario.network.commit_delay_ms(),
            log: MemoryLog::new(ppt),
            ppt,
            invisible: vec![VecDeque::new(); n],
            next_reveal: None,
            visible_end: vec![0; n],
            last_visible: vec![Millis::MIN; n],
            reported: vec![(-1, -1); n],
            end_held: vec![false; n],
            ends_known: true,
            poll_due: true,
            progress_changed: (0..n).collect(),
            labels: Vec::new(),
            offered: BTreeMap::new(),
            input_done: false,
            driver: None,
            epoch: 0,
            ended: false,
            finished: false,
            events: BinaryHeap::new(),
            seq: 0,
            stores: [
                MemoryStore::new(Flavour::Documents),
                MemoryStore::new(Flavour::Tables),
            ],
            checkpoint: None,
            last_commit: BTreeMap::new(),
            commit_behind: false,
            commit_behind_ms: 0,
            commit_behind_max_ms: 0,
            paused: vec![false; n],
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x0051_3D51),
            crashes: plan.crashes.iter().copied().collect(),
            restart_at: None,
            crash_count: 0,
            last_source_error: None,
            costs: BTreeMap::new(),
            work_us: 0,
            pipeline_wall: Duration::ZERO,
            alert_latency: Histogram::default(),
            alert_latency_recovery: Histogram::default(),
            window_latency: Histogram::default(),
            trigger_processing: Histogram::default(),
            recovery: Vec::new(),
            stats: DriverStats::default(),
            pending_items_max: 0,
            steps: 0,
            throughput: ThroughputSeries::new(start),
            covered: Covered::default(),
            two: match &plan.instances {
                Some(p) => Some(TwoStages {
                    stages: Stages::new(p.clone(), n),
                    checker: Engine::new(scenario.pipeline.clone())?,
                    uneven: match p.uneven_config {
                        true => Some(Engine::new(EngineConfig {
                            max_string_bytes: scenario.pipeline.max_string_bytes.min(12),
                            ..scenario.pipeline.clone()
                        })?),
                        false => None,
                    },
                    log: MemoryLog::new(ppt),
                    mirror: Mirror::new(),
                    committed: vec![0; n],
                    buf: Vec::new(),
                }),
                None => None,
            },
            lease_moves: 0,
        };
        sim.start_driver()?;
        Ok(sim)
    }

    fn partition_ids(&self) -> Vec<PartitionId> {
        Topic::ALL
            .iter()
            .flat_map(|t| (0..self.ppt).map(move |p| (*t, p)))
            .collect()
    }

    /// The partition at index `i` of [`Sim::partition_ids`].
    fn id(&self, i: usize) -> PartitionId {
        partition_at(self.ppt, i)
    }

    fn index(&self, topic: Topic, partition: i32) -> usize {
        let t = Topic::ALL.iter().position(|x| *x == topic).unwrap_or(0);
        t * self.ppt as usize + partition as usize
    }

    /// Starts (or restarts) the job: from the latest durable checkpoint if there is one, its
    /// bytes decoded as a restarted job reads them from its file.
    fn start_driver(&mut self) -> Result<(), RunError> {
        let mut config = self.scenario.driver.clone();
        config.jitter_seed = self.seed ^ self.epoch.wrapping_mul(0x9E37_79B9);
        if let Some(n) = self.plan.max_pending_items {
            config.max_pending_items = n.max(config.write_max_items);
        }
        if self.two.is_some() {
            config.input = InputFormat::Checked;
        }
        let watch = Stopwatch::start();
        let mut driver = match &self.checkpoint {
            Some(c) => {
                let restored = CheckpointData::decode(&c.encode())?;
                Driver::from_checkpoint(config, restored, SINKS.to_vec(), self.now)?
            }
            None => Driver::new(
                config,
                self.scenario.pipeline.clone(),
                SINKS.to_vec(),
                self.now,
            )?,
        };
        let ids = self.partition_ids();
        let starts = driver.handle_assigned(self.now, &ids);
        if let Some(two) = self.two.as_mut() {
            // Stage 2 resumes each checked partition at the offset the group committed for it;
            // the mirror drops what the checkpoint already covers.
            two.mirror = match &self.checkpoint {
                Some(c) => Mirror::restored(c.positions.iter().map(|(k, v)| (*k, *v))),
                None => Mirror::new(),
            };
            for (i, id) in ids.iter().enumerate() {
                let at = two.committed[i].max(two.log.start_offset(id.0, id.1));
                two.log.seek(id.0, id.1, at);
            }
        } else {
            for (id, start) in starts {
                let offset = match start {
                    StartAt::After(o) => o + 1,
                    StartAt::Beginning => self.log.start_offset(id.0, id.1),
                    // Commits follow checkpoints, so without a checkpoint nothing was committed.
                    StartAt::Committed => self.log.start_offset(id.0, id.1),
                };
                self.log.seek(id.0, id.1, offset);
            }
        }
        self.reported.iter_mut().for_each(|r| *r = (-1, -1));
        self.poll_due = true;
        self.progress_changed = (0..self.reported.len()).collect();
        self.driver = Some(driver);
        self.report_progress();
        self.add_work(watch);
        Ok(())
    }

    fn add_work(&mut self, watch: Stopwatch) {
        let d = watch.elapsed();
        self.pipeline_wall += d;
        self.work_us += d.as_micros() as u64;
    }

    fn schedule(&mut self, at: Millis, kind: EventKind) {
        self.seq += 1;
        self.events.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            kind,
        }));
    }

    fn kafka_down(&self, t: Millis) -> Option<Millis> {
        self.plan
            .kafka
            .iter()
            .find(|(a, b)| (*a..*b).contains(&t))
            .map(|(_, b)| *b)
    }

    /// Whether the consumer cannot learn where partitions end at `t` (a fault).
    fn ends_unknown(&self, t: Millis) -> bool {
        self.plan
            .ends_unknown
            .iter()
            .any(|(a, b)| (*a..*b).contains(&t))
    }

    /// This partition's extra delay in the minute holding `t`: seeded, below the plan's bound.
    fn lag(&self, index: usize, t: Millis) -> Millis {
        if self.plan.partition_lag_ms == 0 {
            return 0;
        }
        let minute = t.div_euclid(60_000) as u64;
        let mut h = self.seed ^ (index as u64).wrapping_mul(0xA076_1D64_78BD_642F);
        h ^= minute.wrapping_mul(0xE703_7ED1_A0B4_28DB);
        h = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        (h % (self.plan.partition_lag_ms as u64 + 1)) as Millis
    }

    /// The next instant anything happens. Records produced before it are appended to the log
    /// on the way (see [`Sim::append_until`]).
    fn next_instant(&mut self, incoming: &mut Incoming) -> Option<Millis> {
        let mut t: Option<Millis> = None;
        let mut at = |x: Option<Millis>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        let now = self.now;
        // A fault's bounds are instants of their own: recovery spans open and close there, and
        // the consumer meets Kafka's absence as it starts, not at the next record.
        let sinks = self.plan.sink.iter().map(|&(_, a, b, _)| (a, b));
        let spans = self.plan.kafka.iter().chain(&self.plan.ends_unknown);
        for (a, b) in spans.copied().chain(sinks) {
            at(Some(a).filter(|a| *a > now));
            at(Some(b).filter(|b| *b > now));
        }
        at(self.events.peek().map(|e| e.0.at));
        at(self.driver.as_ref().and_then(Driver::poll_timeout));
        at(self.crashes.front().copied());
        at(self.restart_at);
        at(self.two.as_ref().and_then(|t| t.stages.next_instant()));
        if self.driver.is_some()
            && let Some(up) = self.kafka_down(self.now)
        {
            // While Kafka is away the consumer keeps trying; its errors reach the driver.
            at(Some((self.now + 500).min(up)));
        }
        at(self.next_reveal);
        self.append_until(incoming, t).map(|x| x.max(self.now))
    }

    fn run(&mut self, mut incoming: Incoming, progress: Progress<'_>) -> Result<(), RunError> {
        while !self.finished {
            let Some(now) = self.next_instant(&mut incoming) else {
                if self.driver.is_none() && self.restart_at.is_none() {
                    return Err(RunError::Stuck("no driver and no restart pending".into()));
                }
                self.end_input_if_done()?;
                if self.finished {
                    break;
                }
                return Err(RunError::Stuck(format!(
                    "nothing left to happen at {} with the input {}",
                    pipeline::time::format_rfc3339(self.now),
                    if self.ended { "ended" } else { "not ended" }
                )));
            };
            self.count_commit_behind(now);
            self.now = now;
            self.steps += 1;
            if self.steps.is_multiple_of(65_536) {
                progress(
                    (now - self.start).clamp(0, self.end - self.start),
                    self.end - self.start,
                );
            }
            if self.crashes.front().is_some_and(|c| *c <= now) {
                self.crashes.pop_front();
                if !self.ended {
                    self.crash();
                }
            }
            if self.restart_at.is_some_and(|r| r <= now) {
                self.restart_at = None;
                self.start_driver()?;
            }
            self.reveal_due();
            self.step_stages();
            self.deliver_due_events();
            self.poll();
            self.tick_if_due();
            self.carry_out();
            self.track_recovery();
            self.end_input_if_done()?;
        }
        progress(self.end - self.start, self.end - self.start);
        Ok(())
    }

    /// Appends to the log every record produced by `next`, the next instant anything else
    /// happens (all that are left, when nothing else will), noting when each becomes readable;
    /// returns the next instant, which a record readable before `next` brings forward.
    ///
    /// A record is appended at the instant it is produced, but nothing observes it there: not
    /// the job, which reads only what is readable, nor a fault, whose effect on the record
    /// depends on its produce time alone. So the records are appended ahead, each in its turn,
    /// and the simulation steps only at instants where something happens (half as many steps
    /// as one for each production, at the thesis load).
    fn append_until(
        &mut self,
        incoming: &mut Incoming,
        mut next: Option<Millis>,
    ) -> Option<Millis> {
        loop {
            let Some(r) = incoming.peek() else {
                self.input_done = true;
                return next;
            };
            if next.is_some_and(|t| r.produce_time_ms > t) {
                return next;
            }
            let r = r.clone();
            incoming.next += 1;
            *self.offered.entry(r.topic).or_default() += 1;
            self.throughput.offer(r.produce_time_ms, 1);
            let bytes = &incoming.batch.bytes;
            let key = &bytes[r.key.clone()];
            let p = partition_for(key, self.ppt);
            let i = self.index(r.topic, p);
            let mut visible = r.produce_time_ms + self.net + self.lag(i, r.produce_time_ms);
            if let Some(up) = self.kafka_down(r.produce_time_ms) {
                visible = visible.max(up); // The producer holds it until Kafka is back.
            }
            visible = visible.max(self.last_visible[i]);
            self.last_visible[i] = visible;
            let (_, offset) =
                self.log
                    .append(r.topic, key, &bytes[r.value.clone()], r.produce_time_ms);
            self.invisible[i].push_back(visible);
            self.next_reveal = Some(self.next_reveal.map_or(visible, |t| t.min(visible)));
            next = Some(next.map_or(visible, |t| t.min(visible)));
            if let Some(kind) = r.fault {
                self.labels.push((r.topic, p, offset, kind));
            }
        }
    }

    fn reveal_due(&mut self) {
        let now = self.now;
        if self.next_reveal.is_none_or(|t| t > now) {
            return;
        }
        for (i, q) in self.invisible.iter_mut().enumerate() {
            if q.front().is_some_and(|t| *t <= now) {
                while q.front().is_some_and(|t| *t <= now) {
                    q.pop_front();
                    self.visible_end[i] += 1;
                }
                self.poll_due = true;
                self.progress_changed.push(i);
            }
        }
        self.next_reveal = self
            .invisible
            .iter()
            .filter_map(|q| q.front().copied())
            .min();
    }

    fn deliver_due_events(&mut self) {
        while self.events.peek().is_some_and(|e| e.0.at <= self.now) {
            let Some(Reverse(e)) = self.events.pop() else {
                break;
            };
            self.deliver(e.kind);
        }
    }

    fn deliver(&mut self, kind: EventKind) {
        let now = self.now;
        match kind {
            EventKind::WriteDone {
                epoch,
                id,
                attempt,
                sink,
                result,
                land,
            } => {
                if let Some(out) = land {
                    self.land(sink, &out, Some(id));
                }
                if epoch == self.epoch
                    && let Some(d) = self.driver.as_mut()
                {
                    let watch = Stopwatch::start();
                    d.handle_write_result(now, id, attempt, sink, result);
                    self.add_work(watch);
                }
            }
            EventKind::Land { sink, output } => self.land(sink, &output, None),
            EventKind::StoreDone { epoch, data } => {
                if epoch == self.epoch
                    && let Some(d) = self.driver.as_mut()
                {
                    self.checkpoint = Some(Arc::clone(&data));
                    d.handle_checkpoint_result(now, data.id, Ok(()));
                    self.update_commit_behind();
                    self.count_processed(&data);
                }
            }
            EventKind::CommitDone {
                epoch,
                id,
                result,
                positions,
                checked,
            } => {
                if result.is_ok() {
                    self.commit(&positions, &checked);
                }
                if epoch == self.epoch
                    && let Some(d) = self.driver.as_mut()
                {
                    d.handle_commit_result(now, id, result);
                }
            }
        }
    }

    /// A durable checkpoint proves every sink acknowledged the output of the records it covers:
    /// those not counted yet were processed now.
    fn count_processed(&mut self, data: &CheckpointData) {
        let log = &self.log;
        let n = self
            .covered
            .advance(data.positions.iter().map(|(id, last)| (id, *last)), |id| {
                log.start_offset(id.0, id.1)
            });
        self.throughput.process(self.now, n);
    }

    /// A write reaches a store.
    fn land(&mut self, sink: usize, out: &Output, id: Option<u64>) {
        let watch = Stopwatch::start();
        self.stores[sink].apply(out);
        let d = watch.elapsed();
        self.pipeline_wall += d;
        if let Some(c) = id.and_then(|id| self.costs.get_mut(&id)) {
            c.work_us += d.as_micros() as u64;
        }
    }

    /// Positions committed: the log may forget what precedes the previous commit (a restart
    /// resumes from the latest checkpoint, which is at or after it).
    /// With two stages the commit is of the checked offsets that hold the positions: a restart
    /// of stage 2 resumes there, and the input log is the business of stage 1's commits.
    fn commit(&mut self, positions: &[(PartitionId, i64)], checked: &[(PartitionId, i64)]) {
        if self.two.is_none() {
            for (id, offset) in std::mem::take(&mut self.last_commit) {
                self.log.truncate_below(id.0, id.1, offset + 1);
            }
        }
        for &((t, p), offset) in checked {
            let i = self.index(t, p);
            if let Some(two) = self.two.as_mut() {
                two.committed[i] = two.committed[i].max(offset + 1);
                two.log.truncate_below(t, p, two.committed[i]);
            }
        }
        self.last_commit = positions.iter().copied().collect();
        self.update_commit_behind();
    }

    /// Whether the committed offsets trail the latest durable checkpoint, after either moved.
    fn update_commit_behind(&mut self) {
        let committed = &self.last_commit;
        self.commit_behind = self.checkpoint.as_ref().is_some_and(|c| {
            c.positions
                .iter()
                .any(|(id, p)| committed.get(id).is_none_or(|c| c < p))
        });
        if !self.commit_behind {
            self.commit_behind_ms = 0;
        }
    }

    /// Time moves on to `next`: while the job runs, Kafka is up and the committed offsets trail
    /// the durable checkpoint, that stretch grows (a commit that failed while Kafka was away is
    /// owed from when it is back).
    fn count_commit_behind(&mut self, next: Millis) {
        if !self.commit_behind || self.driver.is_none() || next <= self.now {
            return;
        }
        let down: Millis = self
            .plan
            .kafka
            .iter()
            .map(|(a, b)| (next.min(*b) - self.now.max(*a)).max(0))
            .sum();
        self.commit_behind_ms += (next - self.now - down).max(0);
        self.commit_behind_max_ms = self.commit_behind_max_ms.max(self.commit_behind_ms);
    }

    /// Reads what the consumer can see, partition by partition, into the driver.
    fn poll(&mut self) {
        if self.driver.is_none() {
            return;
        }
        if self.kafka_down(self.now).is_some() {
            if self.last_source_error.is_none_or(|t| self.now - t >= 500)
                && let Some(d) = self.driver.as_mut()
            {
                self.last_source_error = Some(self.now);
                d.handle_source_error(self.now, "all brokers down (simulated)");
                self.end_held.fill(false);
            }
            return;
        }
        let known = !self.ends_unknown(self.now);
        if known != self.ends_known {
            // What the consumer knows of every partition's end changed: the driver is told.
            self.ends_known = known;
            self.end_held.fill(false);
            self.progress_changed.extend(0..self.reported.len());
            self.poll_due = true;
        }
        if !self.poll_due {
            return;
        }
        self.poll_due = false;
        // One measurement for the whole round: the driver's work on what the consumer hands over
        // (and the consumer's own), without a clock read per call.
        let watch = Stopwatch::start();
        // The consumer learns every partition's end with the fetch responses that bring records
        // (one response per broker covers all its partitions): tell the driver before any of
        // them is handed over.
        self.report_progress();
        let n = self.reported.len();
        loop {
            if self.plan.interleave {
                let readable: Vec<usize> = (0..n).filter(|&i| self.readable(i)).collect();
                if readable.is_empty() {
                    break;
                }
                let i = readable[self.rng.random_range(0..readable.len())];
                self.read_partition(self.id(i), i);
            } else {
                // Reading one partition changes neither the pauses (carried out after the poll)
                // nor another partition's position: one pass reads each readable partition once,
                // and only a read cut short by `max_poll_records` leaves one for another pass.
                let mut again = false;
                for i in 0..n {
                    if self.readable(i) {
                        self.read_partition(self.id(i), i);
                        again |= self.readable(i);
                    }
                }
                if !again {
                    break;
                }
            }
        }
        self.report_progress();
        self.add_work(watch);
    }

    /// Whether partition `i` (in [`Sim::partition_ids`] order) has visible records and is not
    /// paused.
    fn readable(&self, i: usize) -> bool {
        // By index: the logs lay their partitions out in this order (`Sim::partition_ids`).
        !self.paused[i]
            && match &self.two {
                None => self.log.position_at(i) < self.visible_end[i],
                Some(t) => t.log.position_at(i) < t.log.end_offset_at(i),
            }
    }

    /// The next input offset the driver will be handed from partition `i`: the log's position,
    /// or with two stages the mirror's.
    fn handed_up_to(&self, i: usize) -> i64 {
        let id = self.id(i);
        match &self.two {
            None => self.log.position(id.0, id.1),
            Some(t) => t.mirror.next_source(id).unwrap_or(0),
        }
    }

    /// The instances act: stage 1 forwards, instances die, join and leave, the group
    /// rebalances. A killed lease holder takes stage 2 down with it until the next holder
    /// restarts it from the last checkpoint.
    fn step_stages(&mut self) {
        let down = self.kafka_down(self.now);
        let Some(two) = self.two.as_mut() else {
            return;
        };
        let step = two
            .stages
            .step(self.now, &self.visible_end, &mut self.rng, down);
        for &(i, from, to, instance) in &step.landed {
            let (topic, p) = partition_at(self.ppt, i);
            let checker = match &two.uneven {
                Some(other) if instance % 2 == 1 => other,
                _ => &two.checker,
            };
            for o in from..to {
                let Some(rec) = self.log.record(topic, p, o) else {
                    continue;
                };
                two.buf.clear();
                two.buf.extend_from_slice(&o.to_le_bytes());
                checker.forward(&rec, &mut two.buf);
                let (to_partition, _) =
                    two.log
                        .append(topic, rec.key, &two.buf, rec.kafka_timestamp_ms);
                debug_assert_eq!(to_partition, p, "a checked partition mirrors its input");
            }
        }
        // Stage 1 never reads its input below what the group committed for it.
        for i in 0..self.visible_end.len() {
            let (topic, p) = partition_at(self.ppt, i);
            self.log.truncate_below(topic, p, two.stages.committed(i));
        }
        if !step.landed.is_empty() {
            self.poll_due = true;
        }
        if let Some(restart_at) = step.holder_killed
            && !self.ended
        {
            self.crash();
            self.lease_moves += 1;
            self.restart_at = Some(self.restart_at.map_or(restart_at, |r| r.max(restart_at)));
        }
    }

    fn read_partition(&mut self, (topic, p): PartitionId, i: usize) {
        let max = if self.plan.interleave {
            self.rng.random_range(1..=self.plan.max_poll_records)
        } else {
            self.plan.max_poll_records
        };
        if self.two.is_some() {
            return self.read_checked((topic, p), i, max);
        }
        let mut from = self.log.position(topic, p);
        if self.plan.duplicate_delivery > 0.0 && self.rng.random_bool(self.plan.duplicate_delivery)
        {
            // A redelivery: the consumer hands over again what it already delivered.
            let back = self.rng.random_range(1..=10);
            from = (from - back).max(self.log.start_offset(topic, p));
        }
        let to = (self.log.position(topic, p) + max as i64).min(self.visible_end[i]);
        let Some(driver) = self.driver.as_mut() else {
            return;
        };
        let records: Vec<RawRecord<'_>> = (from..to)
            .filter_map(|o| self.log.record(topic, p, o))
            .collect();
        // A driver that is not stopping takes the records, and with them their partition's new
        // position (its next offset is the last one's plus one).
        let takes = !driver.is_stopping();
        driver.handle_records(self.now, &records);
        drop(records);
        self.log.seek(topic, p, to);
        if takes && self.end_held[i] {
            // Telling it where the partition stands would tell it nothing new: skip the call
            // (its release and step would find nothing to do either, at the same instant).
            self.reported[i] = (to, self.visible_end[i]);
            debug_assert!(
                driver.partition_status().iter().any(|s| s.id == (topic, p)
                    && s.next_offset == Some(to)
                    && s.end_offset == Some(self.visible_end[i])),
                "the driver does not know where partition {i} stands"
            );
        } else {
            self.progress_changed.push(i);
        }
    }

    /// Stage 2 reads checked partition `i` through the mirror: records forwarded twice are
    /// dropped, the rest are handed over with their source offsets, and the driver is told the
    /// input partition's end (not how far stage 1 has forwarded, which would let later records
    /// of other partitions pass a stalled one).
    fn read_checked(&mut self, (topic, p): PartitionId, i: usize, max: usize) {
        let (Some(two), Some(driver)) = (self.two.as_mut(), self.driver.as_mut()) else {
            return;
        };
        let (checked, mirror) = (&mut two.log, &mut two.mirror);
        let mut from = checked.position(topic, p);
        if self.plan.duplicate_delivery > 0.0 && self.rng.random_bool(self.plan.duplicate_delivery)
        {
            let back = self.rng.random_range(1..=10);
            from = (from - back).max(checked.start_offset(topic, p));
        }
        let to = (checked.position(topic, p) + max as i64).min(checked.end_offset(topic, p));
        let records: Vec<RawRecord<'_>> = (from..to)
            .filter_map(|o| checked.record(topic, p, o))
            .filter_map(|r| {
                let (head, value) = r.value.split_at_checked(8)?;
                let source = i64::from_le_bytes(head.try_into().ok()?);
                let offset = r.position.offset;
                mirror
                    .accept((topic, p), offset, source)
                    .then_some(RawRecord {
                        value,
                        position: pipeline::engine::SourcePosition {
                            partition: p,
                            offset: source,
                        },
                        ..r
                    })
            })
            .collect();
        driver.handle_records(self.now, &records);
        drop(records);
        checked.seek(topic, p, to);
        self.progress_changed.push(i);
    }

    /// Tells the driver where each partition stands, when that changed.
    fn report_progress(&mut self) {
        if self.driver.is_none() {
            // A restart reports every partition again.
            self.progress_changed.clear();
            return;
        }
        if self.progress_changed.is_empty() {
            return;
        }
        // In partition order, as a consumer reports a fetch response's partitions.
        let mut changed = std::mem::take(&mut self.progress_changed);
        changed.sort_unstable();
        changed.dedup();
        // Ends the consumer cannot learn are told as unknown (-1 here).
        let known = !self.ends_unknown(self.now);
        for &i in &changed {
            let id = self.id(i);
            let end = if known { self.visible_end[i] } else { -1 };
            let now = (self.handed_up_to(i), end);
            if self.reported[i] != now {
                self.reported[i] = now;
                self.end_held[i] = known;
                if let Some(driver) = self.driver.as_mut() {
                    driver.handle_progress(self.now, id, Some(now.0), known.then_some(end));
                }
            }
        }
        changed.clear();
        self.progress_changed = changed;
    }

    fn tick_if_due(&mut self) {
        let now = self.now;
        if let Some(d) = self.driver.as_mut()
            && d.poll_timeout().is_some_and(|t| t <= now)
        {
            let watch = Stopwatch::start();
            d.handle_tick(now);
            self.add_work(watch);
        }
    }

    /// Carries out the driver's actions until it has none.
    fn carry_out(&mut self) {
        loop {
            let Some(action) = self.driver.as_mut().and_then(Driver::poll_action) else {
                return;
            };
            match action {
                Action::Write(w) => self.write(w),
                Action::StoreCheckpoint(data) => {
                    let at = self.now + self.store_ms;
                    let epoch = self.epoch;
                    self.schedule(at, EventKind::StoreDone { epoch, data });
                }
                Action::Commit { id, positions } => {
                    let at = self.now + self.commit_ms;
                    let result = match self.kafka_down(self.now) {
                        Some(_) => Err("all brokers down (simulated)".to_owned()),
                        None => Ok(()),
                    };
                    let epoch = self.epoch;
                    let checked = match self.two.as_mut() {
                        Some(t) => t.mirror.commit(&positions),
                        None => Vec::new(),
                    };
                    self.schedule(
                        at,
                        EventKind::CommitDone {
                            epoch,
                            id,
                            result,
                            positions,
                            checked,
                        },
                    );
                }
                Action::Pause(ps) => {
                    for (t, p) in ps {
                        let i = self.index(t, p);
                        self.paused[i] = true;
                    }
                }
                Action::Resume(ps) => {
                    for (t, p) in ps {
                        let i = self.index(t, p);
                        self.paused[i] = false;
                    }
                    self.poll_due = true;
                    // Resumed partitions may have records to read at once.
                    self.poll();
                }
                Action::Acknowledged(meta) => self.account(&meta),
                Action::Stop(_) => {
                    self.finished = true;
                }
                Action::ShowConsole | Action::Notice(_) => {}
            }
        }
    }

    /// Carries out a write: each sink answers after the modelled delay, or fails, or times out
    /// (and may land later) inside a fault span.
    fn write(&mut self, w: Write) {
        if w.attempt == 1 {
            let work = std::mem::take(&mut self.work_us);
            self.costs.insert(w.id, WriteCost { work_us: work });
        }
        for sink in w.sinks.iter() {
            let fault = self
                .plan
                .sink
                .iter()
                .find(|(target, a, b, _)| target.hits(sink) && (*a..*b).contains(&self.now))
                .map(|(_, _, _, slow)| *slow);
            let epoch = self.epoch;
            let (at, result, land, late) = match fault {
                None => (self.now + self.sink_ms, Ok(()), true, None),
                // Down: the connection is refused at once.
                Some(None) => (
                    self.now + 5,
                    Err("connection refused (simulated)".into()),
                    false,
                    None,
                ),
                Some(Some(slow)) => {
                    let takes = self.sink_ms + slow;
                    if takes > w.timeout_ms as Millis {
                        // Timed out; whether the write still lands later is a coin toss.
                        let late = self.rng.random_bool(0.5).then_some(self.now + takes);
                        let err =
                            format!("not acknowledged within {} ms (simulated)", w.timeout_ms);
                        (self.now + w.timeout_ms as Millis, Err(err), false, late)
                    } else {
                        (self.now + takes, Ok(()), true, None)
                    }
                }
            };
            if let Some(t) = late {
                let output = Arc::clone(&w.output);
                self.schedule(t, EventKind::Land { sink, output });
            }
            let land = land.then(|| Arc::clone(&w.output));
            self.schedule(
                at,
                EventKind::WriteDone {
                    epoch,
                    id: w.id,
                    attempt: w.attempt,
                    sink,
                    result,
                    land,
                },
            );
        }
    }

    /// Latencies of a write every sink acknowledged.
    fn account(&mut self, meta: &WriteMeta) {
        let now = self.now;
        let work = self.costs.remove(&meta.write_id).map_or(0, |c| c.work_us);
        for &ts in &meta.alert_timestamps_ms {
            let us = (now - ts).max(0) as u64 * 1000 + work;
            self.alert_latency.record_us(us);
            if self.recovering_at(ts) {
                self.alert_latency_recovery.record_us(us);
            }
        }
        for &emitted in &meta.finals_emitted_ms {
            self.window_latency
                .record_us((now - emitted).max(0) as u64 * 1000 + work);
        }
        if let Some(t) = meta.trigger_ms {
            self.trigger_processing
                .record_us((now - t).max(0) as u64 * 1000 + work);
        }
    }

    fn recovering_at(&self, t: Millis) -> bool {
        self.recovery
            .iter()
            .any(|(a, b)| t >= *a && b.is_none_or(|b| t <= b))
    }

    /// Opens a recovery span when a fault starts; closes it once the job has caught up: every
    /// readable record read and handed to the engine, nothing left to write.
    fn track_recovery(&mut self) {
        let now = self.now;
        let fault_active = self.driver.is_none()
            || self.kafka_down(now).is_some()
            || self
                .plan
                .sink
                .iter()
                .any(|(_, a, b, _)| (*a..*b).contains(&now));
        let open = self.recovery.last().is_some_and(|(_, b)| b.is_none());
        if fault_active && !open {
            self.recovery.push((now, None));
        } else if !fault_active && open {
            let caught_up = self
                .driver
                .as_ref()
                .is_some_and(|d| d.buffered() == 0 && d.pending_items() == 0)
                && self
                    .partition_ids()
                    .iter()
                    .enumerate()
                    .all(|(i, _)| self.handed_up_to(i) >= self.visible_end[i]);
            if caught_up && let Some(last) = self.recovery.last_mut() {
                last.1 = Some(now);
            }
        }
        if let Some(d) = &self.driver {
            self.pending_items_max = self.pending_items_max.max(d.pending_items());
        }
    }

    /// The job dies: the driver and what it had in flight are gone. Writes already sent may
    /// or may not have reached their stores, a checkpoint being stored may or may not have
    /// become durable, a commit may or may not have landed: a seeded coin decides each.
    fn crash(&mut self) {
        let Some(driver) = self.driver.take() else {
            return;
        };
        self.absorb_stats(driver.stats());
        self.crash_count += 1;
        self.epoch += 1;
        self.paused.fill(false);
        self.costs.clear();
        let events = std::mem::take(&mut self.events).into_vec();
        for Reverse(e) in events {
            let keep = match e.kind {
                EventKind::Land { .. } => Some(e.kind),
                EventKind::WriteDone { land, sink, .. } => match land {
                    Some(output) if self.rng.random_bool(0.5) => {
                        self.stores[sink].apply(&output);
                        None
                    }
                    _ => None,
                },
                EventKind::StoreDone { data, .. } => {
                    if self.rng.random_bool(0.5) {
                        self.count_processed(&data);
                        self.checkpoint = Some(data);
                        self.update_commit_behind();
                    }
                    None
                }
                EventKind::CommitDone {
                    result,
                    positions,
                    checked,
                    ..
                } => {
                    if result.is_ok() && self.rng.random_bool(0.5) {
                        self.commit(&positions, &checked);
                    }
                    None
                }
            };
            if let Some(kind) = keep {
                self.schedule(e.at, kind);
            }
        }
        self.restart_at = Some(self.now + self.plan.restart_ms);
    }

    fn absorb_stats(&mut self, s: &DriverStats) {
        let t = &mut self.stats;
        t.records_received += s.records_received;
        t.records_released += s.records_released;
        t.redelivered += s.redelivered;
        t.unassigned += s.unassigned;
        t.cuts += s.cuts;
        for (a, b) in t.writes.iter_mut().zip(s.writes) {
            *a += b;
        }
        if t.write_failures.len() < s.write_failures.len() {
            t.write_failures.resize(s.write_failures.len(), 0);
        }
        for (a, b) in t.write_failures.iter_mut().zip(&s.write_failures) {
            *a += b;
        }
        t.checkpoints += s.checkpoints;
        t.checkpoint_failures += s.checkpoint_failures;
        t.commits += s.commits;
        t.commit_failures += s.commit_failures;
        t.source_errors += s.source_errors;
        t.pending_items_max = t.pending_items_max.max(s.pending_items_max);
        t.buffered_max = t.buffered_max.max(s.buffered_max);
        t.buffered_bytes_max = t.buffered_bytes_max.max(s.buffered_bytes_max);
        t.read_ahead_full_episodes += s.read_ahead_full_episodes;
        t.backpressure_episodes += s.backpressure_episodes;
        t.checkpoint_wait_max_ms = t.checkpoint_wait_max_ms.max(s.checkpoint_wait_max_ms);
        t.disorder_max_ms = t.disorder_max_ms.max(s.disorder_max_ms);
    }

    /// Once every record is produced, readable and read, the input has ended: the driver
    /// flushes every window final, writes, checkpoints, commits and stops.
    fn end_input_if_done(&mut self) -> Result<(), RunError> {
        if self.ended || !self.input_done || self.restart_at.is_some() {
            return Ok(());
        }
        if self.invisible.iter().any(|q| !q.is_empty()) {
            return Ok(());
        }
        let ids = self.partition_ids();
        let all_read = ids
            .iter()
            .enumerate()
            .all(|(i, _)| self.handed_up_to(i) >= self.visible_end[i]);
        let Some(driver) = self.driver.as_mut() else {
            return Ok(());
        };
        if all_read && driver.buffered() == 0 {
            self.ended = true;
            self.crashes.clear();
            let now = self.now;
            let watch = Stopwatch::start();
            driver.handle_end_of_input(now, StopReason::EndOfInput);
            self.add_work(watch);
            self.carry_out();
        }
        Ok(())
    }

    fn finish(mut self, total: Stopwatch) -> RunResult {
        if let Some(d) = self.driver.take() {
            self.absorb_stats(d.stats());
            let counters = d.engine().counters();
            return self.result(counters, total);
        }
        self.result(pipeline::engine::Counters::default(), total)
    }

    fn result(self, counters: pipeline::engine::Counters, total: Stopwatch) -> RunResult {
        let faults = traces(&self.labels, &self.stores[0]);
        let injected = self.plan.describe();
        let pending_items_max = self.pending_items_max.max(self.stats.pending_items_max);
        let [documents, tables] = self.stores;
        let rechecked = counters.rechecked;
        RunResult {
            scenario: self.scenario.name.clone(),
            seed: self.seed,
            duration_ms: self.end - self.start,
            offered: self.offered,
            counters,
            documents,
            tables,
            alert_latency: self.alert_latency,
            alert_latency_recovery: self.alert_latency_recovery,
            window_latency: self.window_latency,
            trigger_processing: self.trigger_processing,
            pipeline_wall: self.pipeline_wall,
            replay_speed: None,
            total_wall: total.elapsed(),
            faults,
            injected,
            crashes: self.crash_count,
            driver: self.stats,
            pending_items_max,
            commit_behind_max_ms: Some(self.commit_behind_max_ms),
            writes_unhindered: Some(self.plan.sink.is_empty()),
            partition_lag_ms: Some(self.plan.partition_lag_ms),
            instances: self.two.as_ref().map(|t| InstancesOutcome {
                count: self.plan.instances.as_ref().map_or(1, |p| p.count),
                rebalances: t.stages.rebalances,
                forwarded_twice: t.stages.reforwarded,
                lease_moves: self.lease_moves,
                rechecked,
            }),
            driver_max_pending: self.plan.max_pending_items,
            throughput: self.throughput,
            produced: None,
        }
    }
}

/// The partition at index `i` when a topic has `ppt` partitions (topic-major).
fn partition_at(ppt: i32, i: usize) -> PartitionId {
    let ppt = ppt as usize;
    (Topic::ALL[i / ppt], (i % ppt) as i32)
}

/// What became of each labelled record, read from the store's dead letters and late records by
/// source position.
fn traces(labels: &[(Topic, i32, i64, FaultKind)], store: &MemoryStore) -> Vec<FaultTrace> {
    let mut dead: BTreeMap<(Topic, i32, i64), DeadLetterReason> = BTreeMap::new();
    for d in store.dead_letters() {
        dead.entry((d.topic, d.position.partition, d.position.offset))
            .or_insert(d.reason);
    }
    let mut late: BTreeMap<(Topic, i32, i64), Vec<Query>> = BTreeMap::new();
    for l in store.late() {
        late.entry((l.topic, l.position.partition, l.position.offset))
            .or_default()
            .push(l.query);
    }
    labels
        .iter()
        .map(|&(t, p, o, fault)| FaultTrace {
            fault,
            dead_letter: dead.get(&(t, p, o)).copied(),
            late_for: late.get(&(t, p, o)).cloned().unwrap_or_default(),
        })
        .collect()
}
