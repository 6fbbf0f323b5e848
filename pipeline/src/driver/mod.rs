//! The driver: everything between the source and the sinks that is not a query, as a sans-IO
//! state machine — no clock, no I/O, no async, like the engine it owns.
//!
//! It is handed what happened, each time with the current processing time: records polled
//! ([`Driver::handle_records`]), how far a partition has been read and where it ends
//! ([`Driver::handle_progress`]), a tick ([`Driver::handle_tick`]), the outcome of a write, a
//! checkpoint or a commit, a source error, a shutdown or the end of input. It answers, one
//! [`Action`] at a time ([`Driver::poll_action`]), with what to do: write a batch to some sinks,
//! store a checkpoint, commit positions, pause or resume partitions, show the console, report,
//! stop; and [`Driver::poll_timeout`] says when it next needs a tick. The tokio shell of
//! `pipeline streaming` carries the actions out against Kafka, MongoDB and PostgreSQL; the
//! simulator carries the same actions out against its in-memory log and stores on a simulated
//! clock, with faults (quinn-proto's `Connection` has this shape).
//!
//! What it owns:
//! - **Per-partition read state and the canonical merge** ([`merge`]): records reach the engine
//!   in an order that depends only on the partitions' contents, so the final rows do not depend
//!   on how partition reads interleave, how many partitions there are, or where a crash fell.
//! - **Batching** ([`lanes`]): output is cut into batches (at once for alerts and final windows,
//!   after `linger_ms`; within `flush_interval_ms` for the rest) and written in three lanes that
//!   never wait for each other; consumption goes on while writes are in flight.
//! - **Write -> checkpoint -> commit.** The engine's state is taken at a cut; it is stored only
//!   once every write holding output of that cut or an earlier one is acknowledged by every
//!   sink, and positions are committed only once that checkpoint is durable.
//! - **Retries** with exponential backoff and seeded jitter, for as long as it takes, one warning
//!   per sink per `warn_interval_ms`, counted.
//! - **Backpressure**: past `max_pending_items` unacknowledged items every partition is paused;
//!   past `max_buffered_per_partition` records read ahead, that partition is; past
//!   `max_buffered_bytes` read ahead over all partitions, every partition with records buffered
//!   is (never one the merge may be waiting for: it has none).
//!
//! **Invariants** (asserted in debug builds, tested in `tests.rs` and by the simulator's swarm):
//! positions are committed only when a durable checkpoint covers them and every sink
//! acknowledged every write holding output of records at or before them; at most one write per
//! lane is in flight; window rows of one id reach a sink in emission order; nothing is dropped
//! when a bound is hit — partitions are paused instead.

pub mod checkpoint;
pub mod config;
pub mod forwarder;
mod lanes;
mod merge;
pub mod mirror;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::engine::{Engine, EngineConfig, Output, RawRecord};
use crate::model::Topic;
use crate::time::Millis;

pub use checkpoint::{CheckpointData, CheckpointFormatError};
pub use config::{DriverConfig, DriverConfigError, InputFormat};
pub use lanes::{Lane, SinkSet, Write, WriteMeta, items};

use lanes::{InFlight, Lanes, split_cut};
pub use merge::NewestPerTopic;
use merge::{PartitionState, first_head};

/// A topic and a partition of it.
pub type PartitionId = (Topic, i32);

/// A partition, the last offset received from it, its end, and the highest Kafka timestamp
/// handed to the engine from it.
pub type PartitionProgress = (PartitionId, Option<i64>, Option<i64>, Option<Millis>);

/// Where the source should start reading a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// Right after this offset (the checkpoint holds everything up to it).
    After(i64),
    /// At the beginning: the checkpoint never saw this partition.
    Beginning,
    /// At the group's committed offset, or the earliest (no checkpoint at all).
    Committed,
}

/// Why the driver stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A shutdown was asked for: state checkpointed, windows left open.
    Shutdown,
    /// The shell's record budget was used up: state checkpointed, windows left open.
    MaxRecords,
    /// No record for `idle_exit_ms`: every window flushed final, then checkpointed.
    Idle,
    /// The input ended: every window flushed final, then checkpointed.
    EndOfInput,
}

/// A sink as the driver knows it: a name for reports, and the lanes it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkSpec {
    /// Its name in logs (`mongodb`, `postgresql`, ...).
    pub name: &'static str,
    /// Whether it takes each lane's writes (indexed as [`Lane::ALL`]).
    pub lanes: [bool; 3],
}

impl SinkSpec {
    /// A sink that takes every lane.
    pub const fn all(name: &'static str) -> Self {
        SinkSpec {
            name,
            lanes: [true; 3],
        }
    }
}

/// Something worth a log line.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    /// A sink keeps failing; the write is retried.
    SinkRetrying {
        /// Which sink.
        sink: &'static str,
        /// Which lane's write.
        lane: Lane,
        /// Attempts so far.
        attempts: u32,
        /// How long it has been failing, milliseconds.
        failing_for_ms: Millis,
        /// When it is tried again, milliseconds from now.
        retry_in_ms: u64,
        /// The last error.
        error: String,
    },
    /// A failing sink acknowledged a write again.
    SinkRecovered {
        /// Which sink.
        sink: &'static str,
        /// Attempts it took.
        attempts: u32,
        /// How long it had been failing, milliseconds.
        failing_for_ms: Millis,
    },
    /// The source keeps failing; the shell keeps trying.
    SourceFailing {
        /// Errors since it started failing.
        errors: u64,
        /// How long it has been failing, milliseconds.
        failing_for_ms: Millis,
        /// The last error.
        error: String,
    },
    /// The source delivered records again.
    SourceRecovered {
        /// How long it had been failing, milliseconds.
        failing_for_ms: Millis,
    },
    /// Storing a checkpoint failed; it is retried.
    CheckpointRetrying {
        /// Attempts so far.
        attempts: u32,
        /// When it is tried again, milliseconds from now.
        retry_in_ms: u64,
        /// The error.
        error: String,
    },
    /// Committing positions failed. The same positions are committed again after a backoff
    /// delay, unless a newer checkpoint's commit supersedes them first.
    CommitFailed {
        /// Failed attempts in a row for this checkpoint.
        attempts: u32,
        /// When it is tried again, milliseconds from now (or sooner by a newer checkpoint).
        retry_in_ms: u64,
        /// The error.
        error: String,
    },
    /// Every partition was paused (`engaged`) or resumed because of unacknowledged output.
    Backpressure {
        /// Engaged or released.
        engaged: bool,
        /// Items not yet acknowledged.
        pending_items: usize,
    },
    /// A graceful stop gave up waiting for the last writes or checkpoint.
    StopIncomplete {
        /// What was still missing.
        detail: String,
    },
}

/// What the shell is to do next.
#[derive(Clone, Debug)]
pub enum Action {
    /// Write a batch to the sinks named; answer with [`Driver::handle_write_result`] per sink.
    Write(Write),
    /// Store this checkpoint durably; answer with [`Driver::handle_checkpoint_result`].
    StoreCheckpoint(Arc<CheckpointData>),
    /// Commit these positions (last offset processed per partition); answer with
    /// [`Driver::handle_commit_result`].
    Commit {
        /// The checkpoint whose positions these are.
        id: u64,
        /// Last offset processed per partition.
        positions: Vec<(PartitionId, i64)>,
    },
    /// Stop fetching these partitions (records already on their way are still taken).
    Pause(Vec<PartitionId>),
    /// Fetch these partitions again.
    Resume(Vec<PartitionId>),
    /// Every sink acknowledged a write: account for its latencies.
    Acknowledged(Arc<WriteMeta>),
    /// A console refresh is due.
    ShowConsole,
    /// Report something.
    Notice(Notice),
    /// Stop: nothing more will come.
    Stop(StopReason),
}

/// What the driver counted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DriverStats {
    /// Records received from the source.
    pub records_received: u64,
    /// Records handed to the engine.
    pub records_released: u64,
    /// Records received a second time (at or below a position already received), dropped.
    pub redelivered: u64,
    /// Records of partitions not assigned, dropped.
    pub unassigned: u64,
    /// Cuts made.
    pub cuts: u64,
    /// Writes sent, per lane (first attempts).
    pub writes: [u64; 3],
    /// Write attempts that failed, per sink.
    pub write_failures: Vec<u64>,
    /// Checkpoints stored.
    pub checkpoints: u64,
    /// Checkpoint stores that failed.
    pub checkpoint_failures: u64,
    /// Commits acknowledged.
    pub commits: u64,
    /// Commits that failed.
    pub commit_failures: u64,
    /// Source errors reported.
    pub source_errors: u64,
    /// Most items ever pending (open, queued, in flight).
    pub pending_items_max: usize,
    /// Most records ever buffered for the merge.
    pub buffered_max: usize,
    /// Most key and value bytes ever buffered for the merge.
    pub buffered_bytes_max: usize,
    /// Times the read-ahead reached `max_buffered_bytes`.
    pub read_ahead_full_episodes: u64,
    /// Times backpressure paused every partition.
    pub backpressure_episodes: u64,
    /// Longest a record handed to the engine waited for a durable checkpoint to cover it: from
    /// its hand-over to the store's success reaching the driver. Unbounded only while writes or
    /// checkpoint stores fail, since a checkpoint waits for its cut's writes.
    pub checkpoint_wait_max_ms: Millis,
    /// Most a record handed to the engine trailed, by Kafka timestamp, a record of its topic
    /// handed over before it. 0 for a backlog, which the merge hands over in timestamp order;
    /// on a live stream, how far out of order the partitions delivered. Past the watermark
    /// delay it makes records late.
    pub disorder_max_ms: Millis,
}

/// One assigned partition as the driver sees it, for the job's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionStatus {
    /// Topic and partition.
    pub id: PartitionId,
    /// Records received from it by this run.
    pub records_in: u64,
    /// Offset of the last record handed to the engine.
    pub released: Option<i64>,
    /// The next offset the source will hand over, when it said so.
    pub next_offset: Option<i64>,
    /// The offset its next record will get (its end, the high watermark), when known.
    pub end_offset: Option<i64>,
    /// Highest Kafka timestamp handed to the engine from it.
    pub max_timestamp_ms: Option<Millis>,
    /// Records read ahead and waiting for the merge.
    pub buffered: usize,
    /// Whether the driver wants it paused (backpressure, a full buffer, a full read-ahead).
    pub paused: bool,
}

impl PartitionStatus {
    /// Records in the partition not yet handed to the engine (its end less the next offset to
    /// process), when its end is known.
    pub fn lag(&self) -> Option<i64> {
        let next = self.released.map(|r| r + 1).or(self.next_offset)?;
        self.end_offset.map(|end| (end - next).max(0))
    }
}

/// Something the driver keeps retrying: a sink's writes or the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The sink's name, or `source`.
    pub what: &'static str,
    /// Processing time of the first failure of this run of failures.
    pub since_ms: Millis,
    /// Attempts so far (sink: of its oldest failing write, the one under way included;
    /// source: errors since it started failing).
    pub attempts: u64,
}

/// A driver that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The driver's configuration is invalid.
    #[error(transparent)]
    Config(#[from] DriverConfigError),
    /// The engine's configuration is invalid.
    #[error("invalid engine configuration: {0}")]
    Engine(#[from] crate::engine::ConfigError),
    /// More sinks than a [`SinkSet`] can name.
    #[error("at most 32 sinks, got {0}")]
    TooManySinks(usize),
}

/// The output since the last cut, and what latency accounting needs of it.
#[derive(Debug, Default)]
struct OpenCut {
    out: Output,
    meta: WriteMeta,
    records: usize,
    since_ms: Option<Millis>,
    urgent_since_ms: Option<Millis>,
}

/// A graceful stop in progress.
#[derive(Debug)]
struct Stopping {
    reason: StopReason,
    deadline_ms: Millis,
    /// The checkpoint that must be stored and committed before stopping.
    final_checkpoint: Option<u64>,
}

/// A failed commit to issue again: its checkpoint, positions, and when.
#[derive(Debug)]
struct CommitRetry {
    id: u64,
    positions: Vec<(PartitionId, i64)>,
    at: Millis,
}

/// The checkpoint being stored.
#[derive(Debug)]
struct StoreInFlight {
    data: Arc<CheckpointData>,
    sent: bool,
    attempts: u32,
    retry_at: Option<Millis>,
}

/// The driver. See the module docs.
#[derive(Debug)]
pub struct Driver {
    config: DriverConfig,
    engine: Engine,
    sinks: Vec<SinkSpec>,
    /// The sinks taking each lane's writes (indexed as [`Lane::ALL`]).
    lane_sinks: [SinkSet; 3],
    parts: Vec<PartitionState>,
    /// Positions of the checkpoint restored, for partitions assigned later.
    restored: Option<BTreeMap<PartitionId, i64>>,
    buffered_total: usize,
    /// Key and value bytes of the records buffered, over every partition.
    buffered_bytes_total: usize,
    now: Millis,
    accepting: bool,
    open: OpenCut,
    cut_seq: u64,
    lanes: Lanes,
    next_write_id: u64,
    snapshots: VecDeque<(u64, Arc<CheckpointData>)>,
    next_checkpoint_id: u64,
    last_snapshot_ms: Option<Millis>,
    records_since_snapshot: u64,
    /// When the first record handed to the engine since the last snapshot was.
    unsnapshotted_since: Option<Millis>,
    /// Highest Kafka timestamp handed to the engine per topic, for `stats.disorder_max_ms`.
    handed_newest: NewestPerTopic,
    /// Snapshots taken, not yet durable, that are the first to cover some records: (checkpoint
    /// id, when the oldest of those records was handed over), oldest first. At most four: the
    /// two in `snapshots` (a superseded one's entry passes to its successor), the one being
    /// stored and one it superseded.
    awaiting_durable: VecDeque<(u64, Millis)>,
    store: Option<StoreInFlight>,
    /// The newest durable checkpoint not yet committed.
    to_commit: Option<Arc<CheckpointData>>,
    /// The commit in flight: its checkpoint id and positions.
    commit_in_flight: Option<(u64, Vec<(PartitionId, i64)>)>,
    last_committed: Option<u64>,
    /// A failed commit no newer checkpoint has superseded yet: what to commit again, and when.
    /// Without it, a commit that fails as the input goes quiet (Kafka back from an outage, its
    /// group coordinator still loading) would leave the group's offsets behind until new
    /// records arrive.
    commit_retry: Option<CommitRetry>,
    /// Commits failed since the last one that went through (the retry's backoff).
    failed_commits_in_a_row: u32,
    backpressured: bool,
    /// Read-ahead reached `max_buffered_bytes`: partitions with records buffered are paused.
    read_ahead_full: bool,
    /// Some partition is paused at the source or over its buffer bound: [`Self::flow_control`]
    /// must look at each. Without one, and with nothing buffered and no backpressure, its pass
    /// over the partitions would change nothing, and it is skipped (a step follows every call
    /// of the driver: the pass was 2 % of a simulated thesis hour's thread, callgrind).
    partitions_held: bool,
    source_failing_since: Option<Millis>,
    source_errors_in_run: u64,
    source_last_warn: Option<Millis>,
    sink_last_warn: Vec<Option<Millis>>,
    last_record_ms: Millis,
    stopping: Option<Stopping>,
    stopped: bool,
    actions: VecDeque<Action>,
    stats: DriverStats,
    /// Every record handed to the engine, in order (tests check the merge with it).
    #[cfg(test)]
    released_log: Vec<(PartitionId, i64)>,
}

impl Driver {
    /// A driver with a fresh engine (no checkpoint).
    pub fn new(
        config: DriverConfig,
        engine: EngineConfig,
        sinks: Vec<SinkSpec>,
        now: Millis,
    ) -> Result<Self, DriverError> {
        let engine = Engine::new(engine)?;
        Self::build(config, engine, None, sinks, now)
    }

    /// A driver resuming from a checkpoint: its engine state and positions.
    pub fn from_checkpoint(
        config: DriverConfig,
        checkpoint: CheckpointData,
        sinks: Vec<SinkSpec>,
        now: Millis,
    ) -> Result<Self, DriverError> {
        let mut d = Self::build(
            config,
            checkpoint.engine,
            Some(checkpoint.positions),
            sinks,
            now,
        )?;
        d.next_checkpoint_id = checkpoint.id + 1;
        d.last_committed = Some(checkpoint.id);
        Ok(d)
    }

    fn build(
        config: DriverConfig,
        engine: Engine,
        restored: Option<BTreeMap<PartitionId, i64>>,
        sinks: Vec<SinkSpec>,
        now: Millis,
    ) -> Result<Self, DriverError> {
        config.validate()?;
        if sinks.len() > 32 {
            return Err(DriverError::TooManySinks(sinks.len()));
        }
        let n = sinks.len();
        let lane_sinks = Lane::ALL.map(|lane| lane_sinks(&sinks, lane));
        Ok(Driver {
            config,
            engine,
            sinks,
            lane_sinks,
            parts: Vec::new(),
            restored,
            buffered_total: 0,
            buffered_bytes_total: 0,
            now,
            accepting: true,
            open: OpenCut::default(),
            cut_seq: 0,
            lanes: Lanes::default(),
            next_write_id: 1,
            snapshots: VecDeque::new(),
            next_checkpoint_id: 1,
            last_snapshot_ms: Some(now),
            records_since_snapshot: 0,
            unsnapshotted_since: None,
            handed_newest: NewestPerTopic::default(),
            awaiting_durable: VecDeque::new(),
            store: None,
            to_commit: None,
            commit_in_flight: None,
            commit_retry: None,
            failed_commits_in_a_row: 0,
            last_committed: None,
            backpressured: false,
            read_ahead_full: false,
            partitions_held: false,
            source_failing_since: None,
            source_errors_in_run: 0,
            source_last_warn: None,
            sink_last_warn: vec![None; n],
            last_record_ms: now,
            stopping: None,
            stopped: false,
            actions: VecDeque::new(),
            stats: DriverStats {
                write_failures: vec![0; n],
                ..DriverStats::default()
            },
            #[cfg(test)]
            released_log: Vec::new(),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The configuration.
    pub fn config(&self) -> &DriverConfig {
        &self.config
    }

    /// What was counted so far.
    pub fn stats(&self) -> &DriverStats {
        &self.stats
    }

    /// Whether the driver has stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Items not yet acknowledged by every sink (open, queued and in flight).
    pub fn pending_items(&self) -> usize {
        self.lanes.pending_items() + items(&self.open.out)
    }

    /// Records read ahead and waiting for the merge.
    pub fn buffered(&self) -> usize {
        self.buffered_total
    }

    /// The partitions assigned, with the offset of the last record handed to the engine.
    pub fn positions(&self) -> Vec<(PartitionId, Option<i64>)> {
        self.parts.iter().map(|p| (p.id, p.released)).collect()
    }

    /// Per assigned partition: (received, end offset, highest Kafka timestamp handed over).
    pub fn partition_progress(&self) -> Vec<PartitionProgress> {
        self.parts
            .iter()
            .map(|p| (p.id, p.received, p.end_offset, p.max_timestamp_ms))
            .collect()
    }

    /// Every assigned partition, in partition order.
    pub fn partition_status(&self) -> Vec<PartitionStatus> {
        self.parts
            .iter()
            .map(|p| PartitionStatus {
                id: p.id,
                records_in: p.records_in,
                released: p.released,
                next_offset: p.next_offset,
                end_offset: p.end_offset,
                max_timestamp_ms: p.max_timestamp_ms,
                buffered: p.buffered(),
                paused: self.is_paused(p),
            })
            .collect()
    }

    /// What is failing now and since when: the source, then each sink with a write awaiting a
    /// retry (the earliest failure over the lanes). Empty when everything answers.
    pub fn failures(&self) -> Vec<Failure> {
        let mut out = Vec::new();
        if let Some(since_ms) = self.source_failing_since {
            out.push(Failure {
                what: "source",
                since_ms,
                attempts: self.source_errors_in_run,
            });
        }
        for (i, spec) in self.sinks.iter().enumerate() {
            let mut worst: Option<Failure> = None;
            for lane in Lane::ALL {
                let Some(f) = &self.lanes.get(lane).in_flight else {
                    continue;
                };
                if let Some(since_ms) = f.failing_since[i]
                    && worst.is_none_or(|w| since_ms < w.since_ms)
                {
                    worst = Some(Failure {
                        what: spec.name,
                        since_ms,
                        attempts: u64::from(f.attempts[i]),
                    });
                }
            }
            out.extend(worst);
        }
        out
    }

    /// Whether unacknowledged output has every partition paused.
    pub fn is_backpressured(&self) -> bool {
        self.backpressured
    }

    /// Whether a stop is under way (or done).
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_some() || self.stopped
    }

    /// What the driver is waiting for, in words, for the job's status lines: partitions the
    /// merge waits for, writes in flight per lane, a checkpoint being stored, a commit, a stop.
    pub fn waiting_on(&self) -> String {
        let mut w = Vec::new();
        if self.buffered_total > 0 {
            let held: Vec<String> = self
                .parts
                .iter()
                .filter(|p| p.holds_back(self.now, self.config.idle_partition_ms))
                .map(|p| format!("{}/{}", p.id.0, p.id.1))
                .collect();
            if !held.is_empty() {
                w.push(format!("partitions {} to be read", held.join(",")));
            }
        }
        for lane in Lane::ALL {
            if let Some(f) = &self.lanes.get(lane).in_flight {
                w.push(format!(
                    "{} write {} ({} items, {} attempts)",
                    lane.name(),
                    f.write.id,
                    f.write.meta.items,
                    f.attempts.iter().max().copied().unwrap_or(0)
                ));
            }
        }
        if let Some(s) = &self.store {
            w.push(format!("checkpoint {} to be stored", s.data.id));
        }
        if let Some((id, _)) = &self.commit_in_flight {
            w.push(format!("commit {id}"));
        }
        if let Some(r) = &self.commit_retry {
            w.push(format!(
                "commit {} to be retried ({} failed)",
                r.id, self.failed_commits_in_a_row
            ));
        }
        if self.backpressured {
            w.push("backpressure: every partition paused".to_owned());
        }
        if let Some(s) = &self.stopping {
            w.push(format!("stopping ({:?})", s.reason));
        }
        if w.is_empty() {
            "nothing".to_owned()
        } else {
            w.join("; ")
        }
    }

    /// Whether the driver wants the shell not to fetch this partition now.
    fn is_paused(&self, p: &PartitionState) -> bool {
        wants_paused(self.backpressured, self.read_ahead_full, p)
    }

    /// Whether any partition may be fetched now.
    pub fn wants_records(&self) -> bool {
        self.accepting && self.parts.iter().any(|p| !self.is_paused(p))
    }

    /// Partitions were assigned: returns where to start reading each.
    pub fn handle_assigned(
        &mut self,
        now: Millis,
        partitions: &[PartitionId],
    ) -> Vec<(PartitionId, StartAt)> {
        self.now = self.now.max(now);
        let mut starts = Vec::with_capacity(partitions.len());
        for &id in partitions {
            if self.part_index(id).is_some() {
                continue;
            }
            let start = match &self.restored {
                Some(known) => known
                    .get(&id)
                    .map_or(StartAt::Beginning, |&o| StartAt::After(o)),
                None => StartAt::Committed,
            };
            let released = match start {
                StartAt::After(o) => Some(o),
                StartAt::Beginning | StartAt::Committed => None,
            };
            let mut state = PartitionState::new(id, released, self.now);
            if start == StartAt::Beginning {
                state.next_offset = Some(0);
            }
            self.parts.push(state);
            starts.push((id, start));
        }
        self.parts.sort_by_key(|p| p.id);
        starts
    }

    /// Partitions were taken away: what was read ahead of them is forgotten (their next owner
    /// reads it again from the committed position).
    pub fn handle_revoked(&mut self, now: Millis, partitions: &[PartitionId]) {
        self.advance_clock(now);
        for id in partitions {
            if let Some(i) = self.part_index(*id) {
                self.buffered_total -= self.parts[i].buffered();
                self.buffered_bytes_total -= self.parts[i].buffered_bytes();
                self.parts[i].clear();
                self.parts.remove(i);
            }
        }
        // A retry commits only what this instance still owns: the next owner commits the rest.
        if let Some(r) = self.commit_retry.as_mut() {
            r.positions.retain(|(id, _)| !partitions.contains(id));
            if r.positions.is_empty() {
                self.commit_retry = None;
            }
        }
        self.release();
        self.step();
    }

    /// Records polled from the source, in each partition's offset order. Every record of one
    /// poll should come in one call: the merge orders records it sees together.
    pub fn handle_records(&mut self, now: Millis, records: &[RawRecord<'_>]) {
        self.advance_clock(now);
        if !records.is_empty() {
            if let Some(since) = self.source_failing_since.take() {
                self.notice(Notice::SourceRecovered {
                    failing_for_ms: now - since,
                });
                self.source_errors_in_run = 0;
            }
            self.last_record_ms = self.now;
        }
        if self.accepting {
            self.take_records(records);
            self.release();
        }
        self.step();
    }

    /// The source says where a partition stands: the next offset it will hand over, when known,
    /// and the offset its next record will get (its end). An end of `None` says the source does
    /// not know it now (a query of it failed): the end it said before is forgotten, as on a
    /// source error, because a stale end makes a partition that received records since look
    /// caught up, and the merge would release other partitions' later records ahead of them.
    /// Until an end is known again, the partition is waited for `idle_partition_ms` after its
    /// last record, as one whose end was never known.
    pub fn handle_progress(
        &mut self,
        now: Millis,
        partition: PartitionId,
        next_offset: Option<i64>,
        end_offset: Option<i64>,
    ) {
        self.advance_clock(now);
        if let Some(i) = self.part_index(partition) {
            let p = &mut self.parts[i];
            if let Some(n) = next_offset {
                p.next_offset = Some(p.next_offset.map_or(n, |m| m.max(n)));
            }
            p.end_offset = end_offset;
        }
        self.release();
        self.step();
    }

    /// Reading the source failed (the shell keeps trying).
    pub fn handle_source_error(&mut self, now: Millis, error: &str) {
        self.advance_clock(now);
        self.stats.source_errors += 1;
        self.source_errors_in_run += 1;
        // What the source said of where partitions end is stale now: until it says again, a
        // partition may hold earlier records than those buffered elsewhere.
        for p in &mut self.parts {
            p.end_offset = None;
            p.last_record_ms = self.now;
        }
        let since = *self.source_failing_since.get_or_insert(self.now);
        if self
            .source_last_warn
            .is_none_or(|w| self.now - w >= self.config.warn_interval_ms as Millis)
        {
            self.source_last_warn = Some(self.now);
            self.notice(Notice::SourceFailing {
                errors: self.source_errors_in_run,
                failing_for_ms: self.now - since,
                error: error.to_owned(),
            });
        }
        self.step();
    }

    /// Processing time moved on.
    pub fn handle_tick(&mut self, now: Millis) {
        self.advance_clock(now);
        self.release();
        self.step();
    }

    /// One sink's answer to one attempt of a write.
    pub fn handle_write_result(
        &mut self,
        now: Millis,
        write_id: u64,
        attempt: u32,
        sink: usize,
        result: Result<(), String>,
    ) {
        self.advance_clock(now);
        let Some(lane) = Lane::ALL.into_iter().find(|l| {
            self.lanes
                .get(*l)
                .in_flight
                .as_ref()
                .is_some_and(|f| f.write.id == write_id)
        }) else {
            return self.step(); // An answer to a write already completed: stale.
        };
        let now = self.now;
        let jitter_seed = self.config.jitter_seed;
        let (min_ms, max_ms) = (self.config.retry_min_ms, self.config.retry_max_ms);
        let Some(f) = self.lanes.get_mut(lane).in_flight.as_mut() else {
            return self.step();
        };
        if sink >= 32 || !f.pending.contains(sink) || f.attempts[sink] != attempt {
            return self.step(); // An earlier attempt answering late: stale.
        }
        match result {
            Ok(()) => {
                f.pending = f.pending.without(sink);
                f.retry_at[sink] = None;
                if let Some(since) = f.failing_since[sink].take() {
                    let n = SinkNotice::Recovered {
                        attempts: f.attempts[sink],
                        failing_for_ms: now - since,
                    };
                    self.sink_notice(sink, lane, n);
                }
                self.complete_if_done(lane);
            }
            Err(error) => {
                self.stats.write_failures[sink] += 1;
                let delay = backoff_ms(jitter_seed, write_id, sink, attempt, min_ms, max_ms);
                f.retry_at[sink] = Some(now + delay as Millis);
                let since = *f.failing_since[sink].get_or_insert(now);
                let n = SinkNotice::Retrying {
                    attempts: attempt,
                    failing_for_ms: now - since,
                    retry_in_ms: delay,
                    error,
                };
                self.sink_notice(sink, lane, n);
            }
        }
        self.step();
    }

    /// The answer to a [`Action::StoreCheckpoint`].
    pub fn handle_checkpoint_result(&mut self, now: Millis, id: u64, result: Result<(), String>) {
        self.advance_clock(now);
        let Some(store) = self.store.as_mut().filter(|s| s.data.id == id) else {
            return self.step();
        };
        match result {
            Ok(()) => {
                self.stats.checkpoints += 1;
                // Oldest first: the first entry covered holds the longest wait.
                let mut oldest = None;
                while let Some(&(covered, t)) = self.awaiting_durable.front()
                    && covered <= id
                {
                    self.awaiting_durable.pop_front();
                    oldest = oldest.or(Some(t));
                }
                if let Some(t) = oldest {
                    let s = &mut self.stats;
                    s.checkpoint_wait_max_ms = s.checkpoint_wait_max_ms.max(self.now - t);
                }
                let data = Arc::clone(&store.data);
                self.store = None;
                self.to_commit = Some(data);
            }
            Err(error) => {
                self.stats.checkpoint_failures += 1;
                store.attempts += 1;
                let delay = backoff_ms(
                    self.config.jitter_seed,
                    id,
                    31,
                    store.attempts,
                    self.config.retry_min_ms,
                    self.config.retry_max_ms,
                );
                store.retry_at = Some(self.now + delay as Millis);
                store.sent = false;
                let attempts = store.attempts;
                self.notice(Notice::CheckpointRetrying {
                    attempts,
                    retry_in_ms: delay,
                    error,
                });
            }
        }
        self.step();
    }

    /// The answer to a [`Action::Commit`].
    pub fn handle_commit_result(&mut self, now: Millis, id: u64, result: Result<(), String>) {
        self.advance_clock(now);
        if let Some((_, positions)) = self.commit_in_flight.take_if(|(f, _)| *f == id) {
            match result {
                Ok(()) => {
                    self.stats.commits += 1;
                    self.failed_commits_in_a_row = 0;
                    self.last_committed = Some(self.last_committed.map_or(id, |c| c.max(id)));
                }
                Err(error) => {
                    self.stats.commit_failures += 1;
                    // The checkpoint is the authority on restart, but the group's offsets are
                    // what operators and other instances read: commit the same positions again
                    // after a delay, unless a newer checkpoint's commit supersedes them first.
                    let attempts = self.failed_commits_in_a_row + 1;
                    self.failed_commits_in_a_row = attempts;
                    let c = &self.config;
                    let delay = c
                        .retry_min_ms
                        .saturating_mul(1u64 << attempts.min(16))
                        .min(c.retry_max_ms);
                    if self.to_commit.is_none() {
                        self.commit_retry = Some(CommitRetry {
                            id,
                            positions,
                            at: now + delay as Millis,
                        });
                    }
                    self.notice(Notice::CommitFailed {
                        attempts,
                        retry_in_ms: delay,
                        error,
                    });
                }
            }
        }
        self.step();
    }

    /// Stop gracefully: write what is pending, checkpoint (windows left open), commit, stop.
    pub fn handle_shutdown(&mut self, now: Millis, reason: StopReason) {
        self.advance_clock(now);
        if self.stopping.is_none() && !self.stopped {
            self.begin_stop(reason);
        }
        self.step();
    }

    /// The input is complete: hand every buffered record to the engine, flush every window
    /// final, write, checkpoint, commit, stop.
    pub fn handle_end_of_input(&mut self, now: Millis, reason: StopReason) {
        self.advance_clock(now);
        if self.stopping.is_some() || self.stopped {
            return self.step();
        }
        self.drain_buffers();
        let before = self.open.out.rows.len();
        self.engine.flush(&mut self.open.out);
        let emitted = self.open.out.rows.len() - before;
        if emitted > 0 {
            let now = self.now;
            self.open
                .meta
                .finals_emitted_ms
                .extend(std::iter::repeat_n(now, emitted));
            self.open.urgent_since_ms.get_or_insert(now);
            self.open.since_ms.get_or_insert(now);
        }
        self.begin_stop(reason);
        self.step();
    }

    /// The next action for the shell, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next processing time at which the driver wants [`Driver::handle_tick`], if any.
    pub fn poll_timeout(&self) -> Option<Millis> {
        if self.stopped {
            return None;
        }
        let c = &self.config;
        let now = self.now;
        let mut t: Option<Millis> = None;
        // Only instants still ahead: what was due is done, or waits for another input (an
        // acknowledgement, a record), and asking for a tick now would spin.
        let mut at = |x: Option<Millis>| {
            if let Some(x) = x.filter(|x| *x > now) {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        at(self.engine.next_tick_ms());
        at(self.open.urgent_since_ms.map(|s| s + c.linger_ms as Millis));
        at(self
            .open
            .since_ms
            .map(|s| s + c.flush_interval_ms as Millis));
        for lane in Lane::ALL {
            if let Some(f) = &self.lanes.get(lane).in_flight {
                // Only a sink still to acknowledge has a retry scheduled.
                debug_assert!(
                    (0..32).all(|s| f.retry_at[s].is_none() || f.pending.contains(s)),
                    "a retry scheduled for a sink that acknowledged"
                );
                for s in f.pending.iter() {
                    at(f.retry_at[s]);
                }
            }
        }
        at(self.store.as_ref().and_then(|s| s.retry_at));
        at(self.commit_retry.as_ref().map(|r| r.at));
        if self.open.records == 0 && items(&self.open.out) == 0 {
            at(self.snapshot_due_at());
        }
        if self.buffered_total > 0 {
            for p in &self.parts {
                if p.buffered() == 0 && p.end_offset.is_none() {
                    at(Some(p.last_record_ms + c.idle_partition_ms as Millis));
                }
            }
        }
        if let Some(idle) = c.idle_exit_ms
            && self.stopping.is_none()
        {
            at(Some(self.last_record_ms + idle as Millis));
        }
        at(self
            .stopping
            .as_ref()
            .map(|s| s.deadline_ms)
            .filter(|d| *d < Millis::MAX));
        t
    }

    // ---- internals ----

    fn part_index(&self, id: PartitionId) -> Option<usize> {
        self.parts.binary_search_by_key(&id, |p| p.id).ok()
    }

    fn notice(&mut self, n: Notice) {
        self.actions.push_back(Action::Notice(n));
    }

    /// Moves processing time to `now` and runs the engine's trigger when it is due.
    fn advance_clock(&mut self, now: Millis) {
        self.now = self.now.max(now);
        if self.stopped || self.stopping.is_some() {
            return;
        }
        if self.engine.next_tick_ms().is_none_or(|t| t <= self.now) {
            let before = self.open.out.rows.len();
            self.engine.tick(self.now, &mut self.open.out);
            if self.open.out.rows.len() > before {
                let now = self.now;
                self.open.meta.trigger_ms.get_or_insert(now);
                self.open.since_ms.get_or_insert(now);
                self.open.urgent_since_ms.get_or_insert(now);
            }
            if std::mem::take(&mut self.open.out.console_due) {
                self.actions.push_back(Action::ShowConsole);
            }
        }
    }

    /// Takes polled records: straight to the engine when nothing can come before them, else
    /// into their partitions' buffers for the merge.
    fn take_records(&mut self, records: &[RawRecord<'_>]) {
        let Some(first) = records.first() else {
            return;
        };
        let single = records
            .iter()
            .all(|r| r.topic == first.topic && r.position.partition == first.position.partition);
        let pid = (first.topic, first.position.partition);
        let fast = single && self.buffered_total == 0 && !self.backpressured && {
            let now = self.now;
            let idle = self.config.idle_partition_ms;
            !self
                .parts
                .iter()
                .any(|p| p.id != pid && p.holds_back(now, idle))
        };
        for rec in records {
            let id = (rec.topic, rec.position.partition);
            let Some(i) = self.part_index(id) else {
                self.stats.unassigned += 1;
                continue;
            };
            let p = &mut self.parts[i];
            if p.is_redelivery(rec.position.offset) {
                self.stats.redelivered += 1;
                continue;
            }
            p.note_received(rec.position.offset, self.now);
            self.stats.records_received += 1;
            if fast {
                self.ingest(i, rec);
            } else {
                self.parts[i].push(rec);
                self.buffered_total += 1;
                self.buffered_bytes_total += rec.key.len() + rec.value.len();
            }
        }
        self.stats.buffered_max = self.stats.buffered_max.max(self.buffered_total);
    }

    /// Hands buffered records to the engine in the canonical order while no partition holds
    /// the merge back.
    fn release(&mut self) {
        // Under backpressure nothing more reaches the engine: its output would only pile up.
        if self.buffered_total == 0 || !self.accepting || self.backpressured {
            return;
        }
        let (now, idle) = (self.now, self.config.idle_partition_ms);
        if self.parts.iter().any(|p| p.holds_back(now, idle)) {
            return;
        }
        let max_pending = self.config.max_pending_items;
        while let Some(i) = first_head(&self.parts) {
            self.release_one(i);
            if self.parts[i].buffered() == 0 && self.parts[i].holds_back(now, idle) {
                break;
            }
            // The output of what was read ahead must not overshoot the bound either.
            if self.pending_items() >= max_pending {
                break;
            }
        }
    }

    /// Hands every buffered record to the engine in the canonical order, waiting for nothing:
    /// the input is complete.
    fn drain_buffers(&mut self) {
        while let Some(i) = first_head(&self.parts) {
            self.release_one(i);
        }
    }

    fn release_one(&mut self, i: usize) {
        let Some(rec) = self.parts[i].front() else {
            return;
        };
        let (offset, ts) = (rec.position.offset, rec.kafka_timestamp_ms);
        let bytes = rec.key.len() + rec.value.len();
        let input = self.config.input;
        ingest_into(&mut self.engine, &mut self.open, self.now, &rec, input);
        self.parts[i].pop();
        self.buffered_total -= 1;
        self.buffered_bytes_total -= bytes;
        self.handed_over(i, offset, ts);
    }

    fn ingest(&mut self, i: usize, rec: &RawRecord<'_>) {
        debug_assert!(
            self.parts.iter().all(|p| p.buffered() == 0),
            "a record went straight to the engine while others waited"
        );
        let input = self.config.input;
        ingest_into(&mut self.engine, &mut self.open, self.now, rec, input);
        self.handed_over(i, rec.position.offset, rec.kafka_timestamp_ms);
    }

    /// Books a record of partition `i` the engine was just handed, straight or from the merge:
    /// the partition's position, the statistics and what the next checkpoint covers.
    fn handed_over(&mut self, i: usize, offset: i64, kafka_timestamp_ms: Millis) {
        let p = &mut self.parts[i];
        p.note_released(offset, kafka_timestamp_ms);
        let behind = self.handed_newest.behind(p.id.0, kafka_timestamp_ms);
        self.stats.disorder_max_ms = self.stats.disorder_max_ms.max(behind);
        #[cfg(test)]
        self.released_log.push((p.id, offset));
        self.stats.records_released += 1;
        self.records_since_snapshot += 1;
        self.unsnapshotted_since.get_or_insert(self.now);
    }

    /// Everything that follows an input: cut, write, checkpoint, commit, flow control, stop.
    fn step(&mut self) {
        if self.stopped {
            return;
        }
        self.maybe_cut();
        self.pump_writes();
        self.progress_checkpoints();
        self.flow_control();
        self.idle_exit();
        self.progress_stop();
    }

    fn maybe_cut(&mut self) {
        let c = &self.config;
        let o = &self.open;
        let n = items(&o.out);
        let now = self.now;
        if n == 0 && o.records == 0 {
            // Records already cut without a checkpoint get one once it is due, though nothing
            // follows them (a cut of nothing): else a quiet input leaves them uncommitted.
            if self.snapshot_due_at().is_some_and(|t| now >= t) {
                self.cut(false);
            }
            return;
        }
        let due = self.stopping.is_some()
            || o.urgent_since_ms
                .is_some_and(|t| now >= t + c.linger_ms as Millis)
            || o.since_ms
                .is_some_and(|t| now >= t + c.flush_interval_ms as Millis)
            || o.records >= c.flush_max_records
            || n >= c.write_max_items;
        if due {
            self.cut(false);
        }
    }

    /// When the records handed to the engine since the last checkpoint are due one by time,
    /// if any were.
    fn snapshot_due_at(&self) -> Option<Millis> {
        let interval = self.config.checkpoint_interval_ms as Millis;
        match self.last_snapshot_ms {
            _ if self.records_since_snapshot == 0 => None,
            Some(t) => Some(t + interval),
            None => Some(self.now),
        }
    }

    /// Closes the open output into lane pieces; takes the engine's state with it when a
    /// checkpoint is due (or `force`).
    fn cut(&mut self, force_snapshot: bool) {
        self.cut_seq += 1;
        self.stats.cuts += 1;
        let open = std::mem::take(&mut self.open);
        for piece in split_cut(self.cut_seq, open.out, open.meta) {
            let lane = piece.meta.lane.unwrap_or(Lane::Bulk);
            self.lanes.get_mut(lane).enqueue(piece);
        }
        let due = self.snapshot_due_at().is_some_and(|t| self.now >= t)
            || self.records_since_snapshot >= self.config.checkpoint_max_records;
        if force_snapshot || (due && self.records_since_snapshot > 0) {
            self.snapshot();
        }
    }

    fn snapshot(&mut self) {
        let data = Arc::new(CheckpointData {
            id: self.next_checkpoint_id,
            taken_ms: self.now,
            engine: self.engine.clone(),
            positions: self
                .parts
                .iter()
                .filter_map(|p| p.released.map(|r| (p.id, r)))
                .chain(self.restored_positions_not_assigned())
                .collect(),
        });
        self.next_checkpoint_id += 1;
        self.last_snapshot_ms = Some(self.now);
        self.records_since_snapshot = 0;
        let mut oldest = self.unsnapshotted_since.take();
        // Bounded: the oldest not-yet-durable snapshot and the newest are enough; one in the
        // middle would be superseded by the newest before it could be stored.
        if self.snapshots.len() >= 2
            && let Some((_, dropped)) = self.snapshots.pop_back()
            && self
                .awaiting_durable
                .back()
                .is_some_and(|(id, _)| *id == dropped.id)
        {
            // Its records, handed over before this one's, are first covered by this one now.
            let carried = self.awaiting_durable.pop_back().map(|(_, t)| t);
            oldest = carried.or(oldest);
        }
        if let Some(t) = oldest {
            self.awaiting_durable.push_back((data.id, t));
        }
        debug_assert!(
            self.awaiting_durable.len() <= 4,
            "{:?}",
            self.awaiting_durable
        );
        self.snapshots.push_back((self.cut_seq, data));
    }

    /// Restored positions of partitions not (yet) assigned: a checkpoint keeps them.
    fn restored_positions_not_assigned(&self) -> Vec<(PartitionId, i64)> {
        let Some(known) = &self.restored else {
            return Vec::new();
        };
        known
            .iter()
            .filter(|(id, _)| self.part_index(**id).is_none())
            .map(|(id, o)| (*id, *o))
            .collect()
    }

    /// Sends each idle lane's next write, and retries that are due.
    fn pump_writes(&mut self) {
        for lane in Lane::ALL {
            self.retry_due(lane);
            if self.lanes.get(lane).in_flight.is_some() {
                continue;
            }
            let sinks = self.lane_sinks[lane.index()];
            let max = self.config.write_max_items;
            let Some((piece, first, through)) = self.lanes.get_mut(lane).take(max) else {
                continue;
            };
            let id = self.next_write_id;
            self.next_write_id += 1;
            let mut meta = piece.meta;
            meta.write_id = id;
            meta.lane = Some(lane);
            meta.items = items(&piece.out);
            let write = Write {
                id,
                attempt: 1,
                lane,
                sinks,
                output: Arc::new(piece.out),
                meta: Arc::new(meta),
                timeout_ms: self.config.write_timeout_ms,
            };
            let mut attempts = [0u32; 32];
            for s in sinks.iter() {
                attempts[s] = 1;
            }
            self.stats.writes[lane.index()] += 1;
            self.lanes.get_mut(lane).in_flight = Some(InFlight {
                write: write.clone(),
                first_cut: first,
                through_cut: through,
                pending: sinks,
                attempts,
                retry_at: [None; 32],
                failing_since: [None; 32],
                sent_ms: self.now,
            });
            if sinks.is_empty() {
                self.complete_if_done(lane);
            } else {
                self.actions.push_back(Action::Write(write));
            }
        }
    }

    fn retry_due(&mut self, lane: Lane) {
        let now = self.now;
        let Some(f) = self.lanes.get_mut(lane).in_flight.as_mut() else {
            return;
        };
        for s in f.pending.iter() {
            if f.retry_at[s].is_some_and(|t| t <= now) {
                f.retry_at[s] = None;
                f.attempts[s] += 1;
                self.actions.push_back(Action::Write(Write {
                    attempt: f.attempts[s],
                    sinks: SinkSet::one(s),
                    ..f.write.clone()
                }));
            }
        }
    }

    fn complete_if_done(&mut self, lane: Lane) {
        let l = self.lanes.get_mut(lane);
        if l.in_flight.as_ref().is_some_and(|f| f.pending.is_empty()) {
            if let Some(f) = l.in_flight.take() {
                debug_assert!(f.through_cut < f.first_cut || f.through_cut <= self.cut_seq);
                let _ = f.sent_ms;
                self.actions
                    .push_back(Action::Acknowledged(Arc::clone(&f.write.meta)));
            }
            self.pump_writes();
        }
    }

    fn progress_checkpoints(&mut self) {
        let durable = self.lanes.durable_cut(self.cut_seq);
        if self.store.is_none() {
            let mut newest = None;
            while self
                .snapshots
                .front()
                .is_some_and(|(cut, _)| *cut <= durable)
            {
                newest = self.snapshots.pop_front().map(|(_, d)| d);
            }
            if let Some(data) = newest {
                self.store = Some(StoreInFlight {
                    data,
                    sent: false,
                    attempts: 0,
                    retry_at: None,
                });
            }
        }
        let now = self.now;
        if let Some(store) = self.store.as_mut()
            && !store.sent
            && store.retry_at.is_none_or(|t| t <= now)
        {
            store.sent = true;
            store.retry_at = None;
            self.actions
                .push_back(Action::StoreCheckpoint(Arc::clone(&store.data)));
        }
        if self.commit_in_flight.is_none()
            && let Some(data) = self.to_commit.take()
        {
            // A newer durable checkpoint supersedes a failed commit waiting for its retry.
            self.commit_retry = None;
            debug_assert!(
                data.positions.iter().all(|(id, off)| self
                    .part_index(*id)
                    .and_then(|i| self.parts[i].released)
                    .is_none_or(|r| r >= *off)),
                "a commit may not run ahead of what the engine was handed"
            );
            let positions = data.positions.iter().map(|(k, v)| (*k, *v)).collect();
            self.issue_commit(data.id, positions);
        }
        if self.commit_in_flight.is_none()
            && self.commit_retry.as_ref().is_some_and(|r| r.at <= now)
            && let Some(r) = self.commit_retry.take()
        {
            self.issue_commit(r.id, r.positions);
        }
    }

    /// Asks the shell to commit `positions` for checkpoint `id`; with nothing read yet there
    /// is nothing to commit, and the commit counts as done at once.
    fn issue_commit(&mut self, id: u64, positions: Vec<(PartitionId, i64)>) {
        if positions.is_empty() {
            self.last_committed = Some(self.last_committed.map_or(id, |c| c.max(id)));
            return;
        }
        self.commit_in_flight = Some((id, positions.clone()));
        self.actions.push_back(Action::Commit { id, positions });
    }

    fn flow_control(&mut self) {
        let pending = self.pending_items();
        self.stats.pending_items_max = self.stats.pending_items_max.max(pending);
        let max = self.config.max_pending_items;
        if !self.backpressured && pending >= max {
            self.backpressured = true;
            self.stats.backpressure_episodes += 1;
            self.notice(Notice::Backpressure {
                engaged: true,
                pending_items: pending,
            });
        } else if self.backpressured && pending <= max / 2 {
            self.backpressured = false;
            self.notice(Notice::Backpressure {
                engaged: false,
                pending_items: pending,
            });
            self.release();
        }
        let bytes = self.buffered_bytes_total;
        debug_assert_eq!(
            bytes,
            self.parts
                .iter()
                .map(PartitionState::buffered_bytes)
                .sum::<usize>()
        );
        self.stats.buffered_bytes_max = self.stats.buffered_bytes_max.max(bytes);
        let max = self.config.max_buffered_bytes;
        if !self.read_ahead_full && bytes >= max {
            self.read_ahead_full = true;
            self.stats.read_ahead_full_episodes += 1;
        } else if self.read_ahead_full && bytes <= max / 2 {
            self.read_ahead_full = false;
        }
        if !self.partitions_held && !self.backpressured && self.buffered_total == 0 {
            return;
        }
        // One pass: a partition's own bound, then whether it should be paused, which depends on
        // that bound and the flags above only. Pause and resume by what the source was last
        // told: whether a partition should be paused also changes outside this function (a
        // release empties its buffer).
        let limit = self.config.max_buffered_per_partition;
        let mut held = false;
        let (backpressured, read_ahead_full, accepting) =
            (self.backpressured, self.read_ahead_full, self.accepting);
        let mut paused = Vec::new();
        let mut resumed = Vec::new();
        for p in &mut self.parts {
            if !p.buffer_full && p.buffered() >= limit {
                p.buffer_full = true;
            } else if p.buffer_full && p.buffered() <= limit / 2 {
                p.buffer_full = false;
            }
            let want = wants_paused(backpressured, read_ahead_full, p);
            if want && !p.paused_at_source {
                p.paused_at_source = true;
                paused.push(p.id);
            } else if !want && p.paused_at_source && accepting {
                p.paused_at_source = false;
                // Its silence while paused was the driver's doing, not the partition's: a
                // partition without a known end is waited for `idle_partition_ms` from here,
                // as from its assignment, or the others' records would pass those it could
                // not deliver.
                p.last_record_ms = self.now;
                resumed.push(p.id);
            }
            held |= p.paused_at_source || p.buffer_full;
        }
        self.partitions_held = held;
        if !paused.is_empty() {
            self.actions.push_back(Action::Pause(paused));
        }
        if !resumed.is_empty() {
            self.actions.push_back(Action::Resume(resumed));
        }
    }

    fn idle_exit(&mut self) {
        let Some(idle) = self.config.idle_exit_ms else {
            return;
        };
        // A paused partition delivers nothing because it was told not to, and a partition whose
        // end is past what was handed over still holds records (scaled out: they wait for a
        // stage 1 that was killed, until the group hands its partitions on): the input is not
        // idle. Nor is it while a partition's end is unknown (the source could not ask: a
        // failing query, or a source just started or just back from an outage): the input's
        // end cannot be concluded without it. Scaled out, a stage 2 that restarted after a Kafka
        // outage heard nothing for `idle_exit_ms` while stage 1 was still rejoining, and ended
        // with the input's last records unforwarded (the services test
        // `scale_out_lives_through_a_kafka_outage`, once in a CI run).
        let holds_records = |p: &PartitionState| {
            let next = p.released.map(|r| r + 1).or(p.next_offset);
            match (next, p.end_offset) {
                (_, None) => true,
                (Some(n), Some(e)) => n < e,
                (None, Some(_)) => false,
            }
        };
        if self
            .parts
            .iter()
            .any(|p| p.paused_at_source || holds_records(p))
        {
            self.last_record_ms = self.now;
            return;
        }
        if self.stopping.is_none()
            && self.now - self.last_record_ms >= idle as Millis
            && self.lanes.is_idle()
            && items(&self.open.out) == 0
        {
            self.handle_end_of_input(self.now, StopReason::Idle);
        }
    }

    fn begin_stop(&mut self, reason: StopReason) {
        self.accepting = false;
        for p in &mut self.parts {
            p.paused_at_source = true;
        }
        self.partitions_held = true;
        let all: Vec<PartitionId> = self.parts.iter().map(|p| p.id).collect();
        if !all.is_empty() {
            self.actions.push_back(Action::Pause(all));
        }
        self.cut(true);
        let final_checkpoint = self.snapshots.back().map(|(_, d)| d.id);
        // Asked to stop, the driver gives the last writes a bounded time; at the end of the
        // input it waits as long as the sinks need, like every other write.
        let deadline_ms = match reason {
            StopReason::Shutdown | StopReason::MaxRecords => {
                self.now + self.config.shutdown_timeout_ms as Millis
            }
            StopReason::Idle | StopReason::EndOfInput => Millis::MAX,
        };
        self.stopping = Some(Stopping {
            reason,
            deadline_ms,
            final_checkpoint,
        });
    }

    fn progress_stop(&mut self) {
        let Some(s) = &self.stopping else {
            return;
        };
        let done = s
            .final_checkpoint
            .is_none_or(|id| self.last_committed.is_some_and(|c| c >= id));
        if done && self.lanes.is_idle() {
            let reason = s.reason;
            self.stopped = true;
            self.actions.push_back(Action::Stop(reason));
        } else if self.now >= s.deadline_ms {
            let reason = s.reason;
            let detail = format!(
                "{} items unacknowledged, final checkpoint {}",
                self.lanes.pending_items(),
                if done { "committed" } else { "not committed" }
            );
            self.notice(Notice::StopIncomplete { detail });
            self.stopped = true;
            self.actions.push_back(Action::Stop(reason));
        }
    }

    fn sink_notice(&mut self, sink: usize, lane: Lane, n: SinkNotice) {
        let name = self.sinks.get(sink).map_or("?", |s| s.name);
        match n {
            SinkNotice::Recovered {
                attempts,
                failing_for_ms,
            } => {
                self.sink_last_warn[sink] = None;
                self.notice(Notice::SinkRecovered {
                    sink: name,
                    attempts,
                    failing_for_ms,
                });
            }
            SinkNotice::Retrying {
                attempts,
                failing_for_ms,
                retry_in_ms,
                error,
            } => {
                let now = self.now;
                let period = self.config.warn_interval_ms as Millis;
                if self.sink_last_warn[sink].is_none_or(|w| now - w >= period) {
                    self.sink_last_warn[sink] = Some(now);
                    self.notice(Notice::SinkRetrying {
                        sink: name,
                        lane,
                        attempts,
                        failing_for_ms,
                        retry_in_ms,
                        error,
                    });
                }
            }
        }
    }
}

enum SinkNotice {
    Recovered {
        attempts: u32,
        failing_for_ms: Millis,
    },
    Retrying {
        attempts: u32,
        failing_for_ms: Millis,
        retry_in_ms: u64,
        error: String,
    },
}

/// Whether the driver wants the shell not to fetch partition `p` now: backpressure, its own
/// buffer full, or the read-ahead full while it holds records.
fn wants_paused(backpressured: bool, read_ahead_full: bool, p: &PartitionState) -> bool {
    backpressured || p.buffer_full || (read_ahead_full && p.buffered() > 0)
}

/// The sinks of `sinks` (at most 32) that take `lane`'s writes.
fn lane_sinks(sinks: &[SinkSpec], lane: Lane) -> SinkSet {
    let mut set = SinkSet::default();
    for (i, s) in sinks.iter().enumerate() {
        if s.lanes[lane.index()] {
            set.0 |= 1 << i;
        }
    }
    set
}

/// Feeds one record to the engine into the open cut, noting what latency accounting needs.
fn ingest_into(
    engine: &mut Engine,
    open: &mut OpenCut,
    now: Millis,
    rec: &RawRecord<'_>,
    input: InputFormat,
) {
    let before = open.out.rows.len();
    match input {
        InputFormat::Json => engine.ingest(rec, &mut open.out),
        InputFormat::Checked => engine.ingest_checked(rec, &mut open.out),
    }
    let mut urgent = false;
    for row in &open.out.rows[before..] {
        if row.query().is_alert() {
            open.meta.alert_timestamps_ms.push(rec.kafka_timestamp_ms);
            urgent = true;
        } else if row.is_final {
            open.meta.finals_emitted_ms.push(now);
            urgent = true;
        }
    }
    open.records += 1;
    open.since_ms.get_or_insert(now);
    if urgent {
        open.urgent_since_ms.get_or_insert(now);
    }
}

/// The delay before retry `attempt` (1 for the first retry) of a sink's write: exponential from
/// `min_ms` up to `max_ms`, with jitter drawn from a generator seeded by the shell's seed, the
/// write and the sink, so a simulated run retries at the same instants every time.
fn backoff_ms(
    seed: u64,
    write_id: u64,
    sink: usize,
    attempt: u32,
    min_ms: u64,
    max_ms: u64,
) -> u64 {
    let seed = seed ^ write_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (sink as u64).rotate_left(48);
    let mut delays = ExponentialBuilder::new()
        .with_min_delay(std::time::Duration::from_millis(min_ms))
        .with_max_delay(std::time::Duration::from_millis(max_ms))
        .with_factor(2.0)
        .with_jitter()
        .with_jitter_seed(seed)
        .without_max_times()
        .build();
    let n = attempt.saturating_sub(1) as usize;
    delays.nth(n).map_or(max_ms, |d| {
        (d.as_millis() as u64).clamp(min_ms, max_ms.saturating_mul(2))
    })
}
