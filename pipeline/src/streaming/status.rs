//! What the job's `/metrics`, `/healthz` and `/readyz` read: a snapshot of the driver's and the
//! engine's state that the shell copies out of its loop now and then ([`StatusBoard`]), and the
//! job's readiness derived from it.
//!
//! Plain data: nothing here knows Prometheus or HTTP ([`super::exporter`] does), and nothing in
//! the driver or the engine knows this module — the shell reads their stats and hands them over.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::driver::{Driver, DriverStats, Failure, PartitionStatus};
use crate::engine::{Counters, Query};
use crate::model::Topic;
use crate::time::Millis;

use super::WallClock;
use super::metrics::Metrics;

/// A snapshot older than this while the job runs means its loop is stuck: not ready.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// Where the job is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a service, opening the sinks or taking the Kafka assignment: what it waits
    /// for, in words.
    Starting(String),
    /// Consuming and writing.
    Running,
    /// Scaled out without the lease: stage 1 checks and forwards this instance's input
    /// partitions; stage 2 runs on the lease holder (ready: this instance does its part).
    Standby,
    /// A stop was asked for, or the input ended: the last writes and checkpoint are under way.
    Stopping,
}

/// The job's state at one instant, copied out of the driver and the engine.
#[derive(Clone, Debug)]
pub struct JobStatus {
    /// Where the job is.
    pub phase: Phase,
    /// Processing time the snapshot was taken at, ms since the epoch (in a replay, simulated).
    pub now_ms: Millis,
    /// A sink or the source failing for longer than this makes the job not ready: the
    /// driver's longest retry delay (`retry_max_ms`), so one failure and its retry never do.
    pub retry_period_ms: u64,
    /// The sinks' names, by the index [`DriverStats::write_failures`] uses.
    pub sinks: Vec<&'static str>,
    /// The driver's counters.
    pub driver: DriverStats,
    /// Every assigned partition.
    pub partitions: Vec<PartitionStatus>,
    /// What is failing now (the driver retries it).
    pub failures: Vec<Failure>,
    /// The last error of each sink (by name) or of the source (`source`), from the driver's
    /// notices; kept after recovery, shown only while it fails.
    pub last_errors: BTreeMap<&'static str, String>,
    /// The engine's counters (restored with a checkpoint, so they span restarts).
    pub counters: Counters,
    /// The engine's event-time watermark per topic, once the topic has had a record.
    pub watermarks: Vec<(Topic, Millis)>,
    /// Open windows per windowed query.
    pub open_windows: Vec<(Query, usize)>,
    /// Distinct keys held per keyed windowed query.
    pub keys: Vec<(Query, usize)>,
    /// Output items not yet acknowledged by every sink.
    pub pending_items: usize,
    /// Records read ahead and waiting for the merge.
    pub buffered: usize,
    /// Whether unacknowledged output has every partition paused.
    pub backpressured: bool,
    /// Latencies of this run (alert, window, batch write, trigger write, checkpoint store).
    pub metrics: Metrics,
    /// Size of the last checkpoint stored, bytes (0 before the first).
    pub checkpoint_bytes: usize,
    /// Scale-out stage 2: records dropped because stage 1 forwarded them twice.
    pub forwarded_twice: u64,
}

impl JobStatus {
    /// A job that has not started yet, waiting for `what`.
    pub fn starting(what: impl Into<String>) -> Self {
        JobStatus {
            phase: Phase::Starting(what.into()),
            now_ms: 0,
            retry_period_ms: 0,
            sinks: Vec::new(),
            driver: DriverStats::default(),
            partitions: Vec::new(),
            failures: Vec::new(),
            last_errors: BTreeMap::new(),
            counters: Counters::default(),
            watermarks: Vec::new(),
            open_windows: Vec::new(),
            keys: Vec::new(),
            pending_items: 0,
            buffered: 0,
            backpressured: false,
            metrics: Metrics::default(),
            checkpoint_bytes: 0,
            forwarded_twice: 0,
        }
    }

    /// Copies what the driver and its engine say now (the rest of the snapshot — phase, sink
    /// names, latencies, errors, checkpoint size — is the shell's to fill).
    pub fn read_driver(&mut self, driver: &Driver, now_ms: Millis) {
        let engine = driver.engine();
        self.now_ms = now_ms;
        self.retry_period_ms = driver.config().retry_max_ms;
        self.driver = driver.stats().clone();
        self.partitions = driver.partition_status();
        self.failures = driver.failures();
        self.counters = engine.counters();
        self.watermarks = Topic::ALL
            .into_iter()
            .filter_map(|t| engine.watermark(t).map(|w| (t, w)))
            .collect();
        self.open_windows = engine.open_windows_by_query().to_vec();
        self.keys = engine.keys_by_query().to_vec();
        self.pending_items = driver.pending_items();
        self.buffered = driver.buffered();
        self.backpressured = driver.is_backpressured();
    }

    /// `Ok` when the job is ready: running, with partitions assigned, and nothing failing for
    /// longer than one retry period. Otherwise the reason, in one line.
    pub fn readiness(&self) -> Result<(), String> {
        match &self.phase {
            Phase::Starting(what) => return Err(format!("starting: {what}")),
            Phase::Stopping => return Err("stopping".to_owned()),
            Phase::Standby => return Ok(()),
            Phase::Running => {}
        }
        if self.partitions.is_empty() {
            return Err("no Kafka partition is assigned".to_owned());
        }
        let limit = self.retry_period_ms as Millis;
        let worst = self
            .failures
            .iter()
            .filter(|f| self.now_ms - f.since_ms > limit)
            .min_by_key(|f| f.since_ms);
        if let Some(f) = worst {
            let who = if f.what == "source" { "Kafka" } else { f.what };
            let error = self
                .last_errors
                .get(f.what)
                .map_or(String::new(), |e| format!(": {}", one_line(e)));
            return Err(format!(
                "{who} failing for {:.0} s ({} attempts), longer than the {:.0} s retry period{error}",
                (self.now_ms - f.since_ms) as f64 / 1000.0,
                f.attempts,
                limit as f64 / 1000.0,
            ));
        }
        Ok(())
    }
}

/// `text` on one line, at most 300 characters.
fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    flat.trim().to_owned()
}

/// A scale-out instance's two stages (docs/scale-out.md), for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScaleStatus {
    /// Rebalances of the input group that changed this instance's stage-1 partitions.
    pub rebalances: u64,
    /// Input partitions stage 1 holds now.
    pub assigned: u64,
    /// Records stage 1 forwarded to the checked topics (acknowledged).
    pub forwarded: u64,
    /// Times stage 1 failed and was started again.
    pub restarts: u64,
    /// Whether this instance holds the lease (runs stage 2).
    pub lease_held: bool,
    /// Times this instance took the lease.
    pub leases_taken: u64,
}

#[derive(Debug)]
struct Board {
    status: JobStatus,
    updated: Instant,
    scale: Option<ScaleStatus>,
}

/// The snapshot shared by the job's loop (which publishes) and the HTTP server (which reads).
/// The lock is held only to copy in or to read out, never across an await.
#[derive(Clone, Debug)]
pub struct StatusBoard {
    inner: Arc<Mutex<Board>>,
}

impl StatusBoard {
    /// A board showing `status`.
    pub fn new(status: JobStatus) -> Self {
        StatusBoard {
            inner: Arc::new(Mutex::new(Board {
                status,
                updated: WallClock.instant(),
                scale: None,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        // A panic while the lock was held left plain data behind: still worth showing.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the snapshot.
    pub fn publish(&self, status: JobStatus) {
        let mut b = self.lock();
        b.status = status;
        b.updated = WallClock.instant();
    }

    /// Changes only the phase (start-up steps, the stop).
    pub fn set_phase(&self, phase: Phase) {
        let mut b = self.lock();
        b.status.phase = phase;
        b.updated = WallClock.instant();
    }

    /// Reads the snapshot.
    pub fn read<T>(&self, f: impl FnOnce(&JobStatus) -> T) -> T {
        f(&self.lock().status)
    }

    /// Replaces the scale-out stages' figures.
    pub fn set_scale(&self, scale: ScaleStatus) {
        self.lock().scale = Some(scale);
    }

    /// The scale-out stages' figures, when the job runs scaled out.
    pub fn scale(&self) -> Option<ScaleStatus> {
        self.lock().scale
    }

    /// [`JobStatus::readiness`], and not ready when a running job has not published for
    /// [`STALE_AFTER`] (its loop is stuck).
    pub fn readiness(&self) -> Result<(), String> {
        let b = self.lock();
        let age = b.updated.elapsed();
        if b.status.phase == Phase::Running && age > STALE_AFTER {
            return Err(format!(
                "the job's loop has not reported for {:.0} s",
                age.as_secs_f64()
            ));
        }
        b.status.readiness()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> JobStatus {
        let mut s = JobStatus::starting("");
        s.phase = Phase::Running;
        s.now_ms = 100_000;
        s.retry_period_ms = 30_000;
        s.partitions = vec![PartitionStatus {
            id: (Topic::Traffic, 0),
            records_in: 0,
            released: None,
            next_offset: Some(0),
            end_offset: Some(0),
            max_timestamp_ms: None,
            buffered: 0,
            paused: false,
        }];
        s
    }

    // Proves each reason the job is not ready, and that a failure within one retry period
    // still counts as ready.
    #[test]
    fn readiness_reasons() {
        assert_eq!(
            JobStatus::starting("Kafka at 127.0.0.1:9092").readiness(),
            Err("starting: Kafka at 127.0.0.1:9092".to_owned())
        );
        let mut s = running();
        assert_eq!(s.readiness(), Ok(()));
        s.failures = vec![Failure {
            what: "postgresql",
            since_ms: 80_000,
            attempts: 3,
        }];
        assert_eq!(
            s.readiness(),
            Ok(()),
            "20 s of failure is within the period"
        );
        s.failures[0].since_ms = 60_000;
        s.last_errors
            .insert("postgresql", "connection refused\nretrying".to_owned());
        assert_eq!(
            s.readiness(),
            Err(
                "postgresql failing for 40 s (3 attempts), longer than the 30 s retry period: \
                 connection refused retrying"
                    .to_owned()
            )
        );
        s.failures.insert(
            0,
            Failure {
                what: "source",
                since_ms: 50_000,
                attempts: 9,
            },
        );
        let why = s.readiness().expect_err("Kafka fails too");
        assert!(why.starts_with("Kafka failing for 50 s"), "{why}");
        s.failures.clear();
        s.partitions.clear();
        assert_eq!(
            s.readiness(),
            Err("no Kafka partition is assigned".to_owned())
        );
        s.phase = Phase::Stopping;
        assert_eq!(s.readiness(), Err("stopping".to_owned()));
        // Scaled out without the lease, the instance's stage 1 does its part: ready, though it
        // applies nothing itself.
        s.phase = Phase::Standby;
        assert_eq!(s.readiness(), Ok(()));
    }
}
