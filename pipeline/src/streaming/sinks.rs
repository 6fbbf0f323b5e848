//! The sinks of the streaming job, one task per lane and sink.
//!
//! The driver writes three lanes (alerts, windows, bulk) that must not wait for each other, each
//! with at most one write in flight per sink. So each (lane, sink) pair gets a task of its own
//! that owns its own sink instance (its own PostgreSQL connection; MongoDB's client is shared and
//! pooled) and carries out that lane's writes to that sink one after the other, each bounded by
//! the driver's `write_timeout_ms`. A task never gives up: it answers every write with its
//! outcome and the driver decides when to try again. A PostgreSQL connection that dropped
//! (a database restart) is opened again before the next write.
//!
//! For benchmarks ([`SinkMode::Null`]) one null sink takes every lane instead: it acknowledges
//! each write at once and keeps nothing, so a run measures the job without any database's cost
//! (and compares with a peer job writing to a null sink of its own).

use std::time::Duration;

use tokio::sync::mpsc;

use crate::driver::{Lane, SinkSpec, Write};
use crate::engine::Output;
use crate::sink::dead_letter_topic::DeadLetterTopic;
use crate::sink::mongo::MongoSink;
use crate::sink::postgres::{self, PostgresSink};
use crate::sink::{Sink, SinkError};

use super::{SinkMode, WallClock};

/// The database sinks, in the order the driver knows them.
pub const SPECS: [SinkSpec; 3] = [
    SinkSpec::all("mongodb"),
    SinkSpec::all("postgresql"),
    // Only dead letters go to the dead-letter topic: the bulk lane.
    SinkSpec {
        name: "kafka-dead-letters",
        lanes: [false, false, true],
    },
];

/// The null sink of a benchmark run: every lane, acknowledged at once.
pub const NULL_SPECS: [SinkSpec; 1] = [SinkSpec::all("null")];

/// The sinks of a mode, in the order the driver knows them.
pub fn specs(mode: SinkMode) -> &'static [SinkSpec] {
    match mode {
        SinkMode::Databases => &SPECS,
        SinkMode::Null => &NULL_SPECS,
    }
}

/// One sink instance of one lane.
pub enum LaneSink {
    /// MongoDB.
    Mongo(MongoSink),
    /// PostgreSQL, reconnected when its connection dropped.
    Postgres {
        /// The sink, `None` while disconnected.
        sink: Option<PostgresSink>,
        /// Where to reconnect.
        url: String,
        /// The schema.
        schema: String,
    },
    /// The `dead-letters` Kafka topic.
    DeadLetters(DeadLetterTopic),
    /// Nothing: every write acknowledged at once (benchmarks). The driver still counts what it
    /// sent, and measures alert latency up to this acknowledgement.
    Null,
}

impl std::fmt::Debug for LaneSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LaneSink::Mongo(_) => "LaneSink::Mongo",
            LaneSink::Postgres { .. } => "LaneSink::Postgres",
            LaneSink::DeadLetters(_) => "LaneSink::DeadLetters",
            LaneSink::Null => "LaneSink::Null",
        })
    }
}

impl LaneSink {
    async fn write(&mut self, out: &Output) -> Result<(), SinkError> {
        match self {
            LaneSink::Mongo(s) => s.write(out).await,
            LaneSink::DeadLetters(s) => s.write(out).await,
            LaneSink::Null => Ok(()),
            LaneSink::Postgres { sink, url, schema } => {
                if sink.as_ref().is_none_or(|s| s.client().is_closed()) {
                    *sink = None;
                    let client = postgres::connect(url).await?;
                    *sink = Some(PostgresSink::new(client, schema).await?);
                }
                match sink.as_mut() {
                    Some(s) => s.write(out).await,
                    None => Err(SinkError::Backend {
                        sink: "postgresql",
                        detail: "not connected".into(),
                    }),
                }
            }
        }
    }
}

/// A sink's answer to one attempt of a write.
#[derive(Debug)]
pub struct Outcome {
    /// The write.
    pub id: u64,
    /// The attempt.
    pub attempt: u32,
    /// The sink's index.
    pub sink: usize,
    /// Acknowledged, or why not.
    pub result: Result<(), String>,
}

/// The tasks: one sender per (lane, sink), `None` where the sink does not take the lane.
#[derive(Debug)]
pub struct LaneTasks {
    senders: Vec<Vec<Option<mpsc::Sender<Write>>>>,
    names: Vec<&'static str>,
}

/// The loop of one (lane, sink): it ends when the job drops its [`LaneTasks`].
pub type TaskLoop = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

impl LaneTasks {
    /// Makes a loop for each (lane, sink of `specs`) that `make` gives a sink for; outcomes go
    /// to `results`. The loops run beside the job's own loop in its task (they are joined with
    /// it, not spawned: the sinks' futures need not be `Send`), each awaiting its sink while the
    /// others and the job go on.
    pub fn start(
        specs: &[SinkSpec],
        mut make: impl FnMut(Lane, usize) -> Option<LaneSink>,
        results: &mpsc::UnboundedSender<Outcome>,
    ) -> (Self, Vec<TaskLoop>) {
        let mut senders = Vec::new();
        let mut loops: Vec<TaskLoop> = Vec::new();
        for lane in Lane::ALL {
            let mut row = Vec::new();
            for (i, spec) in specs.iter().enumerate() {
                let sink = spec.lanes[lane.index()].then(|| make(lane, i)).flatten();
                row.push(sink.map(|sink| {
                    let (tx, rx) = mpsc::channel(4);
                    loops.push(Box::pin(run_task(sink, i, spec.name, rx, results.clone())));
                    tx
                }));
            }
            senders.push(row);
        }
        let names = specs.iter().map(|s| s.name).collect();
        (LaneTasks { senders, names }, loops)
    }

    /// The sinks' names, in the order the driver knows them.
    pub fn sink_names(&self) -> &[&'static str] {
        &self.names
    }

    /// Hands a write to each of its sinks' tasks. A sink without a task acknowledges at once.
    pub async fn send(&self, write: Write, results: &mpsc::UnboundedSender<Outcome>) {
        for i in write.sinks.iter() {
            match self
                .senders
                .get(write.lane.index())
                .and_then(|row| row.get(i))
                .and_then(Option::as_ref)
            {
                Some(tx) => {
                    if tx.send(write.clone()).await.is_err() {
                        let _ = results.send(Outcome {
                            id: write.id,
                            attempt: write.attempt,
                            sink: i,
                            result: Err("the sink's task has stopped".into()),
                        });
                    }
                }
                None => {
                    let _ = results.send(Outcome {
                        id: write.id,
                        attempt: write.attempt,
                        sink: i,
                        result: Ok(()),
                    });
                }
            }
        }
    }
}

async fn run_task(
    mut sink: LaneSink,
    index: usize,
    name: &'static str,
    mut jobs: mpsc::Receiver<Write>,
    results: mpsc::UnboundedSender<Outcome>,
) {
    while let Some(w) = jobs.recv().await {
        let started = WallClock.instant();
        let limit = Duration::from_millis(w.timeout_ms.max(1));
        let result = match tokio::time::timeout(limit, sink.write(&w.output)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "{} items of the {} lane not acknowledged within {} ms",
                w.meta.items,
                w.lane.name(),
                limit.as_millis()
            )),
        };
        tracing::trace!(
            sink = name,
            lane = w.lane.name(),
            write = w.id,
            ms = started.elapsed().as_secs_f64() * 1000.0,
            ok = result.is_ok(),
            "Wrote a batch."
        );
        if results
            .send(Outcome {
                id: w.id,
                attempt: w.attempt,
                sink: index,
                result,
            })
            .is_err()
        {
            return; // The job stopped.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::now_or_never;

    // Proves the null sink mode has one sink on every lane that acknowledges a write at once,
    // and the database mode keeps its three sinks.
    #[test]
    fn null_sink_takes_every_lane_and_acknowledges_at_once() {
        let null = specs(SinkMode::Null);
        assert_eq!(null.len(), 1);
        assert_eq!(null[0].name, "null");
        assert!(null[0].lanes.iter().all(|l| *l));
        assert_eq!(specs(SinkMode::Databases).len(), 3);
        let mut sink = LaneSink::Null;
        let out = Output::default();
        assert!(matches!(now_or_never(sink.write(&out)), Some(Ok(()))));
    }
}
