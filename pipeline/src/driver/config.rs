//! The driver's configuration: batching, checkpoints, retries and bounds. The same values drive
//! the production job and the simulator (a scenario's `[driver]` table).

use serde::{Deserialize, Serialize};

/// Everything the driver can be told. Defaults suit the production job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriverConfig {
    /// Output holding an alert or a final window row is cut into a batch at most this long after
    /// the first such row appeared, milliseconds (0: at once).
    pub linger_ms: u64,
    /// Any other output (archive copies, dead letters, late records, consumed positions) is cut
    /// at most this long after it started pending, milliseconds.
    pub flush_interval_ms: u64,
    /// Cut once this many records were handed to the engine since the last cut.
    pub flush_max_records: usize,
    /// Most items (rows, dead letters, late records, archive copies) in one sink write; more is
    /// written in several writes, one after the other.
    pub write_max_items: usize,
    /// A write not acknowledged within this long counts as failed and is retried, milliseconds.
    pub write_timeout_ms: u64,
    /// Output not yet acknowledged by every sink, in items, past which every partition is
    /// paused (backpressure); polling resumes below half of it.
    pub max_pending_items: usize,
    /// Records read ahead on one partition while another partition holds the merge back, past
    /// which that partition is paused; it resumes below half of it.
    pub max_buffered_per_partition: usize,
    /// Key and value bytes read ahead over all partitions, past which every partition that
    /// has records buffered is paused (one with none never is: the merge may wait for it); they
    /// resume below half of it.
    pub max_buffered_bytes: usize,
    /// A partition whose end is unknown and that delivered nothing for this long stops holding
    /// the other partitions back (Flink's `withIdleness`), milliseconds.
    pub idle_partition_ms: u64,
    /// A checkpoint is taken at the first cut this long after the previous one, milliseconds;
    /// records handed to the engine since then with nothing left to cut get a cut of their own
    /// at that instant, so a quiet input does not leave them uncommitted.
    pub checkpoint_interval_ms: u64,
    /// ... or once this many records were handed to the engine since the previous one.
    pub checkpoint_max_records: u64,
    /// First retry delay after a failure, milliseconds; it doubles per attempt.
    pub retry_min_ms: u64,
    /// Longest retry delay, milliseconds.
    pub retry_max_ms: u64,
    /// At most one warning per failing sink (or source) in this period, milliseconds.
    pub warn_interval_ms: u64,
    /// A graceful stop waits this long for the last writes and checkpoint, milliseconds; then it
    /// stops without them (the previous checkpoint stays, and a restart replays from it).
    pub shutdown_timeout_ms: u64,
    /// End of input: after this long without a record and with nothing left to write, every
    /// window is flushed final and the driver stops, milliseconds. `None`: never.
    pub idle_exit_ms: Option<u64>,
    /// Seed of the retry jitter (the shell picks one; the simulator derives it from its seed).
    pub jitter_seed: u64,
    /// What the records' values are: the topics' JSON (`json`, the default), or the checked
    /// records stage 1 of scale-out forwards (`checked`, docs/scale-out.md), applied with
    /// `Engine::ingest_checked`.
    pub input: InputFormat,
}

/// What the records a driver is handed hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// The topics' JSON: `Engine::ingest`.
    #[default]
    Json,
    /// Checked records of stage 1: `Engine::ingest_checked`.
    Checked,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            linger_ms: 0,
            flush_interval_ms: 200,
            flush_max_records: 5_000,
            write_max_items: 1_000,
            write_timeout_ms: 30_000,
            max_pending_items: 200_000,
            max_buffered_per_partition: 8_000,
            max_buffered_bytes: 48 << 20,
            idle_partition_ms: 5_000,
            checkpoint_interval_ms: 10_000,
            checkpoint_max_records: 200_000,
            retry_min_ms: 100,
            retry_max_ms: 30_000,
            warn_interval_ms: 10_000,
            shutdown_timeout_ms: 30_000,
            idle_exit_ms: None,
            jitter_seed: 0,
            input: InputFormat::Json,
        }
    }
}

/// A configuration the driver refuses.
#[derive(Debug, thiserror::Error)]
#[error("invalid driver configuration: {0}")]
pub struct DriverConfigError(pub String);

impl DriverConfig {
    /// Checks that every bound can be met.
    pub fn validate(&self) -> Result<(), DriverConfigError> {
        let positive = [
            ("flush_max_records", self.flush_max_records as u64),
            ("write_max_items", self.write_max_items as u64),
            ("write_timeout_ms", self.write_timeout_ms),
            ("max_pending_items", self.max_pending_items as u64),
            (
                "max_buffered_per_partition",
                self.max_buffered_per_partition as u64,
            ),
            ("max_buffered_bytes", self.max_buffered_bytes as u64),
            ("checkpoint_max_records", self.checkpoint_max_records),
            ("retry_min_ms", self.retry_min_ms),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(DriverConfigError(format!("{name} must be positive")));
            }
        }
        if self.retry_max_ms < self.retry_min_ms {
            return Err(DriverConfigError(
                "retry_max_ms must be at least retry_min_ms".into(),
            ));
        }
        if self.max_pending_items < self.write_max_items {
            return Err(DriverConfigError(format!(
                "max_pending_items ({}) must be at least write_max_items ({})",
                self.max_pending_items, self.write_max_items
            )));
        }
        Ok(())
    }
}
