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
use crate::stats::Histogram;
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
    /// Watermark passes window end -> final row durable.
    pub window_latency: Histogram,
    /// One trigger's work to its last sink write.
    pub trigger_processing: Histogram,
    /// Wall time of the pipeline's own work (log reads, engine, sink writes).
    pub pipeline_wall: Duration,
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

/// Runs a scenario on the memory backend with the given seed.
pub fn run_memory(
    scenario: &Scenario,
    seed: u64,
    progress: Progress<'_>,
) -> Result<RunResult, RunError> {
    let total = Stopwatch::start();
    let generator = Generator::new(&scenario.generator, seed)?;
    let mut engine = Engine::new(scenario.pipeline.clone())?;
    let mut log = MemoryLog::new(scenario.network.partitions.unwrap_or(4));
    let mut documents = MemoryStore::new(Flavour::Documents);
    let mut tables = MemoryStore::new(Flavour::Tables);
    let mut out = Output::default();
    let net = scenario.network.produce_to_consume_ms;
    let sink_us = (scenario.network.sink_write_ms.max(0) as u64) * 1000;
    let start = generator.start_ms();
    let end = generator.end_ms();

    let mut alert_latency = Histogram::default();
    let mut window_latency = Histogram::default();
    let mut trigger_processing = Histogram::default();
    let mut pipeline_wall = Duration::ZERO;
    let mut offered: BTreeMap<Topic, u64> = BTreeMap::new();
    let mut faults = Vec::new();
    let mut value = Vec::with_capacity(512);
    // Produce times of the records behind each (topic, partition, offset) are not needed: the
    // memory backend processes a record at the instant it becomes readable.
    engine.tick(start, &mut out);
    let mut records = generator.records().peekable();
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
        let Some(record) = records.next() else { break };
        *offered.entry(record.topic).or_default() += 1;
        value.clear();
        record.write_value(&mut value);
        let produced = record.produce_time_ms;
        log.append(
            record.topic,
            record.key.as_bytes(),
            std::mem::take(&mut value),
            produced,
        );
        let fault = record.fault;
        drop(record);

        let watch = Stopwatch::start();
        engine.tick(now, &mut out);
        let triggered = !out.rows.is_empty();
        let mut position = None;
        log.consume_with(usize::MAX, |raw| {
            position = Some((raw.topic, raw.position));
            engine.ingest(&raw, &mut out);
        });
        write_all(&mut documents, &mut tables, &out)?;
        log.commit_all_read();
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
        total_wall: total.elapsed(),
        faults,
    })
}
