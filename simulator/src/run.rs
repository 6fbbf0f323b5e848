//! The discrete-event loop of the memory backend.
//!
//! Simulated time jumps from event to event: a record becoming readable (its produce time plus
//! the modelled network delay) or an engine trigger. At each event the pipeline does its work —
//! read from the in-memory partitioned log, drive the engine, write both in-memory stores, commit
//! — exactly as the real shell does with Kafka, MongoDB and PostgreSQL. The wall-clock cost of
//! that work is measured and added to simulated time only to compute when a row became durable
//! (latencies); it never feeds back into the engine, so outputs depend on the seed alone.

use std::collections::BTreeMap;
use std::time::Duration;

use generator::{FaultKind, Generator};
use pipeline::engine::{DeadLetterReason, Engine, Output, Query};
use pipeline::model::Topic;
use pipeline::sink::memory::{Flavour, MemoryStore};
use pipeline::sink::{Sink, now_or_never};
use pipeline::source::memory::MemoryLog;
use pipeline::time::Millis;

use crate::scenario::Scenario;
use crate::wallclock::Stopwatch;
use pipeline::stats::Histogram;

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
    /// Watermark passes window end -> final row durable.
    pub window_latency: Histogram,
    /// One trigger's work to its last sink write.
    pub trigger_processing: Histogram,
    /// Wall time of the pipeline's own work (log reads, engine, sink writes); on a real backend
    /// the streaming job's whole run, waits for paced input included.
    pub pipeline_wall: Duration,
    /// Real backends: simulated seconds replayed per wall second; `None` on the memory backend.
    pub replay_speed: Option<f64>,
    /// Wall time of the whole run, generation included.
    pub total_wall: Duration,
    /// Outcomes of the records that carried a fault label.
    pub faults: Vec<FaultTrace>,
}

/// A run that could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The generator refused its configuration.
    #[error("generator: {0}")]
    Generator(#[from] generator::ConfigError),
    /// The engine refused its configuration.
    #[error("pipeline: {0}")]
    Engine(#[from] pipeline::engine::ConfigError),
    /// A sink failed.
    #[error("sink: {0}")]
    Sink(#[from] pipeline::sink::SinkError),
}

/// Progress callback: simulated milliseconds done out of the total.
pub type Progress<'a> = &'a mut dyn FnMut(Millis, Millis);

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

fn write_all(
    docs: &mut MemoryStore,
    tables: &mut MemoryStore,
    out: &Output,
) -> Result<(), RunError> {
    // Both stores answer at once; `now_or_never` only fails if a store would have to wait.
    for sink in [docs, tables] {
        if let Some(result) = now_or_never(sink.write(out)) {
            result?;
        }
    }
    Ok(())
}

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

/// Runs a scenario on the memory backend with the given seed.
///
/// The generator runs on a second thread and hands serialised records over in order through a
/// bounded channel, so generation overlaps the pipeline's work on a two-core machine; the order
/// of records, and so every output, is exactly that of a single-threaded run.
pub fn run_memory(
    scenario: &Scenario,
    seed: u64,
    progress: Progress<'_>,
) -> Result<RunResult, RunError> {
    let total = Stopwatch::start();
    let generator = Generator::new(&scenario.generator, seed)?;
    let start = generator.start_ms();
    let end = generator.end_ms();
    let (tx, rx) = std::sync::mpsc::sync_channel(BATCHES_IN_FLIGHT);
    let (recycle_tx, recycle_rx) = std::sync::mpsc::sync_channel(BATCHES_IN_FLIGHT + 2);
    std::thread::scope(|scope| {
        scope.spawn(move || produce(generator, tx, recycle_rx));
        let incoming = Incoming {
            rx,
            recycle: recycle_tx,
            batch: Batch::default(),
            next: 0,
        };
        consume(scenario, seed, start, end, incoming, progress, total)
    })
}

/// The pipeline side of [`run_memory`].
fn consume(
    scenario: &Scenario,
    seed: u64,
    start: Millis,
    end: Millis,
    mut records: Incoming,
    progress: Progress<'_>,
    total: Stopwatch,
) -> Result<RunResult, RunError> {
    let mut engine = Engine::new(scenario.pipeline.clone())?;
    let mut log = MemoryLog::new(scenario.network.partitions.unwrap_or(4));
    let mut documents = MemoryStore::new(Flavour::Documents);
    let mut tables = MemoryStore::new(Flavour::Tables);
    let mut out = Output::default();
    let net = scenario.network.produce_to_consume_ms;
    let sink_us = (scenario.network.sink_write_ms.max(0) as u64) * 1000;

    let mut alert_latency = Histogram::default();
    let mut window_latency = Histogram::default();
    let mut trigger_processing = Histogram::default();
    let mut pipeline_wall = Duration::ZERO;
    let mut offered: BTreeMap<Topic, u64> = BTreeMap::new();
    let mut faults = Vec::new();
    engine.tick(start, &mut out);
    let mut steps: u64 = 0;
    loop {
        let next_record = records.peek().map(|r| r.produce_time_ms + net);
        let next_tick = engine.next_tick_ms().filter(|t| *t < end + net);
        let now = match (next_record, next_tick) {
            (None, None) => break,
            (Some(r), Some(t)) => r.min(t),
            (Some(r), None) => r,
            (None, Some(t)) => t,
        };
        steps += 1;
        if steps.is_multiple_of(65_536) {
            progress((now - start).clamp(0, end - start), end - start);
        }
        if next_tick == Some(now) && next_record.is_none_or(|r| r > now) {
            // A trigger with no record at the same instant.
            let watch = Stopwatch::start();
            engine.tick(now, &mut out);
            let triggered = !out.rows.is_empty();
            write_all(&mut documents, &mut tables, &out)?;
            let cost = watch.elapsed();
            pipeline_wall += cost;
            if triggered {
                trigger_processing.record_us(micros(cost) + sink_us);
            }
            out.clear();
            continue;
        }
        let Some(record) = records.peek().cloned() else {
            break;
        };
        records.next += 1;
        *offered.entry(record.topic).or_default() += 1;
        let produced = record.produce_time_ms;
        let bytes = &records.batch.bytes;
        let (partition, _) = log.append(
            record.topic,
            &bytes[record.key.clone()],
            &bytes[record.value.clone()],
            produced,
        );
        let fault = record.fault;

        let watch = Stopwatch::start();
        engine.tick(now, &mut out);
        let triggered = !out.rows.is_empty();
        let mut position = None;
        // The record just appended is the only unread one: read that partition, process,
        // write the sinks, then commit, as the real consumer does.
        log.consume_partition(record.topic, partition, usize::MAX, |raw| {
            position = Some((raw.topic, raw.position));
            engine.ingest(&raw, &mut out);
        });
        write_all(&mut documents, &mut tables, &out)?;
        if let Some((topic, p)) = position {
            log.commit_positions(&[(topic, p.partition, p.offset)]);
        }
        let cost = watch.elapsed();
        pipeline_wall += cost;
        let durable_us = micros(cost) + sink_us;
        if triggered {
            trigger_processing.record_us(durable_us);
        }
        for row in &out.rows {
            if row.query().is_alert() {
                // Produce time -> durable: the network delay, the work, the sink.
                alert_latency.record_us((now - produced).max(0) as u64 * 1000 + durable_us);
            } else if row.is_final {
                window_latency.record_us(durable_us);
            }
        }
        if let Some(kind) = fault {
            let pos = position.map(|p| p.1);
            faults.push(FaultTrace {
                fault: kind,
                dead_letter: out
                    .dead_letters
                    .iter()
                    .find(|d| Some(d.position) == pos)
                    .map(|d| d.reason),
                late_for: out
                    .late
                    .iter()
                    .filter(|l| Some(l.position) == pos)
                    .map(|l| l.query)
                    .collect(),
            });
        }
        out.clear();
    }
    // End of input: every open window becomes final.
    let watch = Stopwatch::start();
    engine.flush(&mut out);
    write_all(&mut documents, &mut tables, &out)?;
    pipeline_wall += watch.elapsed();
    out.clear();
    progress(end - start, end - start);

    drop(records);
    Ok(RunResult {
        scenario: scenario.name.clone(),
        seed,
        duration_ms: end - start,
        offered,
        counters: engine.counters().clone(),
        documents,
        tables,
        alert_latency,
        window_latency,
        trigger_processing,
        pipeline_wall,
        replay_speed: None,
        total_wall: total.elapsed(),
        faults,
    })
}
